"""Per-coordinate averaging through secure aggregation: the server never sees one client's mask.

Each client sends ``[mask * delta, mask]`` (``delta`` = its kept weights minus the global model,
clipped to ``clip``) into :class:`protocols.secagg_aggregator.SecAggAggregator` (SecAgg+,
unweighted, so the released vector is the sum divided by the number of survivors ``n``). The
server learns only ``sum(mask * delta)`` and the per-coordinate keeper counts ``sum(mask)``
(rounded back to integers: their fixed-point error is far below 1/2), and divides. The price:
the upload is dense again, ``2 x dimension`` ring elements plus the protocol's key traffic,
instead of a bitmap and the kept values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from privagg.errors import ConfigurationError
from protocols.aggregation import ClientUpdate, RoundContext
from protocols.secagg_aggregator import SecAggAggregator, SecAggOptions

__all__ = ["secure_aggregator", "secure_per_coordinate_mean"]


def secure_aggregator(*, clip: float = 1.0, value_bits: int = 20, threat: str = "semi-honest") -> SecAggAggregator:
    """The SecAgg+ aggregator the per-coordinate mean runs through (unweighted)."""
    return SecAggAggregator(SecAggOptions(threat=threat, clip=clip, value_bits=value_bits, weighted=False))


def secure_per_coordinate_mean(
    deltas: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    aggregator: SecAggAggregator,
    round: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(mean_delta, counts, client_upload_bytes)``; ``mean_delta`` is NaN where nobody keeps a coordinate."""
    if not deltas or len(deltas) != len(masks):
        raise ConfigurationError("need one mask per update and at least one update", field="updates")
    if aggregator.options.weighted:
        raise ConfigurationError("the per-coordinate mean needs an unweighted sum", field="aggregation.weighted")
    clip = aggregator.clip
    if clip < 1.0:
        raise ConfigurationError(f"clip must be >= 1 so a mask bit fits, got {clip}", field="clip")
    dim = len(deltas[0])
    updates = [
        ClientUpdate(
            client_id=k,
            delta=np.concatenate([np.where(m, np.clip(d, -clip, clip), 0.0), np.asarray(m, dtype=np.float64)]),
            num_examples=1,
        )
        for k, (d, m) in enumerate(zip(deltas, masks, strict=True))
    ]
    n = len(updates)
    ctx = RoundContext.everyone(n, rng=rng, round=round)
    result = aggregator.aggregate(updates, ctx)
    survivors = len(result.participants)
    sums = result.delta[:dim] * survivors
    counts = np.rint(result.delta[dim:] * survivors)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)
    return mean, counts, aggregator.rounds[-1].client_upload_bytes
