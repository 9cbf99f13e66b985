"""Feature-space hijacking: the real client, driven by a malicious server, leaks its inputs."""

from __future__ import annotations

import pytest

from attacks.split.fsha import fsha_attack
from privagg.errors import ConfigurationError
from protocols.split.simulation import SplitConfig

CLIENT = SplitConfig(dataset="digits", hidden=(64,), cut=3, batch_size=64, optimizer="adam", lr=1e-4)


def _step_bytes(b: int, width: int = 64) -> int:
    return (15 + 4 * b + 1 + 8 + 4 * b * width) + (15 + 1 + 8 + 4 * b * width)


def test_fsha_runs_the_real_client_through_the_codec() -> None:
    scores, sent = fsha_attack(CLIENT, steps=30, targets=20)
    assert scores.psnr.shape == (20,) and scores.reconstructions.shape == (20, 1, 8, 8)
    # 1347 training images: 21 batches of 64 and one of 3 per epoch; 30 steps = 22 + 8
    assert sent == 29 * _step_bytes(64) + _step_bytes(3)


@pytest.mark.slow
def test_fsha_beats_the_baseline() -> None:
    scores, _ = fsha_attack(CLIENT, steps=600, targets=60)
    # after 600 hijacked steps the decoder inverts the client's smashed data better than the
    # mean public image does (the benchmark runs 3000 steps: about 20 dB)
    assert scores.median_psnr > scores.baseline_median_psnr + 2.0


def test_fsha_needs_images() -> None:
    with pytest.raises(ConfigurationError):
        fsha_attack(SplitConfig(epochs=1), steps=1)
