"""Personalized sparse federated learning: FedLTN, LotteryFL and a FedAvg baseline (issue 19).

``run_fedltn(run_config, options)`` is the library entry of one algorithm (``[personalization]``
of a run, ``options.name``); :func:`compare_personalization` runs it beside FedAvg and FedAvg +
fine-tuning on the same clients (what the report renders). :data:`ALGORITHMS` is the registry
of algorithms by name; :func:`jump_start` starts a late client; :class:`SparseUpdateDP` states
the sensitivity of a sparse update and accounts it.
"""

from protocols.personalization.compare import ClientRow, PersonalizationComparison, compare_personalization
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
from protocols.personalization.jumpstart import JumpStart, Ticket, jump_start
from protocols.personalization.masks import aggregate_per_coordinate, decode_sparse, encode_sparse, prune_magnitude
from protocols.personalization.privacy import SparseUpdateDP, private_per_coordinate_mean

run_fedltn = run_personalized

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "ClientData",
    "ClientRow",
    "JumpStart",
    "PersonalizationComparison",
    "PersonalizationOptions",
    "PersonalizationResult",
    "RoundStats",
    "SparseUpdateDP",
    "Ticket",
    "aggregate_per_coordinate",
    "client_splits",
    "compare_personalization",
    "decode_sparse",
    "encode_sparse",
    "jump_start",
    "private_per_coordinate_mean",
    "prune_magnitude",
    "run_fedltn",
    "run_personalized",
]
