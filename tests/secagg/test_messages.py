"""Codec round trips, and fuzzing: every decoder returns a message or raises InvalidMessage."""

import zlib

import numpy as np
import pytest

from privagg.errors import InvalidMessage
from secagg import SecAggParams
from secagg.messages import (
    CIPHERTEXT_BYTES,
    SHARE_BYTES,
    Complaint,
    ConsistencyRequest,
    ConsistencySignature,
    DeliveredShare,
    EncryptedShares,
    Exclusion,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    MaskRequest,
    RevealedShare,
    RevealSet,
    RoundSetup,
    SeedReveal,
    ShareCheck,
    ShareDelivery,
    ShareEnvelope,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
)

SID = bytes(range(32))
ADV = KeyAdvertisement(3, 7, b"c" * 32, b"e" * 32, b"m" * 32, b"s" * 64, b"C" * 32)
SAMPLES = [
    RoundSetup(3, SecAggParams.manual(num_clients=100, degree=14, threshold=10), 1000, b"d" * 32),
    ADV,
    KeyRoster(3, (ADV, KeyAdvertisement(3, 8, b"c" * 32, b"f" * 32, b"n" * 32))),
    EncryptedShares(3, SID, 7, b"h" * 32, (ShareEnvelope(8, b"a" * 32, b"x" * CIPHERTEXT_BYTES),), b"q" * 12),
    ShareDelivery(
        3,
        SID,
        8,
        (
            DeliveredShare(7, b"x" * CIPHERTEXT_BYTES, b"d" * 32, b"a" * 32, b"q" * 12),
            DeliveredShare(9, b"y" * CIPHERTEXT_BYTES, b"e" * 32, b"c" * 32, b"r" * 12),
        ),
    ),
    MaskedInput.from_values(
        round=3, session_id=SID, sender=7, modulus_bits=23, values=np.arange(50, dtype=np.uint64) * 1000
    ),
    ConsistencyRequest(3, SID, (1, 2, 7)),
    ConsistencySignature(3, SID, 7, b"g" * 64),
    UnmaskRequest(3, SID, (1, 2), (5,), ((1, b"p" * 64), (2, b"q" * 64))),
    UnmaskResponse(
        3, SID, 7, (RevealedShare(1, b"r" * SHARE_BYTES, b"o" * 64),), (RevealedShare(5, b"k" * SHARE_BYTES),)
    ),
    ShareCheck(3, SID, 7, (Complaint(2, b"K" * 32), Complaint(9, b"L" * 32)), b"s" * 64),
    MaskRequest(3, SID, (Exclusion(2, 7, b"K" * 32, b"dealing bytes"), Exclusion(9, 4, b"L" * 32, b""))),
    SeedReveal(3, SID, 7, b"r" * 32),
    RevealSet(3, SID, ((7, b"r" * 32), (8, b"t" * 32))),
]


@pytest.mark.parametrize("old", [3, 4])
def test_codec_version_5_refuses_older_versions(old: int) -> None:
    """Version 4 added the seed commitment to the advertisement and the reveal stage; version 5 the
    30-bit limbs, the envelope leaves and the openings of revealed shares: an older peer is refused."""
    b = bytearray(ADV.encode())
    assert b[2] == 5
    b[2] = old
    with pytest.raises(InvalidMessage, match="version"):
        decode_message(bytes(b))


def test_the_advertisement_signs_and_the_session_hashes_the_seed_commitment() -> None:
    from secagg import crypto

    other = KeyAdvertisement(3, 7, b"c" * 32, b"e" * 32, b"m" * 32, b"s" * 64, b"D" * 32)
    assert crypto.advertisement_payload(ADV) != crypto.advertisement_payload(other)
    assert crypto.session_id(3, [ADV]) != crypto.session_id(3, [other])


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    b = msg.encode()
    assert type(msg).decode(b) == msg
    assert decode_message(b) == msg
    assert np.array_equal(SAMPLES[5].values(), np.arange(50, dtype=np.uint64) * 1000)


def _mutations(valid: bytes, rng: np.random.Generator, n: int):
    for i in range(n):
        kind = i % 6
        b = bytearray(valid)
        if kind == 0:  # random bytes of random length (sometimes with a valid header)
            b = bytearray(rng.integers(0, 256, int(rng.integers(0, 2 * len(valid) + 8)), dtype=np.uint8).tobytes())
            if rng.random() < 0.5:
                b[:4] = valid[:4]
        elif kind == 1:  # truncation
            b = b[: int(rng.integers(0, len(b)))]
        elif kind == 2:  # extension
            b += rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        elif kind == 3:  # bit flips
            for _ in range(int(rng.integers(1, 4))):
                j = int(rng.integers(0, len(b)))
                b[j] ^= 1 << int(rng.integers(0, 8))
        elif kind == 4:  # huge length / count fields: overwrite 4 bytes with 0xff.. at a random place
            j = int(rng.integers(0, max(1, len(b) - 4)))
            b[j : j + 4] = b"\xff\xff\xff\x7f"
        else:  # splice: delete or insert a run
            j = int(rng.integers(0, len(b)))
            if rng.random() < 0.5:
                del b[j : j + int(rng.integers(1, 16))]
            else:
                b[j:j] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
        yield bytes(b)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda m: type(m).__name__)
def test_fuzz_decoder(msg):
    """10,000 random and mutated inputs per decoder: a message or InvalidMessage, nothing else."""
    rng = np.random.default_rng(zlib.crc32(type(msg).__name__.encode()))
    valid = msg.encode()
    decoded = 0
    for data in _mutations(valid, rng, 10_000):
        for dec in (type(msg).decode, decode_message):
            try:
                out = dec(data)
            except InvalidMessage:
                continue
            decoded += 1
            assert out.encode() == data  # anything accepted is canonical
    assert decoded < 20_000


def test_non_bytes_and_unknown_types():
    for bad in (b"", b"PS", b"PS\x01\x63", b"XX\x01\x01" + bytes(60), b"PS\x02\x01" + bytes(60)):
        with pytest.raises(InvalidMessage):
            decode_message(bad)
    with pytest.raises(InvalidMessage):
        RoundSetup.decode("not bytes")  # type: ignore[arg-type]


def test_codec_v3_sizes_are_bounded_by_the_round():
    """The check-polynomial fields are bounded by the round's cohort before anything is allocated."""
    from secagg.messages import Limits

    big = EncryptedShares(3, SID, 7, b"h" * 32, (), b"q" * (3 * 4 * 11))  # CHECK_LIMBS x 4 bytes x cohort
    with pytest.raises(InvalidMessage, match="exceeds"):
        EncryptedShares.decode(big.encode(), Limits(clients=10))
    assert EncryptedShares.decode(big.encode(), Limits(clients=11)) == big
