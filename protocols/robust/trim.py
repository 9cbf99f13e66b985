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

:func:`trim_reference` gives that reference: the root update (``"root"``), the ``w``-weighted
coordinate-wise median (:func:`weighted_median`, ``"median"``), or the root update where its sign
agrees with that median and the median elsewhere (``"blend"``).
"""

from __future__ import annotations

import numpy as np

from privagg.errors import ConfigurationError

__all__ = ["CENTRES", "root_trimmed_mean", "trim_reference", "weighted_median", "weighted_trimmed_mean"]

#: The centres :func:`trim_reference` knows.
CENTRES = ("root", "median", "blend")


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


def weighted_median(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per coordinate, the ``w``-weighted median of the values of ``x`` (one row per update; ``w > 0``).

    The values ``v`` minimising ``sum_i w_i |x_i - v|`` form an interval ``[lo, hi]`` (``lo`` the
    smallest value whose cumulative weight from below reaches half the total, ``hi`` the largest
    whose cumulative weight from above does); this is its midpoint, the usual median at equal weights.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if len(x) < 1 or w.shape != (len(x),) or not np.all(w > 0):
        raise ConfigurationError(f"needs at least one row and {len(x)} positive weights", field="w")
    order = np.argsort(x, axis=0, kind="stable")
    vals, wk = np.take_along_axis(x, order, axis=0), w[order]
    half = w.sum() / 2
    below = np.cumsum(wk, axis=0)
    above = np.cumsum(wk[::-1], axis=0)[::-1]
    lo = np.take_along_axis(vals, np.argmax(below >= half, axis=0)[None], axis=0)[0]
    hi_idx = len(x) - 1 - np.argmax((above >= half)[::-1], axis=0)
    hi = np.take_along_axis(vals, hi_idx[None], axis=0)[0]
    return np.asarray((lo + hi) / 2)


def trim_reference(centre: str, x: np.ndarray, w: np.ndarray, root: np.ndarray) -> np.ndarray:
    """The reference of :func:`root_trimmed_mean` for ``x`` with weights ``w``: the ``root`` update
    (``"root"``), :func:`weighted_median` (``"median"``), or ``root`` where ``root * median > 0``
    and the median elsewhere (``"blend"``)."""
    if centre not in CENTRES:
        raise ConfigurationError(f"must be one of {CENTRES}, got {centre!r}", field="centre")
    root = np.asarray(root, dtype=np.float64)
    if centre == "root":
        return root
    med = weighted_median(x, w)
    return med if centre == "median" else np.where(root * med > 0, root, med)
