"""The sweep's configuration: a federated task (:class:`~protocols.fedavg.RunConfig`) and the
attack x defense x malicious fraction x Dirichlet ``alpha`` axes, with the server policy and the
adversary every cell derives from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from attacks.poisoning import PoisoningAdversary, poisoning_attack, poisoning_attacks
from privagg.config import override
from privagg.errors import ConfigurationError
from protocols.aggregation import AGGREGATORS
from protocols.fedavg import AggregationConfig, DataConfig, FederationConfig, ModelConfig, RunConfig
from protocols.robust import ServerPolicy, max_byzantine, robust_aggregators, secure_aggregation_compatible
from protocols.training import TrainConfig

__all__ = [
    "BASELINE_DEFENSE",
    "DEFAULT_STACKS",
    "HONEST_ONLY",
    "KNOWLEDGE",
    "NO_ATTACK",
    "SCHEDULES",
    "Cell",
    "RobustnessConfig",
    "default_attacks",
    "default_defenses",
    "defense_info",
    "seed_list",
    "sum_only_mode",
]

#: The attack name of the clean baseline (no malicious behaviour; same defense, same seed).
NO_ATTACK = "none"
#: The defense every sweep compares against: FedAvg's plain mean (no robustness claimed).
BASELINE_DEFENSE = "mean"
#: The ceiling of any defense that discards the attackers: FedAvg on the honest clients alone
#: (the malicious clients' data is lost with them). One run per fraction and alpha.
HONEST_ONLY = "honest-only"
#: When an attack strikes: every round, or once in the last round (``single-shot``, backdoors only).
SCHEDULES = ("every-round", "single-shot")
#: What the attackers know: their own genuine updates (``partial``) or every honest update (``omniscient``).
KNOWLEDGE = ("partial", "omniscient")
#: The stacks the default sweep adds to the rules (pre-aggregators in front of a rule).
DEFAULT_STACKS = (
    "nnm+fltrust",
    "history+fltrust",
    "history+nnm+fltrust",
    "history+support+fltrust",
    "history+support+fltrust-trim",
    "bucketing+fltrust",
    "arc+nnm+trimmed-mean",
    "bucketing+median",
)
_PARTITIONS = ("dirichlet", "iid")


@dataclass(frozen=True, order=True)
class Cell:
    """One run of a sweep: an attack (with its schedule and the attackers' knowledge) against a defense."""

    attack: str
    defense: str
    fraction: float
    alpha: float
    schedule: str = "every-round"
    knowledge: str = "partial"


def default_attacks() -> tuple[str, ...]:
    """The clean baseline and every registered poisoning attack."""
    return (NO_ATTACK, *poisoning_attacks())


def default_defenses() -> tuple[str, ...]:
    """The plain mean, every registered robust rule and the :data:`DEFAULT_STACKS`."""
    return (BASELINE_DEFENSE, *robust_aggregators(), *DEFAULT_STACKS)


def defense_info(name: str) -> dict[str, Any]:
    """Whether defense ``name`` works when the server sees only sums, how, and what it then assumes of clients."""
    factory: Any = AGGREGATORS.get(name, field="defenses")
    mode = sum_only_mode(name)
    if mode == "global sum":
        note = getattr(factory, "secagg_note", None) or "compatible: only the sum of updates is needed (no robustness)"
    elif mode == "bucket sums":
        note = (
            "compatible per bucket: secure aggregation runs within each bucket of s clients and the rest of the "
            "stack on the bucket means; nothing is assumed of the clients' behaviour (a Byzantine client spoils "
            "only its bucket, which the rule bounds), but the buckets must come from public randomness the server "
            "cannot bias, and the server learns every bucket sum (each update hidden among s clients, not n)"
        )
    else:
        note = "needs every individual update in plaintext: incompatible with secure aggregation"
    return {
        "defense": name,
        "secure_aggregation_compatible": mode != "no",
        "sum_only": mode,
        "note": note,
        "max_byzantine_n20": max_byzantine(name, 20),
    }


def sum_only_mode(name: str) -> str:
    """How defense ``name`` runs when the server sees only sums: ``"global sum"``, ``"bucket sums"`` or ``"no"``.

    ``global sum``: one secure sum of every update suffices (the mean; norm bounding once the
    clients clip). ``bucket sums``: a stack that starts with bucketing needs only the sum of
    each bucket, so secure aggregation can run within every bucket and the rest of the stack
    on the bucket means (the buckets drawn from public randomness, never by the server).
    """
    if secure_aggregation_compatible(name):
        return "global sum"
    factory: Any = AGGREGATORS.get(name, field="defenses")
    pre = getattr(factory, "pre_names", ())
    if pre and pre[0] == "bucketing":
        return "bucket sums"
    return "no"


def _task(
    *, num_clients: int, train: TrainConfig, rounds: int, partition: Literal["dirichlet", "iid"] = "dirichlet"
) -> RunConfig:
    """The federated task of a sweep: digits, an MLP (64 hidden units), no early stopping."""
    return RunConfig(
        data=DataConfig(dataset="digits", num_clients=num_clients, partition=partition),
        model=ModelConfig(name="mlp", hidden=(64,)),
        train=train,
        federation=FederationConfig(rounds=rounds),
    )


#: Rounds of the default task. At 15 rounds the honest-only run had not converged (digits seed 0:
#: 0.653 -> 0.782 over the last five rounds, with the four malicious clients holding 60% of one
#: class's data); at 30 it is flat (0.889) and every defense trains the same 30 rounds.
DEFAULT_ROUNDS = 30


def _default_task() -> RunConfig:
    return _task(num_clients=20, train=TrainConfig(epochs=2, batch_size=16, lr=0.1), rounds=DEFAULT_ROUNDS)


@dataclass(frozen=True)
class RobustnessConfig:
    """One attack x defense sweep over the federated task ``run``; every run derives from ``run.seed``.

    ``run`` is the task every cell trains (data set, clients, model, local training, rounds);
    the cells replace its Dirichlet ``alpha`` by theirs and its aggregator by their defense.
    The sweep's own axes: ``attacks`` and ``defenses`` (registered names; ``"none"`` is the
    clean baseline), ``malicious`` (fractions of malicious clients) and ``alphas`` (label-split
    concentrations, smaller = more non-IID; unused when ``run.data.partition == "iid"``).
    ``schedules``: every round and/or ``single-shot`` (once, in the last round; applied to the
    backdoors, whose single shot is the published setting). ``knowledge``: ``partial`` (the
    attackers know their own genuine updates) and/or ``omniscient`` (every honest update of
    the round; applied to the attacks whose crafting reads benign updates). The clean
    baseline (attack ``"none"``) and the honest-only ceiling always run. ``colluding``: the
    attackers share what they know. The server (:meth:`policy`): defenses assume ``f`` = the
    number of malicious clients;
    ``norm_bound`` / ``noise_multiplier`` are its clipping bound ``M`` and weak-DP noise
    (norm bounding; constrain-and-scale attackers assume ``M``); ``root_size`` is the size of
    FLTrust's clean sample; ``secure_aggregation``: the server sees only the sum.
    ``attack_options`` / ``defense_options`` pass extra keyword options by name.
    ``local_steps``: ``None`` trains ``run.train.epochs`` full local passes per round (FedAvg);
    ``k`` takes exactly ``k`` mini-batch steps per round (``1`` = FedSGD).
    """

    run: RunConfig = field(default_factory=_default_task)
    attacks: tuple[str, ...] = field(default_factory=default_attacks)
    defenses: tuple[str, ...] = field(default_factory=default_defenses)
    malicious: tuple[float, ...] = (0.2,)
    alphas: tuple[float, ...] = (0.5,)
    schedules: tuple[str, ...] = SCHEDULES
    knowledge: tuple[str, ...] = KNOWLEDGE
    colluding: bool = True
    secure_aggregation: bool = False
    norm_bound: float = 2.0
    noise_multiplier: float = 0.1
    root_size: int = 100
    local_steps: int | None = None
    attack_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    defense_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.attacks:
            raise ConfigurationError("name at least one attack", field="attacks")
        if not self.defenses:
            raise ConfigurationError("name at least one defense", field="defenses")
        for a in self.attacks:
            if a != NO_ATTACK:
                poisoning_attack(a)
        for name, allowed, values in (
            ("schedules", SCHEDULES, self.schedules),
            ("knowledge", KNOWLEDGE, self.knowledge),
        ):
            if not values or any(v not in allowed for v in values):
                raise ConfigurationError(f"got {values!r}", field=name, accepted=list(allowed))
        for d in self.defenses:
            AGGREGATORS.get(d, field="defenses")
        for m in self.malicious:
            if not 0 <= m < 0.5:
                raise ConfigurationError(f"malicious fraction {m} must be in [0, 0.5)", field="malicious")
        for al in self.alphas:
            if not al > 0:
                raise ConfigurationError(f"alpha {al} must be > 0", field="alphas")
        if self.run.data.num_clients < 3:
            raise ConfigurationError("must be >= 3", field="run.data.num_clients")
        if self.run.data.partition not in _PARTITIONS:
            raise ConfigurationError(
                f"unknown partition {self.run.data.partition!r}", field="run.data.partition", accepted=_PARTITIONS
            )
        if self.run.dp is not None:
            raise ConfigurationError("the sweep's defenses are robust rules, not DP: leave it unset", field="run.dp")
        if self.run.aggregation != AggregationConfig():
            raise ConfigurationError(
                "every cell aggregates with its own defense: use defenses=", field="run.aggregation"
            )
        if not self.norm_bound > 0:
            raise ConfigurationError("must be > 0", field="norm_bound")
        if self.root_size < 1:
            raise ConfigurationError("must be >= 1", field="root_size")
        if self.local_steps is not None and self.local_steps < 1:
            raise ConfigurationError(f"must be >= 1 or None, got {self.local_steps}", field="local_steps")
        if self.secure_aggregation:
            bad = [d for d in self.defenses if sum_only_mode(d) == "no"]
            if bad:
                raise ConfigurationError(
                    f"defenses {', '.join(bad)} need individual updates in plaintext and cannot run under "
                    "secure aggregation (the server only sees sums); refusing instead of computing on plaintext",
                    field="defenses",
                    accepted=[d for d in AGGREGATORS.names() if sum_only_mode(d) != "no"],
                )

    @classmethod
    def quick(cls, **axes: Any) -> RobustnessConfig:
        """A tiny sweep for tests and notebooks (10 clients, 3 rounds of one local epoch)."""
        return cls(run=_task(num_clients=10, train=TrainConfig(epochs=1, batch_size=32, lr=0.1), rounds=3), **axes)

    @classmethod
    def fedsgd(cls, **axes: Any) -> RobustnessConfig:
        """Synchronous distributed SGD, the regime of ALIE (Baruch et al. 2019) and its defenses.

        IID split (the cells' ``alpha`` is then unused), every client sends one mini-batch
        gradient step per round (``local_steps=1``, batch 16, lr 0.1, no momentum), 300 short
        rounds. ``axes`` override the sweep's fields; :meth:`with_run` changes the task.
        """
        run = _task(num_clients=20, train=TrainConfig(epochs=1, batch_size=16, lr=0.1), rounds=300, partition="iid")
        return cls(run=run, **{"local_steps": 1, **axes})

    def with_run(self, changes: Mapping[str, Any]) -> RobustnessConfig:
        """A copy whose task has ``changes`` applied, a nested table as in TOML (``{"federation": {"rounds": 5}}``)."""
        return replace(self, run=override(self.run, changes))

    @property
    def regime(self) -> str:
        """A one-line description of the training regime (for tables and reports)."""
        split = "IID" if self.run.data.partition == "iid" else "Dirichlet"
        t = self.run.train
        if self.local_steps is None:
            local = f"{t.epochs} local epoch(s)"
        elif self.local_steps == 1:
            local = "FedSGD (1 mini-batch step)"
        else:
            local = f"{self.local_steps} local steps"
        return f"{local}, batch {t.batch_size}, lr {t.lr:g}, {split} split, {self.run.federation.rounds} rounds"

    def adversary(self, fraction: float, knowledge: str = "partial") -> PoisoningAdversary:
        """The attackers of a cell with ``fraction`` malicious clients who know ``knowledge``."""
        return PoisoningAdversary(
            malicious_fraction=fraction, omniscient=knowledge == "omniscient", colluding=self.colluding
        )

    def num_malicious(self, fraction: float) -> int:
        return self.adversary(fraction).count(self.run.data.num_clients)

    def policy(self, num_byzantine: int) -> ServerPolicy:
        """What the server of every cell runs, assuming ``num_byzantine`` Byzantine clients."""
        return ServerPolicy(
            num_byzantine=num_byzantine,
            norm_bound=self.norm_bound,
            noise_multiplier=self.noise_multiplier,
            secure_aggregation=self.secure_aggregation,
            root_size=self.root_size,
        )

    def cell_run(self, alpha: float) -> RunConfig:
        """The task of the cells with Dirichlet ``alpha``."""
        return replace(self.run, data=replace(self.run.data, alpha=alpha))

    def variants(self, attack: str) -> list[tuple[str, str]]:
        """The (schedule, knowledge) pairs ``attack`` runs with: single shot for backdoors, omniscient
        for attacks that read benign updates; the first schedule and knowledge for every attack."""
        cls = poisoning_attack(attack)
        schedules = [s for s in self.schedules if s == self.schedules[0] or cls.is_backdoor]
        knowledge = [k for k in self.knowledge if k == self.knowledge[0] or cls.reads_benign_updates]
        first = (schedules[0], knowledge[0])
        out = [first]
        out += [(s, knowledge[0]) for s in schedules[1:]]
        out += [(schedules[0], k) for k in knowledge[1:]]
        return out

    def cells(self) -> list[Cell]:
        """Every run: the clean baseline once per defense and alpha (always, even when ``"none"`` is
        not among the attacks), then each attack in each of its :meth:`variants`, and the
        honest-only ceiling once per fraction and alpha."""
        out: list[Cell] = []
        for alpha in self.alphas:
            for d in self.defenses:
                out.append(Cell(NO_ATTACK, d, self.malicious[0], alpha))
                for a in self.attacks:
                    if a == NO_ATTACK:
                        continue
                    for m in self.malicious:
                        out.extend(Cell(a, d, m, alpha, s, k) for s, k in self.variants(a))
            out.extend(Cell(HONEST_ONLY, BASELINE_DEFENSE, m, alpha) for m in self.malicious if m > 0)
        return out


def seed_list(text: str) -> list[int]:
    """Seeds written as ``"0-9"``, ``"0,1,2"`` or a mix (``"0-2,1000"``), in the order given."""
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        lo, dash, hi = part.partition("-")
        if not (lo.isdigit() and (not dash or hi.isdigit())):
            if part:
                raise ConfigurationError(f"not a seed or a range of seeds: {part!r}", field="seeds")
            continue
        out.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
    return out
