"""The ``Aggregator`` interface of the FedAvg loop, and the plain weighted mean.

Every way of combining client updates — plain mean, secure aggregation, Paillier,
differential privacy wrappers, robust aggregators — implements :class:`Aggregator` and
registers by name in :data:`AGGREGATORS`. The FedAvg loop (``protocols.fedavg``) calls
``aggregate(updates, ctx)`` once per round and never needs to know which one it has.

Typed options: a registered class may declare ``Options`` (a frozen dataclass of its options,
validated in ``__post_init__``) and a classmethod ``from_options(options)``. Building by name
(:func:`build_aggregator`) then validates a configuration mapping through that dataclass, so
errors name ``aggregation.options.<field>``; keyword construction (``MeanAggregator(weighted=False)``)
goes through the same dataclass (:func:`resolve_options`). A class without ``Options`` is built
with ``cls(**options)``.

Aggregators return typed results and keep typed per-round records; they know nothing of
reports (``privagg.report`` renders them).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from privagg.config import load_config
from privagg.errors import ConfigurationError
from privagg.registry import Registry

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "ClientUpdate",
    "RoundContext",
    "AggregateResult",
    "Aggregator",
    "MeanAggregator",
    "MeanOptions",
    "AGGREGATORS",
    "register_aggregator",
    "build_aggregator",
    "resolve_options",
    "check_updates",
    "ModularSum",
]

OptionsT = TypeVar("OptionsT", bound="DataclassInstance")


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

    @classmethod
    def everyone(
        cls, n: int, *, rng: np.random.Generator, round: int = 1, global_params: np.ndarray | None = None
    ) -> RoundContext:
        """A round of all ``n`` clients (fixed sampling, rate 1): a one-shot aggregation, a study, a test."""
        return cls(round, n, tuple(range(n)), "fixed", 1.0, rng, global_params)


@dataclass(frozen=True, slots=True)
class AggregateResult:
    """The aggregated delta to add to the global model, and what it cost.

    ``participants`` are the clients whose updates are in ``delta`` (survivors);
    ``metrics`` holds numbers the report shows (bytes, seconds, clipped counts, epsilon...).
    ``refused``: why the round was refused (:meth:`Aggregator.refuse`: nothing released, the model
    stays as it was); ``None`` for a round that ran.
    """

    delta: np.ndarray
    participants: tuple[int, ...]
    metrics: dict[str, Any] = field(default_factory=dict)
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class ModularSum:
    """What :meth:`Aggregator.modular_sum` released: the sum mod ``2**bits`` of the survivors' vectors.

    ``secure``: the server learnt only this sum (secure aggregation); False when it saw every vector.
    ``upload_bytes``: mean bytes one surviving client sent; ``metrics``: the inner protocol's own.
    """

    sum: np.ndarray
    participants: tuple[int, ...]
    secure: bool
    upload_bytes: float
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

    def prepare(self, sim: Any, *, deviating: frozenset[int] = frozenset()) -> None:
        """Set up on the simulation ``sim`` before its first round; ``deviating`` are the clients an
        experiment makes malicious. The default needs nothing (FLTrust takes its root data here,
        norm bounding installs its client-side clipping)."""
        return None

    def min_survivors(self, n: int) -> int:
        """The fewest of ``n`` updates this aggregator may release a sum of (dropouts it tolerates).

        DP-FedAvg checks its budget for this worst case before the sum is computed. Default: all ``n``.
        """
        return n

    def min_cohort(self) -> int:
        """The smallest cohort this aggregator's protocol runs a round for (default 1: any non-empty cohort)."""
        return 1

    def cohort_fault(self, n: int) -> str | None:
        """Why the protocol refuses a round of ``n >= 1`` clients (``None``: it runs).

        A refused round is not an error: the FedAvg loop refuses it (:meth:`refuse`) and goes on. The
        reason never states ``n`` (under Poisson sampling with DP the cohort size is withheld).
        """
        m = self.min_cohort()
        return None if n >= m else f"a cohort below the {self.name} aggregator's minimum of {m} clients"

    def refuse(self, updates: Sequence[ClientUpdate], ctx: RoundContext, reason: str) -> AggregateResult:
        """A refused round: nothing released, a zero delta, ``refused`` set (DP-FedAvg also charges it)."""
        if ctx.global_params is not None:
            dim = int(np.asarray(ctx.global_params).size)
        else:
            dim = check_updates(updates)
        return AggregateResult(delta=np.zeros(dim), participants=(), metrics={"round_refused": reason}, refused=reason)

    def modular_sum(self, vectors: Mapping[int, np.ndarray], *, bits: int, ctx: RoundContext) -> ModularSum:
        """The sum mod ``2**bits`` of ring vectors (``uint64`` below ``2**bits``), for distributed DP.

        Only aggregators that compute sums implement it; the default refuses.
        """
        raise ConfigurationError(
            f"the {self.name!r} aggregator cannot compute a sum mod 2^{bits} (distributed DP)",
            field="aggregation.name",
            accepted=["secagg", "mean"],
        )


AGGREGATORS: Registry[Callable[..., Aggregator]] = Registry("aggregator")


def register_aggregator(name: str) -> Callable[[Any], Any]:
    return AGGREGATORS.register(name)


def resolve_options(cls: type[OptionsT], options: OptionsT | None, overrides: Mapping[str, Any]) -> OptionsT:
    """``options`` (default ``cls()``) with keyword ``overrides`` applied, re-validated by ``cls``.

    An unknown keyword raises :class:`ConfigurationError` listing the accepted options.
    """
    if options is not None and not isinstance(options, cls):
        raise ConfigurationError(f"expected {cls.__name__}, got {type(options).__name__}", field="options")
    base = options if options is not None else cls()
    if not overrides:
        return base
    known = {f.name for f in dataclasses.fields(base)}
    for key in overrides:
        if key not in known:
            raise ConfigurationError("unknown option", field=key, accepted=sorted(known))
    return dataclasses.replace(base, **overrides)


def build_aggregator(name: str, options: Mapping[str, Any] | None = None, *, path: str = "aggregation") -> Aggregator:
    """Build the aggregator registered as ``name`` from a configuration mapping of its options.

    A class with typed ``Options`` validates the mapping through them (errors name
    ``<path>.options.<field>``); any other factory is called with the options as keywords.
    """
    factory = AGGREGATORS.get(name, field=f"{path}.name")
    mapping = dict(options or {})
    options_type = getattr(factory, "Options", None)
    if options_type is not None:
        typed = load_config(options_type, mapping, path=f"{path}.options")
        built: Aggregator = factory.from_options(typed)  # type: ignore[attr-defined]
        return built
    try:
        return factory(**mapping)
    except TypeError as e:
        raise ConfigurationError(f"invalid options for aggregator {name!r}: {e}", field=f"{path}.options") from None


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


@dataclass(frozen=True)
class MeanOptions:
    """``weighted``: weight each update by its ``num_examples`` (FedAvg) or not (uniform mean)."""

    weighted: bool = True


@register_aggregator("mean")
class MeanAggregator(Aggregator):
    """FedAvg's mean: weighted by ``num_examples`` (``weighted=True``) or uniform."""

    name = "mean"
    needs_plaintext_updates = False  # a (weighted) sum suffices: secure aggregation can compute it
    Options: ClassVar[type[MeanOptions]] = MeanOptions

    def __init__(self, options: MeanOptions | None = None, **overrides: Any) -> None:
        self.options = resolve_options(MeanOptions, options, overrides)
        self.weighted = self.options.weighted

    @classmethod
    def from_options(cls, options: MeanOptions) -> MeanAggregator:
        return cls(options)

    def modular_sum(self, vectors: Mapping[int, np.ndarray], *, bits: int, ctx: RoundContext) -> ModularSum:
        """The plain sum mod ``2**bits``: the server sees every vector (no secure aggregation)."""
        mask = np.uint64((1 << bits) - 1)
        ids = tuple(sorted(vectors))
        if not ids:
            raise ConfigurationError("no vectors to sum", field="updates")
        acc = np.zeros_like(np.asarray(vectors[ids[0]], dtype=np.uint64))
        for c in ids:
            acc += np.asarray(vectors[c], dtype=np.uint64) & mask
        size = (acc.size * bits + 7) // 8
        return ModularSum(sum=acc & mask, participants=ids, secure=False, upload_bytes=float(size))

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
