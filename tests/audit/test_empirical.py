"""Epsilon lower bounds from canary scores: known answers, exact intervals, coverage over seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting.pld import privacy_loss_distribution
from scipy import stats

from privagg.audit.empirical import (
    clopper_pearson,
    gaussian_fit,
    gdp_delta,
    gdp_epsilon,
    one_run_bound,
    one_run_p_value,
    threshold_bound,
)
from privagg.errors import ConfigurationError


def _randomized_response(eps: float, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """m canaries, fair inclusion coins; each score reports the coin truthfully w.p. e^eps / (1 + e^eps)."""
    rng = np.random.default_rng(seed)
    inc = rng.random(m) < 0.5
    truthful = rng.random(m) < 1 / (1 + math.exp(-eps))
    return np.where(truthful, inc, ~inc).astype(np.float64), inc


@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
def test_gdp_epsilon_matches_the_gaussian_privacy_loss_distribution(mu: float) -> None:
    pld = privacy_loss_distribution.from_gaussian_mechanism(1.0 / mu, value_discretization_interval=1e-4)
    assert gdp_epsilon(mu, 1e-5) == pytest.approx(pld.get_epsilon_for_delta(1e-5), abs=1e-3)
    assert gdp_delta(mu, gdp_epsilon(mu, 1e-5)) == pytest.approx(1e-5, rel=1e-6)


def test_gdp_epsilon_edges() -> None:
    assert gdp_epsilon(0.0, 1e-5) == 0.0
    assert gdp_epsilon(0.01, 0.5) == 0.0  # delta already covers epsilon 0
    assert gdp_epsilon(1.0, 1e-6) > gdp_epsilon(1.0, 1e-5) > gdp_epsilon(0.5, 1e-5)
    with pytest.raises(ConfigurationError, match="delta"):
        gdp_epsilon(1.0, 0.0)


def test_clopper_pearson_known_values() -> None:
    n, alpha = 20, 0.05
    assert clopper_pearson(0, n, alpha) == (0.0, pytest.approx(1 - alpha ** (1 / n)))
    assert clopper_pearson(n, n, alpha) == (pytest.approx(alpha ** (1 / n)), 1.0)
    lo, hi = clopper_pearson(7, n, alpha)
    ci = stats.binomtest(7, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert (lo, hi) == (pytest.approx(ci.low), pytest.approx(ci.high))
    with pytest.raises(ConfigurationError):
        clopper_pearson(5, 4, alpha)


def test_one_run_p_value_is_the_binomial_tail_without_delta() -> None:
    p = 1 / (1 + math.exp(-1.0))
    assert one_run_p_value(100, 40, 30, 1.0, 0.0) == pytest.approx(stats.binom.sf(29, 40, p))
    assert one_run_p_value(100, 10, 10, 1.0, 0.0) == pytest.approx(p**10)
    # delta only adds; larger epsilon makes v correct guesses more plausible
    assert one_run_p_value(100, 40, 30, 1.0, 1e-3) > one_run_p_value(100, 40, 30, 1.0, 0.0)
    assert one_run_p_value(100, 40, 30, 2.0, 1e-5) > one_run_p_value(100, 40, 30, 1.0, 1e-5)
    with pytest.raises(ConfigurationError):
        one_run_p_value(10, 20, 5, 1.0, 0.0)


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_bounds_approach_the_true_epsilon_of_randomized_response(eps: float) -> None:
    scores, inc = _randomized_response(eps, 20_000, seed=1)
    one = one_run_bound(scores, inc, delta=0.0, fractions=(1.0,)).epsilon
    thr = threshold_bound(scores[inc], scores[~inc], delta=1e-5).epsilon
    assert 0.88 * eps <= one <= eps
    assert 0.75 * eps <= thr <= eps * 1.05


def test_bounds_hold_for_randomized_response_across_seeds() -> None:
    """Each bound holds at 95%: over 40 seeds, P[>= 6 exceedances] < 5% if it does."""
    eps = 1.0
    over = {"one-run": 0, "threshold": 0}
    for seed in range(40):
        scores, inc = _randomized_response(eps, 400, seed=seed)
        over["one-run"] += one_run_bound(scores, inc, delta=1e-5).epsilon > eps
        over["threshold"] += threshold_bound(scores[inc], scores[~inc], delta=1e-5).epsilon > eps
    assert over["one-run"] <= 5 and over["threshold"] <= 5, over


def test_gaussian_fit_estimates_gdp_and_its_bound_covers() -> None:
    mu = 1.0
    misses = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        fit = gaussian_fit(rng.normal(mu, 1, 300), rng.normal(0, 1, 300), delta=1e-5, confidence=0.95)
        misses += fit.epsilon > gdp_epsilon(mu, 1e-5)
        assert fit.estimate is not None and abs(fit.detail["mu"] - mu) < 0.35
    assert misses <= 5
    # the noncentral-t bound is below the estimate; a larger sample tightens it
    rng = np.random.default_rng(0)
    small = gaussian_fit(rng.normal(mu, 1, 50), rng.normal(0, 1, 50), delta=1e-5)
    big = gaussian_fit(rng.normal(mu, 1, 5000), rng.normal(0, 1, 5000), delta=1e-5)
    assert big.estimate is not None and small.estimate is not None
    assert big.estimate - big.epsilon < small.estimate - small.epsilon
    assert big.epsilon == pytest.approx(gdp_epsilon(mu, 1e-5), rel=0.15)


def test_no_signal_proves_nothing() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=1000)
    inc = rng.random(1000) < 0.5
    assert gaussian_fit(x[inc], x[~inc], delta=1e-5).epsilon < 0.5
    assert one_run_bound(x, inc, delta=1e-5).epsilon < 0.5
    assert threshold_bound(x[inc], x[~inc], delta=1e-5).epsilon < 0.5


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="confidence"):
        gaussian_fit([1.0, 2.0], [0.0, 1.0], delta=1e-5, confidence=1.0)
    with pytest.raises(ConfigurationError, match="at least 2"):
        gaussian_fit([1.0], [0.0, 1.0], delta=1e-5)
    with pytest.raises(ConfigurationError, match="at least 4"):
        threshold_bound([1.0, 2.0], [0.0, 1.0, 2.0, 3.0], delta=1e-5)
    with pytest.raises(ConfigurationError, match="one inclusion flag"):
        one_run_bound([1.0, 2.0, 3.0], [True, False], delta=1e-5)
