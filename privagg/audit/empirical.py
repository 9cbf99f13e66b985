"""Empirical privacy: epsilon lower bounds from canary scores, with exact confidence.

A canary audit (:mod:`privagg.audit.canaries`) gives every canary a score (higher: more
likely included) and knows which canaries were really included. Three ways turn those
scores into an epsilon lower bound at a stated confidence:

* :func:`gaussian_fit` (Andrew et al., ICLR 2024, one-shot empirical privacy estimation):
  fit one Gaussian to the included canaries' scores and one to the held-out ones (pooled
  variance); their standardised mean gap ``mu`` is a ``mu``-GDP mechanism whose epsilon at
  ``delta`` is :func:`gdp_epsilon`. The confidence bound is exact *under the Gaussian model*:
  the noncentral-t interval of a standardised mean difference. An estimate, not a proof: it
  assumes the scores are Gaussian with one variance.
* :func:`threshold_bound` (distribution-free): choose a score threshold on half of the
  canaries, then bound TPR from below and FPR from above on the other half with exact
  Clopper-Pearson intervals; ``epsilon >= log((TPR_lo - delta) / FPR_hi)``. It assumes the
  canaries' outcomes are independent trials (nearly so for random directions in high
  dimension; not proven for one run).
* :func:`one_run_bound` (Steinke, Nasr, Jagielski, NeurIPS 2023): each canary was included
  with probability 1/2; guess "in" for the top-scored and "out" for the bottom-scored ones;
  an (eps, delta)-DP mechanism leaves the number of correct guesses below a binomial tail
  plus a delta term (their Theorem on the one-run game), which is exact and needs no
  independence assumption. The numbers of guesses come from a fixed grid, paid for by a
  Bonferroni split of the error rate.

Every bound returns an :class:`EpsilonBound`; ``epsilon`` is 0 when nothing is proved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, stats

from privagg.errors import ConfigurationError

__all__ = [
    "EpsilonBound",
    "clopper_pearson",
    "gaussian_fit",
    "gdp_delta",
    "gdp_epsilon",
    "one_run_bound",
    "one_run_p_value",
    "threshold_bound",
]

#: the fixed grid of guess fractions of the one-run game (top-only and symmetric guesses)
GUESS_FRACTIONS = (0.02, 0.05, 0.1, 0.2, 0.5)


@dataclass(frozen=True)
class EpsilonBound:
    """One method's epsilon lower bound at ``confidence`` (0.0: nothing proved).

    ``estimate``: the method's point estimate where it has one (the Gaussian fit);
    ``assumption``: what the confidence rests on; ``detail``: the counts behind it.
    """

    method: str
    epsilon: float
    confidence: float
    delta: float
    assumption: str
    estimate: float | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


def _check(delta: float, confidence: float) -> None:
    if not 0 <= delta < 1:
        raise ConfigurationError(f"must be in [0, 1), got {delta}", field="delta")
    if not 0 < confidence < 1:
        raise ConfigurationError(f"must be in (0, 1), got {confidence}", field="confidence")


# -- Gaussian differential privacy --------------------------------------------------------------
def gdp_delta(mu: float, epsilon: float) -> float:
    """The smallest delta at which ``mu``-GDP is ``(epsilon, delta)``-DP (Dong, Roth, Su 2019)."""
    if mu <= 0:
        return 0.0
    a = stats.norm.cdf(-epsilon / mu + mu / 2)
    b = math.exp(epsilon + stats.norm.logcdf(-epsilon / mu - mu / 2))
    return float(max(a - b, 0.0))


def gdp_epsilon(mu: float, delta: float) -> float:
    """The epsilon of ``mu``-GDP at ``delta`` (0 when ``delta`` already covers ``epsilon = 0``)."""
    if not 0 < delta < 1:
        raise ConfigurationError(f"must be in (0, 1), got {delta}", field="delta")
    if not mu > 0 or gdp_delta(mu, 0.0) <= delta:
        return 0.0
    hi = max(1.0, mu * mu)
    while gdp_delta(mu, hi) > delta:
        hi *= 2
    return float(optimize.brentq(lambda e: gdp_delta(mu, e) - delta, 0.0, hi, xtol=1e-10))


def gaussian_fit(
    included: Sequence[float] | np.ndarray,
    held_out: Sequence[float] | np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
) -> EpsilonBound:
    """Andrew et al.'s Gaussian fit: ``mu`` = standardised gap of the two groups' means.

    The lower bound on ``mu`` inverts the noncentral t distribution of the two-sample t
    statistic (exact when both groups are Gaussian with one variance).
    """
    _check(delta, confidence)
    x1, x0 = np.asarray(included, dtype=np.float64), np.asarray(held_out, dtype=np.float64)
    n1, n0 = x1.size, x0.size
    if n1 < 2 or n0 < 2:
        raise ConfigurationError("the Gaussian fit needs at least 2 canaries in each group", field="canaries")
    df = n1 + n0 - 2
    pooled = math.sqrt(((n1 - 1) * x1.var(ddof=1) + (n0 - 1) * x0.var(ddof=1)) / df)
    if pooled == 0:
        gap = float(x1.mean() - x0.mean())
        mu_hat = math.inf if gap > 0 else 0.0
        mu_lo = mu_hat
    else:
        mu_hat = float((x1.mean() - x0.mean()) / pooled)
        scale = math.sqrt(1 / n1 + 1 / n0)
        t_obs = mu_hat / scale
        alpha = 1 - confidence

        def tail(nc: float) -> float:  # P[T >= t_obs | noncentrality nc], increasing in nc
            return float(stats.nct.sf(t_obs, df, nc))

        if tail(0.0) >= alpha:
            mu_lo = 0.0
        else:
            hi = max(t_obs, 1.0)
            while tail(hi) < alpha:
                hi *= 2
            mu_lo = float(optimize.brentq(lambda nc: tail(nc) - alpha, 0.0, hi, xtol=1e-10)) * scale
    eps_hat = gdp_epsilon(mu_hat, delta) if math.isfinite(mu_hat) else math.inf
    eps_lo = gdp_epsilon(mu_lo, delta) if math.isfinite(mu_lo) else math.inf
    return EpsilonBound(
        method="gaussian-fit",
        epsilon=eps_lo,
        confidence=confidence,
        delta=delta,
        assumption="scores Gaussian with one variance in both groups (Andrew et al.); noncentral-t interval",
        estimate=eps_hat,
        detail={"mu": mu_hat, "mu_lower": mu_lo, "included": n1, "held_out": n0},
    )


# -- exact binomial intervals ---------------------------------------------------------------------
def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    """One-sided exact bounds: ``(lower, upper)``, each holding with probability ``1 - alpha``."""
    if not 0 <= successes <= trials:
        raise ConfigurationError(f"need 0 <= successes <= trials, got {successes}/{trials}", field="successes")
    lo = 0.0 if successes == 0 else float(stats.beta.ppf(alpha, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(stats.beta.isf(alpha, successes + 1, trials - successes))
    return lo, hi


def _eps_from_rates(tpr: float, fpr: float, delta: float) -> float:
    if tpr - delta <= 0:
        return 0.0
    if fpr <= 0:
        return math.inf
    return max(0.0, math.log((tpr - delta) / fpr))


def threshold_bound(
    included: Sequence[float] | np.ndarray,
    held_out: Sequence[float] | np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
) -> EpsilonBound:
    """Distribution-free bound: threshold chosen on the even-indexed canaries, proved on the odd ones.

    Both tails are tried (``score > t`` means "in", and ``score <= t`` means "out"); a candidate
    threshold (a quantile of the selection half) is scored by the bound it proves on that half;
    the evaluation half's Clopper-Pearson bounds each take half of the error rate.
    """
    _check(delta, confidence)
    x1, x0 = np.asarray(included, dtype=np.float64), np.asarray(held_out, dtype=np.float64)
    if x1.size < 4 or x0.size < 4:
        raise ConfigurationError("the threshold bound needs at least 4 canaries in each group", field="canaries")
    s1, e1, s0, e0 = x1[0::2], x1[1::2], x0[0::2], x0[1::2]
    alpha = (1 - confidence) / 2
    # candidate thresholds: quantiles of the selection half; each scored by the bound it would prove there
    cands = np.unique(np.quantile(np.concatenate([s1, s0]), np.linspace(0.0, 1.0, 201)))
    best = (-1.0, float(cands[0]), "upper")
    for side in ("upper", "lower"):
        if side == "upper":
            hits = (s1[None, :] > cands[:, None]).sum(1)
            falses = (s0[None, :] > cands[:, None]).sum(1)
            n_hit, n_false = s1.size, s0.size
        else:
            hits = (s0[None, :] <= cands[:, None]).sum(1)
            falses = (s1[None, :] <= cands[:, None]).sum(1)
            n_hit, n_false = s0.size, s1.size
        for t, h, f in zip(cands, hits, falses, strict=True):
            lo, _ = clopper_pearson(int(h), n_hit, alpha)
            _, hi = clopper_pearson(int(f), n_false, alpha)
            score = _eps_from_rates(lo, hi, delta)
            if score > best[0]:
                best = (score, float(t), side)
    _, t, side = best
    if side == "upper":
        hit, n_hit, false, n_false = int(np.sum(e1 > t)), e1.size, int(np.sum(e0 > t)), e0.size
    else:
        hit, n_hit, false, n_false = int(np.sum(e0 <= t)), e0.size, int(np.sum(e1 <= t)), e1.size
    tpr_lo, _ = clopper_pearson(hit, n_hit, alpha)
    _, fpr_hi = clopper_pearson(false, n_false, alpha)
    return EpsilonBound(
        method="threshold",
        epsilon=_eps_from_rates(tpr_lo, fpr_hi, delta),
        confidence=confidence,
        delta=delta,
        assumption="canary outcomes independent trials; threshold chosen on a separate half; Clopper-Pearson",
        detail={
            "threshold": t,
            "tail": side,
            "true_positives": hit,
            "positives": n_hit,
            "false_positives": false,
            "negatives": n_false,
            "tpr_lower": tpr_lo,
            "fpr_upper": fpr_hi,
        },
    )


# -- the one-run guessing game (Steinke, Nasr, Jagielski 2023) ------------------------------------
def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[at least ``v`` of ``r`` guesses correct] for an (epsilon, delta)-DP mechanism, ``m`` canaries.

    ``P[Bin(r, p) >= v] + 2 m delta max_{1<=i<=v} P[v - i <= Bin(r, p) < v] / i`` with
    ``p = e^eps / (1 + e^eps)``: the accuracy of epsilon-DP randomised response plus the
    cost of delta spread over the canaries.
    """
    if not 0 <= v <= r <= m:
        raise ConfigurationError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}", field="guesses")
    p = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(stats.binom.sf(v - 1, r, p))
    extra = 0.0
    if delta > 0 and v > 0:
        below = stats.binom.pmf(np.arange(v - 1, -1, -1), r, p)  # P[B = v-1], P[B = v-2], ..., P[B = 0]
        extra = float(np.max(np.cumsum(below) / np.arange(1, v + 1)))
    return min(1.0, tail + 2 * m * delta * extra)


def _one_run_epsilon(m: int, r: int, v: int, delta: float, alpha: float) -> float:
    """The largest epsilon whose p-value for ``v`` of ``r`` correct is still below ``alpha``."""
    if r == 0 or one_run_p_value(m, r, v, 0.0, delta) >= alpha:
        return 0.0
    hi = 1.0
    while one_run_p_value(m, r, v, hi, delta) < alpha:
        hi *= 2
        if hi > 200:
            return math.inf
    lo = 0.0
    for _ in range(50):
        mid = (lo + hi) / 2
        if one_run_p_value(m, r, v, mid, delta) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_bound(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
    fractions: Sequence[float] = GUESS_FRACTIONS,
) -> EpsilonBound:
    """Steinke et al.'s one-run bound over a fixed grid of guess counts (Bonferroni over the grid).

    For each fraction ``f`` two guessers are tried: "in" for the top ``f m`` scores only, and
    "in" for the top ``f m / 2`` with "out" for the bottom ``f m / 2``. Ties at a cut are
    broken by canary index (fixed before the scores are seen).
    """
    _check(delta, confidence)
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included, dtype=bool)
    m = s.size
    if inc.shape != s.shape or m < 2:
        raise ConfigurationError("need one inclusion flag per score and at least 2 canaries", field="canaries")
    order = np.lexsort((np.arange(m), -s))  # highest score first; ties by index
    ranked = inc[order]
    plans = []
    for f in fractions:
        k = max(1, int(f * m))
        plans.append((k, 0))
        if k >= 2:
            plans.append((k // 2, k // 2))
    alpha = (1 - confidence) / len(plans)
    best: tuple[float, dict[str, Any]] = (0.0, {})
    for top, bottom in plans:
        correct = int(ranked[:top].sum()) + (int((~ranked[m - bottom :]).sum()) if bottom else 0)
        eps = _one_run_epsilon(m, top + bottom, correct, delta, alpha)
        if eps > best[0] or not best[1]:
            best = (eps, {"guesses_in": top, "guesses_out": bottom, "correct": correct, "canaries": m})
    return EpsilonBound(
        method="one-run",
        epsilon=best[0],
        confidence=confidence,
        delta=delta,
        assumption="none beyond the canaries' fair inclusion coins (Steinke et al. 2023); "
        f"Bonferroni over {len(plans)} guess counts",
        detail=best[1],
    )
