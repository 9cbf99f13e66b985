"""Adaptive clipping moves the clip toward the target quantile; the noise split is exact."""

from __future__ import annotations

import math

import pytest

from dp.adaptive import AdaptiveClipConfig, AdaptiveClipper, split_noise_multiplier
from privagg.errors import ConfigurationError


def test_clip_goes_up_when_most_updates_are_clipped() -> None:
    c = AdaptiveClipper(AdaptiveClipConfig(initial_clip=1.0, target_quantile=0.5, learning_rate=0.2))
    assert c.update(0.1) > 1.0  # only 10 % unclipped: raise the clip
    c2 = AdaptiveClipper(AdaptiveClipConfig(initial_clip=1.0, target_quantile=0.5, learning_rate=0.2))
    assert c2.update(0.9) < 1.0  # 90 % unclipped: lower it
    assert c2.update(0.5) == pytest.approx(c2.history[-2])  # at the target: unchanged
    assert c.history[-1] == pytest.approx(math.exp(0.2 * 0.4))


def test_clip_converges_to_target_quantile() -> None:
    # noiseless: norms 1..100, target the median; the clip settles near 50
    norms = list(range(1, 101))
    c = AdaptiveClipper(AdaptiveClipConfig(initial_clip=2.0, target_quantile=0.5, learning_rate=0.2))
    for _ in range(300):
        frac = sum(n <= c.clip for n in norms) / len(norms)
        c.update(frac)
    assert 40 <= c.clip <= 60


def test_unclipped_fraction_estimate() -> None:
    c = AdaptiveClipper(AdaptiveClipConfig(initial_clip=1.0))
    # 30 of 40 unclipped: centred count = 30 - 20 = 10
    assert c.unclipped_fraction(10.0, 40.0) == pytest.approx(0.75)


def test_split_noise_multiplier() -> None:
    z, zb = 1.0, 5.0
    zd = split_noise_multiplier(z, zb)
    assert zd > z
    assert zd**-2 + zb**-2 == pytest.approx(z**-2)
    with pytest.raises(ConfigurationError, match="count_noise_std"):
        split_noise_multiplier(1.0, 1.0)
    with pytest.raises(ConfigurationError):
        split_noise_multiplier(0.0, 1.0)


def test_config_validation_and_default_count_noise() -> None:
    assert AdaptiveClipConfig(initial_clip=1.0).count_std(100.0) == 5.0  # expected cohort / 20
    assert AdaptiveClipConfig(initial_clip=1.0, count_noise_std=2.0).count_std(100.0) == 2.0
    for bad in (
        {"initial_clip": 0.0},
        {"initial_clip": 1.0, "target_quantile": 1.0},
        {"initial_clip": 1.0, "learning_rate": 0.0},
        {"initial_clip": 1.0, "count_noise_std": -1.0},
    ):
        with pytest.raises(ConfigurationError):
            AdaptiveClipConfig(**bad)  # type: ignore[arg-type]
