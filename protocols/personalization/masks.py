"""Sparse masks: layer-wise magnitude pruning, per-coordinate aggregation, the sparse wire codec.

A mask is a boolean vector over the model's flat parameters (``protocols.models.get_flat_params``
order). Pruning is layer-wise: each prunable layer (a weight tensor with more than one
dimension) loses ``rate`` of its kept weights with the smallest magnitude, never going below
its share ``1 - target_sparsity``; biases and other one-dimensional parameters stay dense.

Wire format of one sparse update (:func:`encode_sparse`): ``b"PLT"``, version byte ``1``,
``dimension`` (uint32 LE), ``count`` (uint32 LE), the mask as a bitmap (``ceil(dimension / 8)``
bytes, ``numpy.packbits`` order, zero padding bits), then ``count`` float32 LE values of the kept
coordinates in ascending index order.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from privagg.errors import ConfigurationError, InvalidMessage

__all__ = [
    "MAX_DIMENSION",
    "Layer",
    "aggregate_per_coordinate",
    "decode_sparse",
    "dense_bytes",
    "encode_sparse",
    "layers_of",
    "prune_magnitude",
    "sparse_bytes",
    "weight_density",
]

_MAGIC = b"PLT"
_VERSION = 1
_HEADER = struct.Struct("<3sBII")
MAX_DIMENSION = 1 << 28
"""Largest dimension :func:`decode_sparse` accepts (bounds what untrusted bytes can allocate)."""


@dataclass(frozen=True, slots=True)
class Layer:
    """One parameter tensor's slice of the flat vector; ``prunable`` for weights (ndim > 1)."""

    name: str
    start: int
    stop: int
    prunable: bool
    local: bool = False


def layers_of(model: nn.Module) -> list[Layer]:
    """The flat-vector layout of ``model``; batch-norm parameters are marked ``local``."""
    local_names = {
        f"{mod_name}.{p_name}" if mod_name else p_name
        for mod_name, mod in model.named_modules()
        if isinstance(mod, nn.modules.batchnorm._BatchNorm)
        for p_name, _ in mod.named_parameters(recurse=False)
    }
    out: list[Layer] = []
    i = 0
    for name, p in model.named_parameters():
        n = p.numel()
        local = name in local_names
        out.append(Layer(name, i, i + n, prunable=p.dim() > 1 and not local, local=local))
        i += n
    return out


def weight_density(mask: np.ndarray, layers: Sequence[Layer]) -> float:
    """Kept fraction of the prunable weights."""
    kept = sum(int(mask[lay.start : lay.stop].sum()) for lay in layers if lay.prunable)
    total = sum(lay.stop - lay.start for lay in layers if lay.prunable)
    return kept / total if total else 1.0


def prune_magnitude(
    weights: np.ndarray, mask: np.ndarray, layers: Sequence[Layer], *, rate: float, target_sparsity: float
) -> np.ndarray:
    """A new mask: each prunable layer drops ``rate`` of its kept weights (smallest ``|w|`` first).

    A layer never keeps fewer than ``ceil((1 - target_sparsity) * size)`` weights (at least one),
    so repeated calls converge on ``target_sparsity`` and stop there. Ties break by index.
    """
    if not 0.0 < rate < 1.0:
        raise ConfigurationError(f"must be in (0, 1), got {rate}", field="personalization.prune_rate")
    if not 0.0 <= target_sparsity < 1.0:
        raise ConfigurationError(f"must be in [0, 1), got {target_sparsity}", field="personalization.target_sparsity")
    new = np.array(mask, dtype=bool, copy=True)
    for lay in layers:
        if not lay.prunable:
            continue
        seg_mask = new[lay.start : lay.stop]
        size = lay.stop - lay.start
        floor = max(1, math.ceil((1.0 - target_sparsity) * size - 1e-9))
        kept = np.flatnonzero(seg_mask)
        drop = min(round(rate * len(kept)), len(kept) - floor)
        if drop <= 0:
            continue
        mags = np.abs(weights[lay.start : lay.stop][kept])
        order = np.lexsort((kept, mags))  # smallest magnitude first, then lowest index
        seg_mask[kept[order[:drop]]] = False
    return new


def aggregate_per_coordinate(
    values: Sequence[np.ndarray], masks: Sequence[np.ndarray], *, weights: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, counts)``: each coordinate's (weighted) mean over the clients that keep it.

    ``counts`` is the (weighted) number of keepers; where it is zero ``mean`` is NaN
    (the caller keeps the previous value there).
    """
    if not values or len(values) != len(masks):
        raise ConfigurationError("need one mask per update and at least one update", field="updates")
    w = [1.0] * len(values) if weights is None else [float(x) for x in weights]
    sums = np.zeros(len(values[0]), dtype=np.float64)
    counts = np.zeros(len(values[0]), dtype=np.float64)
    for v, m, wi in zip(values, masks, w, strict=True):
        mf = np.asarray(m, dtype=np.float64)
        sums += wi * mf * np.where(m, v, 0.0)
        counts += wi * mf
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)
    return mean, counts


def sparse_bytes(dimension: int, count: int) -> int:
    """Size of :func:`encode_sparse`'s output for ``count`` kept of ``dimension`` coordinates."""
    return _HEADER.size + (dimension + 7) // 8 + 4 * count


def dense_bytes(dimension: int) -> int:
    """A dense float32 vector (FedAvg's upload), no header."""
    return 4 * dimension


def encode_sparse(values: np.ndarray, mask: np.ndarray) -> bytes:
    """Bitmap + float32 values of the kept coordinates (see the module docstring)."""
    m = np.asarray(mask, dtype=bool)
    v = np.asarray(values)
    if m.shape != v.shape or m.ndim != 1:
        raise ConfigurationError(f"mask {m.shape} and values {v.shape} must be equal 1-d shapes", field="mask")
    if len(m) > MAX_DIMENSION:
        raise ConfigurationError(f"dimension {len(m)} above {MAX_DIMENSION}", field="mask")
    kept = v[m].astype("<f4")
    return _HEADER.pack(_MAGIC, _VERSION, len(m), len(kept)) + np.packbits(m).tobytes() + kept.tobytes()


def decode_sparse(data: bytes, *, dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """``(values, mask)`` from :func:`encode_sparse`'s bytes; dropped coordinates are 0.

    ``dimension`` is the receiver's expectation; any mismatch, bad magic or version, wrong
    length, nonzero padding bit or bitmap/count disagreement raises :class:`InvalidMessage`.
    """
    if len(data) < _HEADER.size:
        raise InvalidMessage("sparse update shorter than its header", stage="decode")
    magic, version, dim, count = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _VERSION:
        raise InvalidMessage("not a sparse update of version 1", stage="decode")
    if dim != dimension or dim > MAX_DIMENSION:
        raise InvalidMessage(f"dimension {dim}, expected {dimension}", stage="decode")
    nbitmap = (dim + 7) // 8
    if count > dim or len(data) != _HEADER.size + nbitmap + 4 * count:
        raise InvalidMessage("sparse update length does not match its header", stage="decode")
    bitmap = np.frombuffer(data, dtype=np.uint8, count=nbitmap, offset=_HEADER.size)
    bits = np.unpackbits(bitmap)
    if bits[dim:].any():
        raise InvalidMessage("nonzero padding bits in the mask", stage="decode")
    mask = bits[:dim].astype(bool)
    if int(mask.sum()) != count:
        raise InvalidMessage("mask and value count disagree", stage="decode")
    kept = np.frombuffer(data, dtype="<f4", count=count, offset=_HEADER.size + nbitmap)
    if not np.isfinite(kept).all():
        raise InvalidMessage("non-finite value in a sparse update", stage="decode")
    values = np.zeros(dim, dtype=np.float64)
    values[mask] = kept
    return values, mask
