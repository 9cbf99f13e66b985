"""DP-FedAvg: client-level differential privacy around any sum-computing aggregator.

:class:`DPFedAvg` (registered as ``"dp-fedavg"``) wraps an inner :class:`Aggregator` (mean,
secure aggregation, Paillier...). Each round it

1. checks the privacy budget *before* anything is computed, in particular before the inner
   (secure) aggregation, against the worst case the round could release: with client-side
   noise, the fewest survivors the inner aggregator still releases a sum for (its
   ``min_survivors(n)``, or the secure-aggregation threshold; every update otherwise)
   (:class:`PrivacyBudgetExceeded`);
2. clips every client's update to L2 norm ``C`` (conceptually on the client) and weights it
   with an a-priori bounded weight ``w_k <= 1`` (uniform, or McMahan et al.'s capped weights);
3. adds Gaussian noise of standard deviation ``z * sensitivity`` on a fine grid from the secure
   discrete-Gaussian sampler of :mod:`dp.noise`: either *centrally* (the server adds it to the
   aggregate) or *client-side* (each of the ``t = ceil(h * n)`` expected honest clients of the
   cohort adds a share of variance ``sigma^2 / t``, so the secure-aggregation sum carries the full
   noise);
4. delegates the (noised) per-client vectors to the inner aggregator with unit weights, turns its
   mean back into the sum and divides by the *fixed* denominator ``q * W`` (McMahan et al.'s
   fixed-denominator estimator; ``W`` = total weight of the population, public);
5. records the round in the privacy ledger (RDP and PRV epsilon), whatever happened after the
   inner aggregation, with its cohort (the roster the server sees, kept in the ledger and never
   published, for the guarantee against the server: :mod:`dp.server_view`), and, with adaptive
   clipping, moves the clip toward the target quantile from the noised unclipped count.

An empty cohort (Poisson sampling) is a round too: the release is noise alone, added by the
server, and it is accounted (``aggregates_empty_rounds``: the FedAvg loop calls
:meth:`DPFedAvg.aggregate` with no updates). No exact statistic is published: the true
clipped fraction is never in the metrics, and under Poisson sampling neither are the cohort
size, the survivors or the inner aggregator's own metrics (counts, bytes).

Steps 1, 3 (the noise split and shares) and 5, and the honest-survivor rule below, are
:class:`dp.rounds.DPRounds` (``plan`` / ``finish``), the same code the Flower strategy runs.

Sensitivity (L2, of the released sum): ``C * max_w`` under Poisson sampling (add/remove one
client), ``2 * C * max_w`` under fixed-size sampling (replace one client, the relation the
sampling-without-replacement bound is stated for). Example-count weights ``n_k / sum n`` have
no a-priori bound and are refused (use ``weighting = "capped"``).

Client-side noise assumption: at least ``honest_fraction`` of each cohort is honest (adds its
share and keeps it secret). After dropouts, the honest survivors are at least
``|participants| - floor((1 - h) * n)``; if that is below ``t`` the round's noise multiplier is
reduced accordingly (``z * sqrt(survivors / t)``) in the accounting. A round whose inner
aggregation could release a sum without an honest share is refused before it starts
(:class:`ProtocolAbort`), and one that released fewer survivors than it allows is recorded
truthfully and then withheld. Against the server itself the guarantee
only holds if the inner aggregator hides individual updates (secure aggregation); with a plain
mean, only the released model is protected.

:class:`SampleLevelDP` is a ``local_trainer`` running Opacus's DP-SGD inside each client
(example-level DP for each client's data), independent of the client-level guarantee above.

``[dp] noise = "distributed"`` runs distributed DP inside the secure sum instead (clip, rotate,
round, integer noise shares, sum mod ``2^bits``: :mod:`protocols.distributed_dp`,
:mod:`dp.distributed`), with the same ledger, budget and cohort rules.

Report sections (the ledger, the epsilon figure, the accuracy cost) are rendered by
:mod:`privagg.report.dp`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from dp.accounting import Accountant, Sampling, calibrate, make_accountant
from dp.clipping import MAX_WEIGHT, client_weights, clip_updates
from dp.config import DPConfig
from dp.exact import ExactSecureNoise
from dp.noise import GaussianGridMechanism, NoiseSampler, SecureNoise, SeededNoise
from dp.rounds import DPRounds, DPRoundsDriver, RoundPlan
from privagg.errors import ConfigurationError
from protocols.aggregation import (
    AggregateResult,
    Aggregator,
    ClientUpdate,
    RoundContext,
    build_aggregator,
    check_updates,
    register_aggregator,
)
from protocols.distributed_dp import DistributedDPRounds

__all__ = [
    "DPFedAvg",
    "DPFedAvgOptions",
    "wrap_with_dp",
    "sampling_from_context",
    "SampleLevelDP",
    "GUARANTEE_TEXT",
]

GUARANTEE_TEXT = (
    "Client-level (user-level) (epsilon, delta)-differential privacy of the sequence of released global "
    "models: for any client, whatever its data, adding or removing all of its updates (Poisson sampling; "
    "replacing them for fixed-size sampling) changes the probability of any set of outcomes by at most a "
    "factor e^epsilon plus delta. It protects every update of one client at once, across all rounds; it "
    "holds against anyone who sees the models, and against the server only when noise is client-side and "
    "the inner aggregator hides individual updates (secure aggregation). Sample-level DP (Opacus DP-SGD "
    "inside a client) is a different, weaker unit: it protects one training example of one client, "
    "as seen in that client's updates."
)


def sampling_from_context(ctx: RoundContext) -> Sampling:
    """The round's sampling scheme as the accountant needs it."""
    if ctx.sampling == "poisson":
        return Sampling.poisson(rate=ctx.sampling_rate, population=ctx.population)
    if ctx.sampling == "fixed":
        return Sampling.fixed(sample_size=len(ctx.sampled), population=ctx.population)
    raise ConfigurationError(f"unknown sampling {ctx.sampling!r}", field="sampling", accepted=["poisson", "fixed"])


@dataclass(frozen=True)
class DPFedAvgOptions:
    """``aggregation.options`` of the ``"dp-fedavg"`` aggregator.

    ``dp``: the DP settings (a ``[dp]`` table); ``inner``/``inner_options``: the aggregator
    computing the sum (registered name and its options); ``population``/``rounds``: fixed
    when known (calibrating from ``target_epsilon`` needs ``rounds``).
    """

    dp: DPConfig | None = None
    inner: str = "mean"
    inner_options: dict[str, Any] = field(default_factory=dict)
    population: int | None = None
    rounds: int | None = None

    def __post_init__(self) -> None:
        if self.dp is None:
            raise ConfigurationError("the DP settings are required (noise_multiplier or target_epsilon)", field="dp")


@register_aggregator("dp-fedavg")
class DPFedAvg(DPRoundsDriver, Aggregator):
    """Client-level DP around ``inner``; see the module docstring for the mechanism."""

    name = "dp-fedavg"
    needs_plaintext_updates = False
    aggregates_empty_rounds: ClassVar[bool] = True  # an empty Poisson cohort releases noise, accounted
    Options: ClassVar[type[DPFedAvgOptions]] = DPFedAvgOptions

    def __init__(
        self,
        inner: Aggregator,
        *,
        config: DPConfig,
        population: int | None = None,
        rounds: int | None = None,
        sampling: Sampling | None = None,
        noise_sampler: NoiseSampler | None = None,
        cohorts: str | None = None,
    ) -> None:
        if not isinstance(config, DPConfig):
            raise ConfigurationError(f"expected a DPConfig, got {type(config).__name__}", field="dp")
        if inner.needs_plaintext_updates:
            raise ConfigurationError(
                f"the {inner.name!r} aggregator is not a (weighted) sum: DP-FedAvg's sensitivity bound does not apply",
                field="dp.inner",
                accepted="sum/mean aggregators (mean, secagg, paillier, ...)",
            )
        config.check_population(population)
        self.config = config
        self.inner = inner
        self.population = population
        self.rounds = rounds
        if noise_sampler is None:
            if config.exact_sampler:
                noise_sampler = ExactSecureNoise()
            else:
                noise_sampler = SecureNoise() if config.secure_noise else SeededNoise(int(config.seed or 0))
        self.sampler = noise_sampler
        self.distributed: DistributedDPRounds | None = None
        if config.noise == "distributed":
            self.distributed = DistributedDPRounds(config, population=population, rounds=rounds)
            config_for_rounds = dataclasses.replace(config, ledger_path=None)  # the distributed ledger is durable
            self.dp_rounds = DPRounds.from_config(config_for_rounds, secure_noise=self.distributed.noise.secure)
            self.dp_rounds.cohorts = cohorts
            self.dp_rounds.ledger = self.distributed.ledger
        else:
            self.dp_rounds = DPRounds.from_config(config, secure_noise=bool(noise_sampler.secure), cohorts=cohorts)
        self.noise_multiplier: float | None = config.noise_multiplier
        #: the true clipped fraction per round: a simulation diagnostic for the operator's warning
        #: (``privagg.report.dp.dp_warnings``), NOT a DP output (never in metrics, ledger or report)
        self.operator_clipped_fractions: list[float] = []
        self._sampling: Sampling | None = sampling
        if sampling is not None and self.noise_multiplier is None and self.distributed is None:
            self._calibrate(sampling)

    @classmethod
    def from_options(cls, options: DPFedAvgOptions) -> DPFedAvg:
        inner = build_aggregator(options.inner, options.inner_options, path="aggregation.options.inner")
        assert options.dp is not None  # refused by DPFedAvgOptions
        return cls(inner, config=options.dp, population=options.population, rounds=options.rounds)

    @property
    def sampling(self) -> Sampling | None:
        """The sampling scheme of the rounds so far (``None`` before the first round, unless given)."""
        return self._sampling

    # -- calibration ----------------------------------------------------------------------
    def _calibrate(self, sampling: Sampling) -> float:
        cfg = self.config
        if self.rounds is None:
            raise ConfigurationError("calibrating from target_epsilon needs the number of rounds", field="dp.rounds")
        assert cfg.target_epsilon is not None
        self.noise_multiplier = calibrate(
            target_epsilon=cfg.target_epsilon,
            delta=cfg.delta,
            rounds=self.rounds,
            sampling=sampling,
            accountant=cfg.accountant,
        )
        return self.noise_multiplier

    # -- one round ------------------------------------------------------------------------
    def min_survivors(self, n: int) -> int:
        """The fewest of ``n`` updates the inner aggregator may release a sum of.

        :meth:`Aggregator.min_survivors` of the inner aggregator (an aggregator that returns fewer
        participants than it declared is caught in :meth:`DPRounds.finish`).
        """
        return int(self.inner.min_survivors(n))

    def min_cohort(self) -> int:
        """The inner protocol's smallest cohort (an empty Poisson cohort still releases noise, accounted)."""
        return self.inner.min_cohort()

    def cohort_fault(self, n: int) -> str | None:
        """The inner protocol's refusal of a cohort of ``n`` clients (see :meth:`refuse`)."""
        return self.inner.cohort_fault(n)

    def refuse(self, updates: Sequence[ClientUpdate], ctx: RoundContext, reason: str) -> AggregateResult:
        """A round whose cohort the inner protocol refuses: nothing is released, and it is still charged.

        The cohort was drawn (Poisson sampling ran), and the accounting composes every round, so the
        round is recorded in the ledger at the noise it would have released with (the budget is
        checked first, as for any round), with its roster, ``refused`` in the ledger row. The delta
        is zero and ``refused`` is set: the loop leaves the model as it was.
        """
        dim = int(np.asarray(ctx.global_params).size) if ctx.global_params is not None else check_updates(updates)
        sampling = self._round_sampling(updates, ctx)
        roster = [u.client_id for u in updates]
        if self.distributed is not None:
            metrics = self.distributed.refuse(
                len(updates),
                round=ctx.round,
                sampling=sampling,
                dim=dim,
                inner=self.inner,
                roster=roster,
                reason=reason,
            )
        else:
            z = self.noise_multiplier if self.noise_multiplier is not None else self._calibrate(sampling)
            plan = self.dp_rounds.plan(noise_multiplier=z, sampling=sampling, cohort=0, dim=dim, roster=roster)
            metrics = self.dp_rounds.finish(plan, round=ctx.round, survivors=0, roster=roster, refused=reason).metrics
        metrics = {**metrics, "round_refused": reason}
        return AggregateResult(delta=np.zeros(dim), participants=(), metrics=metrics, refused=reason)

    def _round_sampling(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> Sampling:
        """The round's sampling scheme, checked against the configuration and the rounds so far."""
        if self.population is not None and ctx.population != self.population:
            raise ConfigurationError(
                f"round population {ctx.population} differs from the configured {self.population}", field="population"
            )
        if self.population is None:
            self.config.check_population(ctx.population)
        sampling = sampling_from_context(ctx) if updates or ctx.sampling == "poisson" else None
        if sampling is None:
            raise ConfigurationError("an empty round only happens under Poisson sampling", field="sampling")
        if self._sampling is not None and self._sampling.kind != sampling.kind:
            raise ConfigurationError("the sampling scheme changed between rounds", field="sampling")
        self._sampling = sampling
        return sampling

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        cfg = self.config
        if updates:
            dim = check_updates(updates)
        elif ctx.global_params is not None:
            dim = int(np.asarray(ctx.global_params).size)
        else:
            raise ConfigurationError(
                "an empty round needs the global model's size (ctx.global_params)", field="updates"
            )
        sampling = self._round_sampling(updates, ctx)
        if self.distributed is not None:  # clip, rotate, round, integer noise shares, secure sum mod 2^b
            weights = self.client_weights(updates) if updates else np.zeros(0)
            result = self.distributed.run(updates, weights, ctx, sampling=sampling, dim=dim, inner=self.inner)
            self.noise_multiplier = result.metrics["dp_noise_multiplier"]  # Gaussian-equivalent, for display
            if updates:
                clipped = clip_updates([u.delta for u in updates], self.config.clip_norm)
                self.operator_clipped_fractions.append(float(1.0 - clipped.unclipped.mean()))
            return result
        z = self.noise_multiplier if self.noise_multiplier is not None else self._calibrate(sampling)

        # 1. budget for the worst case, before anything is computed or released; the noise split
        n = len(updates)
        plan = self.dp_rounds.plan(
            noise_multiplier=z,
            sampling=sampling,
            cohort=n,
            dim=dim,
            min_survivors=self.min_survivors(n) if n else 0,
            roster=[u.client_id for u in updates],
        )
        mech, count_mech = plan.mechanism, plan.count_mechanism
        if n == 0:  # an empty cohort: the release is the server's noise alone
            noisy_u = self.empty_release(plan, dim)
            noisy_b = count_mech.release(np.zeros(1), self.sampler) if count_mech is not None else np.zeros(0)
            outcome = self.dp_rounds.finish(
                plan,
                round=ctx.round,
                survivors=0,
                noised_count=float(noisy_b[0]) if noisy_b.size else math.nan,
                roster=(),
            )
            return AggregateResult(delta=noisy_u / outcome.denominator, participants=(), metrics=outcome.metrics)

        # 2. clip and weight (each client, conceptually on its device)
        res = clip_updates([u.delta for u in updates], plan.clip)
        self.operator_clipped_fractions.append(float(1.0 - res.unclipped.mean()))
        assert cfg.weighting != "examples"  # refused by DPConfig: unbounded sensitivity
        w = self.client_weights(updates)
        contrib = res.clipped * w[:, None]
        centered = res.unclipped.astype(np.float64) - 0.5

        # 3. noise (client shares or central) and the inner aggregation of the sum
        client_noise = not plan.central
        if client_noise:
            self._check_inner_range(plan)
        vectors = []
        for k in range(n):
            vec = contrib[k]
            cnt = centered[k : k + 1]
            if client_noise:
                vec = mech.release(vec, self.sampler, shares=plan.shares)
                if count_mech is not None:
                    cnt = count_mech.release(cnt, self.sampler, shares=plan.shares)
            vectors.append(np.concatenate([vec, cnt]) if count_mech is not None else vec)
        inner_updates = [
            ClientUpdate(client_id=u.client_id, delta=v, num_examples=1) for u, v in zip(updates, vectors, strict=True)
        ]
        inner_result = self.inner.aggregate(inner_updates, ctx)
        participants = tuple(inner_result.participants)
        total = np.asarray(inner_result.delta, dtype=np.float64) * len(participants)
        noisy_u, noisy_b = total[:dim], total[dim:]
        if not client_noise:
            noisy_u = mech.release(noisy_u, self.sampler)
            noisy_b = count_mech.release(noisy_b, self.sampler) if count_mech is not None else noisy_b

        # 4. honest survivors, ledger (always), fixed-denominator estimate, adaptive clip
        outcome = self.dp_rounds.finish(
            plan,
            round=ctx.round,
            survivors=len(set(participants) & {u.client_id for u in updates}),
            noised_count=float(noisy_b[0]) if count_mech is not None else math.nan,
            roster=[u.client_id for u in updates],  # the whole cohort, survivors or not (an upper bound)
        )
        # the inner aggregator's metrics count clients and bytes: public only under fixed-size sampling
        metrics = dict(inner_result.metrics) if sampling.kind == "fixed" else {}
        metrics.update(outcome.metrics)
        return AggregateResult(delta=noisy_u / outcome.denominator, participants=participants, metrics=metrics)

    def client_weights(self, updates: Sequence[ClientUpdate]) -> np.ndarray:
        """Each update's a-priori bounded weight (<= MAX_WEIGHT), the one place the weights are computed."""
        cfg = self.config
        assert cfg.weighting != "examples"  # refused by DPConfig: unbounded sensitivity
        return client_weights([u.num_examples for u in updates], weighting=cfg.weighting, weight_cap=cfg.weight_cap)

    def empty_release(self, plan: RoundPlan, dim: int) -> np.ndarray:
        """What an empty cohort releases: the server's noise alone (accounted like any round)."""
        return plan.mechanism.release(np.zeros(dim), self.sampler)

    def _check_inner_range(self, plan: RoundPlan) -> None:
        """Refuse client-side noise that the inner encoder would clip per coordinate.

        Secure aggregation and Paillier encode each coordinate into ``[-clip, clip]``; clipping a
        noise share there would cut the tails of the noise in the sum, a weaker mechanism than the
        one accounted. The inner range must hold the update plus 8 share standard deviations.
        """
        bound = getattr(self.inner, "clip", None)
        if not isinstance(bound, (int, float)):
            return
        shares = plan.shares
        need = plan.clip * MAX_WEIGHT + 8.0 * plan.mechanism.std / math.sqrt(shares)
        count_mech: GaussianGridMechanism | None = plan.count_mechanism
        if count_mech is not None:
            need = max(need, 0.5 + 8.0 * count_mech.std / math.sqrt(shares))
        if bound < need:
            raise ConfigurationError(
                f"the inner {self.inner.name!r} aggregator encodes coordinates in [-{bound:g}, {bound:g}], too narrow "
                f"for client-side DP noise shares (needs >= {need:.4g}, i.e. update + 8 share std)",
                field="aggregation.clip",
            )


def wrap_with_dp(
    inner: Aggregator, config: DPConfig, *, population: int, rounds: int, cohorts: str | None = None
) -> DPFedAvg:
    """Wrap ``inner`` with DP-FedAvg for a run of ``rounds`` rounds over ``population`` clients.

    ``cohorts`` labels how the driver draws cohorts (``dp.rounds.SECRET_COHORTS`` or
    ``REPRODUCIBLE_COHORTS``), shown in the metrics and the report.
    """
    return DPFedAvg(inner, config=config, population=population, rounds=rounds, cohorts=cohorts)


class SampleLevelDP:
    """A ``local_trainer`` running Opacus DP-SGD (Poisson batches, per-example clipping) in each client.

    Use as ``FedAvgSimulation(cfg, local_trainer=SampleLevelDP(noise_multiplier=1.0,
    max_grad_norm=1.0))``. Each client's data has its own RDP accountant (keyed by a SHA-256
    fingerprint of the data, so repeated rounds compose); :meth:`epsilon` reports the worst
    client. The guarantee is *example-level*: one training example of one client. Opacus
    draws its noise from a ``torch.Generator`` seeded from ``os.urandom`` (floating-point
    Gaussian); Opacus's ``secure_mode`` needs ``torchcsprng``. Training runs the one local
    loop (:func:`protocols.training.train_steps`) over Opacus's optimizer and Poisson batches.
    """

    def __init__(
        self, *, noise_multiplier: float, max_grad_norm: float, delta: float = 1e-5, secure_mode: bool = False
    ) -> None:
        if not noise_multiplier > 0:
            raise ConfigurationError(f"must be > 0, got {noise_multiplier}", field="noise_multiplier")
        if not max_grad_norm > 0:
            raise ConfigurationError(f"must be > 0, got {max_grad_norm}", field="max_grad_norm")
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.delta = delta
        self.secure_mode = secure_mode
        self.accountants: dict[str, Accountant] = {}
        if not secure_mode:
            warnings.warn(
                "sample-level DP: Opacus draws its Gaussian noise from a torch.Generator seeded from os.urandom, "
                "not from a CSPRNG (Opacus's secure_mode needs torchcsprng)",
                UserWarning,
                stacklevel=2,
            )

    def __call__(self, model: Any, x: np.ndarray, y: np.ndarray, cfg: Any, *, generator: Any) -> None:
        import os

        import torch
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset

        from protocols.training import train_steps  # torch only when a client trains with DP-SGD

        if len(x) == 0:
            return
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        batch = min(cfg.batch_size, len(xt))
        loader = DataLoader(TensorDataset(xt, yt), batch_size=batch, shuffle=True, generator=generator)
        local = copy.deepcopy(model)
        opt = cfg.make_optimizer([p for p in local.parameters() if p.requires_grad])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Secure RNG turned off")  # warned once in __init__
            engine = PrivacyEngine(accountant="rdp", secure_mode=self.secure_mode)
        noise_gen = torch.Generator()
        noise_gen.manual_seed(int.from_bytes(os.urandom(8), "big") >> 1)
        local, opt, loader = engine.make_private(
            module=local,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            poisson_sampling=True,
            noise_generator=None if self.secure_mode else noise_gen,
        )
        # Poisson batches may be empty: the step still adds noise
        batches = itertools.chain.from_iterable(loader for _ in range(cfg.epochs))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")  # inputs need no grad
            train_steps(local, opt, batches)
        model.load_state_dict(local._module.state_dict())
        key = hashlib.sha256(xt.numpy().tobytes() + yt.numpy().tobytes()).hexdigest()
        acc = self.accountants.setdefault(key, make_accountant("rdp"))
        steps = cfg.epochs * len(loader)
        acc.step(noise_multiplier=self.noise_multiplier, sampling=Sampling.poisson(rate=batch / len(xt)), count=steps)

    def epsilons(self) -> list[float]:
        """Each client's example-level epsilon so far, in increasing order."""
        return sorted(a.get_epsilon(self.delta) for a in self.accountants.values())

    def epsilon(self) -> float:
        """The largest example-level epsilon over the clients trained so far."""
        return max((a.get_epsilon(self.delta) for a in self.accountants.values()), default=0.0)
