"""Real key sizes (2048-bit): one full threshold round. Slow (safe-prime generation): ``-m slow``."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.paillier import PaillierConfig, PaillierSession, PaillierSetup


@pytest.mark.slow
@pytest.mark.parametrize("randomness", ["fresh", "fixed-base"])
def test_2048_bit_threshold_round(randomness):
    cfg = PaillierConfig(key_bits=2048, max_clients=10, decryptors=3, threshold=2, randomness=randomness)
    setup = PaillierSetup.generate(cfg)
    assert setup.public_key.key_bits == 2048
    s = PaillierSession(setup)
    q = cfg.layout.q
    rng = np.random.default_rng(0)
    vec = {c: rng.integers(-q, q + 1, 500) for c in range(10)}
    vec[0][:] = q  # worst case in the first client too
    out = s.run_round(vec)
    assert np.array_equal(out.sums, sum(vec.values()))
