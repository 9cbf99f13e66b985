"""Low-level wire helpers: bounds-checked reader/writer and fast bit packing.

:func:`pack_ring` / :func:`unpack_ring` produce exactly the layout of
:func:`privagg.encoding.pack_bits` (value ``i`` at bits ``[i b, (i+1) b)``, little-endian),
vectorised over groups of 8 values (8 values of ``b`` bits fill exactly ``b`` bytes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from privagg.encoding import add_unpacked, pack_bits, packed_size, unpack_bits
from privagg.errors import InvalidMessage
from secagg.params import MAX_CLIENT_ID

if TYPE_CHECKING:
    from secagg.params import SecAggParams

__all__ = [
    "Writer",
    "Reader",
    "pack_ring",
    "unpack_ring",
    "add_packed",
    "Limits",
    "NO_LIMITS",
    "MAX_ROUND",
    "MAX_DIMENSION",
    "MAX_LIST",
    "read_round",
    "read_client_id",
    "read_ids",
    "write_ids",
    "read_signature",
    "write_signature",
    "SIGNATURE_BYTES",
]

#: round numbers enter signed 64-bit labels (:func:`privagg.randomness.label`)
MAX_ROUND = (1 << 63) - 1
MAX_DIMENSION = 1 << 31
#: the longest list any decoder accepts without the receiver's :class:`Limits`
MAX_LIST = 1 << 24
SIGNATURE_BYTES = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """What the receiver's parameters allow: lists of at most ``clients`` entries (every list in a
    message names clients of the round), vectors of at most ``dimension`` elements."""

    clients: int = MAX_LIST
    dimension: int = MAX_DIMENSION - 1

    @classmethod
    def of(cls, params: SecAggParams | None, dimension: int | None = None) -> Limits:
        return cls(
            clients=params.num_clients if params is not None else MAX_LIST,
            dimension=dimension if dimension else MAX_DIMENSION - 1,
        )


NO_LIMITS = Limits()


def pack_ring(values: np.ndarray, bits: int) -> bytes:
    """Bit-pack ring elements (already reduced mod ``2**bits``): :func:`privagg.encoding.pack_bits`."""
    return pack_bits(values, bits, check=False)


#: Inverse of :func:`pack_ring` (the base layer's decoder: one wire layout in the code base).
unpack_ring = unpack_bits


class Writer:
    """Append big-endian fields to a byte buffer."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def _int(self, fmt: str, v: int) -> Writer:
        try:
            self._parts.append(struct.pack(fmt, v))
        except struct.error:  # an out-of-range field of a hand-built message: typed, like decoding
            raise InvalidMessage(f"integer field {v!r} does not fit the wire format ({fmt})") from None
        return self

    def u8(self, v: int) -> Writer:
        return self._int(">B", v)

    def u32(self, v: int) -> Writer:
        return self._int(">I", v)

    def u64(self, v: int) -> Writer:
        return self._int(">Q", v)

    def fixed(self, b: bytes, n: int) -> Writer:
        if len(b) != n:
            raise ValueError(f"field must be {n} bytes, got {len(b)}")
        self._parts.append(bytes(b))
        return self

    def var(self, b: bytes) -> Writer:
        self._parts.append(struct.pack(">I", len(b)))
        self._parts.append(bytes(b))
        return self

    def raw(self, b: bytes) -> Writer:
        self._parts.append(b)
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Read big-endian fields from untrusted bytes; every failure is :class:`InvalidMessage`."""

    __slots__ = ("_buf", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidMessage(f"{what}: expected bytes")
        self._buf = bytes(data)
        self._pos = 0
        self._what = what

    def _take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._buf):
            raise InvalidMessage(f"{self._what}: truncated")
        b = self._buf[self._pos : self._pos + n]
        self._pos += n
        return b

    def unpack(self, st: struct.Struct) -> tuple[Any, ...]:
        if self._pos + st.size > len(self._buf):
            raise InvalidMessage(f"{self._what}: truncated")
        vals = st.unpack_from(self._buf, self._pos)
        self._pos += st.size
        return vals

    def peek(self, n: int) -> memoryview:
        """The next ``n`` bytes without consuming them (``n`` must not exceed :meth:`remaining`)."""
        if n < 0 or self._pos + n > len(self._buf):
            raise InvalidMessage(f"{self._what}: truncated")
        return memoryview(self._buf)[self._pos : self._pos + n]

    def remaining(self) -> int:
        return len(self._buf) - self._pos

    def u8(self) -> int:
        return self._take(1)[0]

    def u32(self) -> int:
        return int(struct.unpack(">I", self._take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self._take(8))[0])

    def fixed(self, n: int) -> bytes:
        return self._take(n)

    def var(self, max_len: int) -> bytes:
        n = self.u32()
        if n > max_len:
            raise InvalidMessage(f"{self._what}: field of {n} bytes exceeds {max_len}")
        return self._take(n)

    def count(self, min_item_bytes: int, max_count: int) -> int:
        """A list length, checked against the bytes left before anything is allocated."""
        n = self.u32()
        if n > max_count or n * min_item_bytes > self.remaining():
            raise InvalidMessage(f"{self._what}: list of {n} items does not fit the message")
        return n

    def rest(self) -> bytes:
        return self._take(self.remaining())

    def end(self) -> None:
        if self._pos != len(self._buf):
            raise InvalidMessage(f"{self._what}: {len(self._buf) - self._pos} trailing bytes")


def read_round(r: Reader) -> int:
    v = r.u64()
    if v > MAX_ROUND:
        raise InvalidMessage(f"round {v} out of range 0..{MAX_ROUND}")
    return v


def read_client_id(r: Reader) -> int:
    v = r.u32()
    if v > MAX_CLIENT_ID:
        raise InvalidMessage(f"client id {v} out of range")
    return v


def write_ids(w: Writer, ids: tuple[int, ...]) -> None:
    w.u32(len(ids))
    for i in ids:
        w.u32(i)


def read_ids(r: Reader, limit: int) -> tuple[int, ...]:
    """A list of client ids (at most ``limit``), decoded at once."""
    n = r.count(4, limit)
    ids = np.frombuffer(r.fixed(4 * n), dtype=">u4")
    if n and int(ids.max()) > MAX_CLIENT_ID:
        raise InvalidMessage("client id out of range")
    return tuple(ids.tolist())


def write_signature(w: Writer, signature: bytes) -> Writer:
    """The sender's signature (active mode) or nothing: a length byte, then 0 or 64 bytes."""
    if len(signature) not in (0, SIGNATURE_BYTES):
        raise InvalidMessage("signature must be empty or 64 bytes")
    return w.u8(len(signature)).raw(signature)


def read_signature(r: Reader) -> bytes:
    if (n := r.u8()) not in (0, SIGNATURE_BYTES):
        raise InvalidMessage("bad signature length")
    return r.fixed(n)


_ADD_CHUNK = 1 << 16  # values per chunk (a multiple of 8: chunks start on byte boundaries)


def add_packed(acc: np.ndarray, data: bytes, bits: int) -> None:
    """``acc += unpack_ring(data, bits, acc.size)`` (wrapping), by :func:`privagg.encoding.add_unpacked`
    on chunks of ``_ADD_CHUNK`` values: its temporaries (about 9 bytes a value) stay O(chunk), so the
    server adding a masked input holds no vector-sized scratch beside its accumulator."""
    n = acc.size
    if len(data) != packed_size(n, bits):
        raise ValueError(f"expected {packed_size(n, bits)} bytes for {n} values of {bits} bits, got {len(data)}")
    flat = acc.reshape(-1)
    mv = memoryview(data)
    for start in range(0, n, _ADD_CHUNK):
        cnt = min(_ADD_CHUNK, n - start)
        lo = start * bits // 8
        add_unpacked(flat[start : start + cnt], bytes(mv[lo : lo + packed_size(cnt, bits)]), bits)
