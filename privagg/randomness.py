"""The three randomness roles of privagg (see DESIGN.md), as small explicit helpers.

1. **Secrets** (key pairs, seeds, Shamir coefficients, Paillier ``r``) come from a
   :class:`SecretSource`; the default is the OS CSPRNG. Tests may inject
   :class:`InsecureDeterministicSecrets` through the explicit ``secrets=`` seam, never
   anything else.
2. **Seed expansion** (masks) is :func:`prg_words`: HKDF-SHA256 derives an AES-256 key from
   the full 32-byte seed and a domain-separation label (session, round, purpose), and the
   AES-256-CTR keystream (OpenSSL, through ``cryptography``) is the mask.
3. **Simulation** randomness (data splits, model init, attack restarts) comes from an
   injected, seeded :func:`simulation_rng` / :func:`torch_generator`. It is never used for
   secrets or for noise that protects people.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Protocol, runtime_checkable

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "SecretSource",
    "SystemSecrets",
    "SYSTEM_SECRETS",
    "InsecureDeterministicSecrets",
    "secret_below",
    "label",
    "hkdf",
    "prg_bytes",
    "prg_words",
    "prg_add_words",
    "simulation_rng",
    "torch_generator",
    "SEED_BYTES",
]

SEED_BYTES = 32
_ZERO_NONCE = bytes(16)


@runtime_checkable
class SecretSource(Protocol):
    """Where secrets come from. ``token_bytes(n)`` returns ``n`` uniformly random bytes."""

    def token_bytes(self, n: int) -> bytes: ...


class SystemSecrets:
    """The operating system's CSPRNG (``os.urandom``). The default everywhere."""

    def token_bytes(self, n: int) -> bytes:
        return os.urandom(n)

    def __repr__(self) -> str:
        return "SystemSecrets()"


SYSTEM_SECRETS: SecretSource = SystemSecrets()


class InsecureDeterministicSecrets:
    """A *test seam*: reproducible "secrets" from a public seed (AES-256-CTR stream).

    Only for known-answer tests and reproducible examples. Anything protected with these
    bytes is protected by nothing: the seed is public.
    """

    def __init__(self, seed: int | bytes) -> None:
        raw = seed if isinstance(seed, bytes) else str(seed).encode()
        key = hashlib.sha256(b"privagg/insecure-test-secrets/" + raw).digest()
        self._enc = Cipher(algorithms.AES(key), modes.CTR(_ZERO_NONCE)).encryptor()

    def token_bytes(self, n: int) -> bytes:
        return self._enc.update(bytes(n))

    def __repr__(self) -> str:
        return "InsecureDeterministicSecrets(<test seed>)"


def secret_below(source: SecretSource, upper: int) -> int:
    """A uniform integer in ``[0, upper)`` from ``source`` (rejection sampling, no bias)."""
    if upper <= 0:
        raise ValueError("upper must be positive")
    nbits = upper.bit_length()
    nbytes = (nbits + 7) // 8
    mask = (1 << nbits) - 1
    while True:
        v = int.from_bytes(source.token_bytes(nbytes), "big") & mask
        if v < upper:
            return v


def label(*parts: str | bytes | int) -> bytes:
    """Unambiguous domain-separation label: each part length-prefixed.

    ``label("privagg/secagg/v1", session_id, round, "self-mask")``.
    """
    out = bytearray()
    for p in parts:
        if isinstance(p, int):
            b = p.to_bytes(8, "big", signed=True)
        elif isinstance(p, str):
            b = p.encode()
        else:
            b = bytes(p)
        out += struct.pack(">I", len(b)) + b
    return bytes(out)


def hkdf(key_material: bytes, *, info: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    """HKDF-SHA256 (RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key_material)


def _check_seed(seed: bytes) -> None:
    if len(seed) != SEED_BYTES:
        raise ValueError(f"PRG seeds are {SEED_BYTES} bytes (got {len(seed)}); never fold or truncate a seed")


#: prg_add_words: keystream generated and added in chunks that stay in L2 with the slice they add to
#: (512 KiB: 8-25% faster than 128 KiB at 1e5 and 1e6 words here, 1 MiB of L2 a core)
_PRG_CHUNK_BYTES = 1 << 19
_ZERO_BYTES = 1 << 20  # a read-only zero input for the keystream (CTR encrypts zeros)
_ZEROS = np.zeros(_ZERO_BYTES, dtype=np.uint8)
_ZEROS.setflags(write=False)


#: the first two AES-CTR blocks; OpenSSL's GCM engine produces the rest (see :class:`_CtrStream`)
_CTR_HEAD = 32


class _CtrStream:
    """The AES-256-CTR keystream from counter block ``0^128`` (incrementing), with OpenSSL's GCM engine
    for all but its first two blocks: GCM encrypts with counter blocks ``0^96 || 2, 3, ...``, which are
    the CTR stream's blocks 2, 3, ... for the first ``2**32`` blocks (64 GiB; the GHASH tag is never
    read). Same bytes as ``modes.CTR(0^128)``, about 2.5x faster where the GCM path uses VAES.
    ``update_into(zeros, out)`` behaves like the CTR encryptor's (``out`` 15 bytes longer)."""

    __slots__ = ("_bulk", "_head", "_pos")

    #: GCM counts in 32 bits: past ``2**32 - 2`` bulk blocks it would wrap (and stop matching CTR)
    LIMIT = _CTR_HEAD + 16 * (2**32 - 2)

    def __init__(self, key: bytes) -> None:
        self._head = Cipher(algorithms.AES(key), modes.CTR(_ZERO_NONCE)).encryptor().update(bytes(_CTR_HEAD))
        self._pos = 0
        self._bulk = Cipher(algorithms.AES(key), modes.GCM(bytes(12))).encryptor()

    def update_into(self, data: memoryview | bytes, buf: memoryview | bytearray) -> int:
        n = len(data)
        if self._pos + n > self.LIMIT:
            raise ValueError(f"one PRG stream gives at most {self.LIMIT} bytes (GCM counter wrap)")
        k = 0
        if self._pos < _CTR_HEAD:
            k = min(_CTR_HEAD - self._pos, n)
            memoryview(buf)[:k] = self._head[self._pos : self._pos + k]
            self._pos += k
        if k < n:
            self._bulk.update_into(memoryview(data)[k:n], memoryview(buf)[k:])
            self._pos += n - k
        return n

    def update(self, data: bytes) -> bytes:
        out = bytearray(len(data) + 15)
        self.update_into(data, out)
        return bytes(out[: len(data)])


def _prg_encryptor(seed: bytes, info: bytes) -> _CtrStream:
    _check_seed(seed)
    return _CtrStream(hkdf(seed, info=b"privagg/prg/aes-256-ctr/" + info))


def _keystream_into(enc: _CtrStream, out: np.ndarray) -> None:
    """Fill the uint8 array ``out`` (any length) with the next keystream bytes of ``enc``.

    ``update_into`` needs an output buffer 15 bytes longer than its input; the chunks
    leave that room inside ``out`` except for the last few bytes, which go through a
    small scratch buffer. The stream position advances by exactly ``out.size`` bytes.
    """
    n = out.size
    pos = 0
    while n - pos > 64:
        step = min(_ZERO_BYTES, n - pos - 16)
        enc.update_into(_ZEROS[:step].data, out[pos : pos + step + 16].data)
        pos += step
    if pos < n:
        tail = np.empty(n - pos + 16, dtype=np.uint8)
        enc.update_into(_ZEROS[: n - pos].data, tail.data)
        out[pos:] = tail[: n - pos]


def prg_bytes(seed: bytes, *, info: bytes, nbytes: int) -> bytes:
    """``nbytes`` of AES-256-CTR keystream under ``HKDF(seed, info)``.

    Each (seed, info) pair gives an independent stream; the nonce can be fixed because
    the key itself is unique per label.
    """
    enc = _prg_encryptor(seed, info)
    if nbytes <= 0:
        return b""
    out = np.empty(nbytes, dtype=np.uint8)
    _keystream_into(enc, out)
    return out.tobytes()


def prg_words(seed: bytes, *, info: bytes, count: int, bits: int, out: np.ndarray | None = None) -> np.ndarray:
    """``count`` uniform integers in ``[0, 2**bits)`` from the seed's AES-CTR stream.

    ``bits <= 32`` draws 4 bytes a word (returned as ``uint32``), otherwise 8 (``uint64``);
    masking the low bits of a uniform word keeps it uniform for a power-of-two modulus.
    ``out`` (optional, C-contiguous, of that dtype and ``count`` elements) is filled in place
    and returned, so a caller can reuse one buffer for many masks.
    """
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in 1..64")
    dtype = np.dtype("<u4") if bits <= 32 else np.dtype("<u8")
    enc = _prg_encryptor(seed, info)
    if out is None:
        words = np.empty(count, dtype=dtype)
    else:
        if out.dtype != dtype or out.size != count or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {dtype} array of {count} elements")
        words = out
    _keystream_into(enc, words.reshape(-1).view(np.uint8))
    if bits not in (32, 64):
        words &= dtype.type((1 << bits) - 1)
    return words


def prg_add_words(acc: np.ndarray, seed: bytes, *, info: bytes, subtract: bool = False) -> None:
    """``acc += prg_words(seed, info=info, count=acc.size, bits=W)`` (or ``-=``), in place.

    ``acc`` is a C-contiguous ``uint32`` (``W = 32``) or ``uint64`` (``W = 64``) array;
    arithmetic wraps modulo ``2**W``, so the result is also right modulo any ``2**k``
    with ``k <= W``. The keystream is generated in cache-sized chunks into one scratch
    buffer and added immediately, which runs close to the raw AES-CTR rate.
    """
    if acc.dtype not in (np.dtype("<u4"), np.dtype("<u8")) or not acc.flags.c_contiguous:
        raise ValueError("acc must be a C-contiguous uint32 or uint64 array")
    enc = _prg_encryptor(seed, info)
    flat = acc.reshape(-1)
    per = _PRG_CHUNK_BYTES // acc.itemsize
    scratch = np.empty(_PRG_CHUNK_BYTES + 16, dtype=np.uint8)
    op = np.subtract if subtract else np.add
    n = flat.size
    for start in range(0, n, per):
        stop = min(n, start + per)
        nb = (stop - start) * acc.itemsize
        enc.update_into(_ZEROS[:nb].data, scratch[: nb + 16].data)
        words = scratch[:nb].view(acc.dtype)
        part = flat[start:stop]
        op(part, words, out=part)


def simulation_rng(seed: int | None, *stream: int | str) -> np.random.Generator:
    """A seeded ``numpy.random.Generator`` for *simulation only*, one per named stream.

    ``simulation_rng(7, "partition")`` and ``simulation_rng(7, "client", 3)`` are
    independent streams derived from one run seed. ``seed=None`` draws fresh entropy.
    """
    keys = [
        int.from_bytes(hashlib.sha256(s.encode()).digest()[:4], "big") if isinstance(s, str) else int(s) for s in stream
    ]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=tuple(keys))))


def torch_generator(seed: int | None, *stream: int | str):  # type: ignore[no-untyped-def]
    """A seeded ``torch.Generator`` for simulation (model init, batch order)."""
    import torch

    g = torch.Generator()
    g.manual_seed(int(simulation_rng(seed, *stream).integers(0, 2**63 - 1)))
    return g
