"""DP for sparse updates: the stated sensitivity, clipping after masking, accounting through dp/, the release."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dp import InsecureNoiseWarning, Sampling, SeededNoise, epsilon_for
from privagg.errors import ConfigurationError
from protocols.personalization.privacy import SparseUpdateDP, private_per_coordinate_mean

POISSON = Sampling.poisson(rate=0.1, population=1000)
FIXED = Sampling.fixed(sample_size=10, population=100)


def test_sensitivity_formula() -> None:
    spec = SparseUpdateDP(clip=2.0, max_kept=100, noise_multiplier=1.0, count_weight=0.1)
    assert spec.sensitivity(POISSON) == pytest.approx(math.sqrt(4.0 + 0.01 * 100))
    assert spec.sensitivity(FIXED) == pytest.approx(2 * math.sqrt(5.0))
    dense_like = SparseUpdateDP(clip=2.0, max_kept=100, noise_multiplier=1.0)
    assert dense_like.sensitivity(POISSON) == 2.0  # no counts: the dense bound, whatever the sparsity
    assert dense_like.count_noise_std(POISSON) == math.inf
    assert spec.count_noise_std(POISSON) == pytest.approx(math.sqrt(5.0) / 0.1)


@settings(max_examples=60, deadline=None)
@given(
    dim=st.integers(1, 40),
    clip=st.floats(0.1, 5.0),
    weight=st.floats(0.0, 2.0),
    seed=st.integers(0, 2**31),
    scale=st.floats(0.01, 100.0),
)
def test_any_two_neighbours_differ_by_at_most_the_sensitivity(dim, clip, weight, seed, scale) -> None:
    """Add/remove: ||u_k|| <= Delta; replace-one: ||u_k - u_j|| <= Delta (factor 2), for any masks."""
    rng = np.random.default_rng(seed)
    spec = SparseUpdateDP(clip=clip, max_kept=dim, noise_multiplier=1.0, count_weight=weight)
    a = spec.contribution(rng.normal(size=dim) * scale, rng.random(dim) < 0.5)
    b = spec.contribution(rng.normal(size=dim) * scale, rng.random(dim) < 0.5)
    assert np.linalg.norm(a) <= spec.sensitivity(POISSON) * (1 + 1e-9)
    assert np.linalg.norm(a - b) <= spec.sensitivity(FIXED) * (1 + 1e-9)


def test_contribution_clips_after_masking_and_refuses_large_masks() -> None:
    spec = SparseUpdateDP(clip=1.0, max_kept=2, noise_multiplier=1.0, count_weight=0.5)
    u = spec.contribution(np.array([3.0, 4.0, 100.0]), np.array([True, True, False]))
    np.testing.assert_allclose(u[:3], [0.6, 0.8, 0.0])  # the dropped 100 neither counts nor moves the clip
    np.testing.assert_allclose(u[3:], [0.5, 0.5, 0.0])
    with pytest.raises(ConfigurationError, match="max_kept"):
        spec.contribution(np.ones(3), np.ones(3, dtype=bool))
    with pytest.raises(ConfigurationError, match="dp_clip"):
        SparseUpdateDP(clip=0.0, max_kept=1, noise_multiplier=1.0)
    with pytest.raises(ConfigurationError, match="dp_noise_multiplier"):
        SparseUpdateDP(clip=1.0, max_kept=1, noise_multiplier=-1.0)


def test_accounting_is_the_dp_accountants() -> None:
    spec = SparseUpdateDP(clip=1.0, max_kept=50, noise_multiplier=1.3, count_weight=0.1)
    eps = spec.epsilon(rounds=20, sampling=POISSON, delta=1e-5)
    assert eps == pytest.approx(epsilon_for(noise_multiplier=1.3, sampling=POISSON, rounds=20, delta=1e-5))
    assert spec.epsilon(rounds=40, sampling=POISSON, delta=1e-5) > eps
    with pytest.raises(ConfigurationError, match="accountant"):
        spec.epsilon(rounds=1, sampling=FIXED, delta=1e-5, accountant="prv")


def test_release_noise_scale_and_mean() -> None:
    """Seeded statistical check (simulation noise): the noise std is z * Delta within 5 %; means unbiased."""
    dim, n = 400, 8
    deltas = [np.full(dim, 0.01) for _ in range(n)]
    masks = [np.ones(dim, dtype=bool) for _ in range(n)]
    spec = SparseUpdateDP(clip=1.0, max_kept=dim, noise_multiplier=0.5, count_weight=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        sampler = SeededNoise(1)
    mean, counts = private_per_coordinate_mean(deltas, masks, spec=spec, sampling=POISSON, cohort=n, sampler=sampler)
    assert counts is not None and np.isfinite(mean).all()
    count_std = spec.count_noise_std(POISSON)
    assert np.std(counts - n) == pytest.approx(count_std, rel=0.1)
    # without counts: divide by the public cohort; a non-keeper counts as zero
    plain = SparseUpdateDP(clip=1.0, max_kept=dim, noise_multiplier=0.0)
    half = [np.ones(dim, dtype=bool) if k % 2 else np.zeros(dim, dtype=bool) for k in range(n)]
    m, c = private_per_coordinate_mean(deltas, half, spec=plain, sampling=POISSON, cohort=n, sampler=sampler)
    assert c is None
    np.testing.assert_allclose(m, 0.005)


class _CountingNoise:
    """The seeded sampler, counting the noise it draws (which scale, how many coordinates)."""

    def __init__(self, seed: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureNoiseWarning)
            self.inner = SeededNoise(seed)
        self.calls: list[tuple[float, int]] = []

    def discrete_gaussian(self, sigma: float, size: int) -> np.ndarray:
        self.calls.append((sigma, size))
        return self.inner.discrete_gaussian(sigma, size)


def test_dp_run_adds_the_accounted_noise_each_round() -> None:
    from protocols.fedavg import DataConfig, ModelConfig, RunConfig
    from protocols.personalization import PersonalizationOptions, client_splits, run_fedltn
    from protocols.training import TrainConfig

    rc = RunConfig(
        seed=1,
        data=DataConfig(dataset="digits", num_clients=5, partition="shards", shards_per_client=2),
        model=ModelConfig(name="mlp", hidden=(8,)),
        train=TrainConfig(epochs=1, batch_size=64, lr=0.1),
    )
    clients = client_splits(rc)
    opts = PersonalizationOptions(
        name="fedltn", rounds=3, acc_threshold=0.0, dp_noise_multiplier=0.8, dp_clip=0.5, dp_count_weight=0.02
    )
    noise = _CountingNoise(0)
    res = run_fedltn(rc, opts, clients=clients, noise=noise)
    spec = SparseUpdateDP(clip=0.5, max_kept=res.num_params, noise_multiplier=0.8, count_weight=0.02)
    sampling = Sampling.poisson(rate=1.0, population=5)
    mech = spec.mechanism(res.num_params, sampling)
    assert noise.calls == [(pytest.approx(mech.std / mech.grid), 2 * res.num_params)] * 3
    assert res.epsilon == pytest.approx(spec.epsilon(rounds=3, sampling=sampling, delta=1e-5))
    assert np.isfinite(res.client_accuracies).all()
    plain = run_fedltn(rc, dataclasses.replace(opts, dp_noise_multiplier=0.0), clients=clients)
    assert plain.epsilon is None
    with pytest.raises(ConfigurationError, match="dp_noise_multiplier"):
        dataclasses.replace(opts, secure_aggregation=True)
    with pytest.raises(ConfigurationError, match="dp_clip"):
        PersonalizationOptions(dp_clip=0.0)
