"""The attack registry, the *case* an attack runs on, and the result it reports.

Following breaching's split, an :class:`AttackCase` fixes *what is attacked* — the data,
the model, the defense in place and the threat model (who is malicious, who colludes,
what the attacker knows) — while an :class:`Attack` is *how*. The same attack runs on
many cases (``--defense none|secagg|dp|...``) and the same case hosts many attacks.

Attacks register by name::

    @register_attack("dlg")
    class DLG(Attack):
        kind = "inference"

        def run(self, case: AttackCase, *, progress: bool = False) -> AttackResult: ...

and runners build them with ``ATTACKS.get(name)(**options)``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, TypeVar

from privagg.errors import ConfigurationError
from privagg.registry import Registry
from privagg.report import Figure, Section

__all__ = [
    "ATTACKS",
    "DEFENSES",
    "Attack",
    "AttackCase",
    "AttackResult",
    "ThreatModel",
    "register_attack",
]

ServerRole = Literal["honest-but-curious", "malicious"]

#: Defense configurations an attack case can name (``privagg attack NAME --defense ...``).
DEFENSES: tuple[str, ...] = ("none", "secagg", "dp", "secagg+dp", "paillier")


@dataclass(frozen=True)
class ThreatModel:
    """Who the attacker is and what it knows.

    ``server``: an honest-but-curious server follows the protocol and inspects what it
    receives; a malicious one may deviate (craft models, fake dropouts, add Sybils).
    ``colluding_clients``: client ids whose secrets and inputs the attacker holds.
    ``knows_labels`` / ``knows_architecture`` / ``knows_batch_stats``: side knowledge
    (the victim's labels, the model's architecture, normalisation statistics of the
    victim's batch). ``malicious_fraction``: for poisoning attacks, the share of clients
    the attacker controls when no explicit ids are given.
    """

    server: ServerRole = "honest-but-curious"
    colluding_clients: tuple[int, ...] = ()
    knows_labels: bool = False
    knows_architecture: bool = True
    knows_batch_stats: bool = False
    malicious_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.server not in ("honest-but-curious", "malicious"):
            raise ConfigurationError(
                f"invalid server role {self.server!r}",
                field="threat.server",
                accepted=["honest-but-curious", "malicious"],
            )
        if not 0.0 <= self.malicious_fraction < 1.0:
            raise ConfigurationError("must be in [0, 1)", field="threat.malicious_fraction")
        if len(set(self.colluding_clients)) != len(self.colluding_clients):
            raise ConfigurationError("duplicate client ids", field="threat.colluding_clients")

    @classmethod
    def honest_but_curious(cls, **kwargs: Any) -> ThreatModel:
        return cls(server="honest-but-curious", **kwargs)

    @classmethod
    def malicious_server(cls, **kwargs: Any) -> ThreatModel:
        return cls(server="malicious", **kwargs)


@dataclass(frozen=True)
class AttackCase:
    """Data, model, defense and threat model an attack runs against (kept apart from the attack).

    ``dataset``/``model``/``hidden`` name entries of the ``protocols`` registries;
    ``defense`` is one of :data:`DEFENSES`; ``num_clients`` is the federation size;
    ``batch_size`` the victim's local batch (gradient inversion) and ``seed`` the one seed
    every simulation stream of the case derives from. ``dp_epsilon``/``dp_delta`` is the
    client-level budget used when the defense includes ``dp``. ``options`` carries
    attack-specific knobs in a read-only mapping.
    """

    dataset: str = "digits"
    model: str = "mlp"
    hidden: tuple[int, ...] = (64,)
    defense: str = "none"
    num_clients: int = 10
    batch_size: int = 1
    seed: int = 0
    threat: ThreatModel = field(default_factory=ThreatModel)
    dp_epsilon: float = 8.0
    dp_delta: float = 1e-5
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.defense not in DEFENSES:
            raise ConfigurationError(f"unknown defense {self.defense!r}", field="defense", accepted=DEFENSES)
        if self.num_clients < 1:
            raise ConfigurationError("must be >= 1", field="num_clients")
        if self.batch_size < 1:
            raise ConfigurationError("must be >= 1", field="batch_size")
        if not self.dp_epsilon > 0:
            raise ConfigurationError("must be > 0", field="dp_epsilon")
        if not 0 < self.dp_delta < 1:
            raise ConfigurationError("must be in (0, 1)", field="dp_delta")
        for c in self.threat.colluding_clients:
            if not 0 <= c < self.num_clients:
                raise ConfigurationError(f"client {c} is not in the federation", field="threat.colluding_clients")

    @property
    def uses_secure_aggregation(self) -> bool:
        """The server only sees the sum of the cohort's updates (secagg or Paillier)."""
        return self.defense in ("secagg", "secagg+dp", "paillier")

    @property
    def uses_dp(self) -> bool:
        return self.defense in ("dp", "secagg+dp")

    def with_(self, **changes: Any) -> AttackCase:
        """A copy with ``changes`` applied (re-validated)."""
        return replace(self, **changes)

    def option(self, name: str, default: Any) -> Any:
        return self.options.get(name, default)


@dataclass
class AttackResult:
    """What an attack measured: metrics (numbers), figures, tables and free-form data.

    ``success`` is the attack's own verdict against its stated goal when it has one
    (e.g. a protocol attack isolated its target), else ``None``. ``raw`` keeps large
    in-memory outputs (scores, reconstructions) for runners; reports never include it.
    """

    attack: str
    case: AttackCase
    metrics: dict[str, float] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    success: bool | None = None
    seconds: float = 0.0
    text: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # in-memory outputs, never written to reports

    def to_section(self, *, key: str | None = None) -> Section:
        """This result as a report section (JSON data + summary table + figures)."""
        k = key or f"attack-{self.attack}-{self.case.defense}"
        summary = [("defense", self.case.defense), ("threat", self.case.threat.server)]
        summary += [(m, f"{v:.4g}" if isinstance(v, float) else str(v)) for m, v in self.metrics.items()]
        if self.success is not None:
            summary.append(("attack succeeded", "yes" if self.success else "no"))
        summary.append(("seconds", f"{self.seconds:.2f}"))
        data = {
            "attack": self.attack,
            "defense": self.case.defense,
            "case": self.case,
            "metrics": self.metrics,
            "success": self.success,
            "seconds": self.seconds,
            **self.data,
        }
        return Section(
            key=k,
            title=f"Attack {self.attack} against defense {self.case.defense}",
            data=data,
            summary=summary,
            figures=list(self.figures),
            tables=list(self.tables),
            text=self.text,
        )


class Attack(abc.ABC):
    """An attack algorithm. Subclasses set ``kind`` and implement :meth:`run`.

    Constructor arguments are the attack's own hyper-parameters (keyword-only);
    everything about the target lives in the :class:`AttackCase`.
    """

    name: ClassVar[str] = "attack"
    kind: ClassVar[str] = "inference"  # "inference" | "poisoning" | "protocol"
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def run(self, case: AttackCase, *, progress: bool = False) -> AttackResult: ...

    def supports(self, case: AttackCase) -> bool:
        """Whether this attack is meaningful on ``case`` (runners skip the rest)."""
        return True


ATTACKS: Registry[type[Attack]] = Registry("attack")

A = TypeVar("A", bound=type[Attack])


def register_attack(name: str) -> Callable[[A], A]:
    """Class decorator: register an :class:`Attack` subclass under ``name``."""

    def deco(cls: A) -> A:
        cls.name = name
        ATTACKS.register(name)(cls)
        return cls

    return deco
