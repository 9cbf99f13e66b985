"""The ``[personalization]`` table and the registry of personalized algorithms.

:data:`ALGORITHMS` maps a name to what distinguishes the algorithm (:class:`Algorithm`);
:class:`PersonalizationOptions` is the frozen, validated ``[personalization]`` table of a run
(rounds, local training and data come from the run's ``RunConfig``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from privagg.errors import ConfigurationError
from privagg.registry import Registry
from protocols.personalization.jumpstart import JUMP_START_RULES

__all__ = ["ALGORITHMS", "Algorithm", "PersonalizationOptions"]


@dataclass(frozen=True)
class Algorithm:
    """What distinguishes the registered algorithms."""

    prune: bool
    rewind: bool
    server_momentum: bool
    personal: bool  # evaluate each client's own model (else: the global model)


ALGORITHMS: Registry[Algorithm] = Registry("personalization")
ALGORITHMS.add("fedltn", Algorithm(prune=True, rewind=False, server_momentum=True, personal=True))
ALGORITHMS.add("lotteryfl", Algorithm(prune=True, rewind=True, server_momentum=False, personal=True))
ALGORITHMS.add("fedavg", Algorithm(prune=False, rewind=False, server_momentum=False, personal=False))


@dataclass(frozen=True)
class PersonalizationOptions:
    """The ``[personalization]`` table. Rounds, local training and data come from the ``RunConfig``.

    ``dp_noise_multiplier > 0`` releases each round's per-coordinate average with client-level
    DP (central Gaussian noise from the CSPRNG; :mod:`protocols.personalization.privacy`):
    each kept update clipped to ``dp_clip`` in L2, the keeper counts weighted by
    ``dp_count_weight`` (0: counts withheld, divide by the cohort), accounted at ``dp_delta``.
    """

    name: str = "fedltn"
    rounds: int = 30
    target_sparsity: float = 0.9
    prune_rate: float = 0.2
    acc_threshold: float = 0.6
    server_momentum: float = 0.5
    fine_tune_epochs: int = 1
    secure_aggregation: bool = False
    secagg_clip: float = 1.0
    late_clients: int = 0  # the last ``late_clients`` clients join at ``join_round``
    join_round: int = 0
    jump_start: Literal["similar", "global"] = "similar"
    dp_noise_multiplier: float = 0.0
    dp_clip: float = 1.0
    dp_count_weight: float = 0.0
    dp_delta: float = 1e-5

    def __post_init__(self) -> None:
        ALGORITHMS.get(self.name, field="personalization.name")
        if self.late_clients < 0:
            raise ConfigurationError(f"must be >= 0, got {self.late_clients}", field="personalization.late_clients")
        if self.late_clients and not 0 < self.join_round < self.rounds:
            raise ConfigurationError(
                f"late clients must join after round 0 and before the last round ({self.rounds}), "
                f"got {self.join_round}",
                field="personalization.join_round",
            )
        if self.jump_start not in JUMP_START_RULES:
            raise ConfigurationError(
                f"unknown rule {self.jump_start!r}", field="personalization.jump_start", accepted=JUMP_START_RULES
            )
        if self.secagg_clip < 1.0:
            raise ConfigurationError(
                f"must be >= 1 so a mask bit fits the secure sum, got {self.secagg_clip}",
                field="personalization.secagg_clip",
            )
        if self.rounds < 1:
            raise ConfigurationError(f"must be >= 1, got {self.rounds}", field="personalization.rounds")
        if not 0.0 <= self.target_sparsity < 1.0:
            raise ConfigurationError(
                f"must be in [0, 1), got {self.target_sparsity}", field="personalization.target_sparsity"
            )
        if not 0.0 < self.prune_rate < 1.0:
            raise ConfigurationError(f"must be in (0, 1), got {self.prune_rate}", field="personalization.prune_rate")
        if not 0.0 <= self.acc_threshold <= 1.0:
            raise ConfigurationError(
                f"must be in [0, 1], got {self.acc_threshold}", field="personalization.acc_threshold"
            )
        if not 0.0 <= self.server_momentum < 1.0:
            raise ConfigurationError(
                f"must be in [0, 1), got {self.server_momentum}", field="personalization.server_momentum"
            )
        if not (self.dp_noise_multiplier >= 0 and math.isfinite(self.dp_noise_multiplier)):
            raise ConfigurationError(
                f"must be finite and >= 0, got {self.dp_noise_multiplier}", field="personalization.dp_noise_multiplier"
            )
        if self.dp_noise_multiplier > 0 and self.secure_aggregation:
            raise ConfigurationError(
                "DP noise inside the secure per-coordinate sum is not built: use one or the other",
                field="personalization.dp_noise_multiplier",
            )
        if not (self.dp_clip > 0 and math.isfinite(self.dp_clip)):
            raise ConfigurationError(f"must be finite and > 0, got {self.dp_clip}", field="personalization.dp_clip")
        if not (self.dp_count_weight >= 0 and math.isfinite(self.dp_count_weight)):
            raise ConfigurationError(
                f"must be finite and >= 0, got {self.dp_count_weight}", field="personalization.dp_count_weight"
            )
        if not 0 < self.dp_delta < 1:
            raise ConfigurationError(f"must be in (0, 1), got {self.dp_delta}", field="personalization.dp_delta")
        if self.fine_tune_epochs < 0:
            raise ConfigurationError(
                f"must be >= 0, got {self.fine_tune_epochs}", field="personalization.fine_tune_epochs"
            )
