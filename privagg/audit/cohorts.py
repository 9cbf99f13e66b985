"""A configured graph judged over the Poisson cohort sizes, not only at the expected cohort ``q N``.

With Poisson sampling at rate ``q`` over ``N`` clients a round's cohort is ``C ~ Binomial(N, q)``;
the secure sum runs every cohort of at least ``m`` clients (:func:`secure_floor`, the run's
minimum) over the configured graph built for *that* cohort (:meth:`Deployment.configured_params`:
a degree wider than the cohort is its complete graph, the threshold at most ``c - 1``). A smaller
cohort that still runs has a weaker graph, so the per-round privacy (and round-failure) probability
is the mixture

    P_round = sum over c >= m of P[C = c] * bound(c)

(a refused cohort releases nothing: it contributes no privacy failure; its cost is the DP
refusal delta of :mod:`dp.refusal`). :func:`cohort_mixture` computes it exactly over the window
``[low, high]`` of cohorts that run whose probability is at least ``2^tail_log2 / (N + 1)``, and adds,
as an upper bound, the probability of every cohort that runs outside it (each ``bound(c)`` is a
probability, at most 1): ``tail = P[m <= C < low] + P[C > high] < 2^tail_log2``.
It also names the cohort where each bound is worst. A derived graph needs none of this: the run
derives each cohort's own graph for the targets (or refuses the cohort).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from privagg.errors import ConfigurationError

if TYPE_CHECKING:
    from privagg.audit.config import Deployment

__all__ = ["CohortMixture", "cohort_mixture", "graph_mixture", "secure_floor"]

#: cohorts less likely than 2^TAIL_LOG2 (each tail) are counted with bound 1 rather than computed
TAIL_LOG2 = -100.0


@dataclass(frozen=True)
class CohortMixture:
    """Per-round probabilities mixed over ``C ~ Binomial(population, rate)`` (module docstring).

    ``security_log2`` / ``failure_log2``: log2 of the mixtures (the tail included); ``runs``:
    ``P[C >= min_cohort]``; ``tail``: the probability of the cohorts outside ``[low, high]``, counted with
    bound 1; ``worst_*``: the cohort in the window where that bound is largest, and its log2 bound.
    """

    population: int
    rate: float
    min_cohort: int
    low: int
    high: int
    runs: float
    tail: float
    security_log2: float
    failure_log2: float
    worst_security_cohort: int
    worst_security_log2: float
    worst_failure_cohort: int
    worst_failure_log2: float
    #: log2 P[C = c] of the two worst cohorts (a bad cohort may be a rare one)
    worst_security_weight_log2: float = -math.inf
    worst_failure_weight_log2: float = -math.inf

    def describe(self) -> str:
        return (
            f"mixed over the Poisson cohort sizes C ~ Binomial({self.population}, {self.rate:g}) of the rounds that "
            f"run (C >= {self.min_cohort}, probability {self.runs:.4g}): per round, privacy failure "
            f"{_log2(self.security_log2)} (worst cohort {self.worst_security_cohort}: "
            f"{_log2(self.worst_security_log2)}, drawn with probability {_log2(self.worst_security_weight_log2)}), "
            f"round failure {_log2(self.failure_log2)} (worst cohort {self.worst_failure_cohort}: "
            f"{_log2(self.worst_failure_log2)}, probability {_log2(self.worst_failure_weight_log2)}); exact over "
            f"cohorts {self.low}..{self.high}, the rest (probability {self.tail:.3g}) counted as failing"
        )


def _log2(v: float) -> str:
    return "0" if v == 0 else ("2^-inf" if v == -math.inf else f"2^{v:.1f}")


def _log2_sum(terms: np.ndarray) -> float:
    finite = terms[np.isfinite(terms)]
    return float(np.logaddexp2.reduce(finite)) if finite.size else -math.inf


def cohort_mixture(
    bounds: Callable[[int], tuple[float, float]],
    *,
    population: int,
    rate: float,
    min_cohort: int,
    tail_log2: float = TAIL_LOG2,
) -> CohortMixture:
    """The mixture of ``bounds(c) = (security_log2, failure_log2)`` over the cohorts ``c >= min_cohort`` of
    ``Binomial(population, rate)`` (module docstring); ``bounds`` is called once per cohort of the window."""
    from scipy.stats import binom

    n, q, m = int(population), float(rate), int(min_cohort)
    log2_pmf = binom.logpmf(np.arange(n + 1), n, q) / math.log(2.0)
    # the window: cohorts that run and are not negligible; every cohort outside it has probability below
    # 2^tail_log2 / (n + 1), so together they weigh less than 2^tail_log2 (the pmf is unimodal: one interval)
    keep = np.flatnonzero(log2_pmf >= tail_log2 - math.log2(n + 1))
    low, high = max(m, int(keep[0])), int(keep[-1])
    outside = np.concatenate([log2_pmf[m:low], log2_pmf[high + 1 :]]) if high >= low else log2_pmf[m:]
    tail = 2.0 ** _log2_sum(outside)
    runs = float(2.0 ** _log2_sum(log2_pmf[m:]))
    cohorts = np.arange(low, high + 1)
    if cohorts.size == 0:  # no cohort that runs is likely: every one counted with bound 1
        mixed = math.log2(tail) if tail > 0 else -math.inf
        return CohortMixture(n, q, m, low, high, runs, tail, mixed, mixed, low, 0.0, low, 0.0)
    weight = log2_pmf[low : high + 1]
    sec, fail = (np.array(v, dtype=np.float64) for v in zip(*(bounds(int(c)) for c in cohorts), strict=True))
    extra = math.log2(tail) if tail > 0 else -math.inf
    mixed_sec = float(np.logaddexp2(_log2_sum(weight + sec), extra))
    mixed_fail = float(np.logaddexp2(_log2_sum(weight + fail), extra))
    i, j = int(np.argmax(sec)), int(np.argmax(fail))
    worst = (int(cohorts[i]), float(sec[i]), int(cohorts[j]), float(fail[j]), float(weight[i]), float(weight[j]))
    return CohortMixture(n, q, m, low, high, runs, tail, mixed_sec, mixed_fail, *worst)


def secure_floor(dep: Deployment) -> int:
    """The smallest cohort the deployment's secure sum runs: 3, or the smallest population its graph
    (configured, or derived without grinding, as the run's aggregator builds it) exists for; searched
    assuming a larger cohort is never harder to secure; the whole deployment when none is."""
    from secagg.params import smallest_cohort

    limit = max(3, dep.num_clients)
    return (
        smallest_cohort(
            lambda n: dep.configured_params(n) or dep.derived_params(n, grinding=False), start=3, limit=limit
        )
        or limit
    )


def graph_mixture(dep: Deployment, *, rate: float) -> CohortMixture | None:
    """:func:`cohort_mixture` of the deployment's *configured* graph under Poisson sampling at ``rate``
    (``None``: a derived graph, built for each cohort's own size by the run)."""
    if dep.configured_params(dep.num_clients) is None:
        return None

    def bounds(c: int) -> tuple[float, float]:
        try:
            params = dep.configured_params(c)
        except ConfigurationError:  # no graph for this cohort: refused, nothing released, nothing fails
            return -math.inf, -math.inf
        assert params is not None
        return params.security_log2(dep.corruption_rate, dep.dropout_rate), params.failure_log2(dep.dropout_rate)

    return cohort_mixture(bounds, population=dep.num_clients, rate=rate, min_cohort=secure_floor(dep))
