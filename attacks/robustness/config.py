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
    "NO_ATTACK",
    "RobustnessConfig",
    "default_attacks",
    "default_defenses",
    "defense_info",
]

#: The attack name of the clean baseline (no malicious behaviour; same defense, same seed).
NO_ATTACK = "none"
#: The defense every sweep compares against: FedAvg's plain mean (no robustness claimed).
BASELINE_DEFENSE = "mean"
_PARTITIONS = ("dirichlet", "iid")


def default_attacks() -> tuple[str, ...]:
    """The clean baseline and every registered poisoning attack."""
    return (NO_ATTACK, *poisoning_attacks())


def default_defenses() -> tuple[str, ...]:
    """The plain mean and every registered robust rule."""
    return (BASELINE_DEFENSE, *robust_aggregators())


def defense_info(name: str) -> dict[str, Any]:
    """Whether defense ``name`` composes with secure aggregation, and why (for tables and errors)."""
    factory: Any = AGGREGATORS.get(name, field="defenses")
    compatible = secure_aggregation_compatible(name)
    note = getattr(factory, "secagg_note", None)
    if note is None:
        note = (
            "compatible: only the sum of updates is needed"
            if compatible
            else "needs every individual update in plaintext: incompatible with secure aggregation"
        )
    return {
        "defense": name,
        "secure_aggregation_compatible": compatible,
        "note": note,
        "max_byzantine_n20": max_byzantine(name, 20),
    }


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


def _default_task() -> RunConfig:
    return _task(num_clients=20, train=TrainConfig(epochs=2, batch_size=16, lr=0.1), rounds=15)


@dataclass(frozen=True)
class RobustnessConfig:
    """One attack x defense sweep over the federated task ``run``; every run derives from ``run.seed``.

    ``run`` is the task every cell trains (data set, clients, model, local training, rounds);
    the cells replace its Dirichlet ``alpha`` by theirs and its aggregator by their defense.
    The sweep's own axes: ``attacks`` and ``defenses`` (registered names; ``"none"`` is the
    clean baseline), ``malicious`` (fractions of malicious clients) and ``alphas`` (label-split
    concentrations, smaller = more non-IID; unused when ``run.data.partition == "iid"``).
    The attackers: ``omniscient`` (read every honest update) and ``colluding`` (share what they
    know). The server (:meth:`policy`): defenses assume ``f`` = the number of malicious clients;
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
    omniscient: bool = False
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
            bad = [d for d in self.defenses if not secure_aggregation_compatible(d)]
            if bad:
                raise ConfigurationError(
                    f"defenses {', '.join(bad)} need individual updates in plaintext and cannot run under "
                    "secure aggregation (the server only sees the sum); refusing instead of computing on plaintext",
                    field="defenses",
                    accepted=[d for d in AGGREGATORS.names() if secure_aggregation_compatible(d)],
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

    def adversary(self, fraction: float) -> PoisoningAdversary:
        """The attackers of a cell with ``fraction`` malicious clients."""
        return PoisoningAdversary(malicious_fraction=fraction, omniscient=self.omniscient, colluding=self.colluding)

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

    def cells(self) -> list[tuple[str, str, float, float]]:
        """(attack, defense, fraction, alpha) of every run; the clean baseline once per defense and alpha."""
        out: list[tuple[str, str, float, float]] = []
        for alpha in self.alphas:
            for d in self.defenses:
                for a in self.attacks:
                    fracs = self.malicious[:1] if a == NO_ATTACK else self.malicious
                    out.extend((a, d, m, alpha) for m in fracs)
        return out
