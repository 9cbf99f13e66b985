"""The certified discrete Gaussian (:mod:`dp.certified`): fast path == exact path, bounds, distribution.

The central property: with every certification margin widened to infinity (``_widen=inf``)
each decision goes through the exact rational fallback; on the same word stream the fast
path must give the *same output, word for word*. Hypothesis draws the streams and sigmas, and
a crafted stream puts the uniforms right at the decision boundaries, where a float error
would flip a decision. Statistical tests are seeded and state their tolerance.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dp import certified
from dp.certified import FAST_SIGMA_MAX, LazyUniform, discrete_gaussian, discrete_laplace, exp_neg_bounds
from dp.exact import exact_parameters

INF = math.inf


def words_from(seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.Generator(np.random.PCG64(seed))
    return lambda n: rng.integers(0, 2**64, size=n, dtype=np.uint64)


def chisquare_p(x: np.ndarray, pmf_at, kmax: int) -> float:  # type: ignore[no-untyped-def]
    ks = np.arange(-kmax, kmax + 1)
    pmf = np.array([pmf_at(int(k)) for k in ks], dtype=np.float64)
    pmf /= pmf.sum()
    counts = np.bincount(np.clip(x, -kmax, kmax) + kmax, minlength=2 * kmax + 1)
    expected = pmf * x.size
    keep = expected >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return float(stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue)


@settings(max_examples=25, deadline=None)
@given(
    log2_sigma=st.floats(-6.0, 36.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_fast_path_equals_exact_path_word_for_word(log2_sigma: float, seed: int) -> None:
    sigma = 2.0**log2_sigma
    fast = discrete_gaussian(sigma, 200, words_from(seed))
    exact = discrete_gaussian(sigma, 200, words_from(seed), _widen=INF)
    assert np.array_equal(fast, exact)


def _boundary_stream(sigma: float, ks: list[int], jitter: list[int], seed: int):  # type: ignore[no-untyped-def]
    """V words at ``exp(-k/sigma) 2**63 + j`` and W words at ``p(k) 2**63 + j``: the hardest decisions."""
    with localcontext() as ctx:
        ctx.prec = 60
        s = Decimal(sigma)
        v = [int(Decimal(-k / s).exp() * 2**63) + j for k in ks for j in jitter]
        w = [int((-((Decimal(k) / s - 1) ** 2) / 2).exp() * 2**63) + j for k in ks for j in jitter]
    v = [min(max(x, 0), 2**63 - 1) for x in v]
    w = [min(max(x, 0), 2**63 - 1) for x in w]
    signs = np.array([(i % 2) << 63 for i in range(len(v))], dtype=np.uint64)
    vs, ws = np.array(v, dtype=np.uint64) | signs, np.array(w, dtype=np.uint64)
    rng = np.random.Generator(np.random.PCG64(seed))
    calls = [0]

    def words(n: int) -> np.ndarray:
        if n == 1:  # the exact fallback extending a uniform
            return rng.integers(0, 2**64, size=1, dtype=np.uint64)
        calls[0] += 1
        src = vs if calls[0] % 2 else ws
        return np.resize(src, n)

    return words


@settings(max_examples=30, deadline=None)
@given(
    log2_sigma=st.floats(-4.0, 36.0),
    k_scale=st.floats(0.0, 8.0),
    seed=st.integers(0, 2**16),
)
def test_decisions_at_the_boundaries_agree_with_the_exact_path(log2_sigma: float, k_scale: float, seed: int) -> None:
    # uniforms within a few units in the last place of exp(-k/t) and of p(k): a float error
    # larger than the margins would flip one of these decisions in the fast path only (with
    # the margins set to 0 this test fails at once)
    sigma = 2.0**log2_sigma
    k0 = int(k_scale * sigma)
    ks = sorted({k0, k0 + 1, max(k0 - 1, 0), int(sigma), int(sigma) + 1})
    jitter = [-3, -1, 0, 1, 2]
    calls = []
    real = certified._exact_geometric

    def counting(*args: Any) -> int:
        calls.append(1)
        return real(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(certified, "_exact_geometric", counting)
        fast = discrete_gaussian(sigma, 40, _boundary_stream(sigma, ks, jitter, seed))
    assert calls  # the crafted uniforms did reach the fallback
    exact = discrete_gaussian(sigma, 40, _boundary_stream(sigma, ks, jitter, seed), _widen=INF)
    assert np.array_equal(fast, exact)


@pytest.mark.parametrize("sigma", [0.2, 0.6, 3.0, 25.0, 1e6])
def test_fast_sampler_matches_the_pmf(sigma: float) -> None:
    # 300,000 draws; chi-square over bins with >= 5 expected, tails pooled; reject only if p < 1e-4
    x = discrete_gaussian(sigma, 300_000, words_from(int(sigma * 10)))
    if sigma >= 1e5:  # too many bins: test the standardised draws' quantiles instead (KS on N(0,1))
        assert stats.kstest(x / sigma, "norm").pvalue > 1e-4
        return
    p = chisquare_p(x, lambda k: math.exp(-(k * k) / (2 * sigma * sigma)), math.ceil(7 * sigma) + 2)
    assert p > 1e-4, p


@pytest.mark.parametrize(("sigma", "n"), [(0.45, 3000), (2.5, 8000)])
def test_exact_fallback_alone_matches_the_pmf(sigma: float, n: int) -> None:
    # every decision through the rational fallback (_widen=inf); p > 1e-4
    x = discrete_gaussian(sigma, n, words_from(99), _widen=INF)
    p = chisquare_p(x, lambda k: math.exp(-(k * k) / (2 * sigma * sigma)), math.ceil(7 * sigma) + 2)
    assert p > 1e-4, p


@pytest.mark.parametrize(("t", "widen"), [(0.7, 1.0), (3.0, 1.0), (2.5, INF)])
def test_discrete_laplace_matches_the_pmf(t: float, widen: float) -> None:
    n = 100_000 if widen == 1.0 else 6_000
    y = discrete_laplace(t, n, words_from(5), _widen=widen)
    assert chisquare_p(y, lambda k: math.exp(-abs(k) / t), 40) > 1e-4


@settings(max_examples=200, deadline=None)
@given(num=st.integers(1, 10**12), den=st.integers(1, 10**9), digits=st.integers(25, 60))
def test_exp_neg_bounds_enclose_the_true_value(num: int, den: int, digits: int) -> None:
    q = Fraction(num, den)
    if q > 10**4:
        q = Fraction(num % 10**4 + 1, den)
    lo, hi = exp_neg_bounds(q, digits)
    with gmpy2.context(gmpy2.get_context(), precision=16 * digits + 64):  # MPFR, far finer than the bounds
        true = gmpy2.exp(-gmpy2.mpfr(gmpy2.mpq(q.numerator, q.denominator)))
        assert gmpy2.mpfr(gmpy2.mpq(lo.numerator, lo.denominator)) <= true
        assert true <= gmpy2.mpfr(gmpy2.mpq(hi.numerator, hi.denominator))
    assert (hi - lo) / hi < (q + 3) * Fraction(10) ** (3 - digits)
    assert exp_neg_bounds(Fraction(0), 30) == (1, 1)
    with pytest.raises(ValueError):
        exp_neg_bounds(Fraction(-1), 30)


def test_lazy_uniform_decides_by_drawing_more_bits() -> None:
    # a uniform whose first 63 bits straddle exp(-1/3): it must draw further words to decide
    target = Fraction(exp_neg_bounds(Fraction(1, 3), 60)[0])
    word = math.floor(target * 2**63)
    drawn = []

    def words(n: int) -> np.ndarray:
        drawn.append(n)
        return np.array([0], dtype=np.uint64)  # all-zero extension: U is the lower end of its interval

    assert LazyUniform(word, words).below_exp_neg(Fraction(1, 3))  # floor(target 2**63) 2**-63 < exp(-1/3)
    assert drawn  # 63 bits were not enough
    assert LazyUniform(word + 1, lambda n: np.zeros(n, dtype=np.uint64)).below_exp_neg(Fraction(1, 3)) is False


def _ulp_errors(fn, exact, xs: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    got = fn(xs)
    worst = 0.0
    with localcontext() as ctx:
        ctx.prec = 40
        for x, g in zip(xs.tolist(), got.tolist(), strict=True):
            true = exact(Decimal(x))
            worst = max(worst, float(abs(Decimal(g) - true)) / math.ulp(float(true)))
    return worst


def test_numpy_log_and_exp_are_within_the_assumed_ulp() -> None:
    # the sampler's one assumption: float64 log and exp within 32 ulp (margins sized for that);
    # measured here on 3,000 points each over the ranges the sampler uses; asserted <= 8 ulp
    rng = np.random.default_rng(0)
    v = np.ldexp(rng.random(3000) + 0.5, -rng.integers(0, 63, 3000))  # (2**-63, 1)
    g = -rng.random(3000) * rng.choice([1.0, 30.0, 700.0], 3000)  # exp arguments in [-700, 0]
    assert _ulp_errors(np.log, lambda d: d.ln(), v[v < 1]) <= 8
    assert _ulp_errors(np.exp, lambda d: d.exp(), g) <= 8


def test_large_sigma_hands_over_to_the_integer_sampler() -> None:
    sigma = FAST_SIGMA_MAX * 4
    x = discrete_gaussian(sigma, 2000, words_from(3)).astype(np.float64)
    m, b, _ = exact_parameters(sigma)
    assert m * 2.0**b >= sigma  # rounded up, never down
    assert abs(x.std() / sigma - 1) < 0.1  # std error ~1.6 %


def test_refusals_and_trivial_cases() -> None:
    w = words_from(0)
    assert discrete_gaussian(0.0, 5, w).tolist() == [0] * 5
    assert discrete_gaussian(3.0, 0, w).size == 0
    for bad in (-1.0, math.nan, math.inf, 2.0**-600):
        with pytest.raises(ValueError):
            discrete_gaussian(bad, 5, w)
    with pytest.raises(ValueError):
        discrete_gaussian(1.0, -1, w)
    for bad in (0.0, -2.0, FAST_SIGMA_MAX * 2):
        with pytest.raises(ValueError):
            discrete_laplace(bad, 5, w)
    with pytest.raises(TypeError, match="64-bit"):  # 32-bit words would be silently misread as half as many
        discrete_gaussian(3.0, 5, lambda n: np.zeros(n, dtype=np.uint32))
