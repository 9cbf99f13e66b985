"""The attack registry, the *case* an attack runs on, the defenses a case names, and the result.

Following breaching's split, an :class:`AttackCase` fixes *what is attacked* — the
federation (a nested :class:`protocols.fedavg.RunConfig`: data, model, seed), the defense
in place and the :class:`Adversary` (who is malicious, who colludes, what the attacker
knows) — while an :class:`Attack` is *how*. The same attack runs on many cases
(``--defense none|secagg|dp|...``) and the same case hosts many attacks.

Attacks register by name::

    @register_attack("dlg")
    class DLG(Attack):
        kind = "inference"

        def run(self, case: AttackCase, *, progress: bool = False) -> AttackResult: ...

and runners build them with ``ATTACKS.get(name)(**options)``. Defenses register in
:data:`DEFENSES` (name -> :class:`Defense`: inner aggregator, options, DP, sum-only).
Importing :mod:`attacks` imports every attack module, so :data:`ATTACKS` is complete.

Listing them needs no attack code: :func:`catalog` (every attack's name, kind and description,
every defense's name) is written to ``attacks/catalog.json`` (:func:`write_catalog`),
which the front door reads without importing :mod:`attacks` (whose modules import torch);
``tests/attacks/test_catalog.py`` fails when the file and the registries disagree.

An :class:`AttackResult` holds numbers and data, never figures: :mod:`privagg.report.attacks`
knows how to draw each result type (image grids, ROC curves, PSNR curves).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from privagg.errors import ConfigurationError
from privagg.registry import Registry
from protocols.fedavg import DataConfig, FederationConfig, RunConfig

__all__ = [
    "ATTACKS",
    "CATALOG_FILE",
    "DEFENSES",
    "Adversary",
    "Attack",
    "AttackCase",
    "AttackResult",
    "Defense",
    "Population",
    "catalog",
    "control_defense",
    "register_attack",
    "register_defense",
    "write_catalog",
]

ServerRole = Literal["honest-but-curious", "malicious"]


@dataclass(frozen=True)
class Defense:
    """What a named defense deploys.

    ``aggregator``: the inner aggregator's name in ``protocols.aggregation.AGGREGATORS``,
    built with ``options`` (a case's ``options["aggregation"]`` overrides them);
    ``dp``: client-level DP-FedAvg wraps it (the case's ``dp_epsilon``/``dp_delta``);
    ``sum_only``: the server learns only the cohort's sum (secure aggregation, Paillier);
    ``noise``: where the DP noise is added (``None``: the clients when ``sum_only``, else the
    server; ``"distributed"``: integer noise shares inside the secure sum, :mod:`dp.distributed`).
    """

    aggregator: str
    options: Mapping[str, Any] = field(default_factory=dict)
    dp: bool = False
    sum_only: bool = False
    description: str = ""
    noise: Literal["central", "client", "distributed"] | None = None

    def __post_init__(self) -> None:
        if self.noise is not None and not self.dp:
            raise ConfigurationError("a noise placement needs dp = True", field="defense.noise")
        if self.noise == "distributed" and not self.sum_only:
            raise ConfigurationError("distributed DP runs inside a secure sum (sum_only = True)", field="defense.noise")

    @property
    def exposes_updates(self) -> bool:
        """Whether the attacker observes each client's own update (nothing protects it)."""
        return not (self.dp or self.sum_only)

    @property
    def observer_only(self) -> bool:
        """Central DP without a secure sum: the server receives every client's update and noises their
        aggregate itself, so the noised release protects against *observers* of the released model, never
        against the server (against the server this defense is ``none``). An attack case measures the
        release; verdicts say whom that figure is about."""
        return self.dp and not self.sum_only

    @property
    def dp_noise(self) -> Literal["central", "client", "distributed"]:
        """Where DP noise is added: ``noise`` when given, else by the clients when the server sees
        only their sum (continuous shares), else centrally."""
        if self.noise is not None:
            return self.noise
        return "client" if self.sum_only else "central"

    @property
    def sampling(self) -> Literal["fixed", "poisson"]:
        """How an attack round's cohort is drawn: distributed DP is accounted for Poisson sampling only,
        so its rounds sample every client with rate 1 (the same cohort, accounted as Poisson)."""
        return "poisson" if self.dp_noise == "distributed" else "fixed"


#: Defense configurations an attack case can name (``privagg attack NAME --defense ...``).
DEFENSES: Registry[Defense] = Registry("defense")


def register_defense(name: str, defense: Defense) -> Defense:
    """Register ``defense`` under ``name`` (an attack case's ``defense``)."""
    DEFENSES.add(name, defense)
    return defense


def control_defense(name: str) -> str:
    """The positive control of a defense: the weakest server view that lacks its protection.

    A defense only *stops* an attack that succeeds without it, on the same case and seeds. The control of
    a noised secure sum (``secagg+dp``, ``distributed-dp``) is the secure sum alone (``secagg``: what the
    server faces without the noise); of any other defense, no defense (``none``); ``none`` has no control.
    """
    spec = DEFENSES.get(name, field="defense")
    if spec.exposes_updates:
        return ""
    return "secagg" if spec.sum_only and spec.dp else "none"


register_defense("none", Defense("mean", description="plain FedAvg: the server sees every client's update"))
register_defense(
    "secagg", Defense("secagg", sum_only=True, description="secure aggregation: the server learns only the sum")
)
register_defense(
    "dp", Defense("mean", dp=True, description="client-level DP-FedAvg: the released aggregate is clipped and noised")
)
# The clients add DP noise shares before encoding, so the fixed-point range must hold
# update + noise (DP-FedAvg checks it): a wider clip and more bits (room for the shares of a
# 10-client cohort over 20 rounds at epsilon 8; [-16, 16] refused that run's noise).
register_defense(
    "secagg+dp",
    Defense(
        "secagg",
        {"clip": 32.0, "value_bits": 25},
        dp=True,
        sum_only=True,
        description="secure aggregation of client-noised updates: the server sees only a noised sum",
    ),
)
# Distributed DP (issue 15) with its defaults: distributed discrete Gaussian, 16 bits, clip 1; each client
# clips, rotates, rounds and adds an integer noise share, and the secure sum runs mod 2^16.
register_defense(
    "distributed-dp",
    Defense(
        "secagg",
        dp=True,
        sum_only=True,
        noise="distributed",
        description="distributed DP inside secure aggregation (discrete Gaussian shares, 16-bit ring): "
        "the server sees only the noised sum",
    ),
)
register_defense(
    "paillier",
    Defense("paillier", sum_only=True, description="threshold Paillier: the decryptors release only the sum"),
)


@dataclass(frozen=True)
class Adversary:
    """Who the attacker is and what it knows.

    ``server``: an honest-but-curious server follows the protocol and inspects what it
    receives; a malicious one may deviate (craft models, fake dropouts, add Sybils).
    ``colluding_clients``: client ids whose secrets and inputs the attacker holds.
    ``knows_labels`` / ``knows_architecture`` / ``knows_batch_stats``: side knowledge
    (the victim's labels, the model's architecture, normalisation statistics of the
    victim's batch). ``malicious_fraction``: for poisoning attacks, the share of clients
    the attacker controls when no explicit ids are given.

    (Not to be confused with :class:`secagg.ThreatModel`, the protocol's semi-honest or
    active *mode*.)
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
                field="adversary.server",
                accepted=["honest-but-curious", "malicious"],
            )
        if not 0.0 <= self.malicious_fraction < 1.0:
            raise ConfigurationError("must be in [0, 1)", field="adversary.malicious_fraction")
        if len(set(self.colluding_clients)) != len(self.colluding_clients):
            raise ConfigurationError("duplicate client ids", field="adversary.colluding_clients")

    @classmethod
    def honest_but_curious(cls, **kwargs: Any) -> Adversary:
        return cls(server="honest-but-curious", **kwargs)

    @classmethod
    def malicious_server(cls, **kwargs: Any) -> Adversary:
        return cls(server="malicious", **kwargs)


def _default_run() -> RunConfig:
    """The federation of a case unless told otherwise: 10 clients, an IID split of digits, an MLP
    (the attack sets training and rounds; no early stopping)."""
    return RunConfig(data=DataConfig(num_clients=10, partition="iid"), federation=FederationConfig())


@dataclass(frozen=True)
class Population:
    """A population-scale deployment: the case's ``num_clients`` clients are the population, each round
    samples every client independently with ``rate`` (Poisson sampling, expected cohort ``rate * clients``)
    and the deployment runs ``rounds`` rounds. Client-level DP is calibrated for (``rate``, ``rounds``,
    epsilon, delta) as it would be deployed; an attack observes one round of it (the target's cohort as
    sampled), and the matrix trains the whole deployment for its utility column.
    """

    rate: float
    rounds: int

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1:
            raise ConfigurationError("must be in (0, 1]", field="population.rate")
        if self.rounds < 1:
            raise ConfigurationError("must be >= 1", field="population.rounds")

    def expected_cohort(self, clients: int) -> float:
        return self.rate * clients

    @classmethod
    def parse(cls, text: str, *, field: str = "population") -> Population:
        """``"RATE,ROUNDS"`` (e.g. ``"0.03,200"``), as the command line gives it."""
        parts = text.split(",")
        try:
            if len(parts) != 2:
                raise ValueError
            return cls(rate=float(parts[0]), rounds=int(parts[1]))
        except ValueError:
            raise ConfigurationError(f"expected RATE,ROUNDS (e.g. 0.03,200), got {text!r}", field=field) from None


#: ``AttackCase.create`` / ``with_`` shortcuts into the nested run config.
_FEDERATION = frozenset({"dataset", "model", "hidden", "num_clients", "seed"})


def _federation(run: RunConfig, changes: Mapping[str, Any]) -> RunConfig:
    """``run`` with the shortcut fields in ``changes`` (dataset, model, hidden, num_clients, seed)."""
    data = run.data
    if "dataset" in changes or "num_clients" in changes:
        data = replace(
            data,
            dataset=changes.get("dataset", data.dataset),
            num_clients=int(changes.get("num_clients", data.num_clients)),
        )
    model = run.model
    if "model" in changes or "hidden" in changes:
        model = replace(model, name=changes.get("model", model.name), hidden=tuple(changes.get("hidden", model.hidden)))
    return replace(run, seed=int(changes.get("seed", run.seed)), data=data, model=model)


@dataclass(frozen=True)
class AttackCase:
    """The federation, defense and adversary an attack runs against (kept apart from the attack).

    ``run`` is the case's federation: its data (dataset, number of clients, split), model
    and ``seed`` — the one seed every simulation stream of the case derives from. Training,
    rounds, aggregation and DP of the simulated rounds come from the attack and from
    ``defense`` (a name in :data:`DEFENSES`), so ``run.aggregation`` and ``run.dp`` stay at
    their defaults. ``batch_size`` is the victim's local batch (gradient inversion);
    ``dp_epsilon``/``dp_delta`` the client-level budget when the defense includes DP;
    ``options`` carries attack-specific knobs in a read-only mapping. ``population``: ``None`` (cohort
    mode: the ``num_clients`` clients are one cohort, every client every round, DP calibrated for that
    federation) or a :class:`Population` (population mode: Poisson cohorts of the ``num_clients``
    clients, DP calibrated for the deployment's rate and rounds).

    Build one with :meth:`create` (flat keywords) or load it from a TOML ``[case]`` table
    (``[case.run.data]``, ``[case.run.model]``, ``[case.adversary]``, ``[case.options]``).
    """

    run: RunConfig = field(default_factory=_default_run)
    defense: str = "none"
    batch_size: int = 1
    adversary: Adversary = field(default_factory=Adversary)
    dp_epsilon: float = 8.0
    dp_delta: float = 1e-5
    options: Mapping[str, Any] = field(default_factory=dict)
    population: Population | None = None

    def __post_init__(self) -> None:
        DEFENSES.get(self.defense, field="defense")
        if self.run.dp is not None:
            raise ConfigurationError("the case's defense decides DP: set defense and dp_epsilon", field="run.dp")
        if self.run.aggregation.name != "mean" or self.run.aggregation.options:
            raise ConfigurationError(
                "the case's defense decides the aggregator: set defense (and options.aggregation)",
                field="run.aggregation",
            )
        if self.batch_size < 1:
            raise ConfigurationError("must be >= 1", field="batch_size")
        if not self.dp_epsilon > 0:
            raise ConfigurationError("must be > 0", field="dp_epsilon")
        if not 0 < self.dp_delta < 1:
            raise ConfigurationError("must be in (0, 1)", field="dp_delta")
        for c in self.adversary.colluding_clients:
            if not 0 <= c < self.num_clients:
                raise ConfigurationError(f"client {c} is not in the federation", field="adversary.colluding_clients")

    @classmethod
    def create(
        cls,
        *,
        dataset: str | None = None,
        model: str | None = None,
        hidden: tuple[int, ...] | None = None,
        num_clients: int | None = None,
        seed: int | None = None,
        **axes: Any,
    ) -> AttackCase:
        """A case from flat keywords: the federation's ``dataset``, ``model``, ``hidden``,
        ``num_clients`` and ``seed`` (unset: the default case's) and the case's own fields
        (``defense``, ``batch_size``, ``adversary``, ``dp_epsilon``, ``dp_delta``, ``options``)."""
        given = {"dataset": dataset, "model": model, "hidden": hidden, "num_clients": num_clients, "seed": seed}
        return cls(run=_federation(_default_run(), {k: v for k, v in given.items() if v is not None}), **axes)

    @property
    def seed(self) -> int:
        return self.run.seed

    @property
    def dataset(self) -> str:
        return self.run.data.dataset

    @property
    def num_clients(self) -> int:
        return self.run.data.num_clients

    @property
    def mode(self) -> Literal["cohort", "population"]:
        """``"cohort"``: the federation is one cohort; ``"population"``: Poisson cohorts of a population."""
        return "cohort" if self.population is None else "population"

    @property
    def cohort_size(self) -> int:
        """The cohort size the server plans for (public): every client in cohort mode, the expected
        Poisson cohort (at least 1) in population mode."""
        if self.population is None:
            return self.num_clients
        return max(1, round(self.population.expected_cohort(self.num_clients)))

    @property
    def defense_spec(self) -> Defense:
        """The registered :class:`Defense` this case names."""
        return DEFENSES.get(self.defense, field="defense")

    @property
    def uses_secure_aggregation(self) -> bool:
        """The server only sees the sum of the cohort's updates (secagg or Paillier)."""
        return self.defense_spec.sum_only

    @property
    def uses_dp(self) -> bool:
        return self.defense_spec.dp

    def with_(self, **changes: Any) -> AttackCase:
        """A copy with ``changes`` applied (re-validated); ``dataset``, ``model``, ``hidden``,
        ``num_clients`` and ``seed`` change the nested run config."""
        fed = {k: changes.pop(k) for k in _FEDERATION & changes.keys()}
        if fed:
            changes["run"] = _federation(changes.get("run", self.run), fed)
        return replace(self, **changes)

    def option(self, name: str, default: Any) -> Any:
        return self.options.get(name, default)


@dataclass
class AttackResult:
    """What an attack measured: metrics (numbers), tables and free-form data.

    ``success`` is the attack's own verdict against its stated goal when it has one
    (e.g. a protocol attack isolated its target), else ``None``. ``data`` goes into the
    report's JSON. Attacks with something to draw return a subclass carrying the arrays
    (:class:`attacks.inversion.InversionResult`, :class:`attacks.membership.MembershipResult`);
    :mod:`privagg.report.attacks` knows how to draw each.
    """

    attack: str
    case: AttackCase
    metrics: dict[str, float] = field(default_factory=dict)
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    success: bool | None = None
    seconds: float = 0.0
    text: str = ""


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


#: the registries' metadata, as :func:`catalog` gives it, beside this module (read without importing attacks)
CATALOG_FILE = "catalog.json"


def catalog() -> dict[str, Any]:
    """Every registered attack ``[name, kind, description]`` and every defense name (in ``names()`` order)."""
    import attacks  # noqa: F401  (complete registries: every attack module registers on import)

    return {
        "attacks": [[name, ATTACKS.get(name).kind, ATTACKS.get(name).description] for name in ATTACKS.names()],
        "defenses": DEFENSES.names(),
    }


def write_catalog(path: str | Path | None = None) -> Path:
    """Write :func:`catalog` as JSON to ``path`` (default: ``attacks/catalog.json``); returns the path."""
    target = Path(path) if path is not None else Path(__file__).with_name(CATALOG_FILE)
    target.write_text(json.dumps(catalog(), indent=1) + "\n", encoding="utf-8")
    return target
