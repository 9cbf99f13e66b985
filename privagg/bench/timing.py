"""The one place the benchmarks time things and take medians, and their JSON-able result base.

``clock`` is any zero-argument function returning seconds: :func:`time.perf_counter` (wall
clock, the default) or :func:`time.process_time` (CPU seconds of this process, robust to a
shared machine).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "Clock",
    "timed",
    "median_seconds",
    "best_seconds",
    "median",
    "middle",
    "aes_ctr_keystream_rate",
    "JsonResult",
]

T = TypeVar("T")
Clock = Callable[[], float]


def timed(fn: Callable[[], T], *, clock: Clock = time.perf_counter) -> tuple[T, float]:
    """``(fn(), seconds it took)``."""
    t0 = clock()
    out = fn()
    return out, clock() - t0


def median_seconds(fn: Callable[[], object], repeats: int, *, clock: Clock = time.perf_counter) -> float:
    """Median of ``repeats`` timed calls of ``fn``."""
    return median([timed(fn, clock=clock)[1] for _ in range(repeats)])


def median(values: Sequence[float]) -> float:
    """The median (the mean of the middle two for an even count)."""
    return float(statistics.median(values))


def middle(items: Sequence[T], key: Callable[[T], float]) -> T:
    """The item in the middle when sorted by ``key`` (the upper one of two for an even count).

    For a run whose figures must stay together (a phase breakdown with its total), where a
    per-figure median would mix runs.
    """
    return sorted(items, key=key)[len(items) // 2]


def best_seconds(fn: Callable[[], object], repeats: int, *, warmup: int = 1, clock: Clock = time.perf_counter) -> float:
    """The fastest of ``repeats`` timed calls of ``fn``, after ``warmup`` untimed ones.

    For a *rate ceiling* on a shared machine: a neighbour's load can only slow a call down, so the
    fastest call is the closest to the unloaded figure (a median reads low under load)."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    for _ in range(warmup):
        fn()
    return min(timed(fn, clock=clock)[1] for _ in range(repeats))


def aes_ctr_keystream_rate(nbytes: int = 1 << 26, repeats: int = 5, *, engine: str = "gcm") -> float:
    """Raw OpenSSL AES-256 counter-mode keystream rate in GB/s: the ceiling for mask PRGs.

    ``engine``: ``"gcm"`` (default) times the engine the mask PRG uses (:mod:`privagg.randomness`:
    AES-256-CTR keystream from OpenSSL's GCM code, VAES where the CPU has it, the tag unused);
    ``"ctr"`` times ``modes.CTR``. What it reports: ``nbytes`` divided by the *fastest* of ``repeats``
    timed calls, after one untimed warm-up call (which touches the fresh output pages and loads the
    cipher), i.e. the best rate this process reached (:func:`best_seconds`). On a shared machine it is
    robust to intermittent load (one quiet call suffices); under continuous load it still reads low.
    """
    if engine not in ("gcm", "ctr"):
        raise ValueError("engine is 'gcm' or 'ctr'")
    zeros = np.zeros(nbytes, dtype=np.uint8)
    out = np.empty(nbytes + 16, dtype=np.uint8)
    key = os.urandom(32)
    mode = modes.GCM(bytes(12)) if engine == "gcm" else modes.CTR(bytes(16))
    enc = Cipher(algorithms.AES(key), mode).encryptor()
    return nbytes / best_seconds(lambda: enc.update_into(zeros.data, out.data), repeats) / 1e9  # type: ignore[arg-type]


class JsonResult:
    """Base of the typed (dataclass) bench results: ``to_dict()`` is the JSON-able record.

    The default record is the fields in order (mappings as dicts, tuples as lists, nested
    results as their records); a result with derived figures extends it.
    """

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=float)


def _jsonable(value: Any) -> Any:
    if isinstance(value, JsonResult):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value
