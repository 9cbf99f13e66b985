"""Defense stacks: pre-aggregators in front of a robust rule, registered by name (``nnm+krum``).

:class:`Stack` is the typed form (``Stack([NNM(), ARC()], Krum())``). Importing this module
registers, for every robust rule ``r`` of :func:`~protocols.robust.robust_aggregators` (but
FoolsGold, whose Sybil signal mixing erases), the
stacks ``nnm+r``, ``bucketing+r``, ``arc+r``, ``arc+nnm+r``, ``normalize+nnm+r``, ``history+r``,
``history+nnm+r`` and ``history+support+r`` in
:data:`~protocols.aggregation.AGGREGATORS`; their ``Options`` are the rule's options plus the
pre-aggregators' (``bucket_size``), so ``build_aggregator("bucketing+median", {"bucket_size": 3})``
validates like any rule. :func:`defense_stacks` lists them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from privagg.errors import ConfigurationError
from protocols.aggregation import AGGREGATORS, AggregateResult, ClientUpdate, RoundContext
from protocols.robust.base import RobustAggregator, RobustOptions, ServerPolicy, _stack, robust_aggregators
from protocols.robust.pre import PRE_AGGREGATORS, PreAggregator, split_options

if TYPE_CHECKING:
    from typing import Self

__all__ = ["STACK_PREFIXES", "Stack", "defense_stacks", "stack_class"]

#: The pre-aggregator chains registered in front of every robust rule.
STACK_PREFIXES: tuple[tuple[str, ...], ...] = (
    ("nnm",),
    ("bucketing",),
    ("arc",),
    ("arc", "nnm"),
    ("normalize", "nnm"),
    ("history",),
    ("history", "nnm"),
    ("history", "support"),
)


def _feasible(stages: Sequence[PreAggregator], rule: type[RobustAggregator], n: int, f: int) -> bool:
    for st in stages:
        if f > st.max_byzantine(n):
            return False
        n, f = st.passes(n, f)
    return rule.max_byzantine(n) >= 0 and f <= rule.max_byzantine(n)


def _bound(stages: Sequence[PreAggregator], rule: type[RobustAggregator], n: int) -> int:
    """The largest ``f`` the chain tolerates among ``n`` (-1: no ``f``, ``n`` too small)."""
    for f in range(n - 1, -1, -1):
        if _feasible(stages, rule, n, f):
            return f
    return -1


class Stack(RobustAggregator):
    """Pre-aggregators ``pre`` (applied in order) in front of the robust rule ``rule``.

    Each round: the updates in client-id order, every stage on what the previous one passed
    on, then ``rule`` on the last stage's vectors with the ``f`` those can carry. The
    Byzantine bound (:meth:`bound`) composes the stages' bounds with the rule's;
    ``participants`` are the clients whose updates reach the rule's output.
    """

    name = "stack"
    is_stack: ClassVar[bool] = True
    #: The names of the pre-aggregators of a registered stack, in order.
    pre_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        pre: Sequence[PreAggregator],
        rule: RobustAggregator,
        *,
        num_byzantine: int | None = None,
        options: RobustOptions | None = None,
    ) -> None:
        self.options = options if options is not None else RobustOptions(num_byzantine=num_byzantine)
        self.num_byzantine = self.options.num_byzantine
        if not pre:
            raise ConfigurationError("a stack needs at least one pre-aggregator", field="pre")
        if isinstance(rule, Stack):
            raise ConfigurationError("the rule of a stack must be a rule, not a stack", field="rule")
        self.pre, self.rule = tuple(pre), rule
        object.__setattr__(self, "name", "+".join([*(p.name for p in self.pre), rule.name]))  # the instance's own

    @property
    def secagg_stage_note(self) -> str:
        return "; ".join(p.secagg_note for p in self.pre)

    def bound(self, n: int) -> int:
        return _bound(self.pre, type(self.rule), n)

    def prepare(self, sim: Any, *, deviating: frozenset[int] = frozenset()) -> None:
        self.rule.prepare(sim, deviating=deviating)

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        _stack(updates)  # validation
        ordered = sorted(updates, key=lambda u: u.client_id)
        x = np.stack([np.asarray(u.delta, dtype=np.float64) for u in ordered])
        members = [frozenset({u.client_id}) for u in ordered]
        n = len(x)
        f = self.resolve_f(n)
        g = f
        for st in self.pre:
            _, g_next = st.passes(len(x), g)
            x, members = st.apply(x, members, g, ctx.rng)
            g = g_next
        rows = [
            ClientUpdate(client_id=i, delta=row, num_examples=sum(1 for _ in m))
            for i, (row, m) in enumerate(zip(x, members))
        ]
        self.rule.num_byzantine = g
        res = self.rule.aggregate(rows, ctx)
        part = sorted(frozenset().union(*(members[i] for i in res.participants))) if res.participants else []
        metrics = {**res.metrics, "f": f, "rule_f": g, "rule_inputs": len(rows)}
        return AggregateResult(delta=np.asarray(res.delta, dtype=np.float64), participants=tuple(part), metrics=metrics)


def stack_class(pre_names: Sequence[str], rule_name: str) -> type[Stack]:
    """The registrable class of the stack ``pre_names`` + ``rule_name`` (typed ``Options``, bound, secagg note)."""
    rule_cls: Any = AGGREGATORS.get(rule_name, field="rule")
    if not (isinstance(rule_cls, type) and issubclass(rule_cls, RobustAggregator)) or rule_cls.is_stack:
        raise ConfigurationError(
            f"{rule_name!r} is not a robust rule", field="rule", accepted=list(robust_aggregators())
        )
    if not rule_cls.stackable:
        raise ConfigurationError(f"{rule_name!r} takes no pre-aggregator in front of it", field="rule")
    pre_cls = [PRE_AGGREGATORS.get(p, field="pre") for p in pre_names]
    extra: list[tuple[str, Any, Any]] = []
    for p in pre_cls:
        if p.Options is not None:
            for fld in dataclasses.fields(p.Options):
                extra.append((fld.name, fld.type, dataclasses.field(default=fld.default)))
    name = "+".join([*pre_names, rule_name])
    options_cls = dataclasses.make_dataclass(
        "".join(part.title().replace("-", "") for part in name.split("+")) + "Options",
        extra,
        bases=(rule_cls.Options,),
        frozen=True,
        namespace={"__post_init__": _checked_post_init(rule_cls.Options, [p.Options for p in pre_cls])},
    )
    grid: dict[str, tuple[Any, ...]] = {}
    for part in (*pre_cls, rule_cls):
        grid.update(getattr(part, "tuning_grid", {}))

    class _Named(Stack):
        Options = options_cls
        tuning_grid = grid
        secagg_note = "; ".join(p.secagg_note for p in pre_cls) + "; " + rule_cls.secagg_note

        def __init__(self, options: Any = None, **overrides: Any) -> None:
            from protocols.aggregation import resolve_options

            opts = resolve_options(options_cls, options, overrides)
            values = {f.name: getattr(opts, f.name) for f in dataclasses.fields(opts)}
            values.pop("num_byzantine")
            parts: list[Any] = [*pre_cls, rule_cls]
            split = split_options(parts, values)
            stages = [p(**kw) for p, kw in zip(pre_cls, split[:-1])]
            super().__init__(stages, rule_cls(**split[-1]), options=opts)

        @classmethod
        def from_options(cls, options: Any) -> Self:
            return cls(options)

        @classmethod
        def from_policy(cls, options: Mapping[str, Any], policy: ServerPolicy) -> Self:
            """The rule takes from the policy what it declares (its own ``from_policy``); the stack takes ``f``."""
            values = dict(options)
            rule_fields = {f.name for f in dataclasses.fields(rule_cls.Options)} - {"num_byzantine"}
            rule_opts = {k: v for k, v in values.items() if k in rule_fields}
            rule = rule_cls.from_policy(rule_opts, dataclasses.replace(policy, num_byzantine=None))
            merged = {**{f: getattr(rule.options, f) for f in rule_fields}, **values}
            return cls(**policy.fill(merged, "num_byzantine"))

        @classmethod
        def max_byzantine(cls, n: int) -> int:
            return _bound([p() for p in pre_cls], rule_cls, n)

    _Named.name = name
    _Named.pre_names = tuple(pre_names)
    _Named.__name__ = _Named.__qualname__ = options_cls.__name__.removesuffix("Options") + "Stack"
    _Named.__doc__ = f"The stack {name}: {', '.join(pre_names)} in front of {rule_name} (see :class:`Stack`)."
    return _Named


def _checked_post_init(rule_options: type[Any], pre_options: Sequence[type[Any] | None]) -> Any:
    def __post_init__(self: Any) -> None:
        rule_options.__post_init__(self)
        for po in pre_options:
            if po is not None:
                po(**{f.name: getattr(self, f.name) for f in dataclasses.fields(po)})

    return __post_init__


def defense_stacks() -> tuple[str, ...]:
    """Names of the registered stacks, in registration order."""
    return tuple(n for n, f in AGGREGATORS.entries() if isinstance(f, type) and issubclass(f, Stack))


def _register_all() -> None:
    for rule in robust_aggregators():
        if not getattr(AGGREGATORS.get(rule), "stackable", True):
            continue
        for prefix in STACK_PREFIXES:
            name = "+".join([*prefix, rule])
            if name not in AGGREGATORS:
                AGGREGATORS.add(name, stack_class(prefix, rule))


_register_all()
