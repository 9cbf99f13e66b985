"""Digest of what a client is asked to train: the model arrays and the training config.

Protocols bind a round to this digest (clients sign it, decryptors and peers compare it), so a
malicious server cannot single out one client with a crafted model or config (the model
inconsistency attack of Pasquini et al. 2022). Shared by secure aggregation and Paillier.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping

import numpy as np

from privagg.errors import ConfigurationError
from privagg.randomness import label

__all__ = ["model_digest"]


def _config_value(v: object) -> bytes:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return label("bool", int(v))
    if isinstance(v, int):
        return label("int", str(v))
    if isinstance(v, float):
        return label("float", struct.pack(">d", v))
    if isinstance(v, str):
        return label("str", v)
    if isinstance(v, (bytes, bytearray)):
        return label("bytes", bytes(v))
    if isinstance(v, (list, tuple)):
        return label("list", len(v)) + b"".join(_config_value(x) for x in v)
    raise ConfigurationError(f"cannot digest a {type(v).__name__} in the training config", field="config")


def model_digest(arrays: Iterable[np.ndarray], *, config: Mapping[str, object] | None = None) -> bytes:
    """SHA-256 of what a client is asked to train: the model (arrays) and the training config.

    Each array contributes its dtype, shape and bytes (the same bytes reinterpreted as another
    model do not collide); object arrays are refused (their bytes are pointers, not values).
    ``config`` (e.g. Flower's ``FitIns.config``: learning rate, epochs...) is hashed too, keys
    sorted, values typed: a server could otherwise single out a client with another config
    (e.g. zero epochs for everybody else) instead of another model. ``None`` means ``{}``.
    """
    h = hashlib.sha256(label("privagg/model/v1"))
    count = 0
    for a in arrays:
        arr = np.asarray(a)
        if arr.dtype.hasobject:
            raise ConfigurationError("model arrays must have a numeric dtype", field="model")
        raw = np.ascontiguousarray(arr).tobytes()
        h.update(label(arr.dtype.str, arr.ndim, *(int(d) for d in arr.shape), len(raw)))
        h.update(raw)
        count += 1
    h.update(label("arrays", count))
    cfg = dict(config or {})
    h.update(label("config", len(cfg)))
    for key in sorted(cfg):
        if not isinstance(key, str):
            raise ConfigurationError("training config keys must be strings", field="config")
        h.update(label(key) + _config_value(cfg[key]))
    return h.digest()
