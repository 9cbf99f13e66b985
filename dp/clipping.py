"""Per-client L2 clipping, bounded client weights and the sensitivity of the weighted sum.

DP-FedAvg (McMahan et al. 2018) releases ``sum_k w_k * clip(delta_k)`` plus noise, divided by a
*fixed* denominator. Each clipped update has norm <= ``clip``; each weight is bounded by
``max_weight`` *a priori* (never the observed maximum, which is data-dependent), so one client
moves the sum by at most ``clip * max_weight`` when it is added or removed (Poisson sampling),
and by at most ``2 * clip * max_weight`` when it is replaced (fixed-size sampling).
Example-count weights (``n_k / sum n``) have no such bound and are refused; ``capped`` weights
``min(n_k / weight_cap, 1)`` are McMahan et al.'s bounded weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from privagg.errors import ConfigurationError

__all__ = ["ClipResult", "clip_l2", "clip_updates", "client_weights", "sum_sensitivity", "MAX_WEIGHT"]

MAX_WEIGHT = 1.0  # every weighting scheme here maps into (0, MAX_WEIGHT]


@dataclass(frozen=True)
class ClipResult:
    clipped: np.ndarray  # (n, d), each row of L2 norm <= clip
    norms: np.ndarray  # (n,) norms before clipping
    unclipped: np.ndarray  # (n,) bool: norm <= clip (the update passed unchanged)


def clip_l2(vec: np.ndarray, clip: float) -> tuple[np.ndarray, float]:
    """``vec * min(1, clip / ||vec||)`` and the original norm."""
    res = clip_updates([vec], clip)
    return res.clipped[0], float(res.norms[0])


def clip_updates(vectors: Sequence[np.ndarray] | np.ndarray, clip: float) -> ClipResult:
    """Clip every row to L2 norm ``clip``. Non-finite updates are refused, not clipped to NaN."""
    if not (clip > 0 and math.isfinite(clip)):
        raise ConfigurationError(f"must be finite and > 0, got {clip}", field="clip_norm")
    stack = np.array(vectors, dtype=np.float64, ndmin=2)
    if not np.all(np.isfinite(stack)):
        raise ConfigurationError("an update is not finite", field="updates")
    norms = np.linalg.norm(stack, axis=1)
    over_clip = norms > clip
    scale = np.ones_like(norms)
    scale[over_clip] = clip / norms[over_clip]
    clipped = stack * scale[:, None]
    # floating-point rounding can leave a clipped norm a few ulps above clip: shave it until it is not
    over = np.linalg.norm(clipped, axis=1) > clip
    while np.any(over):
        clipped[over] *= np.nextafter(1.0, 0.0) ** 4
        over = np.linalg.norm(clipped, axis=1) > clip
    return ClipResult(clipped=clipped, norms=norms, unclipped=norms <= clip)


def client_weights(
    num_examples: Sequence[int] | np.ndarray,
    *,
    weighting: Literal["uniform", "capped"],
    weight_cap: float | None = None,
) -> np.ndarray:
    """Per-client weights in ``(0, MAX_WEIGHT]``: all 1 (``uniform``) or ``min(n_k / weight_cap, 1)``."""
    n = np.asarray(num_examples, dtype=np.float64)
    if weighting == "uniform":
        return np.ones_like(n)
    if weighting == "capped":
        if weight_cap is None or not weight_cap > 0:
            raise ConfigurationError("capped weighting needs weight_cap > 0", field="weight_cap")
        return np.minimum(n / weight_cap, MAX_WEIGHT)
    raise ConfigurationError(f"unknown weighting {weighting!r}", field="weighting", accepted=["uniform", "capped"])


def sum_sensitivity(*, clip: float, sensitivity_factor: float, max_weight: float = MAX_WEIGHT) -> float:
    """L2 sensitivity of ``sum_k w_k clip(delta_k)``: ``factor * clip * max_weight``.

    ``sensitivity_factor`` is 1 for add/remove neighbours (Poisson) and 2 for replace-one
    neighbours (fixed-size sampling), see :attr:`dp.accounting.Sampling.sensitivity_factor`.
    """
    return sensitivity_factor * clip * max_weight
