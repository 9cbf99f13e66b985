"""Fixed-point ring encoding shared by secure aggregation and Paillier.

A float vector ``x`` is clipped to ``[-clip, clip]`` (the clipped entries are counted),
scaled so that ``clip`` maps to ``q = 2**(value_bits-1) - 1``, and rounded *stochastically*
(unbiased: ``E[round(v)] = v``) to an integer in ``[-q, q]``. Integers live in the ring
``Z_{2^modulus_bits}`` in two's complement. A sum of ``n`` encoded vectors lies in
``[-n q, n q]``; :func:`sum_bits` gives the smallest ring that holds it without wrapping,
and :class:`RingEncoding` refuses any configuration whose ring is smaller.

Per-coordinate error: ``|decode(encode(x)) - clip(x)| < clip / q`` (one quantisation
step); for a sum of ``n`` vectors the error is below ``n * clip / q``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privagg.errors import ConfigurationError

__all__ = [
    "RingEncoding",
    "EncodedVector",
    "sum_bits",
    "pack_bits",
    "unpack_bits",
    "packed_size",
]

MAX_MODULUS_BITS = 62


def sum_bits(num_summands: int, value_bits: int) -> int:
    """Smallest ``k`` such that a sum of ``num_summands`` values in ``[-q, q]`` fits ``Z_{2^k}``.

    ``q = 2**(value_bits-1) - 1``; the sum ranges over ``2 n q + 1`` integers.
    """
    if num_summands < 1:
        raise ConfigurationError("must be at least 1", field="num_summands")
    if value_bits < 2:
        raise ConfigurationError("must be at least 2", field="value_bits")
    q = (1 << (value_bits - 1)) - 1
    return (2 * num_summands * q).bit_length()


@dataclass(frozen=True, slots=True)
class EncodedVector:
    """Ring elements (``uint64``, each ``< 2**modulus_bits``) and how many inputs were clipped."""

    values: np.ndarray
    clipped: int


@dataclass(frozen=True, slots=True)
class RingEncoding:
    """Fixed-point encoding into ``Z_{2^modulus_bits}`` sized for ``max_summands`` vectors.

    Build with :meth:`for_sum`, which picks the smallest safe ring; the constructor
    validates and refuses rings that a sum of ``max_summands`` inputs could wrap.
    """

    clip: float
    value_bits: int
    max_summands: int
    modulus_bits: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigurationError(f"must be a positive finite number, got {self.clip}", field="clip")
        if not 2 <= self.value_bits <= 48:
            raise ConfigurationError(f"got {self.value_bits}", field="value_bits", accepted="2..48")
        need = sum_bits(self.max_summands, self.value_bits)
        if self.modulus_bits < need:
            raise ConfigurationError(
                f"a sum of {self.max_summands} values of {self.value_bits} bits can wrap a ring of "
                f"{self.modulus_bits} bits; it needs at least {need}",
                field="modulus_bits",
                accepted=f"{need}..{MAX_MODULUS_BITS}",
            )
        if self.modulus_bits > MAX_MODULUS_BITS:
            raise ConfigurationError(
                f"{self.max_summands} summands of {self.value_bits} bits need {need} bits, more than the "
                f"{MAX_MODULUS_BITS} supported; lower value_bits or the population",
                field="modulus_bits",
                accepted=f"<= {MAX_MODULUS_BITS}",
            )

    @classmethod
    def for_sum(cls, *, clip: float, max_summands: int, value_bits: int = 16, extra_bits: int = 0) -> RingEncoding:
        """The smallest ring that holds a sum of ``max_summands`` encodings (plus ``extra_bits``)."""
        return cls(
            clip=clip,
            value_bits=value_bits,
            max_summands=max_summands,
            modulus_bits=sum_bits(max_summands, value_bits) + extra_bits,
        )

    @property
    def modulus(self) -> int:
        return 1 << self.modulus_bits

    @property
    def q(self) -> int:
        """Largest encoded magnitude of one value."""
        return (1 << (self.value_bits - 1)) - 1

    @property
    def scale(self) -> float:
        return self.q / self.clip

    @property
    def step(self) -> float:
        """One quantisation step in input units (per-value error bound)."""
        return self.clip / self.q

    def quantize(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """Signed integers in ``[-q, q]`` (``int64``) and the number of clipped inputs.

        Non-finite inputs are refused: a NaN would silently poison the aggregate.
        """
        x = np.asarray(x, dtype=np.float64).ravel()
        if not np.all(np.isfinite(x)):
            raise ConfigurationError("input contains NaN or infinity", field="x")
        clipped = int(np.count_nonzero(np.abs(x) > self.clip))
        v = np.clip(x, -self.clip, self.clip) * self.scale
        low = np.floor(v)
        up = rng.random(v.shape) < (v - low)
        ints = low.astype(np.int64) + up
        np.clip(ints, -self.q, self.q, out=ints)
        return ints, clipped

    def to_ring(self, ints: np.ndarray) -> np.ndarray:
        """Signed integers -> ring elements (two's complement mod ``2**modulus_bits``)."""
        return np.asarray(ints, dtype=np.int64).astype(np.uint64) & np.uint64(self.modulus - 1)

    def from_ring(self, ring: np.ndarray) -> np.ndarray:
        """Ring elements -> signed integers in ``[-2**(k-1), 2**(k-1))``."""
        r = np.asarray(ring, dtype=np.uint64) & np.uint64(self.modulus - 1)
        half = np.uint64(self.modulus >> 1)
        signed = r.astype(np.int64)
        signed[r >= half] -= np.int64(self.modulus)
        return signed

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> EncodedVector:
        ints, clipped = self.quantize(x, rng)
        return EncodedVector(self.to_ring(ints), clipped)

    def decode(self, ring: np.ndarray) -> np.ndarray:
        """Ring elements (a single encoding or a sum of up to ``max_summands``) -> floats."""
        return self.from_ring(ring).astype(np.float64) / self.scale

    def sum_error_bound(self, num_summands: int) -> float:
        """Worst-case absolute error of a decoded sum of ``num_summands`` (after clipping)."""
        return num_summands * self.step


def packed_size(count: int, bits: int) -> int:
    """Bytes taken by ``count`` values of ``bits`` bits each, bit-packed."""
    return (count * bits + 7) // 8


_CHUNK = 1 << 16


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Bit-pack unsigned integers (each ``< 2**bits``) little-endian, ``bits`` per value."""
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in 1..64")
    v = np.ascontiguousarray(values, dtype=np.uint64).ravel()
    if bits < 64 and v.size and int(v.max()) >> bits:
        raise ValueError(f"a value does not fit in {bits} bits")
    if bits in (8, 16, 32, 64):
        return v.astype(f"<u{bits // 8}").tobytes()
    out = bytearray()
    # chunks of a multiple of 8 values end on a byte boundary
    for start in range(0, v.size, _CHUNK):
        chunk = v[start : start + _CHUNK].astype("<u8")
        b = np.unpackbits(chunk.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")[:, :bits]
        out += np.packbits(b.ravel(), bitorder="little").tobytes()
    return bytes(out)


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`; raises ``ValueError`` unless ``data`` has the exact size."""
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in 1..64")
    if len(data) != packed_size(count, bits):
        raise ValueError(
            f"expected {packed_size(count, bits)} bytes for {count} values of {bits} bits, got {len(data)}"
        )
    if bits in (8, 16, 32, 64):
        return np.frombuffer(data, dtype=f"<u{bits // 8}").astype(np.uint64)
    raw = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(count, dtype=np.uint64)
    chunk_bytes = _CHUNK * bits // 8
    for i, start in enumerate(range(0, count, _CHUNK)):
        n = min(_CHUNK, count - start)
        part = raw[i * chunk_bytes : i * chunk_bytes + packed_size(n, bits)]
        b = np.unpackbits(part, bitorder="little")[: n * bits].reshape(n, bits)
        full = np.zeros((n, 64), dtype=np.uint8)
        full[:, :bits] = b
        out[start : start + n] = np.packbits(full, axis=1, bitorder="little").view("<u8").ravel()
    return out
