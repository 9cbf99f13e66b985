"""The server side of one client-level DP-FedAvg round: plan it, then finish it.

Every driver of DP-FedAvg (the in-process :class:`protocols.dp_fedavg.DPFedAvg` aggregator,
the Flower strategy :class:`protocols.flower.dp.PrivAggDPStrategy`) runs a round the same way:

* :meth:`DPRounds.plan`, before anything is computed or released (in particular before the
  inner secure aggregation): fix the worst case the round could release and check the privacy
  budget against it. With client-side noise the worst case is the fewest survivors the inner
  protocol still releases a sum for (``min_survivors``, e.g. the secure-aggregation threshold):
  of those, at most ``floor((1 - h) * cohort)`` may be dishonest, so at least
  ``honest_min = min_survivors - floor((1 - h) * cohort)`` honest noise shares are in any
  released sum. The noise is therefore split into ``t = min(ceil(h * cohort), honest_min)``
  shares (each client adds ``std / sqrt(t)``): every sum the protocol may release carries at
  least the full noise, the worst case *is* the calibrated ``z``, and the budget is checked for
  it. The price is utility: when more clients survive the sum carries more noise
  (``dp_noise_std_survivors`` in the metrics). A round whose protocol allows a sum with no
  honest share (``honest_min <= 0``) is refused (:class:`ProtocolAbort`) before it starts.
  With adaptive clipping, ``z`` is split between the updates and the noised clip count
  (:func:`dp.adaptive.split_noise_multiplier`); ``t`` (1 for central noise) and the grid
  mechanisms are fixed here. An empty cohort (Poisson sampling) is a round like any other:
  the server adds the full noise to the empty sum (``RoundPlan.central``), and it is accounted.
* :meth:`DPRounds.finish`, once the (noised) sum is known: compute the effective noise
  multiplier from the honest survivors (``z sqrt(honest / t)`` when fewer than ``t``),
  **record the round in the ledger whatever happened** (a sum that left the inner
  aggregation is a release), then, if the inner protocol released a sum of fewer survivors
  than it promised, raise :class:`ProtocolAbort` (the model update is withheld; the ledger
  already holds the truthful, possibly over-budget, entry and refuses later rounds).
  Otherwise: the fixed denominator ``q * W`` (McMahan et al. 2018), the adaptive clip moved
  from the noised unclipped count, and the round's metrics.

No exact statistic leaves a round: the true clipped fraction is never recorded (the ledger's
``clipped_fraction`` is adaptive clipping's noised estimate, inside the accounting, or
``"withheld"``), and under Poisson sampling the cohort size and the number of survivors (which
reveal a client's presence) read ``"withheld"`` in the ledger and are absent from the metrics;
under fixed-size sampling the cohort size is public.

The client side (clip, add one noise share) uses the same mechanisms, built with
:func:`update_mechanism` and :func:`count_mechanism` from the settings the server sends.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from dp.accounting import Sampling
from dp.adaptive import AdaptiveClipConfig, AdaptiveClipper, split_noise_multiplier
from dp.clipping import MAX_WEIGHT, sum_sensitivity
from dp.config import DPConfig
from dp.ledger import LedgerEntry, PrivacyBudget, PrivacyLedger
from dp.noise import GaussianGridMechanism
from privagg.errors import ConfigurationError, ProtocolAbort

__all__ = [
    "DPRounds",
    "DPRoundsDriver",
    "RoundPlan",
    "RoundOutcome",
    "noise_shares",
    "count_sensitivity",
    "update_mechanism",
    "count_mechanism",
    "SECRET_COHORTS",
    "REPRODUCIBLE_COHORTS",
    "WITHHELD",
]

#: ``dp_cohorts`` labels: cohorts drawn from the OS CSPRNG, or from the public run seed
SECRET_COHORTS = "secret (OS CSPRNG)"
REPRODUCIBLE_COHORTS = "cohorts reproducible from the seed: not private"

#: what the ledger shows for an exact statistic it does not publish
WITHHELD = "withheld"

#: slack for the floating-point products ``h * n`` and ``(1 - h) * n`` (``h = 0.7, n = 10``)
_EPS = 1e-9
_CLIP_STATE = "adaptive_clip"  # the key of the adaptive clip in PrivacyLedger.state


def noise_shares(honest_fraction: float, cohort: int) -> int:
    """``t = ceil(h * n)``: how many clients of a cohort of ``n`` each add a share of the noise."""
    return max(1, math.ceil(honest_fraction * cohort - _EPS))


def count_sensitivity(sensitivity_factor: float) -> float:
    """Sensitivity of the centred clip count ``sum_k (b_k - 1/2)``: 1/2 (add/remove) or 1 (replace-one)."""
    return 0.5 * sensitivity_factor


def update_mechanism(
    *, clip: float, sensitivity_factor: float, noise_multiplier: float, dim: int, resolution: float
) -> GaussianGridMechanism:
    """The grid Gaussian mechanism for the sum of clipped, weighted updates of length ``dim``."""
    sens = sum_sensitivity(clip=clip, sensitivity_factor=sensitivity_factor, max_weight=MAX_WEIGHT)
    return GaussianGridMechanism.create(
        sensitivity=sens, noise_multiplier=noise_multiplier, dim=dim, resolution=resolution
    )


def count_mechanism(*, sensitivity_factor: float, noise_multiplier: float, resolution: float) -> GaussianGridMechanism:
    """The grid Gaussian mechanism for the centred clip count (one coordinate)."""
    return GaussianGridMechanism.create(
        sensitivity=count_sensitivity(sensitivity_factor),
        noise_multiplier=noise_multiplier,
        dim=1,
        resolution=resolution,
    )


@dataclass(frozen=True)
class RoundPlan:
    """What a round releases with, fixed before any client computes: see :meth:`DPRounds.plan`."""

    sampling: Sampling
    cohort: int
    expected_cohort: float
    clip: float
    noise_multiplier: float  # accounted for the round (updates and clip count together)
    update_noise_multiplier: float  # of the updates alone (``noise_multiplier`` without adaptive clipping)
    count_noise_multiplier: float  # of the clip count; 0.0 without adaptive clipping
    shares: int  # noise shares ``t`` (1: central noise)
    mechanism: GaussianGridMechanism  # for the update sum
    count_mechanism: GaussianGridMechanism | None  # for the clip count (adaptive clipping only)
    central: bool = True  # the server adds the noise (central noise, or an empty cohort)
    min_survivors: int = 0  # the fewest survivors the inner protocol releases a sum for
    worst_noise_multiplier: float = math.nan  # the budget was checked for this (<= noise_multiplier)

    @property
    def sensitivity(self) -> float:
        """L2 sensitivity of the released update sum."""
        return self.mechanism.sensitivity


@dataclass(frozen=True)
class RoundOutcome:
    """A finished round: the fixed denominator to divide the noised sum by, and what was recorded."""

    noise_multiplier_effective: float
    denominator: float
    unclipped_estimate: float  # nan without adaptive clipping
    next_clip: float
    entry: LedgerEntry
    metrics: dict[str, Any]


class DPRounds:
    """The server's state across rounds (privacy ledger, adaptive clip) and its round logic.

    ``noise`` is ``"central"`` (the server adds the noise to the sum) or ``"client"`` (each of
    ``t`` clients adds a share; ``honest_fraction`` of each cohort is assumed honest).
    ``secure_noise`` only labels the metrics (``dp_secure_noise``; ``None``: the server does
    not know, as when clients draw the noise); ``cohorts`` labels how cohorts were drawn
    (``dp_cohorts``: :data:`SECRET_COHORTS` or :data:`REPRODUCIBLE_COHORTS`); ``ledger_path``
    makes the ledger durable (resumed at construction, written after every recorded round),
    the adaptive clip of the next round with it (in the same atomic file: a restarted server
    resumes the exact clip; a ledger it cannot continue exactly is refused). ``accountant``: the
    configured one; the round metrics carry RDP epsilon, and this accountant's when it is another
    (the ledger computes PRV only when asked: :class:`dp.ledger.Epsilons`).
    """

    def __init__(
        self,
        *,
        delta: float,
        clip_norm: float,
        budget: PrivacyBudget | None = None,
        adaptive: AdaptiveClipConfig | None = None,
        noise: Literal["central", "client"] = "central",
        honest_fraction: float = 1.0,
        grid_resolution: float = 1000.0,
        total_weight: float | None = None,
        secure_noise: bool | None = None,
        cohorts: str | None = None,
        ledger_path: str | None = None,
        accountant: str = "rdp",
    ) -> None:
        self.ledger = PrivacyLedger(delta=delta, accountants=("rdp", "prv"), budget=budget)
        self.accountant = accountant
        self.ledger_path = ledger_path
        if ledger_path is not None and os.path.exists(ledger_path):
            self.ledger.load(ledger_path)  # a restarted server keeps composing what it already released
        self.clipper = AdaptiveClipper(adaptive) if adaptive is not None else None
        self._resume_clip()
        self.clip_norm = clip_norm
        self.noise = noise
        self.honest_fraction = honest_fraction
        self.grid_resolution = grid_resolution
        self.total_weight = total_weight
        self.secure_noise = secure_noise
        self.cohorts = cohorts

    @classmethod
    def from_config(cls, cfg: DPConfig, *, secure_noise: bool | None = None, cohorts: str | None = None) -> DPRounds:
        budget = (
            PrivacyBudget(epsilon=cfg.budget, delta=cfg.delta, accountant=cfg.accountant, against=cfg.budget_against)
            if cfg.budget
            else None
        )
        adaptive = (
            AdaptiveClipConfig(
                initial_clip=cfg.clip_norm,
                target_quantile=cfg.target_quantile,
                learning_rate=cfg.clip_learning_rate,
                count_noise_std=cfg.count_noise_std,
            )
            if cfg.adaptive_clipping
            else None
        )
        return cls(
            delta=cfg.delta,
            clip_norm=cfg.clip_norm,
            budget=budget,
            adaptive=adaptive,
            # distributed DP (dp.distributed) runs its rounds on its own path and uses only the
            # ledger and the cohort label here; its noise, like client noise, comes in shares
            noise="client" if cfg.noise == "distributed" else cfg.noise,
            honest_fraction=cfg.honest_fraction,
            grid_resolution=cfg.grid_resolution,
            total_weight=cfg.total_weight,
            secure_noise=secure_noise,
            cohorts=cohorts,
            ledger_path=cfg.ledger_path,
            accountant=cfg.accountant,
        )

    @property
    def clip(self) -> float:
        """The clip norm of the next round (adaptive or fixed)."""
        return self.clipper.clip if self.clipper is not None else self.clip_norm

    def _resume_clip(self) -> None:
        """Continue the adaptive clip saved with a resumed ledger (refuse a ledger it cannot continue)."""
        saved = self.ledger.state.get(_CLIP_STATE)
        if self.clipper is None:
            if saved is not None:
                raise ConfigurationError(
                    "the ledger was written by a run with adaptive clipping; resume it with adaptive clipping on",
                    field="ledger",
                )
            return
        if saved is not None:
            self.clipper.restore(saved)
        elif self.ledger.entries:
            raise ConfigurationError(
                "the ledger has rounds but no adaptive clip state (written without adaptive clipping, or by an "
                "older version): the clip cannot resume exactly; start a new ledger",
                field="ledger",
            )

    def _dishonest(self, cohort: int) -> int:
        """At most this many clients of a cohort are not honest (``floor((1 - h) * cohort)``)."""
        return math.floor((1.0 - self.honest_fraction) * cohort + _EPS)

    def plan(
        self,
        *,
        noise_multiplier: float,
        sampling: Sampling,
        cohort: int,
        dim: int,
        min_survivors: int | None = None,
        roster: Sequence[int] | None = None,
    ) -> RoundPlan:
        """Check the budget for the worst case and fix the round's mechanisms.

        ``min_survivors`` (default ``cohort``: no dropout tolerated) is the fewest survivors
        the inner protocol releases a sum for; ``roster`` the round's cohort, for a budget
        enforced against the server (``None``: counted for every client).
        Raises :class:`PrivacyBudgetExceeded` when even
        the worst case is over budget, :class:`ProtocolAbort` when the protocol could release a
        sum without any honest noise share. Nothing is recorded: nothing was released yet.
        """
        if cohort < 0:
            raise ConfigurationError(f"must be >= 0, got {cohort}", field="cohort")
        z = noise_multiplier
        central = self.noise == "central" or cohort == 0
        shares = 1 if central else noise_shares(self.honest_fraction, cohort)
        floor_ = cohort if min_survivors is None else int(min_survivors)
        if not 0 <= floor_ <= cohort:
            raise ConfigurationError(f"must be in 0..{cohort}, got {floor_}", field="min_survivors")
        z_worst = z
        if not central:
            honest_min = floor_ - self._dishonest(cohort)
            if honest_min <= 0:
                raise ProtocolAbort(
                    f"the inner aggregation may release a sum of {floor_} survivors, up to "
                    f"{self._dishonest(cohort)} of them dishonest: no honest noise share guaranteed; "
                    "raise the aggregation threshold (fewer dropouts tolerated) or honest_fraction",
                    stage="dp-plan",
                    party="server",
                )
            shares = min(shares, honest_min)  # every sum the protocol may release holds >= shares honest shares
            z_worst = z * math.sqrt(min(honest_min, shares) / shares)  # == z
        self.ledger.check(noise_multiplier=z_worst, sampling=sampling, roster=roster)
        factor = sampling.sensitivity_factor
        expected = sampling.rate * (sampling.population or cohort)
        z_update, z_count = z, 0.0
        count_mech: GaussianGridMechanism | None = None
        if self.clipper is not None:
            z_count = self.clipper.config.count_std(expected) / count_sensitivity(factor)
            z_update = split_noise_multiplier(z, z_count)
            count_mech = count_mechanism(
                sensitivity_factor=factor, noise_multiplier=z_count, resolution=self.grid_resolution
            )
        clip = self.clip
        mech = update_mechanism(
            clip=clip, sensitivity_factor=factor, noise_multiplier=z_update, dim=dim, resolution=self.grid_resolution
        )
        return RoundPlan(
            sampling=sampling,
            cohort=cohort,
            expected_cohort=expected,
            clip=clip,
            noise_multiplier=z,
            update_noise_multiplier=z_update,
            count_noise_multiplier=z_count,
            shares=shares,
            mechanism=mech,
            count_mechanism=count_mech,
            central=central,
            min_survivors=0 if central else floor_,  # central noise does not depend on who survived
            worst_noise_multiplier=z_worst,
        )

    def finish(
        self,
        plan: RoundPlan,
        *,
        round: int,
        survivors: int,
        noised_count: float = math.nan,
        roster: Sequence[int] | None = None,
        **ledger_info: Any,
    ) -> RoundOutcome:
        """Account a round whose noised sum is known; raises :class:`ProtocolAbort` to withhold it.

        ``survivors``: the cohort's clients whose (noised) updates are in the sum;
        ``noised_count``: the noised centred clip count (adaptive clipping);
        ``roster``: the ids of the round's cohort, recorded (never published) for the guarantee against
        the server (:mod:`dp.server_view`; ``None``: unknown, counted for every client);
        ``ledger_info``: more fields for the ledger entry, after the common ones.
        The round is recorded before anything can abort.
        """
        z = plan.noise_multiplier
        z_effective = z
        if not plan.central:
            honest_survivors = survivors - self._dishonest(plan.cohort)
            if honest_survivors <= 0:
                z_effective = 0.0  # a sum without any guaranteed honest noise share
            elif honest_survivors < plan.shares:
                z_effective = z * math.sqrt(honest_survivors / plan.shares)

        sampling = plan.sampling
        mech = plan.mechanism
        scale = z_effective / z
        public_counts = sampling.kind == "fixed"  # Poisson: the cohort size reveals a client's presence
        unclipped_est = math.nan
        if self.clipper is not None:  # the noised estimate, inside the accounting
            unclipped_est = self.clipper.unclipped_fraction(noised_count, plan.expected_cohort)
        info: dict[str, Any] = {
            "clip_norm": plan.clip,
            "clipped_fraction": (1.0 - unclipped_est) if self.clipper is not None else WITHHELD,
            "noise_std": mech.std * scale,
            "sensitivity": plan.sensitivity,
            "cohort": plan.cohort if public_counts else WITHHELD,
            "participants": survivors if public_counts else WITHHELD,
        }
        info.update(ledger_info)
        withheld = survivors < plan.min_survivors or z_effective == 0.0
        new_clip = plan.clip
        moves = self.clipper is not None and not withheld and math.isfinite(unclipped_est)
        if moves:  # a non-finite count (a malformed sum) holds the clip
            assert self.clipper is not None
            new_clip = self.clipper.next_clip(unclipped_est)
        entry = self.ledger.record(round=round, noise_multiplier=z_effective, sampling=sampling, roster=roster, **info)
        if self.clipper is not None:  # the clip of the next round, saved in the same file as this entry
            after = self.clipper.state()
            if moves:
                after["clip"], after["history"] = new_clip, [*after["history"], new_clip]
            self.ledger.state[_CLIP_STATE] = after
        if self.ledger_path is not None:
            self.ledger.save(self.ledger_path)  # durable before anything else can fail
        if withheld:
            raise ProtocolAbort(
                f"the inner aggregation released a sum of fewer survivors than it allows ({plan.min_survivors}): "
                f"recorded at noise multiplier {z_effective:.4g}; aggregate withheld",
                stage="dp-noise",
                party="server",
            )

        total_weight = (
            self.total_weight if self.total_weight is not None else (sampling.population or plan.cohort) * MAX_WEIGHT
        )
        denominator = sampling.rate * total_weight
        if self.clipper is not None and moves:
            self.clipper.restore(self.ledger.state[_CLIP_STATE])  # exactly what was saved
        metrics: dict[str, Any] = {
            "dp_epsilon_rdp": entry.epsilon.get("rdp", math.nan),
            # the configured accountant's, when it is not RDP (PRV costs ~0.8 s: computed only when asked)
            **self._accountant_metric(entry),
            "dp_delta": self.ledger.delta,
            "dp_noise_multiplier": z,
            "dp_noise_multiplier_effective": z_effective,
            "dp_noise_multiplier_worst_case": plan.worst_noise_multiplier,
            "dp_update_noise_multiplier": plan.update_noise_multiplier,
            "dp_clip_norm": plan.clip,
            "dp_next_clip_norm": new_clip,
            "dp_unclipped_estimate": unclipped_est,
            "dp_sensitivity": plan.sensitivity,
            "dp_noise_std": mech.std * scale,
            "dp_noise_std_planned": mech.std,
            # the noise in the sum if every survivor added its share (client noise: more than planned when
            # more clients survive than the fewest the split was made for; the utility price of the split).
            # Withheld under Poisson sampling: with the split it would give away the survivor count.
            "dp_noise_std_survivors": (
                mech.std
                if plan.central
                else (mech.std * math.sqrt(survivors / plan.shares) if public_counts else WITHHELD)
            ),
            "dp_noise_std_on_mean": mech.std * scale / denominator,
            "dp_grid": mech.grid,
            "dp_noise": self.noise,
        }
        if self.secure_noise is not None:
            metrics["dp_secure_noise"] = self.secure_noise
        if self.cohorts is not None:
            metrics["dp_cohorts"] = self.cohorts
        if sampling.population is not None:
            metrics["dp_delta_times_population"] = self.ledger.delta * sampling.population
        metrics["dp_denominator"] = denominator
        return RoundOutcome(
            noise_multiplier_effective=z_effective,
            denominator=denominator,
            unclipped_estimate=unclipped_est,
            next_clip=new_clip,
            entry=entry,
            metrics=metrics,
        )

    def _accountant_metric(self, entry: LedgerEntry) -> dict[str, float]:
        """``dp_epsilon_<accountant>`` when the configured accountant is not RDP (whose figure is always there)."""
        if self.accountant == "rdp":
            return {}
        return {f"dp_epsilon_{self.accountant}": entry.epsilon.get(self.accountant, math.nan)}


class DPRoundsDriver:
    """What a driver holding its :class:`DPRounds` as ``dp_rounds`` shows: the ledger and the clipper."""

    dp_rounds: DPRounds

    @property
    def ledger(self) -> PrivacyLedger:
        return self.dp_rounds.ledger

    @property
    def clipper(self) -> AdaptiveClipper | None:
        """The adaptive clipper (``None`` with a fixed clip)."""
        return self.dp_rounds.clipper
