"""The server side of one client-level DP-FedAvg round: plan it, then finish it.

Every driver of DP-FedAvg (the in-process :class:`protocols.dp_fedavg.DPFedAvg` aggregator,
the Flower strategy :class:`protocols.flower.dp.PrivAggDPStrategy`) runs a round the same way:

* :meth:`DPRounds.plan`, before anything is released: check the privacy budget for the
  accounted noise multiplier ``z``; with adaptive clipping, split ``z`` between the updates
  and the noised clip count (:func:`dp.adaptive.split_noise_multiplier`); choose the number
  ``t`` of noise shares (``ceil(honest_fraction * cohort)`` for client-side noise, 1 for central
  noise) and build the grid mechanisms for the update sum and the clip count.
* :meth:`DPRounds.finish`, once the (noised) sum is known: with client-side noise, check that
  at least one honest noise contributor survived (otherwise :class:`ProtocolAbort`: the
  aggregate is withheld) and reduce the accounted multiplier to ``z sqrt(survivors / t)`` when
  fewer than ``t`` did (re-checking the budget); compute the fixed denominator ``q * W``
  (McMahan et al. 2018); move the adaptive clip from the noised unclipped count; record the
  round in the :class:`~dp.ledger.PrivacyLedger`; return the round's metrics.

Honest survivors: after dropouts at least ``survivors - floor((1 - h) * cohort)`` of the
survivors are honest (at most ``floor((1 - h) * cohort)`` clients of the cohort are not).

The client side (clip, add one noise share) uses the same mechanisms, built with
:func:`update_mechanism` and :func:`count_mechanism` from the settings the server sends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from dp.accounting import Sampling
from dp.adaptive import AdaptiveClipConfig, AdaptiveClipper, split_noise_multiplier
from dp.clipping import MAX_WEIGHT, sum_sensitivity
from dp.config import DPConfig
from dp.ledger import LedgerEntry, PrivacyBudget, PrivacyLedger
from dp.noise import GaussianGridMechanism
from privagg.errors import ProtocolAbort

__all__ = [
    "DPRounds",
    "DPRoundsDriver",
    "RoundPlan",
    "RoundOutcome",
    "noise_shares",
    "count_sensitivity",
    "update_mechanism",
    "count_mechanism",
]

#: slack for the floating-point products ``h * n`` and ``(1 - h) * n`` (``h = 0.7, n = 10``)
_EPS = 1e-9


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
    not know, as when clients draw the noise).
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
    ) -> None:
        self.ledger = PrivacyLedger(delta=delta, accountants=("rdp", "prv"), budget=budget)
        self.clipper = AdaptiveClipper(adaptive) if adaptive is not None else None
        self.clip_norm = clip_norm
        self.noise = noise
        self.honest_fraction = honest_fraction
        self.grid_resolution = grid_resolution
        self.total_weight = total_weight
        self.secure_noise = secure_noise

    @classmethod
    def from_config(cls, cfg: DPConfig, *, secure_noise: bool | None = None) -> DPRounds:
        budget = PrivacyBudget(epsilon=cfg.budget, delta=cfg.delta, accountant=cfg.accountant) if cfg.budget else None
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
            noise=cfg.noise,
            honest_fraction=cfg.honest_fraction,
            grid_resolution=cfg.grid_resolution,
            total_weight=cfg.total_weight,
            secure_noise=secure_noise,
        )

    @property
    def clip(self) -> float:
        """The clip norm of the next round (adaptive or fixed)."""
        return self.clipper.clip if self.clipper is not None else self.clip_norm

    def plan(self, *, noise_multiplier: float, sampling: Sampling, cohort: int, dim: int) -> RoundPlan:
        """Check the budget and fix the round's mechanisms (raises :class:`PrivacyBudgetExceeded`)."""
        z = noise_multiplier
        self.ledger.check(noise_multiplier=z, sampling=sampling)
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
            shares=noise_shares(self.honest_fraction, cohort) if self.noise == "client" else 1,
            mechanism=mech,
            count_mechanism=count_mech,
        )

    def finish(
        self,
        plan: RoundPlan,
        *,
        round: int,
        survivors: int,
        participants: int | None = None,
        noised_count: float = math.nan,
        clipped_fraction: float | None = None,
        **ledger_info: Any,
    ) -> RoundOutcome:
        """Account a round whose noised sum is known; raises :class:`ProtocolAbort` to withhold it.

        ``survivors``: the cohort's clients whose (noised) updates are in the sum;
        ``participants`` (default ``survivors``) is what the ledger records;
        ``noised_count``: the noised centred clip count (adaptive clipping);
        ``clipped_fraction``: the true clipped fraction, when the driver sees it (simulation);
        ``ledger_info``: more fields for the ledger entry, after the common ones.
        """
        z = plan.noise_multiplier
        z_effective = z
        if self.noise == "client":
            dishonest = math.floor((1.0 - self.honest_fraction) * plan.cohort + _EPS)
            honest_survivors = survivors - dishonest
            if honest_survivors <= 0:
                raise ProtocolAbort(
                    "too few honest noise contributors survived; aggregate withheld", stage="dp-noise", party="server"
                )
            if honest_survivors < plan.shares:
                z_effective = z * math.sqrt(honest_survivors / plan.shares)
                self.ledger.check(noise_multiplier=z_effective, sampling=plan.sampling)

        sampling = plan.sampling
        total_weight = (
            self.total_weight if self.total_weight is not None else (sampling.population or plan.cohort) * MAX_WEIGHT
        )
        denominator = sampling.rate * total_weight
        new_clip = plan.clip
        unclipped_est = math.nan
        if self.clipper is not None:
            unclipped_est = self.clipper.unclipped_fraction(noised_count, plan.expected_cohort)
            new_clip = self.clipper.update(unclipped_est)
        mech = plan.mechanism
        info: dict[str, Any] = {"clip_norm": plan.clip}
        if clipped_fraction is not None:
            info["clipped_fraction"] = clipped_fraction
        info.update(
            noise_std=mech.std * (z_effective / z),
            sensitivity=plan.sensitivity,
            cohort=plan.cohort,
            participants=survivors if participants is None else participants,
            **ledger_info,
        )
        entry = self.ledger.record(round=round, noise_multiplier=z_effective, sampling=sampling, **info)
        metrics: dict[str, Any] = {
            "dp_epsilon_rdp": entry.epsilon.get("rdp", math.nan),
            "dp_epsilon_prv": entry.epsilon.get("prv", math.nan),
            "dp_delta": self.ledger.delta,
            "dp_noise_multiplier": z,
            "dp_noise_multiplier_effective": z_effective,
            "dp_update_noise_multiplier": plan.update_noise_multiplier,
            "dp_clip_norm": plan.clip,
            "dp_next_clip_norm": new_clip,
        }
        if clipped_fraction is not None:
            metrics["dp_clipped_fraction"] = clipped_fraction
        metrics.update(
            {
                "dp_unclipped_estimate": unclipped_est,
                "dp_sensitivity": plan.sensitivity,
                "dp_noise_std": mech.std,
                "dp_noise_std_on_mean": mech.std / denominator,
                "dp_grid": mech.grid,
                "dp_noise": self.noise,
            }
        )
        if self.secure_noise is not None:
            metrics["dp_secure_noise"] = self.secure_noise
        metrics["dp_denominator"] = denominator
        return RoundOutcome(
            noise_multiplier_effective=z_effective,
            denominator=denominator,
            unclipped_estimate=unclipped_est,
            next_clip=new_clip,
            entry=entry,
            metrics=metrics,
        )


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
