"""Planted DP bugs: each a subclass overriding the one real method that computes the broken quantity.

Switched on only in tests, by handing the canary audit a ``dp-fedavg`` aggregator built the way
``privagg run`` builds it (:func:`privagg.audit.canaries.build_dp_aggregator`) and then given
the buggy part:

* :class:`HalfSensitivityRounds` -- ``DPRounds.plan`` calibrates the noise to half the
  sensitivity (the ledger still records the configured noise multiplier);
* :class:`NoRecalibrationRounds` -- ``DPRounds.finish`` accounts every round as if the whole
  cohort had added its noise share, even when clients dropped (client-side noise);
* :class:`UncappedWeights` -- ``DPFedAvg.client_weights`` without the cap: weighted averaging
  (``n_k / weight_cap``, above 1 for large clients) under the unweighted sensitivity ``C``;
* :class:`NoEmptyNoise` -- ``DPFedAvg.empty_release`` releases exact zeros for an empty cohort
  (the round is still accounted);
* :class:`TenthNoiseRounds` -- the update noise is ``sigma / 10`` (the ledger charges ``sigma``);
* :class:`NoClipRounds` -- the updates are not clipped (the noise is still sized for ``C``);
* :class:`DoubleCounted` -- every client's clipped update enters the sum twice (sensitivity ``2C``,
  accounted ``C``);
* :class:`UnchargedCountRounds` -- adaptive clipping's noised clip count is released but not
  charged: the updates carry the whole noise multiplier as if there were no count release;
* :class:`SmallerShares` -- distributed DP: each client's integer noise share is half the
  planned ``sigma / sqrt(t)`` (the ledger charges the planned mechanism);
* :class:`UnledgeredRounds` -- every even round is released but its ledger entry is dropped (the
  accountant composes half the releases);
* :class:`ReusedNoise` -- the noise sampler restarts from the same seed at every draw (each
  round's noise is the same vector: two releases differ by the difference of two exact sums).

:class:`AdversarialDropouts` is the fault the recalibration exists for: an inner mean whose
survivors exclude real clients only (the canary, a target, always survives), as a server that
declares honest clients dropped would arrange.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from dp.clipping import MAX_WEIGHT
from dp.distributed_encoding import IntegerNoise
from dp.noise import GaussianGridMechanism, WordSource, discrete_gaussian
from dp.rounds import DPRounds, RoundOutcome, RoundPlan
from privagg.audit.canaries import build_dp_aggregator
from privagg.randomness import simulation_rng
from protocols.aggregation import AggregateResult, ClientUpdate, MeanAggregator, RoundContext
from protocols.dp_fedavg import DPFedAvg

__all__ = [
    "AdversarialDropouts",
    "DoubleCounted",
    "NoClipRounds",
    "SlightlyLessNoiseRounds",
    "TenthNoiseRounds",
    "UnchargedCountRounds",
    "HalfSensitivityRounds",
    "NoEmptyNoise",
    "NoRecalibrationRounds",
    "ReusedNoise",
    "SmallerShares",
    "UncappedWeights",
    "UnledgeredRounds",
    "planted_aggregator",
]


class HalfSensitivityRounds(DPRounds):
    """Bug: the update noise is calibrated to half the L2 sensitivity."""

    def plan(self, **kwargs: Any) -> RoundPlan:
        plan = super().plan(**kwargs)
        m = plan.mechanism
        half = GaussianGridMechanism.create(
            sensitivity=m.sensitivity / 2,
            noise_multiplier=m.noise_multiplier,
            dim=m.dim,
            resolution=self.grid_resolution,
        )
        return dataclasses.replace(plan, mechanism=half)


class TenthNoiseRounds(DPRounds):
    """Bug: the update noise is a tenth of the accounted one (noise multiplier ``z * factor``, factor 1/10)."""

    factor = 0.1

    def plan(self, **kwargs: Any) -> RoundPlan:
        plan = super().plan(**kwargs)
        m = plan.mechanism
        less = GaussianGridMechanism.create(
            sensitivity=m.sensitivity,
            noise_multiplier=m.noise_multiplier * self.factor,
            dim=m.dim,
            resolution=self.grid_resolution,
        )
        return dataclasses.replace(plan, mechanism=less)


class SlightlyLessNoiseRounds(TenthNoiseRounds):
    """Bug: the update noise is 0.8 of the accounted one (a fault near the audit's power limit)."""

    factor = 0.8


class NoClipRounds(DPRounds):
    """Bug: clipping skipped (the updates are clipped to a norm no update reaches; the noise is sized for ``C``)."""

    def plan(self, **kwargs: Any) -> RoundPlan:
        return dataclasses.replace(super().plan(**kwargs), clip=1e12)


class UnchargedCountRounds(DPRounds):
    """Bug: adaptive clipping's count release is not charged: the updates get the whole ``z``, not the
    split ``z_update`` (:func:`dp.adaptive.split_noise_multiplier`), and the count is released besides."""

    def plan(self, **kwargs: Any) -> RoundPlan:
        plan = super().plan(**kwargs)
        m = plan.mechanism
        whole = GaussianGridMechanism.create(
            sensitivity=m.sensitivity,
            noise_multiplier=plan.noise_multiplier,
            dim=m.dim,
            resolution=self.grid_resolution,
        )
        return dataclasses.replace(plan, mechanism=whole, update_noise_multiplier=plan.noise_multiplier)


class NoRecalibrationRounds(DPRounds):
    """Bug: the client noise is split as if the whole cohort survived, and every round is accounted so
    (the noise is neither sized for the fewest survivors the protocol allows nor recalibrated after
    dropouts): a sum of fewer survivors carries less noise than the ledger says."""

    def plan(self, *, cohort: int, min_survivors: int | None = None, **kwargs: Any) -> RoundPlan:
        return super().plan(cohort=cohort, min_survivors=cohort, **kwargs)

    def finish(self, plan: RoundPlan, *, round: int, survivors: int, **kwargs: Any) -> RoundOutcome:
        return super().finish(plan, round=round, survivors=plan.cohort, **kwargs)


class UnledgeredRounds(DPRounds):
    """Bug: every even round is released but not charged (its ledger entry is dropped after recording)."""

    def finish(self, plan: RoundPlan, *, round: int, survivors: int, **kwargs: Any) -> RoundOutcome:
        out = super().finish(plan, round=round, survivors=survivors, **kwargs)
        if round % 2 == 0:
            self.ledger.entries.pop()
        return out


class UncappedWeights(DPFedAvg):
    """Bug: ``client_weights`` without the cap (``n_k / weight_cap``, above ``MAX_WEIGHT`` for large clients)."""

    def client_weights(self, updates: Sequence[ClientUpdate]) -> np.ndarray:
        cfg = self.config
        n = np.array([u.num_examples for u in updates], dtype=np.float64)
        if cfg.weighting == "capped" and cfg.weight_cap is not None:
            return n / cfg.weight_cap  # no min(., MAX_WEIGHT): the sensitivity C * MAX_WEIGHT no longer holds
        return super().client_weights(updates)


class DoubleCounted(DPFedAvg):
    """Bug: each client is counted twice (its clipped update enters the sum twice: weight ``2 w_k``)."""

    def client_weights(self, updates: Sequence[ClientUpdate]) -> np.ndarray:
        return 2.0 * super().client_weights(updates)


class NoEmptyNoise(DPFedAvg):
    """Bug: an empty cohort releases exact zeros (accounted as a noised round all the same)."""

    def empty_release(self, plan: RoundPlan, dim: int) -> np.ndarray:
        return np.zeros(dim)


class ReusedNoise:
    """Bug: every draw restarts a seeded sampler from one seed (a fixed key, or a counter that never moves)."""

    secure = True  # what the broken sampler claims

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def discrete_gaussian(self, sigma: float, size: int) -> np.ndarray:
        rng = simulation_rng(self.seed, "reused-noise")  # the same stream at every draw

        def words(n: int) -> np.ndarray:
            return rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)

        return discrete_gaussian(sigma, size, words)


class SmallerShares(IntegerNoise):
    """Bug (distributed DP): every client's noise share is ``factor`` of the planned one."""

    factor = 0.5

    def share(self, mechanism: str, sigma: float, n: int, words: WordSource) -> np.ndarray:
        return super().share(mechanism, sigma * self.factor, n, words)


class AdversarialDropouts(MeanAggregator):
    """A sum whose survivors exclude up to ``rate`` of the cohort, real clients (ids < ``population``) only."""

    name = "adversarial-dropouts"

    def __init__(self, *, rate: float, population: int) -> None:
        super().__init__(weighted=False)
        self.rate = rate
        self.population = population

    def min_survivors(self, n: int) -> int:
        return n - math.floor(self.rate * n)

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        budget = math.floor(self.rate * len(updates))
        dropped = {u.client_id for u in updates if u.client_id < self.population}
        dropped = set(sorted(dropped)[:budget])
        kept = [u for u in updates if u.client_id not in dropped]
        return super().aggregate(kept, ctx)


Bug = Literal[
    "half-sensitivity",
    "no-recalibration",
    "uncapped-weights",
    "no-empty-noise",
    "dropouts",
    "tenth-noise",
    "noise-x0.8",
    "no-clip",
    "double-counted",
    "uncharged-count",
    "reused-noise",
    "smaller-shares",
    "unledgered",
    "none",
]
_ROUNDS: dict[str, type[DPRounds]] = {
    "half-sensitivity": HalfSensitivityRounds,
    "tenth-noise": TenthNoiseRounds,
    "noise-x0.8": SlightlyLessNoiseRounds,
    "no-clip": NoClipRounds,
    "unledgered": UnledgeredRounds,
    "uncharged-count": UnchargedCountRounds,
}


def planted_aggregator(run: Any, bug: Bug, *, dropout_rate: float = 0.5) -> DPFedAvg:
    """The aggregator ``privagg run`` builds for ``run``, with ``bug`` planted.

    ``"none"``: as built; ``"dropouts"``: the correct mechanism under :class:`AdversarialDropouts`
    (the control of ``"no-recalibration"``).
    """
    agg: DPFedAvg = build_dp_aggregator(run)
    dp = run.dp
    if bug in _ROUNDS:
        agg.dp_rounds = _ROUNDS[bug].from_config(dp, secure_noise=True)
    elif bug in ("no-recalibration", "dropouts"):
        agg.inner = AdversarialDropouts(rate=dropout_rate, population=run.data.num_clients)
        if bug == "no-recalibration":
            agg.dp_rounds = NoRecalibrationRounds.from_config(dp, secure_noise=True)
    elif bug == "reused-noise":
        agg.sampler = ReusedNoise()
    elif bug == "smaller-shares":
        assert agg.distributed is not None, "smaller-shares plants into distributed DP"
        seed = dp.seed if not dp.secure_noise else None
        agg.distributed.noise = SmallerShares(seed=seed)
    elif bug in ("no-empty-noise", "uncapped-weights", "double-counted"):
        cls = {"no-empty-noise": NoEmptyNoise, "uncapped-weights": UncappedWeights, "double-counted": DoubleCounted}
        agg = cls[bug](agg.inner, config=dp, population=run.data.num_clients, rounds=run.federation.rounds)
    return agg


assert MAX_WEIGHT == 1.0  # the uncapped weights exceed this a-priori bound
