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
    "strided_u64",
    "add_unpacked",
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

    def quantize(self, x: np.ndarray, rng: np.random.Generator, *, overwrite: bool = False) -> tuple[np.ndarray, int]:
        """Signed integers in ``[-q, q]`` (``int64``) and the number of clipped inputs.

        Non-finite inputs are refused: a NaN would silently poison the aggregate. ``overwrite=True``
        lets a caller that owns a C-contiguous ``float64`` ``x`` have it used as scratch (its values
        are then undefined); the result is the same. Two fresh arrays of the vector's size are
        allocated, plus the clipped copy when ``x`` is not overwritten (each fresh vector is memory
        traffic, and page faults on a busy machine).
        """
        arr = np.asarray(x)
        xf = arr.astype(np.float64, copy=False).reshape(-1)
        if not np.isfinite(xf).all():
            raise ConfigurationError("input contains NaN or infinity", field="x")
        c = self.clip
        # for finite x, clip(x) != x exactly when |x| > clip
        clipped = int(np.count_nonzero(xf > c)) + int(np.count_nonzero(xf < -c))
        own = xf.flags.writeable and xf.flags.c_contiguous and (overwrite or not np.may_share_memory(xf, arr))
        v = np.clip(xf, -c, c, out=xf if own else None)
        v *= self.scale
        low = np.floor(v)
        v -= low  # the fractional part
        ints = low.astype(np.int64)
        up = rng.random(out=low) < v  # (the same draws as rng.random(v.shape), into a buffer no longer needed)
        ints += up
        np.clip(ints, -self.q, self.q, out=ints)
        return ints, clipped

    def to_ring(self, ints: np.ndarray) -> np.ndarray:
        """Signed integers -> ring elements (two's complement mod ``2**modulus_bits``)."""
        r = np.array(ints, dtype=np.int64).view(np.uint64)  # one copy, reinterpreted in two's complement
        r &= np.uint64(self.modulus - 1)
        return r

    def from_ring(self, ring: np.ndarray) -> np.ndarray:
        """Ring elements -> signed integers in ``[-2**(k-1), 2**(k-1))``."""
        r = np.asarray(ring, dtype=np.uint64) & np.uint64(self.modulus - 1)
        half = np.uint64(self.modulus >> 1)
        signed = r.astype(np.int64)
        signed[r >= half] -= np.int64(self.modulus)
        return signed

    def encode(self, x: np.ndarray, rng: np.random.Generator, *, overwrite: bool = False) -> EncodedVector:
        """:meth:`quantize` then :meth:`to_ring` (in place: the integers are this call's own);
        ``overwrite`` as for :meth:`quantize`."""
        ints, clipped = self.quantize(x, rng, overwrite=overwrite)
        ring = ints.view(np.uint64)
        ring &= np.uint64(self.modulus - 1)
        return EncodedVector(ring, clipped)

    def decode(self, ring: np.ndarray) -> np.ndarray:
        """Ring elements (a single encoding or a sum of up to ``max_summands``) -> floats."""
        return self.from_ring(ring).astype(np.float64) / self.scale

    def sum_error_bound(self, num_summands: int) -> float:
        """Worst-case absolute error of a decoded sum of ``num_summands`` (after clipping)."""
        return num_summands * self.step


def packed_size(count: int, bits: int) -> int:
    """Bytes taken by ``count`` values of ``bits`` bits each, bit-packed."""
    return (count * bits + 7) // 8


def strided_u64(buf: np.ndarray, offset: int, count: int, stride: int) -> np.ndarray:
    """``count`` (unaligned) little-endian 8-byte windows of ``buf`` at ``offset + j * stride``."""
    return np.ndarray((count,), dtype="<u8", buffer=buf, offset=offset, strides=(stride,))


def _pack_windows(v: np.ndarray, bits: int) -> bytes:
    """8 <= bits <= 56: value ``i`` is OR-ed into the 8-byte window at byte ``i*bits // 8``.

    Values ``i = p (mod 8)`` sit ``bits`` bytes apart, so for one ``p`` the windows never
    overlap: 8 strided numpy operations pack the whole vector.
    """
    n = v.size
    size = packed_size(n, bits)
    buf = np.zeros(size + 8, dtype=np.uint8)
    for p in range(min(8, n)):
        off, shift = divmod(p * bits, 8)
        col = v[p::8].astype(np.uint64)
        if shift:
            col <<= np.uint64(shift)
        win = strided_u64(buf, off, col.size, bits)
        win |= col
    return buf[:size].tobytes()


#: widths packed two values at a time (:func:`_pack_pairs`): a pair of ``2 b`` bits, shifted by at most 6
#: inside its 8-byte window, still fits it
_PAIR_BITS = range(17, 30)


def _pairs(w32: np.ndarray, bits: int) -> np.ndarray:
    """``uint32`` values (even count) -> ``uint64`` pairs ``v[2i] | v[2i+1] << bits``: on the
    little-endian ``uint64`` view ``lo | hi << 32``, subtract ``hi * (2**32 - 2**bits)``."""
    w = w32.view("<u8")
    hi = w >> np.uint64(32)
    hi *= np.uint64((1 << 32) - (1 << bits))
    np.subtract(w, hi, out=hi)
    return hi


def _pack_pairs(v: np.ndarray, bits: int) -> bytes:
    """:data:`_PAIR_BITS`: as :func:`_pack_windows`, but over pairs of values: 8 values are 4 pairs
    and ``bits`` bytes, so 4 strided passes. numpy's ufuncs are slow on unaligned memory and its
    copies are not: each pass shifts its pairs in an aligned buffer, ORs the bytes already written
    (the first byte of each window holds the previous pair's last bits) and stores the window."""
    n = v.size
    g = (n + 7) // 8
    if n % 8 or v.dtype != np.dtype("<u4") or not v.flags.c_contiguous:
        w32 = np.zeros(g * 8, dtype="<u4")
        w32[:n] = v
    else:
        w32 = v
    pr = _pairs(w32, bits)
    buf = np.zeros(g * bits + 8, dtype=np.uint8)
    col = np.empty(g, dtype=np.uint64)
    old = np.empty(g, dtype=np.uint64)
    for q in range(4):
        off, shift = divmod(q * 2 * bits, 8)
        np.left_shift(pr[q::4], np.uint64(shift), out=col)
        win = strided_u64(buf, off, g, bits)
        if q:
            np.copyto(old, win)
            col |= old
        win[...] = col
    return buf[: packed_size(n, bits)].tobytes()


def add_unpacked(acc: np.ndarray, data: bytes, bits: int) -> None:
    """``acc += unpack_bits(data, bits, acc.size)`` in place, wrapping in ``acc``'s unsigned dtype;
    ``ValueError`` unless ``data`` has the exact size. Whole-byte widths are added from a view of
    ``data``; a ``uint32`` accumulator at :data:`_PAIR_BITS` takes 4 strided passes over pairs and one
    contiguous add; anything else goes through :func:`unpack_bits` a chunk at a time."""
    n = acc.size
    if len(data) != packed_size(n, bits):
        raise ValueError(f"expected {packed_size(n, bits)} bytes for {n} values of {bits} bits, got {len(data)}")
    if acc.dtype.kind != "u" or not acc.flags.c_contiguous:
        raise ValueError("acc must be a C-contiguous unsigned array")
    flat = acc.reshape(-1)
    if bits in (8, 16, 32, 64):  # whole bytes: the data is the values, added from a view of it
        np.add(flat, np.frombuffer(data, dtype=f"<u{bits // 8}"), out=flat, casting="unsafe")
        return
    if bits in _PAIR_BITS and acc.dtype == np.dtype("<u4") and n >= 8:
        g = n // 8  # whole groups; the last n % 8 values below
        buf = np.frombuffer(data, dtype=np.uint8)
        pr = np.empty(4 * g, dtype=np.uint64)
        col = np.empty(g, dtype=np.uint64)
        mask = np.uint64((1 << (2 * bits)) - 1)
        for q in range(4):
            off, shift = divmod(q * 2 * bits, 8)
            # a window may reach 7 bytes past the packed data only in the last group: read it apart
            k = g if off + 8 + (g - 1) * bits <= len(data) else g - 1
            np.copyto(col[:k], strided_u64(buf, off, k, bits))
            if k < g:
                tail = data[(g - 1) * bits + off : (g - 1) * bits + off + 8]
                col[g - 1] = int.from_bytes(tail, "little")
            col >>= np.uint64(shift)
            col &= mask
            pr[q::4] = col
        # pairs lo | hi << bits -> lo | hi << 32 (the uint32 view is the values in order)
        hi = pr >> np.uint64(bits)
        hi *= np.uint64((1 << 32) - (1 << bits))
        pr += hi
        head = flat[: 8 * g]
        np.add(head, pr.view("<u4"), out=head)
        if n % 8:
            rest = unpack_bits(data, bits, n)[8 * g :]
            tail_acc = flat[8 * g :]
            np.add(tail_acc, rest.astype(acc.dtype, copy=False), out=tail_acc)
        return
    step = 1 << 14  # values per chunk (a multiple of 8: chunks start on byte boundaries)
    mv = memoryview(data)
    for start in range(0, n, step):
        cnt = min(step, n - start)
        part = bytes(mv[start * bits // 8 : start * bits // 8 + packed_size(cnt, bits)])
        seg = flat[start : start + cnt]
        np.add(seg, unpack_bits(part, bits, cnt).astype(acc.dtype, copy=False), out=seg)


def _unpack_windows(data: bytes, bits: int, count: int, out_dtype: type = np.uint64) -> np.ndarray:
    buf = np.zeros(len(data) + 8, dtype=np.uint8)
    buf[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    out: np.ndarray = np.empty(count, dtype=out_dtype)
    mask = np.uint64((1 << bits) - 1)
    for p in range(min(8, count)):
        off, shift = divmod(p * bits, 8)
        k = len(range(p, count, 8))
        win = strided_u64(buf, off, k, bits)
        col = win >> np.uint64(shift) if shift else win.copy()
        col &= mask
        out[p::8] = col
    return out


def pack_bits(values: np.ndarray, bits: int, *, check: bool = True) -> bytes:
    """Bit-pack unsigned integers (each ``< 2**bits``) little-endian, ``bits`` per value.

    Value ``i`` sits at bits ``[i b, (i+1) b)``; 8 values of ``b`` bits fill exactly ``b`` bytes,
    which the vectorised paths below use. ``check=False`` skips the range check (callers that
    already reduced their values mod ``2**bits``).
    """
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in 1..64")
    v = np.ascontiguousarray(values).ravel()
    if v.dtype.kind != "u":
        v = v.astype(np.uint64)  # negative values wrap and fail the range check below
    if check and bits < 64 and v.size and int(v.max()) >> bits:
        raise ValueError(f"a value does not fit in {bits} bits")
    n = v.size
    if bits in (8, 16, 32, 64):
        return v.astype(f"<u{bits // 8}", copy=False).tobytes()
    if bits in _PAIR_BITS and v.dtype.itemsize <= 4 and n:
        return _pack_pairs(v, bits)
    if 8 <= bits <= 56:
        return _pack_windows(v, bits)
    g = (n + 7) // 8
    vv = np.zeros(g * 8, dtype=np.uint64)
    vv[:n] = v
    cols = vv.reshape(g, 8).T.copy()  # (8, g): value p of every group, contiguous
    lanes_n = (8 * bits + 63) // 64
    lanes = np.zeros((lanes_n, g), dtype=np.uint64)
    tmp = np.empty(g, dtype=np.uint64)
    for p in range(8):
        w, s = divmod(p * bits, 64)
        np.left_shift(cols[p], np.uint64(s), out=tmp)
        lanes[w] |= tmp
        if s + bits > 64:
            np.right_shift(cols[p], np.uint64(64 - s), out=tmp)
            lanes[w + 1] |= tmp
    raw = np.ascontiguousarray(lanes.T).view(np.uint8).reshape(g, lanes_n * 8)[:, :bits]
    return raw.tobytes()[: packed_size(n, bits)]


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` -> ``uint64``; ``ValueError`` unless ``data`` has the exact size."""
    if not 1 <= bits <= 64:
        raise ValueError("bits must be in 1..64")
    if len(data) != packed_size(count, bits):
        raise ValueError(
            f"expected {packed_size(count, bits)} bytes for {count} values of {bits} bits, got {len(data)}"
        )
    if bits in (8, 16, 32, 64):
        return np.frombuffer(data, dtype=f"<u{bits // 8}").astype(np.uint64)
    if 8 <= bits <= 56:
        return _unpack_windows(data, bits, count)
    g = (count + 7) // 8
    lanes_n = (8 * bits + 63) // 64
    buf = np.zeros((g, lanes_n * 8), dtype=np.uint8)
    flat = np.frombuffer(data, dtype=np.uint8)
    full = np.zeros(g * bits, dtype=np.uint8)
    full[: flat.size] = flat
    buf[:, :bits] = full.reshape(g, bits)
    lanes = buf.view("<u8").T.copy()  # (lanes_n, g)
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((8, g), dtype=np.uint64)
    tmp = np.empty(g, dtype=np.uint64)
    for p in range(8):
        w, s = divmod(p * bits, 64)
        col = out[p]
        np.right_shift(lanes[w], np.uint64(s), out=col)
        if s + bits > 64:
            np.left_shift(lanes[w + 1], np.uint64(64 - s), out=tmp)
            col |= tmp
        col &= mask
    result: np.ndarray = out.T.ravel()
    return result[:count]
