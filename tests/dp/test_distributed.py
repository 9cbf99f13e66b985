"""Distributed DP core: rotation, rounding, ring sums, integer noise, parameter choice and refusals."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dp.distributed import (
    DEFAULT_BETA,
    DistributedDPParams,
    choose_parameters,
    ring_overflow_bound,
    rounded_l2_bound,
)
from dp.distributed_encoding import (
    DistributedEncoder,
    IntegerNoise,
    conditional_round,
    poisson_table_sample,
    skellam,
)
from dp.noise import InsecureNoiseWarning
from dp.rotation import RandomizedHadamard, fwht, padded_dim
from privagg.errors import ConfigurationError
from privagg.randomness import InsecureDeterministicSecrets


def seeded_noise(seed: int = 0) -> IntegerNoise:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        return IntegerNoise(seed=seed)


def words_from(seed: int):  # type: ignore[no-untyped-def]
    return seeded_noise(seed).words()


# -- rotation -------------------------------------------------------------------------------
def test_fwht_known_answer_and_involution() -> None:
    np.testing.assert_allclose(fwht(np.array([1.0, 0.0])), [1 / math.sqrt(2), 1 / math.sqrt(2)])
    np.testing.assert_allclose(fwht(np.array([1.0, 1.0, 1.0, 1.0])), [2.0, 0.0, 0.0, 0.0])
    h = np.stack([fwht(e) for e in np.eye(8)])
    np.testing.assert_allclose(h @ h.T, np.eye(8), atol=1e-12)  # orthonormal
    with pytest.raises(ConfigurationError):
        fwht(np.zeros(6))


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 300),
    rnd=st.integers(0, 10**6),
    seed=st.binary(min_size=32, max_size=32),
    data=st.data(),
)
def test_rotation_round_trip_keeps_norms(dim: int, rnd: int, seed: bytes, data: st.DataObject) -> None:
    x = np.array(data.draw(st.lists(st.floats(-1e3, 1e3), min_size=dim, max_size=dim)))
    rot = RandomizedHadamard(dim, seed, rnd)
    y = rot.rotate(x)
    assert y.shape == (padded_dim(dim),)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(rot.inverse(y), x, atol=1e-9 * (1 + np.abs(x).max()))


def test_rotation_flattens_a_spike_and_depends_on_the_round() -> None:
    x = np.zeros(1000)
    x[3] = 1.0
    a = RandomizedHadamard(1000, bytes(32), 1).rotate(x)
    assert np.max(np.abs(a)) == pytest.approx(1 / math.sqrt(1024))
    b = RandomizedHadamard(1000, bytes(32), 2).rotate(x)
    assert not np.array_equal(a, b)


# -- rounding -------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=1, max_size=6))
def test_randomized_rounding_is_unbiased(values: list[float]) -> None:
    x = np.array(values)
    words = words_from(1)
    draws = np.stack([conditional_round(x, None, words) for _ in range(3000)])
    assert np.all((draws == np.floor(x)) | (draws == np.floor(x) + 1))
    frac = x - np.floor(x)
    sd = np.sqrt(frac * (1 - frac) / 3000) + 1e-12
    assert np.all(np.abs(draws.mean(axis=0) - x) <= 5 * sd + 1e-9)  # 5 sigma, seeded


def test_conditional_rounding_respects_the_norm_bound() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=256)
    x *= 20.0 / np.linalg.norm(x)
    bound = rounded_l2_bound(20.0, 256, DEFAULT_BETA)
    assert bound < 20.0 + 16.0  # tighter than the unconditional bound
    words = words_from(2)
    for _ in range(50):
        assert np.linalg.norm(conditional_round(x, bound, words)) <= bound
    with pytest.raises(ConfigurationError):
        conditional_round(x * 3, bound, words)  # a vector beyond its clip never passes


# -- ring sums ------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    bits=st.integers(4, 24),
    n=st.integers(1, 12),
    data=st.data(),
)
def test_sums_are_exact_in_the_ring(bits: int, n: int, data: st.DataObject) -> None:
    half = 1 << (bits - 1)
    per = max(1, (half - 1) // n)
    vals = np.array(
        data.draw(st.lists(st.lists(st.integers(-per, per), min_size=8, max_size=8), min_size=n, max_size=n))
    )
    params = _params(bits=bits, dim=8)
    enc = DistributedEncoder.for_round(params, seed=bytes(32), round=0)
    ring = [v.astype(np.uint64) & np.uint64((1 << bits) - 1) for v in vals]
    np.testing.assert_array_equal(enc.centre(enc.modular_sum(ring)), vals.sum(axis=0))
    # wrapping is arithmetic mod 2^b: a sum beyond the range comes back shifted by exactly 2^b
    big = np.full(8, half, dtype=np.int64)
    np.testing.assert_array_equal(enc.centre(enc.modular_sum([big.astype(np.uint64)])), -big)


def _params(*, bits: int = 16, dim: int = 8, mechanism: str = "dgauss") -> DistributedDPParams:
    """Hand-made parameters (no calibration) for codec tests."""
    return DistributedDPParams(
        mechanism="dgauss" if mechanism == "dgauss" else "skellam",
        bits=bits,
        clip=1.0,
        dim=dim,
        padded=padded_dim(dim),
        scale=10.0,
        beta=DEFAULT_BETA,
        sigma=20.0,
        shares=4,
        cohort=4,
        l2_sensitivity=rounded_l2_bound(10.0, padded_dim(dim), DEFAULT_BETA),
        l1_sensitivity=1.0,
        epsilon=1.0,
        delta=1e-5,
        rounds=1,
        sampling_rate=1.0,
        noise_inflation=1.0,
        clip_probability=1e-4,
    )


@pytest.mark.parametrize("mechanism", ["dgauss", "skellam"])
def test_encode_decode_carries_the_clipped_sum_and_the_planned_noise(mechanism: str) -> None:
    params = _params(bits=20, dim=100, mechanism=mechanism)
    enc = DistributedEncoder.for_round(params, seed=bytes(range(32)), round=5)
    rng = np.random.default_rng(3)
    updates = [rng.normal(size=100) * s for s in (0.1, 0.5, 2.0, 5.0)]  # the last two get clipped to 1
    noise = seeded_noise(4)
    errs = []
    for _ in range(30):
        ring = [enc.encode(u, noise) for u in updates]
        assert all(r.dtype == np.uint64 and int(r.max()) < 2**20 for r in ring)
        total = enc.decode(enc.modular_sum(ring))
        clipped = sum(u * min(1.0, 1.0 / float(np.linalg.norm(u))) for u in updates)
        errs.append(total - clipped)
    err = np.concatenate(errs)
    expected = math.sqrt(params.sigma**2 + 4 / 4.0) / params.scale  # noise + rounding (<= 1/4 per client)
    assert abs(err.mean()) < 4 * expected / math.sqrt(err.size)
    assert 0.85 * params.sigma / params.scale < err.std() < 1.1 * expected


# -- integer noise --------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.3, 4.0, 1000.0, 2.5e6])
def test_poisson_sampler_matches_the_distribution(lam: float) -> None:
    x = poisson_table_sample(lam, 200_000, words_from(7))
    assert x.mean() == pytest.approx(lam, abs=5 * math.sqrt(lam / 200_000))
    assert x.var() == pytest.approx(lam, rel=0.02)
    if lam < 10:  # chi-square against the pmf on the cells with enough mass
        ks = np.arange(0, int(lam + 8 * math.sqrt(lam) + 8))
        expected = stats.poisson.pmf(ks, lam) * x.size
        keep = expected > 20
        observed = np.array([(x == k).sum() for k in ks])
        chi = stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum())
        assert chi.pvalue > 1e-3


def test_skellam_has_the_variance_and_secure_noise_is_fresh() -> None:
    s = skellam(50.0, 100_000, words_from(8))
    assert s.var() == pytest.approx(50.0, rel=0.03) and abs(s.mean()) < 0.2
    secure = IntegerNoise(secrets=InsecureDeterministicSecrets(1))
    a = secure.share("skellam", 5.0, 64, secure.words())
    b = secure.share("skellam", 5.0, 64, secure.words())
    assert secure.secure and not np.array_equal(a, b)
    with pytest.warns(InsecureNoiseWarning):
        IntegerNoise(seed=1)


# -- parameters and refusals ----------------------------------------------------------------
PLAN = dict(clip=0.5, dim=650, epsilon=8.0, delta=1e-5, rounds=60, sampling_rate=0.2, cohort=260, shares=130)


@pytest.mark.parametrize("mechanism", ["dgauss", "skellam"])
def test_parameters_meet_epsilon_and_the_ring_bound(mechanism: str) -> None:
    p12 = choose_parameters(mechanism=mechanism, bits=12, **PLAN)  # type: ignore[arg-type]
    p16 = choose_parameters(mechanism=mechanism, bits=16, **PLAN)  # type: ignore[arg-type]
    for p in (p12, p16):
        assert p.epsilon <= 8.0
        assert p.clip_probability <= 1e-4
        assert p.overflow_bound(p.cohort) <= 1e-4
        assert p.noise_inflation <= 1.2
    assert p16.scale > 8 * p12.scale  # more bits, finer grid
    assert p16.noise_inflation < p12.noise_inflation
    assert p16.upload_bytes == 1024 * 16 // 8


def test_too_few_bits_are_refused_naming_the_smallest_that_work() -> None:
    with pytest.raises(ConfigurationError) as info:
        choose_parameters(mechanism="skellam", bits=8, **PLAN)  # type: ignore[arg-type]
    err = info.value
    assert err.field == "dp.bits"
    need = int(str(err).split("use bits >= ")[1].split()[0].rstrip(")"))
    choose_parameters(mechanism="skellam", bits=need, **PLAN)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        choose_parameters(mechanism="skellam", bits=need - 1, **PLAN)  # type: ignore[arg-type]


def test_no_silent_noise_blow_up() -> None:
    """TFF's failure: at too few bits the noise std jumps by orders of magnitude. Here the noise of any
    accepted configuration stays within max_inflation of the unlimited-bits mechanism, or it is refused."""
    stds = {}
    for bits in range(9, 17):
        try:
            p = choose_parameters(mechanism="dgauss", bits=bits, max_inflation=1.5, **PLAN)  # type: ignore[arg-type]
        except ConfigurationError:
            continue
        stds[bits] = p.noise_std_value
    assert stds, "some bits must work"
    assert max(stds.values()) <= 1.5 * min(stds.values())


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        choose_parameters(mechanism="laplace", bits=16, **PLAN)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        choose_parameters(mechanism="dgauss", bits=40, **PLAN)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        choose_parameters(mechanism="dgauss", bits=16, **{**PLAN, "shares": 0})  # type: ignore[arg-type]


def test_overflow_bound_is_a_probability_and_tight_enough() -> None:
    assert ring_overflow_bound(16, 1.0) < 1e-300
    assert ring_overflow_bound(4, 1e6) == 1.0
    # empirical: worst-case aligned clients with the planned noise rarely leave the ring
    p = choose_parameters(mechanism="skellam", bits=12, **{**PLAN, "cohort": 40, "shares": 20})  # type: ignore[arg-type]
    enc = DistributedEncoder.for_round(p, seed=bytes(32), round=0)
    x = np.ones(650) / math.sqrt(650) * 0.5  # every client sends the same, maximal vector
    noise = seeded_noise(9)
    ring = enc.modular_sum([enc.encode(x, noise) for _ in range(40)])
    centred = enc.centre(ring)
    assert np.max(np.abs(centred)) < (1 << 11)
    total = enc.decode(ring)
    assert np.abs(total - 40 * x).max() < 8 * p.noise_std_value * math.sqrt(2)


def test_a_skellam_plan_keeps_its_shares_within_the_table_sampler() -> None:
    """At 24 bits and a handful of clients the best scale used to give Skellam shares the Poisson table cannot
    draw (lambda 2.8e11): the plan passed every check and every client failed after training with an untyped
    ValueError. The plan now keeps the share variance within the table, at the same noise inflation."""
    from dp.distributed import SKELLAM_MAX_SHARE_VARIANCE
    from dp.distributed_encoding import DistributedEncoder, IntegerNoise

    for cohort, shares in ((6, 4), (2, 1)):
        p = choose_parameters(
            mechanism="skellam",
            bits=24,
            clip=1.0,
            dim=1000,
            epsilon=8.0,
            delta=1e-5,
            rounds=1,
            sampling_rate=1.0,
            cohort=cohort,
            shares=shares,
        )
        assert p.share_sigma**2 <= SKELLAM_MAX_SHARE_VARIANCE and p.noise_inflation < 1.001
        enc = DistributedEncoder.for_round(p, seed=bytes(32), round=1)
        with pytest.warns(InsecureNoiseWarning):
            noise = IntegerNoise(seed=1)
        ring = enc.encode(np.full(1000, 0.01), noise)
        assert ring.shape == (p.padded,) and int(ring.max()) < p.modulus
