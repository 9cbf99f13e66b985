"""Packed Paillier homomorphic summation with threshold decryption (``aggregator = "paillier"``).

Layers: :mod:`.keys` (keys, CRT, Damgård–Jurik/Shoup threshold shares), :mod:`.obfuscators`
(offline randomness ``r^n``: fresh or fixed-base), :mod:`.packing` (BatchCrypt-style slots),
:mod:`.messages` (versioned codec), :mod:`.knowledge` (proofs of plaintext knowledge),
:mod:`.directory` (provisioned directories, endorsement quorum, the decryptor's durable store),
:mod:`.parties` (client and server state machines; the threat model), :mod:`.decryptor`
(decryptor state machine), :mod:`.waves` (the server's decryption stages, shared by every driver:
silent or failing decryptors replaced), :mod:`.protocol` (in-memory driver with costs), :mod:`.aggregator`
(FedAvg).
"""

from .aggregator import PaillierAggregator
from .decryptor import PaillierDecryptor
from .directory import Directory, FileStore, MemoryStore, endorsement_quorum
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
from .knowledge import verify_contributions
from .messages import (
    CODEC_VERSION,
    DIGEST_BYTES,
    NO_MODEL_DIGEST,
    AggregateRequest,
    ClientContribution,
    PartialDecryption,
    RoundSetup,
    SetEndorsement,
    decode_message,
    encode_message,
    model_digest,
)
from .obfuscators import RANDOMNESS_MODES, FixedBaseRandomness, FixedBaseTable, FreshRandomness, make_randomness
from .packing import PackingLayout
from .parties import PaillierClient, PaillierServer
from .protocol import DecryptorHook, PaillierConfig, PaillierSession, PaillierSetup, RoundOutcome
from .waves import DecryptorsUnavailable, WavesOutcome, decrypt_in_waves

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
    "SetEndorsement",
    "Directory",
    "MemoryStore",
    "FileStore",
    "endorsement_quorum",
    "verify_contributions",
    "encode_message",
    "decode_message",
    "PaillierClient",
    "PaillierServer",
    "PaillierDecryptor",
    "PaillierConfig",
    "PaillierSetup",
    "PaillierSession",
    "RoundOutcome",
    "DecryptorHook",
    "DecryptorsUnavailable",
    "WavesOutcome",
    "decrypt_in_waves",
    "PaillierAggregator",
]
