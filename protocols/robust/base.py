"""The Byzantine-bound contract of the robust rules, the server policy they are built from, and lookups.

:class:`RobustAggregator` holds the bound ``f`` a rule tolerates among ``n`` clients and
refuses more (:meth:`~RobustAggregator.resolve_f`). A rule declares what it needs from a
deployment itself: :meth:`~RobustAggregator.from_policy` builds it from the
:class:`ServerPolicy` (the Byzantine count the server assumes, its clipping bound, ...), and
:meth:`~RobustAggregator.prepare` lets it set itself up on the simulation (FLTrust trains
its root update on server-held data, norm bounding installs the honest clients' clipping).
Runners go through :func:`build_defense` and :meth:`Aggregator.prepare`, which also accept
aggregators that are not robust rules (``mean``): they need nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from privagg.errors import ConfigurationError
from protocols.aggregation import AGGREGATORS, Aggregator, ClientUpdate, check_updates, resolve_options

if TYPE_CHECKING:
    from typing import Self


__all__ = [
    "RobustAggregator",
    "RobustOptions",
    "ServerPolicy",
    "build_defense",
    "byzantine_bound",
    "max_byzantine",
    "robust_aggregators",
    "secure_aggregation_compatible",
]


@dataclass(frozen=True)
class ServerPolicy:
    """What the server of a deployment runs and assumes; robust rules take their settings from it.

    ``num_byzantine``: the number ``f`` of Byzantine clients the server assumes per round.
    ``norm_bound`` / ``noise_multiplier``: the clipping bound ``M`` and the weak-DP noise of
    norm bounding (public: an attacker may know ``M``). ``secure_aggregation``: the server
    only sees the sum of the updates. ``root_size``: the size of the clean sample of the
    training data the server holds (FLTrust). ``None`` leaves a rule's own default.
    """

    num_byzantine: int | None = None
    norm_bound: float | None = None
    noise_multiplier: float | None = None
    secure_aggregation: bool = False
    root_size: int | None = None

    def __post_init__(self) -> None:
        if self.num_byzantine is not None and self.num_byzantine < 0:
            raise ConfigurationError("must be >= 0", field="policy.num_byzantine")
        if self.norm_bound is not None and not self.norm_bound > 0:
            raise ConfigurationError("must be > 0", field="norm_bound")
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise ConfigurationError("must be >= 0", field="noise_multiplier")
        if self.root_size is not None and self.root_size < 1:
            raise ConfigurationError("must be >= 1", field="root_size")

    def fill(self, options: Mapping[str, Any], *names: str) -> dict[str, Any]:
        """``options`` plus this policy's setting of each option in ``names`` they leave out (unless ``None``)."""
        out = dict(options)
        for name in names:
            value = getattr(self, name)
            if value is not None:
                out.setdefault(name, value)
        return out


def _stack(updates: Sequence[ClientUpdate]) -> np.ndarray:
    check_updates(updates)
    stack = np.stack([np.asarray(u.delta, dtype=np.float64) for u in updates])
    if not np.all(np.isfinite(stack)):
        bad = [u.client_id for u in updates if not np.all(np.isfinite(u.delta))]
        raise ConfigurationError(f"non-finite values in updates of clients {bad}", field="updates")
    return stack


def _pairwise_sq_dists(x: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", x, x)
    d = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.maximum(d, 0.0, out=d)
    np.fill_diagonal(d, 0.0)
    return d


def _ids(updates: Sequence[ClientUpdate]) -> tuple[int, ...]:
    return tuple(u.client_id for u in updates)


def _clip_rows(x: np.ndarray, bound: float) -> tuple[np.ndarray, int]:
    norms = np.linalg.norm(x, axis=1)
    scale = np.minimum(1.0, bound / np.maximum(norms, 1e-300))
    return x * scale[:, None], int(np.sum(norms > bound))


@dataclass(frozen=True)
class RobustOptions:
    """The options every robust rule takes (each rule's ``Options`` extends them).

    ``num_byzantine`` is the number ``f`` of Byzantine clients the server assumes per round;
    ``None`` assumes the worst case the rule tolerates for the round's ``n``.
    """

    num_byzantine: int | None = None

    def __post_init__(self) -> None:
        f = self.num_byzantine
        if f is not None and (not isinstance(f, int) or f < 0):
            raise ConfigurationError(f"must be an integer >= 0, got {f!r}", field="num_byzantine")


class RobustAggregator(Aggregator):
    """Base of the robust rules: the Byzantine bound ``f`` and its checks.

    Built from typed ``Options`` (``Krum(KrumOptions)``, or keywords: ``Krum(num_byzantine=2)``).
    ``num_byzantine`` is the number ``f`` of Byzantine clients the server assumes per round;
    ``None`` assumes the worst case the rule tolerates for the round's ``n``. Rules that do
    not use ``f`` in their computation still refuse an ``f`` beyond their bound.
    """

    name: ClassVar[str] = "robust"
    Options: ClassVar[type[RobustOptions]] = RobustOptions
    #: One line on how this rule composes with secure aggregation (shown by the runner).
    secagg_note: ClassVar[str] = "needs every individual update in plaintext: incompatible with secure aggregation"
    #: A stack of pre-aggregators in front of a rule (:class:`~protocols.robust.Stack`), not a rule itself.
    is_stack: ClassVar[bool] = False
    #: Whether pre-aggregators may sit in front of it (FoolsGold's signal, the diversity of
    #: individual histories, is what mixing and bucketing erase).
    stackable: ClassVar[bool] = True
    #: Hyperparameters the tuning step searches (option name -> candidate values).
    tuning_grid: ClassVar[Mapping[str, tuple[Any, ...]]] = {}

    def __init__(self, options: RobustOptions | None = None, **overrides: Any) -> None:
        self.options: RobustOptions = resolve_options(self.Options, options, overrides)
        self.num_byzantine = self.options.num_byzantine

    @classmethod
    def from_options(cls, options: RobustOptions) -> Self:
        return cls(options)

    @classmethod
    def from_policy(cls, options: Mapping[str, Any], policy: ServerPolicy) -> Self:
        """This rule under ``policy``; explicit ``options`` win over what the policy says."""
        return cls(**policy.fill(options, "num_byzantine"))

    @classmethod
    def max_byzantine(cls, n: int) -> int:
        """Largest ``f`` this rule tolerates among ``n`` clients (negative: ``n`` is too small)."""
        return (n - 1) // 2

    @classmethod
    def min_clients(cls, f: int) -> int:
        """Smallest ``n`` for which ``f`` Byzantine clients are tolerated."""
        n = 1
        while cls.max_byzantine(n) < f:
            n += 1
        return n

    def bound(self, n: int) -> int:
        """This instance's Byzantine bound among ``n`` clients: the rule's :meth:`max_byzantine`
        (a :class:`~protocols.robust.stacks.Stack` composes its stages' bounds with its rule's)."""
        return self.max_byzantine(n)

    def _clients_for(self, f: int) -> int:
        n = 1
        while self.bound(n) < f:
            n += 1
        return n

    def resolve_f(self, n: int) -> int:
        """The ``f`` used for a round of ``n`` clients; refuses an ``f`` beyond the bound."""
        bound = self.bound(n)
        if bound < 0:
            raise ConfigurationError(
                f"{self.name} needs at least {self._clients_for(0)} clients per round, got {n}", field="updates"
            )
        if self.num_byzantine is None:
            return bound
        if self.num_byzantine > bound:
            raise ConfigurationError(
                f"{self.name} tolerates at most {bound} Byzantine clients among {n} "
                f"(f={self.num_byzantine} needs n >= {self._clients_for(self.num_byzantine)})",
                field="num_byzantine",
                accepted=f"0..{bound}",
            )
        return self.num_byzantine


# ---------------------------------------------------------------------------------------------
# Lookups used by runners
# ---------------------------------------------------------------------------------------------


def robust_aggregators() -> tuple[str, ...]:
    """Names of the registered robust rules (:class:`RobustAggregator` classes), in registration order."""
    return tuple(
        n
        for n, f in AGGREGATORS.entries()
        if isinstance(f, type) and issubclass(f, RobustAggregator) and not f.is_stack
    )


def byzantine_bound(name: str, n: int) -> int | None:
    """The Byzantine bound of aggregator ``name`` for ``n`` clients; ``None`` if it claims none (``mean``)."""
    factory: Any = AGGREGATORS.get(name, field="defense")
    bound = getattr(factory, "max_byzantine", None)
    return int(bound(n)) if callable(bound) else None


def max_byzantine(name: str, n: int) -> int:
    """The Byzantine bound of aggregator ``name`` for ``n`` clients (``mean`` tolerates none)."""
    bound = byzantine_bound(name, n)
    return 0 if bound is None else bound


def secure_aggregation_compatible(name: str) -> bool:
    """Whether aggregator ``name`` only needs a sum, so it can run under secure aggregation."""
    factory: Any = AGGREGATORS.get(name, field="defense")
    return not bool(getattr(factory, "needs_plaintext_updates", True))


def build_defense(name: str, options: Mapping[str, Any], policy: ServerPolicy) -> Aggregator:
    """The registered aggregator ``name`` under ``policy`` (rules without :meth:`from_policy` get ``options`` only).

    Errors name the option: ``defense_options.<name>.<option>``.
    """
    factory: Any = AGGREGATORS.get(name, field="defenses")
    from_policy = getattr(factory, "from_policy", None)
    try:
        agg: Aggregator = from_policy(options, policy) if callable(from_policy) else factory(**options)
    except TypeError as e:
        raise ConfigurationError(f"invalid options for defense {name!r}: {e}", field="defense_options") from None
    except ConfigurationError as e:
        where = f"defense_options.{name}" + (f".{e.field}" if e.field else "")
        raise ConfigurationError(e.message, field=where, accepted=e.accepted) from None
    return agg
