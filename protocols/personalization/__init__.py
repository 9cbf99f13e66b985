"""Personalized sparse federated learning: FedLTN, LotteryFL and a FedAvg baseline (issue 19).

``run_fedltn(run_config, options)`` is the library entry (``[personalization]`` of a run);
:data:`ALGORITHMS` is the registry of algorithms by name.
"""

from protocols.personalization.fedltn import (
    ALGORITHMS,
    Algorithm,
    ClientData,
    PersonalizationOptions,
    PersonalizationResult,
    RoundStats,
    client_splits,
    run_personalized,
)
from protocols.personalization.masks import aggregate_per_coordinate, decode_sparse, encode_sparse, prune_magnitude

run_fedltn = run_personalized

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "ClientData",
    "PersonalizationOptions",
    "PersonalizationResult",
    "RoundStats",
    "aggregate_per_coordinate",
    "client_splits",
    "decode_sparse",
    "encode_sparse",
    "prune_magnitude",
    "run_fedltn",
    "run_personalized",
]
