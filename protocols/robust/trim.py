"""Coordinate-wise trims with weights: the combination steps of ``fltrust-trim``.

Pure functions over a matrix ``x`` (one row per update) and positive weights ``w``; every
coordinate keeps ``n - 2 trim`` of its ``n`` values and takes their ``w``-weighted mean. They
differ in which values they drop:

- :func:`weighted_trimmed_mean`: the ``trim`` largest and the ``trim`` smallest (Yin et al. 2018);
- :func:`root_trimmed_mean`: the ``drop`` farthest from a reference value per coordinate (the
  server's clean root update), wherever they lie: a coordinate whose honest values are skewed to
  one side keeps the side the clean data agree with, and ``f`` attackers farther from the
  reference than every honest value are all dropped by ``drop = f`` (a symmetric trim needs ``f``
  from each side, as it cannot know on which side they are).
"""

from __future__ import annotations

import numpy as np

from privagg.errors import ConfigurationError

__all__ = ["root_trimmed_mean", "weighted_trimmed_mean"]


def _check(n: int, trim: int) -> None:
    if trim < 0 or n - 2 * trim < 1:
        raise ConfigurationError(f"cannot trim {trim} from each side of {n} values", field="trim")


def _weighted_mean_of(x: np.ndarray, w: np.ndarray, order: np.ndarray) -> np.ndarray:
    vals = np.take_along_axis(x, order, axis=0)
    wk = np.asarray(w, dtype=np.float64)[order]
    return np.asarray((vals * wk).sum(axis=0) / wk.sum(axis=0))


def weighted_trimmed_mean(x: np.ndarray, w: np.ndarray, trim: int) -> np.ndarray:
    """Per coordinate, the ``w``-weighted mean of the values of ``x`` (one row per update) left after
    dropping the ``trim`` largest and the ``trim`` smallest; needs ``len(x) - 2 trim >= 1`` and ``w > 0``."""
    n = len(x)
    _check(n, trim)
    return _weighted_mean_of(x, w, np.argsort(x, axis=0, kind="stable")[trim : n - trim])


def root_trimmed_mean(x: np.ndarray, w: np.ndarray, drop: int, ref: np.ndarray) -> np.ndarray:
    """Per coordinate, the ``w``-weighted mean of the ``len(x) - drop`` values of ``x`` nearest to
    that coordinate of ``ref`` (ties: the earlier row); needs ``0 <= drop < len(x)`` and ``w > 0``."""
    n = len(x)
    if drop < 0 or n - drop < 1:
        raise ConfigurationError(f"cannot drop {drop} of {n} values", field="trim")
    ref = np.asarray(ref, dtype=np.float64)
    if ref.shape != x.shape[1:]:
        raise ConfigurationError(f"reference has shape {ref.shape}, expected {x.shape[1:]}", field="ref")
    return _weighted_mean_of(x, w, np.argsort(np.abs(x - ref), axis=0, kind="stable")[: n - drop])
