"""Split-learning messages: what crosses the cut, as immutable dataclasses with one binary codec.

Four message types, all carrying a float32 tensor:

- :class:`Smashed` (client -> server): the client part's activations at the cut for a batch,
  with the batch's example ids (the server looks its labels up by id in the vanilla setting);
- :class:`CutGradient` (server -> client): the loss gradient with respect to those activations;
- :class:`ServerActivations` (server -> client, U-shaped only): the server part's output,
  which the client's head turns into a loss with the labels it keeps;
- :class:`HeadGradient` (client -> server, U-shaped only): the loss gradient with respect to
  the server part's output.

Encoding: ``b"PSL"``, codec version, type byte, step (u32), client (u16), id count (u32),
ids (u32 each), tensor rank (u8), dimensions (u32 each), then the float32 payload (little
endian). Decoding untrusted bytes returns a message or raises
:class:`~privagg.errors.InvalidMessage`; every length is checked against the bytes left
before anything is allocated. The byte counts a run reports are the lengths of these encodings.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

import numpy as np

from privagg.errors import InvalidMessage

__all__ = [
    "CODEC_VERSION",
    "CutGradient",
    "HeadGradient",
    "Message",
    "ServerActivations",
    "Smashed",
    "decode",
    "encode",
]

CODEC_VERSION = 1
_MAGIC = b"PSL"
_HEAD = struct.Struct("<3sBBIHI")  # magic, version, type, step, client, id count
_MAX_RANK = 8


@dataclass(frozen=True, slots=True, eq=False)
class _TensorMessage:
    type_id: ClassVar[int] = 0
    step: int
    client: int
    tensor: np.ndarray

    def __post_init__(self) -> None:
        if not 0 <= self.step < 2**32:
            raise InvalidMessage(f"step {self.step} out of range")
        if not 0 <= self.client < 2**16:
            raise InvalidMessage(f"client {self.client} out of range")
        t = np.asarray(self.tensor)
        if t.dtype != np.float32 or t.ndim < 1 or t.ndim > _MAX_RANK:
            raise InvalidMessage(f"tensor must be float32 of rank 1..{_MAX_RANK}, got {t.dtype} rank {t.ndim}")
        if not np.all(np.isfinite(t)):
            raise InvalidMessage("tensor has non-finite values")

    @property
    def batch_size(self) -> int:
        return int(self.tensor.shape[0])

    @property
    def ids(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, slots=True, eq=False)
class Smashed(_TensorMessage):
    """Client -> server: activations at the cut for the examples ``example_ids``."""

    type_id: ClassVar[int] = 1
    example_ids: np.ndarray

    def __post_init__(self) -> None:
        _TensorMessage.__post_init__(self)
        ids = np.asarray(self.example_ids)
        if ids.ndim != 1 or ids.size != self.tensor.shape[0] or (ids.size and (ids.min() < 0 or ids.max() >= 2**32)):
            raise InvalidMessage("example ids must be one u32 id per row of the tensor")

    @property
    def ids(self) -> np.ndarray:
        return np.asarray(self.example_ids, dtype=np.int64)


@dataclass(frozen=True, slots=True, eq=False)
class CutGradient(_TensorMessage):
    """Server -> client: d(loss)/d(activations at the cut)."""

    type_id: ClassVar[int] = 2


@dataclass(frozen=True, slots=True, eq=False)
class ServerActivations(_TensorMessage):
    """Server -> client (U-shaped): the server part's output, input of the client's head."""

    type_id: ClassVar[int] = 3


@dataclass(frozen=True, slots=True, eq=False)
class HeadGradient(_TensorMessage):
    """Client -> server (U-shaped): d(loss)/d(server output), computed with the client's labels."""

    type_id: ClassVar[int] = 4


Message: TypeAlias = Smashed | CutGradient | ServerActivations | HeadGradient
_TYPES: dict[int, type[_TensorMessage]] = {
    c.type_id: c for c in (Smashed, CutGradient, ServerActivations, HeadGradient)
}


def encode(msg: Message) -> bytes:
    """The canonical encoding of ``msg``."""
    ids = msg.ids
    t = np.ascontiguousarray(msg.tensor, dtype="<f4")
    out = bytearray(_HEAD.pack(_MAGIC, CODEC_VERSION, msg.type_id, msg.step, msg.client, ids.size))
    out += ids.astype("<u4").tobytes()
    out += struct.pack("<B", t.ndim) + struct.pack(f"<{t.ndim}I", *t.shape)
    out += t.tobytes()
    return bytes(out)


def decode(data: bytes) -> Message:
    """Parse untrusted bytes into a message, or raise :class:`InvalidMessage`."""
    try:
        return _decode(memoryview(bytes(data)))
    except InvalidMessage:
        raise
    except (struct.error, ValueError, TypeError, OverflowError) as e:
        raise InvalidMessage(f"malformed split-learning message: {type(e).__name__}") from None


def _decode(buf: memoryview) -> Message:
    if len(buf) < _HEAD.size:
        raise InvalidMessage("truncated header")
    magic, version, type_id, step, client, n_ids = _HEAD.unpack_from(buf, 0)
    if magic != _MAGIC:
        raise InvalidMessage("bad magic")
    if version != CODEC_VERSION:
        raise InvalidMessage(f"unsupported codec version {version}")
    cls = _TYPES.get(type_id)
    if cls is None:
        raise InvalidMessage(f"unknown message type {type_id}")
    pos = _HEAD.size
    if n_ids * 4 > len(buf) - pos:
        raise InvalidMessage("id count exceeds the bytes left")
    if n_ids and cls is not Smashed:
        raise InvalidMessage("only smashed activations carry example ids")
    ids = np.frombuffer(buf, dtype="<u4", count=n_ids, offset=pos).astype(np.int64)
    pos += 4 * n_ids
    if len(buf) - pos < 1:
        raise InvalidMessage("truncated tensor rank")
    (rank,) = struct.unpack_from("<B", buf, pos)
    pos += 1
    if not 1 <= rank <= _MAX_RANK or len(buf) - pos < 4 * rank:
        raise InvalidMessage("bad tensor rank")
    shape = struct.unpack_from(f"<{rank}I", buf, pos)
    pos += 4 * rank
    count = math.prod(shape)
    if count * 4 != len(buf) - pos:
        raise InvalidMessage("payload length does not match the tensor shape")
    tensor = np.frombuffer(buf, dtype="<f4", count=count, offset=pos).astype(np.float32).reshape(shape)
    if cls is Smashed:
        return Smashed(step=step, client=client, tensor=tensor, example_ids=ids)
    return cls(step=step, client=client, tensor=tensor)  # type: ignore[return-value]
