"""The four malicious-server attacks on SecAgg+, one registered class each, and the suite.

* ``model-inconsistency`` (Pasquini et al. 2022): the target gets the real model, every other
  client a crafted model whose ReLUs are all dead, so their first-layer updates are exactly
  zero. The aggregate's first layer is then the target's alone, and the analytic
  linear-layer inversion rebuilds its digit. Rewrite: each client's setup carries the digest
  of the model it was sent. Stopped in active mode: the model digest is part of the config
  hash every client signs and checks in the roster (session bound to the model).
* ``sybil-isolation``: the server runs the round with the target and Sybil clients it
  controls (zero inputs) instead of the honest cohort; the sum is the target's input.
  Stopped in active mode: every roster member must be in the identity directory (PKI) and
  sign its advertisement.
* ``fake-dropout``: after collecting the masked inputs, the server tells everybody that all
  clients but the target dropped: it gets the target's self-mask seed (the target
  "survived") and the pairwise-mask keys of its neighbours (they "dropped"), and unmasks the
  target's masked input alone. Stopped by the hardened client checks (threshold of surviving
  neighbours, the client itself must be listed) and, in active mode, the signed consistency
  round.
* ``both-shares``: the server lists the target both as survivor and as dropped, and receives
  both its self-mask-seed shares and its mask-key shares: its masked input is then fully
  unmasked. Stopped by the hardened checks (a client cannot be both).

``protocol`` (:class:`ProtocolSuite`) runs all of them.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric import x25519

from attacks.protocol.base import (
    FLOWER_CONFIG,
    PROTOCOL_CONFIGS,
    MaliciousRound,
    ProtocolAttack,
    evaluate,
    protocol_result,
)
from attacks.protocol.victims import ProtocolAttackOutcome, ProtocolVictims
from attacks.registry import ATTACKS, Attack, AttackCase, AttackResult, register_attack
from privagg.errors import ConfigurationError, VerificationError
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from secagg import ConsistencyRequest, Envelope, RoundReport, RoundSetup, ServerStage, UnmaskRequest, crypto
from secagg.limbs import reconstruct_secret

__all__ = [
    "FLOWER_ATTACKS",
    "PROTOCOL_ATTACKS",
    "BothShares",
    "FakeDropout",
    "ModelInconsistency",
    "ProtocolSuite",
    "SybilIsolation",
    "UnmaskAttack",
    "protocol_attack",
    "run_flower_attack",
    "run_protocol_attack",
]


@register_attack("model-inconsistency")
class ModelInconsistency(ProtocolAttack):
    """Every client but the target is sent a crafted model: the sum's first layer is the target's."""

    description = "Malicious server: a crafted model for every client but the target (Pasquini et al. 2022)"
    crafted_models = True
    flower = False  # Flower's SecAgg+ messages carry no model digest: nothing could notice
    scores_label = False  # the rest of the sum holds the others' updates

    def rewrite(self, envelope: Envelope, rnd: MaliciousRound) -> list[Envelope]:
        m = envelope.message
        if isinstance(m, RoundSetup):
            digest = rnd.victims.model_digests[envelope.recipient]
            return [Envelope(envelope.recipient, dataclasses.replace(m, model_digest=digest))]
        return [envelope]

    def compared(self, victims: ProtocolVictims) -> slice:
        return victims.first_layer


@register_attack("sybil-isolation")
class SybilIsolation(ProtocolAttack):
    """The server runs the round with the target and its own Sybil clients: the sum is the target's."""

    description = "Malicious server: the target alone among Sybil clients the server controls"

    def cohort(self, clients: Sequence[int], target: int) -> tuple[int, ...]:
        return (target, *self.sybils(clients, target))

    def sybils(self, clients: Sequence[int], target: int) -> tuple[int, ...]:
        first = max(clients) + 1
        return tuple(range(first, first + len(clients) - 1))


#: Server stages before an unmask attack takes over from the honest server state machine.
_HONEST_STAGES = frozenset(
    s.value
    for s in (
        ServerStage.COLLECT_KEYS,
        ServerStage.COLLECT_REVEALS,
        ServerStage.COLLECT_SHARES,
        ServerStage.COLLECT_MASKED,
    )
)


class UnmaskAttack(ProtocolAttack):
    """Forges the survivor / dropped lists after the masked inputs are in, then unmasks the
    target's masked input itself from the shares the clients reveal.

    The server's consistency and unmask requests go out with the lists of :meth:`forge`.
    From then on the attack computes its own result: what the honest server machine makes
    of the forged round (its sum, or its abort) is not the attacker's.
    """

    @abc.abstractmethod
    def forge(self, survivors: tuple[int, ...], target: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The (survivors, dropped) lists the server sends instead of the true ones."""

    def flower_lists(self, everyone: list[int], target: int) -> tuple[list[int], list[int]] | None:
        survivors, dropped = self.forge(tuple(everyone), target)
        return list(survivors), list(dropped)

    def rewrite(self, envelope: Envelope, rnd: MaliciousRound) -> list[Envelope]:
        m = envelope.message
        if not isinstance(m, (ConsistencyRequest, UnmaskRequest)) or rnd.target not in m.survivors:
            return [envelope]
        survivors, dropped = self.forge(m.survivors, rnd.target)
        if isinstance(m, ConsistencyRequest):
            return [Envelope(envelope.recipient, dataclasses.replace(m, survivors=survivors))]
        return [Envelope(envelope.recipient, dataclasses.replace(m, survivors=survivors, dropped=dropped))]

    def server_abort(self, report: RoundReport) -> str | None:
        a = report.abort
        return a.reason if a is not None and a.stage in _HONEST_STAGES else None

    def recover(self, rnd: MaliciousRound, report: RoundReport) -> np.ndarray | None:
        """Strip the target's self mask and pair masks with the secrets rebuilt from revealed shares.

        The pair masks come from the target's own mask key when it was revealed, else from
        the mask keys of its neighbours.
        """
        t = rnd.target
        masked = rnd.masked.get(t)
        if masked is None:
            return None
        self_shares: dict[int, bytes] = {}
        key_shares: dict[int, dict[int, bytes]] = {}
        for m in rnd.unmask_responses:
            for rs in m.self_shares:
                if rs.owner == t:
                    self_shares[m.sender] = rs.share
            for rs in m.key_shares:
                key_shares.setdefault(rs.owner, {})[m.sender] = rs.share
        srv, k = report.server, rnd.params.threshold
        pk = {c: a.mask_public_key for c, a in srv.advertisements.items()}
        peers = srv.delivered_to.get(t, frozenset())
        try:
            seed = reconstruct_secret(self_shares, threshold=k)
            if t in key_shares:
                own = x25519.X25519PrivateKey.from_private_bytes(reconstruct_secret(key_shares[t], threshold=k))
                shared = {v: crypto.x25519_shared(own, pk[v]) for v in peers}
            else:
                shared = {
                    v: crypto.x25519_shared(
                        x25519.X25519PrivateKey.from_private_bytes(
                            reconstruct_secret(key_shares.get(v, {}), threshold=k)
                        ),
                        pk[t],
                    )
                    for v in peers
                }
        except (ValueError, VerificationError):
            return None
        p = rnd.params
        y = masked.values().astype(np.uint32 if p.word_bits == 32 else np.uint64)
        crypto.add_self_mask(y, seed, session=srv.session_id, round=srv.round, subtract=True)
        for v, secret in shared.items():
            pair = crypto.pair_seed(secret, session=srv.session_id, round=srv.round, a=t, b=v)
            crypto.add_pair_mask(y, pair, session=srv.session_id, round=srv.round, me=t, peer=v, subtract=True)
        if p.modulus_bits < y.dtype.itemsize * 8:
            np.bitwise_and(y, y.dtype.type((1 << p.modulus_bits) - 1), out=y)
        return y.astype(np.uint64)


@register_attack("fake-dropout")
class FakeDropout(UnmaskAttack):
    """Everybody but the target "dropped": the target's seed and its neighbours' mask keys come out."""

    description = "Malicious server: fake dropouts of every client but the target"

    def forge(self, survivors: tuple[int, ...], target: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (target,), tuple(c for c in survivors if c != target)

    def flower_lists(self, everyone: list[int], target: int) -> tuple[list[int], list[int]] | None:
        # Flower's client checks that at least `threshold` clients are active: list everyone
        # active, and every client but the target dropped as well
        return list(everyone), [c for c in everyone if c != target]


@register_attack("both-shares")
class BothShares(UnmaskAttack):
    """The target is listed as survivor and as dropped: both of its secrets come out."""

    description = "Malicious server: the target listed both as survivor and as dropped"

    def forge(self, survivors: tuple[int, ...], target: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return tuple(survivors), (target,)


#: The suite, in report order.
_SUITE: tuple[type[ProtocolAttack], ...] = (ModelInconsistency, SybilIsolation, FakeDropout, BothShares)
PROTOCOL_ATTACKS: tuple[str, ...] = tuple(a.name for a in _SUITE)
FLOWER_ATTACKS: tuple[str, ...] = tuple(a.name for a in _SUITE if a.flower)


def protocol_attack(name: str) -> ProtocolAttack:
    """The registered protocol attack ``name``."""
    if name not in ATTACKS or not issubclass(cls := ATTACKS.get(name), ProtocolAttack):
        raise ConfigurationError(f"unknown protocol attack {name!r}", field="attack", accepted=PROTOCOL_ATTACKS)
    return cls()


def run_protocol_attack(
    attack: str,
    *,
    config: str,
    num_clients: int = 10,
    target: int = 0,
    seed: int = 0,
    secrets: SecretSource = SYSTEM_SECRETS,
    victims: ProtocolVictims | None = None,
) -> ProtocolAttackOutcome:
    """Run protocol attack ``attack`` against one configuration (``unprotected``, ``semi-honest``, ``active``)."""
    a = protocol_attack(attack)
    if config not in PROTOCOL_CONFIGS:
        raise ConfigurationError(f"unknown configuration {config!r}", field="config", accepted=PROTOCOL_CONFIGS)
    if num_clients < 4:
        raise ConfigurationError("protocol attacks need at least 4 clients", field="num_clients")
    if victims is None:
        victims = a.make_victims(num_clients=num_clients, target=target, seed=seed)
    return a.outcome(config, victims=victims, secrets=secrets)


def run_flower_attack(attack: str, *, victims: ProtocolVictims) -> ProtocolAttackOutcome:
    """Run protocol attack ``attack`` against Flower's SecAgg+ client (see :mod:`attacks.protocol.flower`)."""
    a = protocol_attack(attack)
    if not a.flower:
        raise ConfigurationError(f"not simulated against Flower: {attack!r}", field="attack", accepted=FLOWER_ATTACKS)
    return a.flower_outcome(victims)


@register_attack("protocol")
class ProtocolSuite(Attack):
    """Every protocol attack against every configuration (``unprotected``, ``semi-honest``, ``active``).

    ``case.option("attacks")`` restricts the attacks, ``case.option("configs")`` the
    configurations; ``case.num_clients`` is the cohort size, ``case.option("target")`` the
    target. ``success``: the outcome is as expected (each attack isolates the target without
    protection and is stopped in active mode).
    """

    kind: ClassVar[str] = "protocol"
    description = (
        "Malicious-server attacks on secure aggregation (model inconsistency, Sybils, fake dropouts, both shares)"
    )

    def run(self, case: AttackCase, *, progress: bool = False) -> AttackResult:
        t0 = time.perf_counter()
        names = tuple(case.option("attacks", PROTOCOL_ATTACKS))
        outcomes = evaluate([protocol_attack(n) for n in names], case)
        order = {n: i for i, n in enumerate(PROTOCOL_ATTACKS)}
        flower = sorted((o for o in outcomes if o.config == FLOWER_CONFIG), key=lambda o: order[o.attack])
        outcomes = [o for o in outcomes if o.config != FLOWER_CONFIG] + flower
        result = protocol_result(self.name, case, outcomes)
        m = result.metrics
        result.success = all(m.get(f"{a}/unprotected", 1.0) == 1.0 and m.get(f"{a}/active", 0.0) == 0.0 for a in names)
        result.seconds = time.perf_counter() - t0
        return result
