"""A malicious-server attack on SecAgg+ as a rewrite of the messages between the real parties.

:class:`ProtocolAttack` is the base of every registered protocol attack. Its round
(:class:`MaliciousRound`) runs the real :class:`secagg.SecAggServer` and the real
:class:`secagg.SecAggClient` state machines through the in-memory driver
(:func:`secagg.run_round`); the attack deviates only through the driver's hooks: it picks the
server's cohort (and may add Sybil clients of its own), rewrites the server's outbox per
recipient (:meth:`ProtocolAttack.rewrite`) and reads what the server receives. What it
recovers (:meth:`ProtocolAttack.recover`) is computed from what it saw, with the protocol's
public recipes (:mod:`secagg.crypto`, :mod:`secagg.shamir`).

Configurations (:data:`CONFIGS`): ``unprotected`` (semi-honest mode, the textbook client with
``hardened=False``), ``semi-honest`` (semi-honest mode, hardened client checks) and
``active`` (privagg's default: signatures, session bound to the model digest, consistency
round).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from attacks.protocol.victims import ProtocolAttackOutcome, ProtocolVictims, image_psnr, make_victims
from attacks.registry import Attack, AttackCase, AttackResult
from privagg.errors import ConfigurationError
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from secagg import (
    ClientPolicy,
    Envelope,
    MaskedInput,
    RoundReport,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    ThreatModel,
    UnmaskResponse,
    make_identities,
    run_round,
)
from secagg.messages import ClientMessage

__all__ = [
    "CONFIGS",
    "FLOWER_CONFIG",
    "PROTOCOL_CONFIGS",
    "MaliciousRound",
    "ProtocolAttack",
    "ProtocolConfig",
    "config_for",
    "evaluate",
    "protocol_result",
]


@dataclass(frozen=True)
class ProtocolConfig:
    """A SecAgg+ configuration under attack: the protocol's threat model and the client's checks."""

    name: str
    threat: ThreatModel
    hardened: bool


#: The configurations every protocol attack runs against, weakest first.
CONFIGS: Mapping[str, ProtocolConfig] = {
    c.name: c
    for c in (
        ProtocolConfig("unprotected", ThreatModel.SEMI_HONEST, hardened=False),
        ProtocolConfig("semi-honest", ThreatModel.SEMI_HONEST, hardened=True),
        ProtocolConfig("active", ThreatModel.ACTIVE, hardened=True),
    )
}
PROTOCOL_CONFIGS: tuple[str, ...] = tuple(CONFIGS)


def config_for(threat: ThreatModel | str) -> ProtocolConfig:
    """The configuration privagg deploys for ``threat``: that threat model with hardened clients."""
    tm = ThreatModel.parse(threat)
    return next(c for c in CONFIGS.values() if c.threat is tm and c.hardened)


def _config(config: ProtocolConfig | str) -> ProtocolConfig:
    if isinstance(config, ProtocolConfig):
        return config
    if config not in CONFIGS:
        raise ConfigurationError(f"unknown configuration {config!r}", field="config", accepted=PROTOCOL_CONFIGS)
    return CONFIGS[config]


class MaliciousRound:
    """One SecAgg+ round between the real parties with ``attack``'s deviations.

    The server's parameters: a complete graph over the ``n`` real clients, threshold
    ``n // 2 + 1``, the victims' ring. ``masked`` and ``unmask_responses`` hold what the
    server received (read by :meth:`ProtocolAttack.recover`).
    """

    def __init__(
        self,
        attack: ProtocolAttack,
        *,
        victims: ProtocolVictims,
        config: ProtocolConfig,
        secrets: SecretSource = SYSTEM_SECRETS,
    ) -> None:
        self.attack = attack
        self.victims = victims
        self.config = config
        self.secrets = secrets
        self.target = victims.target
        self.real = tuple(sorted(victims.ring_inputs))
        n = len(self.real)
        self.params = SecAggParams.manual(
            num_clients=n,
            degree=n - 1,
            threshold=n // 2 + 1,
            threat=config.threat,
            value_bits=victims.encoding.value_bits,
            modulus_bits=victims.encoding.modulus_bits,
        )
        self.dimension = int(victims.ring_inputs[self.real[0]].size)
        self.masked: dict[int, MaskedInput] = {}
        self.unmask_responses: list[UnmaskResponse] = []

    def observe(self, message: ClientMessage) -> None:
        """What the server receives: the attack keeps the masked inputs and the revealed shares."""
        if isinstance(message, MaskedInput):
            self.masked[message.sender] = message
        elif isinstance(message, UnmaskResponse):
            self.unmask_responses.append(message)

    def _sybils(self, directory: Mapping[int, bytes]) -> dict[int, SecAggClient]:
        """The server's own clients (zero inputs); in active mode it lists them in a directory of its own."""
        ids = self.attack.sybils(self.real, self.target)
        active = self.config.threat is ThreatModel.ACTIVE
        keys, own = make_identities(ids, secrets=self.secrets) if active and ids else ({}, {})
        out: dict[int, SecAggClient] = {}
        for s in ids:
            out[s] = SecAggClient(
                s,
                threat=self.config.threat,
                identity_key=keys.get(s),
                directory={**directory, **own} if active else None,
                hardened=self.config.hardened,
                secrets=self.secrets,
                policy=ClientPolicy.trust_server(),  # the server's own clients take its numbers
            )
            out[s].set_input(np.zeros(self.dimension, dtype=np.uint64))
        return out

    def play(self) -> RoundReport:
        """Run the round; a malicious server does not screen advertisements (no directory)."""
        active = self.config.threat is ThreatModel.ACTIVE
        keys, directory = make_identities(self.real, secrets=self.secrets) if active else ({}, {})
        server = SecAggServer(
            self.params,
            clients=self.attack.cohort(self.real, self.target),
            dimension=self.dimension,
            model_digest=self.victims.model_digests[self.target],
            screen_senders=not active,  # a malicious server screens nothing
        )

        def rewrite(envelope: Envelope) -> list[Envelope]:
            return self.attack.rewrite(envelope, self)

        return run_round(
            self.params,
            client_ids=self.real,
            inputs=self.victims.ring_inputs,
            dimension=self.dimension,
            secrets=self.secrets,
            identities=(keys, directory) if active else None,
            hardened=self.config.hardened,
            server=server,
            server_hook=rewrite,
            server_observer=self.observe,
            external_clients=self._sybils(directory),
            measure_memory=False,
            client_policy=ClientPolicy.trust_server(),  # unsafe on purpose: the attack shows what the checks stop
        )


class ProtocolAttack(Attack):
    """A malicious server trying to learn one target client's *individual* update under SecAgg+.

    Subclasses carry their deviation: :meth:`cohort` / :meth:`sybils` (whom the server runs
    the round with), :meth:`rewrite` (the server's outbox, per recipient), :meth:`recover`
    (the target's input from what the server saw). ``crafted_models``: every client but the
    target trains on the attacker's crafted model. ``flower``: also simulated against
    Flower's SecAgg+ client (:mod:`attacks.protocol.flower`). ``scores_label``: the
    recovered vector is the target's alone, so its label is scored too.

    ``case.option("configs")`` restricts the configurations, ``case.option("target")`` is the
    target client, ``case.option("flower")`` (default true) adds the Flower row.
    """

    kind: ClassVar[str] = "protocol"
    crafted_models: ClassVar[bool] = False
    flower: ClassVar[bool] = True
    scores_label: ClassVar[bool] = True

    # -- the deviation ----------------------------------------------------------------------
    def cohort(self, clients: Sequence[int], target: int) -> tuple[int, ...]:
        """The clients the server runs the round with (honest: all of them)."""
        return tuple(clients)

    def sybils(self, clients: Sequence[int], target: int) -> tuple[int, ...]:
        """Client ids the server plays itself (honest: none)."""
        return ()

    def rewrite(self, envelope: Envelope, rnd: MaliciousRound) -> list[Envelope]:
        """The server's message to one recipient, as the attack sends it (honest: unchanged)."""
        return [envelope]

    def recover(self, rnd: MaliciousRound, report: RoundReport) -> np.ndarray | None:
        """The target's ring vector as the attack rebuilds it (default: the server's sum)."""
        return report.sum

    def server_abort(self, report: RoundReport) -> str | None:
        """Why the server's round failed, when the attack relies on it."""
        return report.abort.reason if report.abort is not None else None

    def compared(self, victims: ProtocolVictims) -> slice:
        """The coordinates that must equal the target's input for the attack to succeed."""
        return slice(None)

    def flower_lists(self, everyone: list[int], target: int) -> tuple[list[int], list[int]] | None:
        """Against Flower's client: the (active, dead) node lists of the unmask stage, if the attack forges them."""
        return None

    # -- running it -------------------------------------------------------------------------
    def make_victims(self, *, num_clients: int, target: int, seed: int) -> ProtocolVictims:
        return make_victims(num_clients=num_clients, target=target, seed=seed, crafted_for_others=self.crafted_models)

    def outcome(
        self, config: ProtocolConfig | str, *, victims: ProtocolVictims, secrets: SecretSource = SYSTEM_SECRETS
    ) -> ProtocolAttackOutcome:
        """Run the attack against one configuration and score it."""
        cfg = _config(config)
        rnd = MaliciousRound(self, victims=victims, config=cfg, secrets=secrets)
        report = rnd.play()
        recovered = self.recover(rnd, report)
        server_abort = self.server_abort(report)
        aborts = {c: e.reason for c, e in report.client_aborts.items()}
        t = victims.target
        truth = victims.ring_inputs[t].astype(np.uint64)
        sl = self.compared(victims)
        succeeded = recovered is not None and bool(np.array_equal(recovered[sl], truth[sl]))
        p: float | None = None
        label_ok: bool | None = None
        if recovered is not None:
            p, label = image_psnr(victims, victims.encoding.decode(recovered))
            label_ok = label if self.scores_label else None
        stopped = ""
        if not succeeded:
            reasons = sorted(set(aborts.values()))
            stopped = "; ".join(reasons[:3]) if reasons else (server_abort or "the server could not reconstruct")
        return ProtocolAttackOutcome(
            attack=self.name,
            config=cfg.name,
            succeeded=succeeded,
            recovered=recovered,
            client_aborts=aborts,
            server_abort=server_abort,
            psnr=p,
            label_recovered=label_ok,
            stopped_by=stopped,
        )

    def flower_outcome(self, victims: ProtocolVictims) -> ProtocolAttackOutcome:
        """The same attack against Flower's SecAgg+ client (``flwr`` must be installed)."""
        from attacks.protocol.flower import flower_outcome

        return flower_outcome(self, victims)

    def run(self, case: AttackCase, *, progress: bool = False) -> AttackResult:
        t0 = time.perf_counter()
        outcomes = evaluate([self], case)
        result = protocol_result(self.name, case, outcomes)
        result.success = any(o.succeeded for o in outcomes)
        result.seconds = time.perf_counter() - t0
        return result


def _flower_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("flwr") is not None


def evaluate(attacks: Sequence[ProtocolAttack], case: AttackCase) -> list[ProtocolAttackOutcome]:
    """Every attack against every configuration of the case, then against Flower's client."""
    configs = tuple(case.option("configs", PROTOCOL_CONFIGS))
    target = int(case.option("target", 0))
    victims: dict[bool, ProtocolVictims] = {}

    def victims_for(crafted: bool) -> ProtocolVictims:
        if crafted not in victims:
            victims[crafted] = make_victims(
                num_clients=case.num_clients, target=target, seed=case.seed, crafted_for_others=crafted
            )
        return victims[crafted]

    out = [a.outcome(c, victims=victims_for(a.crafted_models)) for a in attacks for c in configs]
    if bool(case.option("flower", True)) and _flower_available():
        out += [a.flower_outcome(victims_for(False)) for a in attacks if a.flower]
    return out


#: ``ProtocolAttackOutcome.config`` of a run against Flower's client.
FLOWER_CONFIG = "flower-secagg+"


def _row(o: ProtocolAttackOutcome) -> list[Any]:
    return [
        o.attack,
        "flower secagg+ (flwr)" if o.config == FLOWER_CONFIG else o.config,
        "isolated target" if o.succeeded else "stopped",
        "-" if o.psnr is None else f"{o.psnr:.1f}",
        len(o.client_aborts),
        o.stopped_by or "-",
    ]


def _key(o: ProtocolAttackOutcome) -> str:
    return f"{o.attack}/{'flower' if o.config == FLOWER_CONFIG else o.config}"


def protocol_result(name: str, case: AttackCase, outcomes: Sequence[ProtocolAttackOutcome]) -> AttackResult:
    """The outcomes as an attack result: one metric (1 = isolated) and one table row per outcome."""
    return AttackResult(
        attack=name,
        case=case,
        metrics={_key(o): 1.0 if o.succeeded else 0.0 for o in outcomes},
        tables=[
            (
                "Protocol attacks by a malicious server",
                ["attack", "configuration", "outcome", "target image PSNR (dB)", "client aborts", "stopped by"],
                [_row(o) for o in outcomes],
            )
        ],
        data={
            "outcomes": {
                _key(o): {
                    "succeeded": o.succeeded,
                    "psnr": o.psnr,
                    "client_aborts": len(o.client_aborts),
                    "stopped_by": o.stopped_by,
                }
                for o in outcomes
            }
        },
        text=(
            "Success: the server recovered the target's exact individual (ring-encoded) update despite "
            "secure aggregation; the PSNR is the target digit rebuilt from it by linear-layer inversion."
        ),
    )
