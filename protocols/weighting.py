"""The one weighting codec of sum-only protocols (secure aggregation, Paillier, their Flower adapters).

A sum-only protocol (SecAgg, Paillier) reveals ``sum_i v_i`` and nothing else, so a weighted
mean must travel inside the sum: each client sends ``v_i = [f_i x_i, f_i s]`` with
``f_i = min(weight_i, max_weight) / max_weight`` in ``(0, 1]`` and ``s`` the scale of the weight
slot (the encoding's clip, so the slot fits the same fixed-point range as the update). The
server decodes ``sum_i v_i`` into the weighted mean ``sum f_i x_i / sum f_i`` and the total
weight ``sum f_i`` -- over exactly the clients the protocol summed (survivors of dropouts).
The sum hides each single weight only if nothing else carries it: the Flower adapters send each
training node's ``num_examples`` as 1 and no metrics unless the node itself opts in
(``protocols.flower._fit_round.clear_fit_metadata``), and bind the announced weighting into the
digest each client signs (``round_digest``), so a server cannot weigh clients differently.

``max_weight`` is public and fixed before the round: a client's influence on the sum is at most
that of ``max_weight`` examples. With ``weighting="uniform"`` every ``f_i = 1`` and the weight
slot counts the summed clients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from privagg.errors import ConfigurationError

__all__ = ["Weighting", "WeightingCodec"]

Weighting = Literal["examples", "uniform"]


@dataclass(frozen=True, slots=True)
class WeightingCodec:
    """Encode ``(update, weight)`` into one summable vector; decode a sum into ``(mean, total_weight)``.

    ``max_weight=None`` leaves the normaliser to the round (:meth:`for_round`); ``slot_scale``
    is the value of a full-weight client's weight slot (use the encoding's clip).
    """

    weighting: Weighting = "examples"
    max_weight: float | None = None
    slot_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.weighting not in ("examples", "uniform"):
            raise ConfigurationError(f"got {self.weighting!r}", field="weighting", accepted=["examples", "uniform"])
        if self.max_weight is not None and not (math.isfinite(self.max_weight) and self.max_weight > 0):
            raise ConfigurationError(f"got {self.max_weight!r}", field="max_weight", accepted="a positive number")
        if not (math.isfinite(self.slot_scale) and self.slot_scale > 0):
            raise ConfigurationError(f"got {self.slot_scale!r}", field="slot_scale", accepted="a positive number")

    @property
    def weighted(self) -> bool:
        return self.weighting == "examples"

    def for_round(self, weights: list[float] | np.ndarray) -> WeightingCodec:
        """This codec with ``max_weight`` fixed: kept if set, else the round's largest weight."""
        if self.max_weight is not None or not self.weighted:
            return self
        top = float(np.max(np.asarray(weights, dtype=np.float64))) if len(weights) else 0.0
        if not top > 0:
            raise ConfigurationError("all clients report zero examples", field="updates")
        return replace(self, max_weight=top)

    def factor(self, weight: float) -> float:
        """The client's factor ``f`` in ``[0, 1]``: its weight over the public ``max_weight``, capped at 1."""
        if not self.weighted:
            return 1.0
        if self.max_weight is None:
            raise ConfigurationError("max_weight is not fixed for this round (call for_round)", field="max_weight")
        if not (math.isfinite(weight) and weight >= 0):
            raise ConfigurationError(f"got {weight!r}", field="num_examples", accepted="a finite number >= 0")
        return min(float(weight), self.max_weight) / self.max_weight

    def encode(self, update: np.ndarray, weight: float, *, out: np.ndarray | None = None) -> np.ndarray:
        """``[f * update, f * slot_scale]`` as float64 (written into ``out`` when given, length ``d + 1``)."""
        f = self.factor(weight)
        x = np.asarray(update).ravel()
        vec = np.empty(x.size + 1, dtype=np.float64) if out is None else out
        if vec.shape != (x.size + 1,):
            raise ConfigurationError(f"out has shape {vec.shape}, expected ({x.size + 1},)", field="out")
        np.multiply(x, f, out=vec[: x.size], casting="unsafe")
        vec[x.size] = f * self.slot_scale
        return vec

    def decode(self, total: np.ndarray) -> tuple[np.ndarray, float]:
        """The weighted mean of the summed updates and their total weight ``sum f``.

        Raises :class:`ConfigurationError` when the summed weight is not positive (nothing to average).
        """
        t = np.asarray(total, dtype=np.float64).ravel()
        if t.size < 1:
            raise ConfigurationError("an empty sum has no weight slot", field="sum")
        total_weight = float(t[-1]) / self.slot_scale
        if not total_weight > 0:
            raise ConfigurationError("the summed clients' weights add up to zero", field="updates")
        return t[:-1] / total_weight, total_weight
