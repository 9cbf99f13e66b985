"""The ``Aggregator`` interface of the FedAvg loop, and the plain weighted mean.

Every way of combining client updates — plain mean, secure aggregation, Paillier,
differential privacy wrappers, robust aggregators — implements :class:`Aggregator` and
registers by name in :data:`AGGREGATORS`. The FedAvg loop (``protocols.fedavg``) calls
``aggregate(updates, ctx)`` once per round and never needs to know which one it has.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from privagg.errors import ConfigurationError
from privagg.registry import Registry
from privagg.report import Section

__all__ = [
    "ClientUpdate",
    "RoundContext",
    "AggregateResult",
    "Aggregator",
    "MeanAggregator",
    "AGGREGATORS",
    "register_aggregator",
    "check_updates",
]


@dataclass(frozen=True, slots=True)
class ClientUpdate:
    """What one client sends in one round: a flat ``float64`` model delta (new - global)."""

    client_id: int
    delta: np.ndarray
    num_examples: int


@dataclass(frozen=True, slots=True)
class RoundContext:
    """What the loop knows about the round; aggregators may use it (DP accounting, seeds).

    ``sampling`` is ``"poisson"`` (each client independently with ``sampling_rate``) or
    ``"fixed"`` (``len(sampled)`` of ``population`` without replacement).
    """

    round: int
    population: int
    sampled: tuple[int, ...]
    sampling: str
    sampling_rate: float
    rng: np.random.Generator  # simulation randomness only (dropout patterns, encoding rounding)
    global_params: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class AggregateResult:
    """The aggregated delta to add to the global model, and what it cost.

    ``participants`` are the clients whose updates are in ``delta`` (survivors);
    ``metrics`` holds numbers the report shows (bytes, seconds, clipped counts, epsilon...).
    """

    delta: np.ndarray
    participants: tuple[int, ...]
    metrics: dict[str, Any] = field(default_factory=dict)


class Aggregator(abc.ABC):
    """Combine one round's client updates into one global delta.

    ``needs_plaintext_updates`` says whether the aggregator must see individual updates
    (Krum, median...). Those cannot run under secure aggregation or Paillier, and runners
    refuse such combinations instead of computing on plaintext behind the user's back.
    """

    name: ClassVar[str] = "aggregator"
    needs_plaintext_updates: ClassVar[bool] = True

    @abc.abstractmethod
    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult: ...

    def report_sections(self) -> list[Section]:
        """Report sections this aggregator adds to a run's report (cost tables, plots)."""
        return []


AGGREGATORS: Registry[Callable[..., Aggregator]] = Registry("aggregator")


def register_aggregator(name: str) -> Callable[[Any], Any]:
    return AGGREGATORS.register(name)


def check_updates(updates: Sequence[ClientUpdate]) -> int:
    """Validate a round's updates (non-empty, one shape, finite); returns the vector length."""
    if not updates:
        raise ConfigurationError("no client updates to aggregate", field="updates")
    dim = updates[0].delta.shape
    if len(dim) != 1:
        raise ConfigurationError("updates must be flat vectors", field="updates")
    for u in updates:
        if u.delta.shape != dim:
            raise ConfigurationError(
                f"client {u.client_id} sent shape {u.delta.shape}, expected {dim}", field="updates"
            )
        if u.num_examples < 0:
            raise ConfigurationError("num_examples must be >= 0", field="updates")
    ids = [u.client_id for u in updates]
    if len(set(ids)) != len(ids):
        raise ConfigurationError("duplicate client ids in one round", field="updates")
    return int(dim[0])


@register_aggregator("mean")
class MeanAggregator(Aggregator):
    """FedAvg's mean: weighted by ``num_examples`` (``weighted=True``) or uniform."""

    name = "mean"
    needs_plaintext_updates = False  # a (weighted) sum suffices: secure aggregation can compute it

    def __init__(self, *, weighted: bool = True) -> None:
        self.weighted = weighted

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        check_updates(updates)
        stack = np.stack([u.delta for u in updates])
        if self.weighted:
            w = np.array([u.num_examples for u in updates], dtype=np.float64)
            if w.sum() <= 0:
                raise ConfigurationError("all clients report zero examples", field="updates")
            delta = (w / w.sum()) @ stack
        else:
            delta = stack.mean(axis=0)
        return AggregateResult(delta=delta, participants=tuple(u.client_id for u in updates))
