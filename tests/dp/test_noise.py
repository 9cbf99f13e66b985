"""Secure discrete Gaussian sampler and the grid mechanism.

Statistical tests are seeded (through the ``InsecureDeterministicSecrets`` test seam, so the
AES-CTR path is the one exercised) and state their tolerance.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from dp.noise import (
    GaussianGridMechanism,
    InsecureNoiseWarning,
    SecureNoise,
    SeededNoise,
    discrete_gaussian,
    discrete_laplace,
    grid_for,
)
from privagg.errors import ConfigurationError
from privagg.randomness import InsecureDeterministicSecrets


def seeded_secure(seed: int) -> SecureNoise:
    return SecureNoise(secrets=InsecureDeterministicSecrets(seed))


def words_from(seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.Generator(np.random.PCG64(seed))
    return lambda n: rng.integers(0, 2**64, size=n, dtype=np.uint64)


def exact_dg_pmf(sigma: float, kmax: int) -> np.ndarray:
    k = np.arange(-kmax, kmax + 1)
    p = np.exp(-(k.astype(float) ** 2) / (2 * sigma**2))
    return p / p.sum()


@pytest.mark.parametrize("sigma", [0.6, 1.5, 4.0])
def test_discrete_gaussian_matches_exact_pmf(sigma: float) -> None:
    # chi-square goodness of fit against the exact pmf; 200k draws; reject only if p < 1e-4
    n = 200_000
    x = seeded_secure(11).discrete_gaussian(sigma, n)
    kmax = math.ceil(6 * sigma) + 1
    assert np.abs(x).max() <= 12 * sigma + 3
    pmf = exact_dg_pmf(sigma, kmax)
    counts = np.bincount(np.clip(x, -kmax, kmax) + kmax, minlength=2 * kmax + 1)
    expected = pmf * n
    keep = expected >= 5
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    exp = exp * obs.sum() / exp.sum()
    p = stats.chisquare(obs, exp).pvalue
    assert p > 1e-4, p


def test_discrete_laplace_matches_exact_pmf() -> None:
    # P(y) ∝ exp(-|y|/t); chi-square, p > 1e-4
    t, n = 3, 100_000
    y = discrete_laplace(t, n, words_from(5))
    kmax = 40
    k = np.arange(-kmax, kmax + 1)
    pmf = np.exp(-np.abs(k) / t)
    pmf /= pmf.sum()
    counts = np.bincount(np.clip(y, -kmax, kmax) + kmax, minlength=2 * kmax + 1)
    keep = pmf * n >= 5
    obs, exp = counts[keep], pmf[keep] * n
    exp = exp * obs.sum() / exp.sum()
    assert stats.chisquare(obs, exp).pvalue > 1e-4


def test_large_sigma_variance_and_mean() -> None:
    # 400k draws at sigma = 1e5: sample std within 1 % (std error ~0.11 %), mean within 5 SE
    sigma, n = 1e5, 400_000
    x = seeded_secure(3).discrete_gaussian(sigma, n).astype(np.float64)
    assert abs(x.std() / sigma - 1) < 0.01
    assert abs(x.mean()) < 5 * sigma / math.sqrt(n)


def test_zero_sigma_and_bad_arguments() -> None:
    assert np.all(discrete_gaussian(0.0, 5, words_from(0)) == 0)
    with pytest.raises(ValueError):
        discrete_gaussian(-1.0, 5, words_from(0))
    with pytest.raises(ValueError):
        discrete_gaussian(float("nan"), 5, words_from(0))
    with pytest.raises(ValueError):
        discrete_laplace(0, 5, words_from(0))


def test_secure_noise_is_fresh_and_seam_is_reproducible() -> None:
    a = SecureNoise().discrete_gaussian(10.0, 64)
    b = SecureNoise().discrete_gaussian(10.0, 64)
    assert not np.array_equal(a, b)
    assert np.array_equal(seeded_secure(7).discrete_gaussian(10.0, 64), seeded_secure(7).discrete_gaussian(10.0, 64))
    s = SecureNoise()
    assert not np.array_equal(s.discrete_gaussian(10.0, 64), s.discrete_gaussian(10.0, 64))
    assert repr(s) == "SecureNoise()"


def test_seeded_noise_warns_and_reproduces() -> None:
    with pytest.warns(InsecureNoiseWarning):
        a = SeededNoise(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        b = SeededNoise(3)
    assert not a.secure and SecureNoise.secure
    assert np.array_equal(a.discrete_gaussian(5.0, 100), b.discrete_gaussian(5.0, 100))
    assert "3" not in repr(a)


def test_grid_is_power_of_two_and_bounds_inflation() -> None:
    for sens, dim in [(1.0, 1), (0.3, 1000), (7.0, 1_000_000)]:
        g = grid_for(sens, dim, resolution=1000)
        assert math.log2(g) == int(math.log2(g))
        assert g * math.sqrt(dim) <= sens / 1000
        assert 2 * g * math.sqrt(dim) > sens / 1000
    with pytest.raises(ConfigurationError):
        grid_for(0.0, 3)
    with pytest.raises(ConfigurationError):
        grid_for(1.0, 0)


def test_mechanism_outputs_lie_exactly_on_grid() -> None:
    mech = GaussianGridMechanism.create(sensitivity=1.0, noise_multiplier=1.0, dim=500)
    x = np.random.default_rng(0).normal(size=500)
    out = mech.release(x, seeded_secure(1))
    units = out / mech.grid
    assert np.array_equal(units, np.rint(units))  # no porous low-order bits: exact grid points
    assert mech.effective_sensitivity == pytest.approx(1.0 + mech.grid * math.sqrt(500))
    assert mech.std == pytest.approx(mech.effective_sensitivity)


def test_mechanism_noise_has_configured_variance() -> None:
    # central release of a zero vector, d = 200k: empirical variance within 2 % of std^2
    # (std error of a variance estimate is sqrt(2/d) = 0.32 %, so 2 % is > 6 standard errors)
    d = 200_000
    mech = GaussianGridMechanism.create(sensitivity=0.7, noise_multiplier=1.3, dim=d)
    out = mech.release(np.zeros(d), seeded_secure(2))
    assert out.var() / mech.std**2 == pytest.approx(1.0, abs=0.02)
    # one client share of t = 16: variance std^2 / 16, and 16 shares sum to std^2
    shares = np.sum([mech.release(np.zeros(d), seeded_secure(100 + i), shares=16) for i in range(16)], axis=0)
    assert shares.var() / mech.std**2 == pytest.approx(1.0, abs=0.02)


def test_mechanism_rejects_bad_input() -> None:
    mech = GaussianGridMechanism.create(sensitivity=1.0, noise_multiplier=1.0, dim=3)
    with pytest.raises(ConfigurationError):
        mech.release(np.zeros(4), SecureNoise())
    with pytest.raises(ConfigurationError):
        mech.release(np.array([0.0, np.nan, 1.0]), SecureNoise())
    with pytest.raises(ConfigurationError):
        mech.release(np.array([0.0, 1e300, 1.0]), SecureNoise())
    with pytest.raises(ConfigurationError):
        mech.release(np.zeros(3), SecureNoise(), shares=0)
    with pytest.raises(ConfigurationError):
        GaussianGridMechanism.create(sensitivity=1.0, noise_multiplier=-1.0, dim=3)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 50).flatmap(
        lambda d: st.tuples(
            arrays(np.float64, d, elements=st.floats(-10, 10)), arrays(np.float64, d, elements=st.floats(-10, 10))
        )
    ),
    st.floats(0.01, 10.0),
)
def test_snapping_inflates_sensitivity_by_at_most_grid_sqrt_dim(
    pair: tuple[np.ndarray, np.ndarray], sens: float
) -> None:
    # the bound the mechanism's noise is calibrated to: ||snap(x) - snap(x')|| <= ||x - x'|| + g sqrt(d)
    x, y = pair
    mech = GaussianGridMechanism.create(sensitivity=sens, noise_multiplier=1.0, dim=x.size)
    dist = np.linalg.norm((mech.snap(x) - mech.snap(y)).astype(np.float64) * mech.grid)
    assert dist <= np.linalg.norm(x - y) + mech.grid * math.sqrt(x.size) + 1e-12
    assert np.max(np.abs(mech.snap(x) * mech.grid - x)) <= mech.grid / 2


def test_the_random_stream_and_the_noise_do_not_depend_on_the_input(monkeypatch: pytest.MonkeyPatch) -> None:
    # timing, stated in dp.noise: the sampler never sees the input. Two very different inputs under the
    # same test secrets request the same stream words in the same calls and get the same noise
    import dp.noise as noise_module

    real = noise_module.prg_words
    calls: list[int] = []

    def recording(seed: bytes, *, info: bytes, count: int, bits: int) -> np.ndarray:
        calls.append(count)
        return real(seed, info=info, count=count, bits=bits)

    monkeypatch.setattr(noise_module, "prg_words", recording)
    mech = GaussianGridMechanism.create(sensitivity=1.0, noise_multiplier=1.0, dim=5000)
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=5000) * 1e-3, rng.normal(size=5000) * 0.5
    out1 = mech.release(x1, seeded_secure(9))
    calls1, calls[:] = list(calls), []
    out2 = mech.release(x2, seeded_secure(9))
    assert calls == calls1 and len(calls) > 1
    np.testing.assert_array_equal(out1 / mech.grid - mech.snap(x1), out2 / mech.grid - mech.snap(x2))


def test_a_split_into_shares_below_the_floor_is_refused() -> None:
    """Each share's discrete Gaussian parameter must be >= MIN_SHARE_SIGMA grid units, else the sum of shares is
    not close to the accounted discrete Gaussian (the lead's repro: z = 0.01, 1,000 shares: 0.32 grid units)."""
    from dp import distributed
    from dp.noise import MIN_SHARE_SIGMA, check_share_sigma

    mech = GaussianGridMechanism.create(sensitivity=1.0, noise_multiplier=0.01, dim=1)
    per_share = mech.std / mech.grid / math.sqrt(1000)
    assert 0 < per_share < MIN_SHARE_SIGMA
    with pytest.raises(ConfigurationError, match=r"0\.324 < 1 grid units \(1000 shares\)") as e:
        mech.release(np.zeros(1), SecureNoise(), shares=1000)
    assert e.value.field == "noise_multiplier"
    mech.release(np.zeros(1), SecureNoise())  # one share: the exact discrete Gaussian, whatever its parameter
    fits = int((mech.std / mech.grid / MIN_SHARE_SIGMA) ** 2)  # the most shares that keep each at the floor
    mech.release(np.zeros(1), SecureNoise(), shares=fits)
    with pytest.raises(ConfigurationError):
        mech.release(np.zeros(1), SecureNoise(), shares=fits + 1)
    GaussianGridMechanism.create(sensitivity=1.0, noise_multiplier=0.0, dim=1).release(
        np.zeros(1), SecureNoise(), shares=1000
    )  # no noise: nothing claimed, nothing to refuse
    check_share_sigma(0.5, shares=1)  # one share passes, unless the caller asks for the floor on it too
    with pytest.raises(ConfigurationError):
        check_share_sigma(0.5, shares=1, split_only=False)
    assert distributed.MIN_SHARE_SIGMA is MIN_SHARE_SIGMA  # the distributed plan's floor is the same constant
