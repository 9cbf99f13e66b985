import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.encoding import pack_bits, packed_size
from privagg.errors import InvalidMessage
from privagg.randomness import hkdf, prg_add_words, prg_bytes, prg_words
from secagg.wire import Reader, add_packed, pack_ring, unpack_ring


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 62), n=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_pack_ring_matches_foundation_layout(bits, n, seed):
    v = np.random.default_rng(seed).integers(0, 2**bits, n, dtype=np.uint64)
    b = pack_ring(v, bits)
    assert b == pack_bits(v, bits)
    assert len(b) == packed_size(n, bits)
    assert np.array_equal(unpack_ring(b, bits, n), v)


def test_add_packed_chunks():
    rng = np.random.default_rng(1)
    for bits, n in ((23, 200_001), (26, 70_000), (32, 1000), (40, 65_537)):
        v = rng.integers(0, 2**bits, n, dtype=np.uint64)
        dtype = np.uint32 if bits <= 32 else np.uint64
        acc = rng.integers(0, 2**31, n).astype(dtype)
        want = acc + v.astype(dtype)
        add_packed(acc, pack_ring(v, bits), bits)
        assert np.array_equal(acc, want)
    with pytest.raises(ValueError):
        add_packed(np.zeros(10, np.uint32), b"\x00" * 3, 23)


def test_reader_never_overreads():
    r = Reader(b"\x00\x00\x00\x05ab", "t")
    with pytest.raises(InvalidMessage):
        r.var(100)
    r = Reader(b"\xff\xff\xff\xff", "t")
    with pytest.raises(InvalidMessage):
        r.count(1, 1 << 30)


def _reference_stream(seed: bytes, info: bytes, n: int) -> bytes:
    key = hkdf(seed, info=b"privagg/prg/aes-256-ctr/" + info)
    return Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(n))


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 64, 65, 1000, (1 << 17) + 5, 300_001])
def test_prg_is_hkdf_aes_ctr(n):
    seed = bytes(range(32))
    assert prg_bytes(seed, info=b"kat", nbytes=n) == _reference_stream(seed, b"kat", n)
    assert prg_words(seed, info=b"kat", count=n, bits=32).tobytes() == _reference_stream(seed, b"kat", 4 * n)
    out = np.empty(n, dtype="<u8")
    assert prg_words(seed, info=b"kat", count=n, bits=64, out=out) is out
    assert out.tobytes() == _reference_stream(seed, b"kat", 8 * n)


def test_prg_known_answer():
    # first 8 bytes of HKDF-SHA256 -> AES-256-CTR for the all-zero seed, info "privagg-kat"
    assert prg_bytes(bytes(32), info=b"privagg-kat", nbytes=8) == _reference_stream(bytes(32), b"privagg-kat", 8)
    assert prg_words(bytes(32), info=b"x", count=4, bits=5).max() < 32


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
@pytest.mark.parametrize("n", [1, 17, 40_000, 300_001])
def test_prg_add_words_equals_add_of_words(dtype, n):
    seed = bytes(range(1, 33))
    bits = 32 if dtype is np.uint32 else 64
    base = np.arange(n, dtype=dtype)
    w = prg_words(seed, info=b"m", count=n, bits=bits)
    acc = base.copy()
    prg_add_words(acc, seed, info=b"m")
    assert np.array_equal(acc, base + w)
    prg_add_words(acc, seed, info=b"m", subtract=True)
    assert np.array_equal(acc, base)


def test_prg_rejects_folded_seeds():
    with pytest.raises(ValueError):
        prg_words(b"short", info=b"", count=1, bits=32)
    with pytest.raises(ValueError):
        prg_add_words(np.zeros(3, np.int64), bytes(32), info=b"")
