"""The poisoning adversary and the base class of the poisoning attacks (malicious-client update hooks)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from attacks.registry import ATTACKS, Adversary, Attack, AttackCase, AttackResult
from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng
from protocols.aggregation import ClientUpdate, RoundContext
from protocols.fedavg import FedAvgSimulation
from protocols.robust import ServerPolicy

if TYPE_CHECKING:
    from typing import Self

__all__ = ["PoisoningAdversary", "PoisoningAttack", "poisoning_attack", "poisoning_attacks"]


@dataclass(frozen=True)
class PoisoningAdversary(Adversary):
    """Who is malicious and what they know: the attacks' adversary, plus what only poisoning needs.

    The malicious clients are ``colluding_clients`` when named; otherwise a seeded draw of
    ``malicious_fraction`` of the population (rounded to the nearest integer, at least one
    when the fraction is positive), or of exactly ``num_malicious`` clients when that is set.
    ``omniscient``: the attacker reads every honest update of the round. ``colluding``: the
    malicious clients pool what they know and coordinate.
    """

    malicious_fraction: float = 0.2
    omniscient: bool = False
    colluding: bool = True
    num_malicious: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_malicious is not None and self.num_malicious < 0:
            raise ConfigurationError("must be >= 0", field="adversary.num_malicious")
        if self.num_malicious is not None and self.colluding_clients:
            raise ConfigurationError("name the malicious clients or give their number, not both", field="adversary")

    def count(self, population: int) -> int:
        """The number of malicious clients among ``population``."""
        fixed = len(self.colluding_clients) if self.colluding_clients else self.num_malicious
        if fixed is not None:
            if fixed >= population:
                raise ConfigurationError(
                    f"{fixed} malicious clients in a population of {population}", field="adversary.num_malicious"
                )
            return fixed
        if self.malicious_fraction == 0:
            return 0
        return min(population - 1, max(1, round(self.malicious_fraction * population)))

    def draw(self, population: int, *, seed: int) -> frozenset[int]:
        """The malicious clients: the named ones, or a seeded draw of :meth:`count` clients."""
        m = self.count(population)
        if self.colluding_clients:
            bad = [c for c in self.colluding_clients if not 0 <= c < population]
            if bad:
                raise ConfigurationError(
                    f"clients {bad} are not in the federation", field="adversary.colluding_clients"
                )
            return frozenset(self.colluding_clients)
        rng = simulation_rng(seed, "malicious-clients")
        return frozenset(int(c) for c in rng.permutation(population)[:m])

    def describe(self) -> str:
        if self.colluding_clients:
            who = f"clients {', '.join(map(str, self.colluding_clients))}"
        elif self.num_malicious is not None:
            who = f"{self.num_malicious} clients"
        else:
            who = f"{self.malicious_fraction:.0%} of clients"
        return (
            f"{who} malicious, {'omniscient' if self.omniscient else 'own data only'}, "
            f"{'colluding' if self.colluding else 'not colluding'}"
        )


class PoisoningAttack(Attack):
    """Base class: malicious-client bookkeeping and the update-hook protocol.

    Subclasses implement :meth:`craft`, returning the new delta of each malicious update of
    the round. ``start_round`` and ``attack_rounds`` restrict when the attack is active
    (``attack_rounds=None``: every round from ``start_round``).
    """

    kind = "poisoning"
    #: needs benign statistics (mean/std) and so collusion or omniscience
    needs_statistics: ClassVar[bool] = False
    #: a backdoor attack (has an attack success rate)
    is_backdoor: ClassVar[bool] = False
    #: crafts from the benign updates it knows (:meth:`reference`): omniscience changes what it sends
    reads_benign_updates: ClassVar[bool] = False

    def __init__(self, *, start_round: int = 1, attack_rounds: Sequence[int] | None = None) -> None:
        if start_round < 1:
            raise ConfigurationError("must be >= 1", field="start_round")
        self.start_round = start_round
        self.attack_rounds = None if attack_rounds is None else frozenset(int(r) for r in attack_rounds)
        self.adversary = PoisoningAdversary()
        self.malicious: frozenset[int] = frozenset()
        self.seed = 0
        self.rounds_attacked = 0

    @classmethod
    def from_policy(cls, options: Mapping[str, Any], policy: ServerPolicy) -> Self:
        """This attack against a server running ``policy`` (what the attacker knows of it); ``options`` win."""
        try:
            return cls(**options)
        except TypeError as e:
            raise ConfigurationError(f"invalid options for attack {cls.name!r}: {e}", field="attack_options") from None

    # -- setup ---------------------------------------------------------------------------
    def setup(self, sim: FedAvgSimulation, adversary: PoisoningAdversary, *, seed: int = 0) -> PoisoningAttack:
        """Choose the malicious clients of ``sim`` (a seeded draw) and check what the adversary knows suffices."""
        if self.needs_statistics and not (adversary.colluding or adversary.omniscient):
            raise ConfigurationError(
                f"{self.name} estimates benign statistics: it needs colluding or omniscient attackers",
                field="adversary",
            )
        self.malicious = adversary.draw(sim.config.data.num_clients, seed=seed)
        self.adversary = adversary
        self.seed = seed
        self.rounds_attacked = 0
        self._setup(sim)
        return self

    def _setup(self, sim: FedAvgSimulation) -> None:
        """Hook for subclasses (check the dataset kind, precompute triggers)."""

    def active(self, r: int) -> bool:
        if r < self.start_round:
            return False
        return self.attack_rounds is None or r in self.attack_rounds

    # -- hook ----------------------------------------------------------------------------
    def __call__(self, updates: list[ClientUpdate], ctx: RoundContext, sim: FedAvgSimulation) -> list[ClientUpdate]:
        mal = [i for i, u in enumerate(updates) if u.client_id in self.malicious]
        if not mal or not self.active(ctx.round):
            return updates
        self.rounds_attacked += 1
        crafted = self.craft(updates, mal, ctx, sim)
        out = list(updates)
        for i, new in crafted.items():
            if isinstance(new, ClientUpdate):
                out[i] = new
            else:
                out[i] = ClientUpdate(
                    client_id=updates[i].client_id,
                    delta=np.asarray(new, dtype=np.float64),
                    num_examples=updates[i].num_examples,
                )
        return out

    def craft(
        self, updates: list[ClientUpdate], mal: list[int], ctx: RoundContext, sim: FedAvgSimulation
    ) -> dict[int, np.ndarray | ClientUpdate]:
        raise NotImplementedError

    # -- knowledge -----------------------------------------------------------------------
    def reference(self, updates: list[ClientUpdate], mal: list[int], i: int | None = None) -> np.ndarray:
        """The benign updates the attacker knows: all honest ones if omniscient, else its own.

        Non-colluding attackers (``i`` given) only know their own genuine update.
        """
        if self.adversary.omniscient:
            honest = [u.delta for j, u in enumerate(updates) if j not in set(mal)]
            if honest:
                return np.stack(honest)
        if self.adversary.colluding or i is None:
            return np.stack([updates[j].delta for j in mal])
        return updates[i].delta[None, :]

    def rng(self, ctx: RoundContext, *stream: int | str) -> np.random.Generator:
        return simulation_rng(self.seed, "attack", self.name, ctx.round, *stream)

    # -- results -------------------------------------------------------------------------
    def success(self, sim: FedAvgSimulation) -> float | None:
        """Attack success rate of a backdoor on ``sim``'s global model; ``None`` if not a backdoor."""
        return None

    def details(self) -> dict[str, Any]:
        """What the attack chose during the run (its last shift, its target...), for result tables."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"attack": self.name, "threat": self.adversary.describe(), "malicious": sorted(self.malicious)}

    # -- Attack.run: one FedAvg run on the case -----------------------------------------------
    def supports(self, case: AttackCase) -> bool:
        return not case.uses_dp

    def run(self, case: AttackCase, *, progress: bool = False) -> AttackResult:
        """One FedAvg run on ``case`` with this attack; secure aggregation computes the plain sum.

        The case's federation split by Dirichlet(``options["alpha"]``, default 0.5) for
        ``options["rounds"]`` rounds (default 15); the adversary controls its
        ``malicious_fraction`` of the clients (default 20%), ``options["omniscient"]`` /
        ``options["colluding"]`` say what they know. The full attack x defense sweep is
        ``attacks.robustness.run_matrix`` / ``privagg evaluate robustness``.
        """
        if not self.supports(case):
            raise ConfigurationError(
                f"{self.name} runs against sum-based aggregation (none, secagg, paillier); "
                "use `privagg evaluate robustness` for DP and robust defenses",
                field="defense",
            )
        t0 = time.perf_counter()
        run = case.run
        cfg = replace(
            run,
            data=replace(run.data, partition="dirichlet", alpha=float(case.option("alpha", 0.5))),
            # an attack is measured on all its rounds: a DP budget that would end the run early raises
            federation=replace(run.federation, rounds=int(case.option("rounds", 15)), budget_exhausted="refuse"),
        )
        adversary = case.adversary
        if not isinstance(adversary, PoisoningAdversary):  # the case's adversary, plus what poisoning adds
            known = {f.name: getattr(adversary, f.name) for f in fields(Adversary)}
            adversary = PoisoningAdversary(
                **{**known, "malicious_fraction": adversary.malicious_fraction or 0.2},
                omniscient=bool(case.option("omniscient", False)),
                colluding=bool(case.option("colluding", True)),
            )
        sim = FedAvgSimulation(cfg, update_hooks=[self])
        self.setup(sim, adversary, seed=case.seed)
        res = sim.run(progress=progress, description=self.name)
        metrics: dict[str, float] = {"accuracy": float(res.final_accuracy)}
        asr = self.success(sim)
        if asr is not None:
            metrics["attack_success_rate"] = float(asr)
        return AttackResult(
            attack=self.name,
            case=case,
            metrics=metrics,
            data=self.describe(),
            success=None if asr is None else asr >= 0.5,
            seconds=time.perf_counter() - t0,
        )


def poisoning_attacks() -> tuple[str, ...]:
    """Names of the registered poisoning attacks (:class:`PoisoningAttack` classes), in registration order."""
    return tuple(n for n, cls in ATTACKS.entries() if issubclass(cls, PoisoningAttack))


def poisoning_attack(name: str, *, field: str = "attacks") -> type[PoisoningAttack]:
    """The registered poisoning attack ``name``; other kinds of attack are refused."""
    cls = ATTACKS.get(name, field=field)
    if cls.kind != "poisoning" or not issubclass(cls, PoisoningAttack):
        raise ConfigurationError(
            f"{name!r} is a {cls.kind} attack, not a poisoning attack", field=field, accepted=list(poisoning_attacks())
        )
    return cls
