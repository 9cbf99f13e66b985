"""The integer-only discrete Gaussian (CKS 2020): distribution, parameters, determinism, refusals."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dp.exact import ExactSecureNoise, discrete_gaussian_exact, exact_parameters, gamma_parts
from privagg.randomness import InsecureDeterministicSecrets


def _words(seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    return lambda n: rng.integers(0, 2**64, size=n, dtype=np.uint64)


@settings(max_examples=200, deadline=None)
@given(sigma=st.floats(0.36, 2.0**40))
def test_parameters_round_sigma_up_by_less_than_2_pow_minus_25(sigma: float) -> None:
    m, b, j = exact_parameters(sigma)
    s2 = m * 2.0**b
    assert 2**25 <= m <= 2**26 and sigma <= s2 <= sigma * (1 + 2.0**-25)
    assert 2.0**j >= s2 and (j == 0 or 2.0 ** (j - 1) < s2)  # t = 2**j, the smallest power >= sigma'


@settings(max_examples=100, deadline=None)
@given(sigma=st.floats(0.5, 2.0**30), frac=st.floats(0, 1))
def test_gamma_is_split_exactly(sigma: float, frac: float) -> None:
    # the rejection exponent, in rationals, equals the sum of the integer pieces the sampler uses
    m, b, j = exact_parameters(sigma)
    s2, t = Fraction(m) * Fraction(2) ** b, 2**j
    limit = ((1 << 57) >> (j - 2 * b)) - 1
    x = int(frac * limit)
    f, p1, p2, p3 = (int(v[0]) for v in gamma_parts(np.array([x], dtype=np.uint64), m, b, j))
    c = 2 * j + 1 - 2 * b
    gamma = (x - s2 * s2 / t) ** 2 / (2 * s2 * s2)
    assert gamma == f + Fraction(p1, 2**c) + Fraction(p2, m * 2**c) + Fraction(p3, m * m * 2**c)
    assert p1 < 2**c and p2 < m * 2**c and p3 < m * m * 2**c


@pytest.mark.parametrize("sigma", [0.8, 3.0, 25.0])
def test_matches_the_exact_pmf(sigma: float) -> None:
    # chi-square against P(k) ∝ exp(-k^2 / (2 sigma'^2)), 200,000 draws, bins with >= 5 expected; p > 1e-4
    m, b, _ = exact_parameters(sigma)
    s2 = (m * 2.0**b) ** 2
    n = 200_000
    x = discrete_gaussian_exact(sigma, n, _words(1))
    ks = np.arange(-int(12 * sigma) - 3, int(12 * sigma) + 4)
    pmf = np.exp(-(ks.astype(np.float64) ** 2) / (2 * s2))
    pmf /= pmf.sum()
    expected = n * pmf
    keep = expected >= 5
    observed = np.array([np.count_nonzero(x == k) for k in ks])
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    exp *= obs.sum() / exp.sum()
    assert stats.chisquare(obs, exp).pvalue > 1e-4


def test_large_sigma_moments() -> None:
    sigma = 1e6
    x = discrete_gaussian_exact(sigma, 200_000, _words(2)).astype(np.float64)
    assert abs(x.mean()) < 5 * sigma / math.sqrt(x.size)
    assert x.std() == pytest.approx(sigma, rel=0.01)


def test_secret_stream_is_deterministic_under_the_test_seam_only() -> None:
    a = ExactSecureNoise(secrets=InsecureDeterministicSecrets(7)).discrete_gaussian(40.0, 1000)
    b = ExactSecureNoise(secrets=InsecureDeterministicSecrets(7)).discrete_gaussian(40.0, 1000)
    c = ExactSecureNoise(secrets=InsecureDeterministicSecrets(8)).discrete_gaussian(40.0, 1000)
    assert np.array_equal(a, b) and not np.array_equal(a, c) and a.dtype == np.int64
    assert ExactSecureNoise().secure and repr(ExactSecureNoise()) == "ExactSecureNoise()"


def test_edges_and_refusals() -> None:
    assert discrete_gaussian_exact(3.0, 0, _words(0)).size == 0
    assert not discrete_gaussian_exact(0.0, 5, _words(0)).any()
    with pytest.raises(ValueError):
        discrete_gaussian_exact(3.0, -1, _words(0))
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError):
            exact_parameters(bad)
    with pytest.raises(ValueError):
        discrete_gaussian_exact(0.01, 5, _words(0))  # below the sampler's range: refused, not approximated


def test_dp_fedavg_uses_the_exact_sampler_when_asked() -> None:
    from dp.config import DPConfig
    from privagg.errors import ConfigurationError
    from protocols.aggregation import ClientUpdate, MeanAggregator, RoundContext
    from protocols.dp_fedavg import DPFedAvg

    agg = DPFedAvg(MeanAggregator(), config=DPConfig(noise_multiplier=1.0, exact_sampler=True), population=100)
    assert isinstance(agg.sampler, ExactSecureNoise)
    ups = [ClientUpdate(i, np.zeros(2000), 1) for i in range(10)]
    ctx = RoundContext(
        round=1, population=100, sampled=tuple(range(10)), sampling="poisson", sampling_rate=0.1,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    res = agg.aggregate(ups, ctx)
    # pure noise on the mean: std z * effective sensitivity / (q N), within 10 % at 2,000 coordinates
    assert res.delta.std() == pytest.approx(res.metrics["dp_noise_std_on_mean"], rel=0.1)
    with pytest.raises(ConfigurationError) as info:
        DPConfig(noise_multiplier=1.0, exact_sampler=True, secure_noise=False, seed=1)
    assert info.value.field == "exact_sampler"


def test_too_small_a_sigma_is_refused_not_a_hang() -> None:
    """Below about sigma = 0.125 the 64-bit cut would reject every proposal: refused instead."""
    import numpy as np
    import pytest

    from dp.exact import discrete_gaussian_exact

    rng = np.random.default_rng(0)

    def words(k: int) -> np.ndarray:
        return rng.integers(0, 2**64 - 1, size=k, dtype=np.uint64, endpoint=True)

    with pytest.raises(ValueError, match="too small"):
        discrete_gaussian_exact(0.1, 5, words)
    assert discrete_gaussian_exact(3.0, 100, words).shape == (100,)
