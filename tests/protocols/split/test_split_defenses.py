"""Gradient defenses and NoPeek's distance correlation: known answers and statistical properties (seeded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privagg.errors import ConfigurationError
from privagg.randomness import InsecureDeterministicSecrets
from protocols.split.defenses import (
    GaussianNoise,
    Marvell,
    MaxNorm,
    _sum_kl,
    build_gradient_defense,
    distance_correlation,
    marvell_covariances,
    unpredictable_generator,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_zero_noise_is_identity_and_noise_scales_with_the_median_norm() -> None:
    g = torch.randn(64, 10, generator=_gen())
    y = torch.zeros(64, dtype=torch.int64)
    torch.testing.assert_close(GaussianNoise(0.0).perturb(g, y, _gen()), g)
    noisy = GaussianNoise(3.0).perturb(g, y, _gen(1))
    ratio = float((noisy - g).norm(dim=1).mean() / g.norm(dim=1).median())
    assert 2.6 < ratio < 3.3  # E||noise|| ~ 3 x median norm (chi with 10 dof: slightly below 3)


def test_max_norm_equalises_expected_squared_norms() -> None:
    g = torch.cat([torch.ones(1, 50) * 2.0, torch.ones(1, 50) * 0.5])
    y = torch.tensor([1, 0])
    sq = torch.stack([(MaxNorm().perturb(g, y, _gen(s)) ** 2).sum(1) for s in range(400)]).mean(0)
    assert float(sq[0]) == pytest.approx(200.0)  # the largest passes unchanged
    assert float(sq[1]) == pytest.approx(200.0, rel=0.05)


def test_marvell_scalars_respect_the_budget_and_lower_the_divergence() -> None:
    for u, v in [(0.01, 0.01), (0.05, 0.2), (0.3, 0.1)]:
        lam = np.array(marvell_covariances(u=u, v=v, dist2=1.0, d=16, p1=0.3, power=4.0))
        assert np.all(lam >= 0)
        spent = 0.7 * (lam[0] + 15 * lam[1]) + 0.3 * (lam[2] + 15 * lam[3])
        assert spent <= 4.0 + 1e-6
        assert _sum_kl(lam, u, v, 1.0, 16) < _sum_kl(np.zeros(4), u, v, 1.0, 16)
    # Equal classes, isotropic: the noise goes along the class-mean difference, none orthogonal.
    lam = marvell_covariances(u=0.01, v=0.01, dist2=1.0, d=8, p1=0.5, power=2.0)
    assert lam[1] == pytest.approx(0.0, abs=1e-6) and lam[3] == pytest.approx(0.0, abs=1e-6)
    assert lam[0] == pytest.approx(lam[2], rel=0.05)
    assert marvell_covariances(u=1.0, v=1.0, dist2=1.0, d=4, p1=0.5, power=0.0) == (0.0, 0.0, 0.0, 0.0)


def test_marvell_hides_the_class_direction() -> None:
    """Gradients +e for class 1 and -e for class 0: after Marvell the sign along e barely predicts the class."""
    e = torch.zeros(8)
    e[0] = 1.0
    y = torch.tensor([1, 0] * 64)
    g = torch.where(y[:, None] == 1, e, -e) * 0.1 + 0.001 * torch.randn(128, 8, generator=_gen())
    noisy = Marvell(power=16.0).perturb(g, y, _gen(2))
    agree = float(((noisy[:, 0] > 0) == (y == 1)).double().mean())
    assert agree < 0.7
    with pytest.raises(ConfigurationError):
        Marvell().perturb(g, torch.full((128,), 2), _gen())


def test_defense_registry_and_options() -> None:
    assert isinstance(build_gradient_defense("max-norm"), MaxNorm)
    with pytest.raises(ConfigurationError):
        build_gradient_defense("noise", {"sigma": 1.0})
    with pytest.raises(ConfigurationError):
        build_gradient_defense("nope")
    a = unpredictable_generator(InsecureDeterministicSecrets(1))
    b = unpredictable_generator(InsecureDeterministicSecrets(1))
    assert torch.equal(torch.randn(3, generator=a), torch.randn(3, generator=b))


def test_distance_correlation_known_values() -> None:
    x = torch.randn(200, 5, generator=_gen(3))
    assert float(distance_correlation(x, x)) == pytest.approx(1.0, abs=1e-3)
    assert float(distance_correlation(x, 3.0 * x + 1.0)) == pytest.approx(1.0, abs=1e-3)
    z = torch.randn(200, 5, generator=_gen(4))
    assert float(distance_correlation(x, z)) < 0.3
    zz = torch.randn(16, 3, requires_grad=True)
    distance_correlation(torch.randn(16, 4), zz).backward()
    assert zz.grad is not None and torch.isfinite(zz.grad).all()
