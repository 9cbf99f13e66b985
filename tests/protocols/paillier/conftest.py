"""Shared toy keys for the Paillier tests (small, insecure sizes: fast; never use them for real)."""

from __future__ import annotations

import pytest

from privagg.randomness import InsecureDeterministicSecrets
from protocols.paillier import (
    PaillierConfig,
    PaillierSetup,
    generate_keypair,
    generate_threshold_key,
)


@pytest.fixture(scope="session")
def toy_keypair():
    return generate_keypair(512, secrets=InsecureDeterministicSecrets(b"toy-512"), allow_insecure=True)


@pytest.fixture(scope="session")
def toy_threshold_key():
    return generate_threshold_key(
        512, decryptors=5, threshold=3, secrets=InsecureDeterministicSecrets(b"toy-threshold"), allow_insecure=True
    )


@pytest.fixture(scope="session")
def threshold_setup():
    cfg = PaillierConfig(
        key_bits=512, value_bits=12, max_clients=6, decryptors=3, threshold=2, min_clients=3, allow_insecure=True
    )
    return PaillierSetup.generate(cfg, clients=range(10), secrets=InsecureDeterministicSecrets(b"setup-3-2"))
