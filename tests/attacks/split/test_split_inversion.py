"""The decoder attack on smashed data: PSNR known values, and it beats the no-knowledge baseline."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.split.inversion import decoder_attack, image_psnr
from privagg.errors import ConfigurationError
from protocols.split.simulation import SplitConfig, run_split


def test_image_psnr_known_values() -> None:
    a = np.zeros((2, 1, 4, 4))
    b = a.copy()
    b[0] += 0.1  # MSE 0.01 -> 20 dB
    np.testing.assert_allclose(image_psnr(a, b), [20.0, 100.0])
    with pytest.raises(ConfigurationError):
        image_psnr(a, b[:1])


def test_decoder_beats_the_baseline_on_digits() -> None:
    run = run_split(SplitConfig(dataset="digits", hidden=(32,), cut=3, epochs=2, lr=0.05, momentum=0.9))
    scores = decoder_attack(run, targets=50, epochs=40)
    assert scores.psnr.shape == (50,)
    assert scores.median_psnr > scores.baseline_median_psnr + 3.0
    assert 0.0 <= scores.fraction_recovered <= 1.0
    assert scores.reconstructions.shape == scores.originals.shape == (50, 1, 8, 8)


def test_decoder_needs_images() -> None:
    run = run_split(SplitConfig(epochs=1))
    with pytest.raises(ConfigurationError):
        decoder_attack(run)
