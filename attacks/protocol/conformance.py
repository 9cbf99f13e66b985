"""The adversarial conformance cases of SecAgg+: one registered class per attack class.

Each case is a rewrite of the messages between the real parties
(:func:`attacks.protocol.rewrite.run_tampered`) and the outcome the threat model
promises for it (:meth:`RoundAttack.held`): a typed abort with nothing reconstructible,
or the correct sum without the excluded party. The same cases are the tests of
``tests/secagg/adversarial/`` and the evidence of ``privagg audit``
(:func:`run_round_attacks`), so the audit reports what happened when each was run.

Cases register in :data:`ROUND_ATTACKS` (``@register_round_attack("name")``): the malicious
server's (:mod:`attacks.protocol.server_attacks`) and the malicious clients'
(:mod:`attacks.protocol.client_attacks`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from attacks.protocol.rewrite import ClientRewrite, ServerRewrite, Tampered, run_tampered
from privagg.registry import Registry
from secagg import ClientPolicy, SecAggParams, ThreatModel

__all__ = [
    "ROUND_ATTACKS",
    "RoundAttack",
    "RoundAttackOutcome",
    "register_round_attack",
    "round_attack",
    "run_round_attacks",
    "typed_abort_nothing_exposed",
    "correct_sum_without",
    "complete_params",
    "sparse_params",
]


class RoundAttack:
    """One attack class: a tampered round (:meth:`play`) and the promised outcome (:meth:`held`).

    ``who``: ``"server"`` (a malicious server, possibly with colluding clients) or
    ``"client"`` (a malicious client). ``threats``: the modes whose promise covers it
    (a crash or a stall is a defect in every mode; the server's deviations are covered by
    the active mode only). ``promise``: the outcome the threat model states.
    """

    name: ClassVar[str] = "round-attack"
    who: ClassVar[str] = "server"
    title: ClassVar[str] = ""
    promise: ClassVar[str] = "typed abort, nothing reconstructible"
    threats: ClassVar[tuple[ThreatModel, ...]] = (ThreatModel.ACTIVE,)

    #: cohort size of :meth:`server_rewrite` cases (a complete graph over ``clients`` clients)
    clients: ClassVar[int] = 8

    def server_rewrite(self, threat: ThreatModel) -> ServerRewrite | None:
        """The case as a pure rewrite of the server's outbox (``None``: it needs more than
        that: its own server, colluders, or a malicious client). Such cases also run through
        the Flower adapter (``tests/secagg/adversarial/test_flower_path.py``)."""
        return None

    #: the malicious client of :meth:`client_rewrite` cases
    attacker: ClassVar[int] = 1

    def client_rewrite(self, threat: ThreatModel) -> ClientRewrite | None:
        """The case as a rewrite of client :attr:`attacker`'s outgoing messages, one message for one
        (``None``: it needs more). Such cases also run through the Flower adapter."""
        return None

    #: what the honest clients accept (``None``: the server's numbers, ``ClientPolicy.trust_server()`` in the harness)
    policy: ClientPolicy | None = None

    def params(self, threat: ThreatModel) -> SecAggParams:
        """The round's parameters: what :attr:`policy` derives, else a complete graph."""
        if self.policy is not None:
            return self.policy.required(self.clients, threat)
        return complete_params(threat, self.clients)

    def play(self, threat: ThreatModel, *, seed: int = 0) -> Tampered:
        params = self.params(threat)
        if (rewrite := self.server_rewrite(threat)) is not None:
            return run_tampered(
                params, server_rewrite=rewrite, seed=seed, server_screens=False, client_policy=self.policy
            )
        if (crewrite := self.client_rewrite(threat)) is not None:
            return run_tampered(params, attackers=(self.attacker,), client_rewrite=crewrite, seed=seed)
        raise NotImplementedError

    def held(self, out: Tampered) -> bool:
        """Whether the round ended as the threat model promises."""
        return typed_abort_nothing_exposed(out)

    def run(
        self, threat: ThreatModel | str = ThreatModel.ACTIVE, *, seed: int = 0, client_policy: bool = True
    ) -> RoundAttackOutcome:
        """Run the case; ``client_policy=False``: the clients hold no :class:`secagg.ClientPolicy`
        (they accept the server's numbers: ``ClientPolicy.trust_server()``), as a deployment without one."""
        tm = ThreatModel.parse(threat)
        if not client_policy:
            self.policy = None
        out = self.play(tm, seed=seed)
        return RoundAttackOutcome(self.name, tm.value, self.held(out), out.summary(), self.promise, out)


@dataclass(frozen=True)
class RoundAttackOutcome:
    """What happened when one attack class was run: ``held`` is the promise kept."""

    attack: str
    mode: str
    held: bool
    happened: str
    promise: str
    tampered: Tampered


def complete_params(threat: ThreatModel, n: int = 8) -> SecAggParams:
    """A complete graph over ``n`` clients, threshold ``n // 2 + 1``."""
    return SecAggParams.manual(num_clients=n, degree=n - 1, threshold=n // 2 + 1, threat=threat)


def sparse_params(threat: ThreatModel, n: int = 12) -> SecAggParams:
    """A ring of degree 4, threshold 3, over ``n`` clients."""
    return SecAggParams.manual(num_clients=n, degree=4, threshold=3, threat=threat)


ROUND_ATTACKS: Registry[type[RoundAttack]] = Registry("round attack")


def register_round_attack(name: str) -> Callable[[type[RoundAttack]], type[RoundAttack]]:
    def deco(cls: type[RoundAttack]) -> type[RoundAttack]:
        cls.name = name
        ROUND_ATTACKS.register(name)(cls)
        return cls

    return deco


def round_attack(name: str) -> RoundAttack:
    """The registered attack class ``name``."""
    return ROUND_ATTACKS.get(name, field="attack")()


def run_round_attacks(
    threat: ThreatModel | str, *, names: Iterable[str] | None = None, seed: int = 0
) -> list[RoundAttackOutcome]:
    """Every registered attack class that the mode ``threat`` covers, run once each."""
    tm = ThreatModel.parse(threat)
    chosen = list(names) if names is not None else ROUND_ATTACKS.names()
    return [round_attack(n).run(tm, seed=seed) for n in chosen if tm in ROUND_ATTACKS.get(n).threats]


# ---------------------------------------------------------------------------- promised outcomes
def typed_abort_nothing_exposed(out: Tampered) -> bool:
    """The round ended in a typed abort (server or every honest client that went on would have
    to) and no honest client's input can be rebuilt."""
    return out.crash is None and not out.completed and bool(out.abort_reasons()) and not out.exposed()


def correct_sum_without(out: Tampered, excluded: Iterable[int] = ()) -> bool:
    """The round completed with the exact sum of its survivors, none of ``excluded`` among them,
    and no honest client's input can be rebuilt."""
    return out.crash is None and out.correct_sum(without=excluded) and not out.exposed()


def refused_at(out: Tampered, stage: str, clients: Iterable[int]) -> bool:
    """Each of ``clients`` aborted (typed) at client stage ``stage``."""
    aborts = out.client_aborts
    return all(c in aborts and aborts[c].stage == stage for c in clients)


# the cases register themselves on import
from attacks.protocol import client_attacks as _client_attacks  # noqa: E402,F401
from attacks.protocol import server_attacks as _server_attacks  # noqa: E402,F401
