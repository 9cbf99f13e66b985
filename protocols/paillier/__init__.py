"""Packed Paillier homomorphic summation with threshold decryption (``aggregator = "paillier"``).

Layers: :mod:`.keys` (keys, CRT, Damgård–Jurik/Shoup threshold shares), :mod:`.obfuscators`
(offline randomness ``r^n``: fresh or fixed-base), :mod:`.packing` (BatchCrypt-style slots),
:mod:`.messages` (versioned codec), :mod:`.parties` (client, server, decryptor state
machines), :mod:`.protocol` (in-memory driver with costs), :mod:`.aggregator` (FedAvg).
"""

from .aggregator import PaillierAggregator
from .keys import (
    KEY_BITS_ACCEPTED,
    PaillierPrivateKey,
    PaillierPublicKey,
    ThresholdKeyShare,
    ThresholdPublicKey,
    deal_threshold_key,
    generate_keypair,
    generate_threshold_key,
)
from .messages import (
    CODEC_VERSION,
    DIGEST_BYTES,
    NO_MODEL_DIGEST,
    AggregateRequest,
    ClientContribution,
    PartialDecryption,
    RoundSetup,
    decode_message,
    encode_message,
    model_digest,
)
from .obfuscators import RANDOMNESS_MODES, FixedBaseRandomness, FixedBaseTable, FreshRandomness, make_randomness
from .packing import PackingLayout
from .parties import PaillierClient, PaillierDecryptor, PaillierServer
from .protocol import PaillierConfig, PaillierSession, PaillierSetup, RoundOutcome

__all__ = [
    "KEY_BITS_ACCEPTED",
    "CODEC_VERSION",
    "RANDOMNESS_MODES",
    "PaillierPublicKey",
    "PaillierPrivateKey",
    "ThresholdPublicKey",
    "ThresholdKeyShare",
    "generate_keypair",
    "generate_threshold_key",
    "deal_threshold_key",
    "FreshRandomness",
    "FixedBaseRandomness",
    "FixedBaseTable",
    "make_randomness",
    "PackingLayout",
    "DIGEST_BYTES",
    "NO_MODEL_DIGEST",
    "model_digest",
    "RoundSetup",
    "ClientContribution",
    "AggregateRequest",
    "PartialDecryption",
    "encode_message",
    "decode_message",
    "PaillierClient",
    "PaillierServer",
    "PaillierDecryptor",
    "PaillierConfig",
    "PaillierSetup",
    "PaillierSession",
    "RoundOutcome",
    "PaillierAggregator",
]
