"""The codec's shared parts: header (magic, version, type), sizes and bounded field readers."""

from __future__ import annotations

import dataclasses
import functools
import struct
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from privagg.errors import InvalidMessage
from secagg.limbs import SECRET_LIMBS
from secagg.params import ThreatModel
from secagg.wire import Limits, Reader, Writer

__all__ = [
    "CODEC_VERSION",
    "KEY_BYTES",
    "DIGEST_BYTES",
    "SECRET_LIMBS",
    "CHECK_LIMBS",
    "PART_BYTES",
    "SHARE_BYTES",
    "PLAIN_BYTES",
    "CIPHERTEXT_BYTES",
    "OPENING_BYTES",
    "header",
    "open_message",
    "max_check",
    "slot_builder",
    "uniform_delivered",
]

_T = TypeVar("_T")

CODEC_VERSION = 5  # 2: RoundSetup nonce, sender signatures; 3: verifiable dealing; 4: graph seed commit-reveal;
# 5: 30-bit limbs, one leaf hash per share envelope, one check-limb set per dealing (secagg.vss)
_MAGIC = b"PS"
KEY_BYTES = 32
DIGEST_BYTES = 32
#: check limbs dealt with every dealing (both secrets: ``secagg.vss``, the verifiable-sharing check)
CHECK_LIMBS = 3
#: one holder's share of one secret (what unmasking reveals): SECRET_LIMBS field elements of 4 bytes
PART_BYTES = 4 * SECRET_LIMBS
SHARE_BYTES = PART_BYTES
#: what a holder decrypts: its self-seed share, its key share and its check limbs
PLAIN_BYTES = 2 * PART_BYTES + 4 * CHECK_LIMBS
#: AES-GCM of the plaintext + 16-byte tag
CIPHERTEXT_BYTES = PLAIN_BYTES + 16
#: what opens a share envelope's leaf besides the revealed share: the other share's commitment and the
#: key commitment (``secagg.vss.opening``)
OPENING_BYTES = 2 * DIGEST_BYTES
_DELIVERED = struct.Struct(f">I{CIPHERTEXT_BYTES}s{DIGEST_BYTES}s{DIGEST_BYTES}s")
_ENVELOPE = struct.Struct(f">I{DIGEST_BYTES}s{CIPHERTEXT_BYTES}s")


def max_check(limits: Limits) -> int:
    """The largest check-polynomial field a round allows (the threshold is below the cohort size)."""
    return CHECK_LIMBS * 4 * limits.clients


_THREAT_CODE = {ThreatModel.SEMI_HONEST: 0, ThreatModel.ACTIVE: 1}
_THREAT_FROM = {v: k for k, v in _THREAT_CODE.items()}


def header(w: Writer, type_code: int) -> Writer:
    return w.raw(_MAGIC).u8(CODEC_VERSION).u8(type_code)


_HEADER = struct.Struct(">2sBB")


def open_message(data: bytes, type_code: int, name: str) -> Reader:
    r = Reader(data, name)
    magic, v, t = r.unpack(_HEADER)
    if magic != _MAGIC:
        raise InvalidMessage(f"{name}: bad magic")
    if v != CODEC_VERSION:
        raise InvalidMessage(f"{name}: unsupported codec version {v}")
    if t != type_code:
        raise InvalidMessage(f"{name}: wrong message type {t}")
    return r


def slot_builder(cls: type[_T], order: Sequence[str]) -> Callable[[Sequence[Any]], _T]:
    """A decoder's constructor of the frozen, slotted dataclass ``cls`` from one unpacked row whose items
    ``order`` names ("" skips one): the object ``cls(...)`` gives, built through the slot descriptors
    (a frozen ``__init__`` goes through ``object.__setattr__`` per field, twice the cost in the decoders'
    per-entry loops). Refuses a class whose ``__init__`` does more (``__post_init__``) or a missing field."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    if hasattr(cls, "__post_init__") or sorted(names) != sorted(f for f in order if f):
        raise TypeError(f"{cls.__name__}: a row must name every field, and only plain fields are built")
    setters = tuple((cls.__dict__[f].__set__, order.index(f)) for f in names)
    new = object.__new__

    def build(row: Sequence[Any]) -> _T:
        obj = new(cls)
        for put, i in setters:
            put(obj, row[i])
        return obj

    return build


@functools.lru_cache(maxsize=64)
def _delivered_row(check: int) -> struct.Struct:
    return struct.Struct(f"{_DELIVERED.format}I{check}s")


def uniform_delivered(r: Reader, n: int, limits: Limits) -> list[tuple[Any, ...]] | None:
    """The ``n`` delivered shares that end a message, as rows ``(sender, ciphertext, digest, leaf, check
    length, check)``, in one pass when every check field has the first one's length (what an honest
    server sends): the rows the field-by-field reader gives; else ``None`` and the reader is untouched."""
    if n == 0 or r.remaining() < _DELIVERED.size + 4:
        return None
    (c,) = struct.unpack_from(">I", r.peek(_DELIVERED.size + 4), _DELIVERED.size)
    if c > max_check(limits):
        return None
    st = _delivered_row(c)
    if r.remaining() != n * st.size:
        return None
    rows = list(st.iter_unpack(r.peek(n * st.size)))
    if any(row[4] != c for row in rows):
        return None
    r.fixed(n * st.size)
    return rows
