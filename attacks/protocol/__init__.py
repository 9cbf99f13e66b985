"""Attacks by a malicious server on the secure-aggregation protocol itself.

Each attack tries to learn one target client's *individual* update although the clients run
secure aggregation. Every attack is a small rewrite of the messages between the real
parties: the real :class:`secagg.SecAggServer` and :class:`secagg.SecAggClient` state
machines run a round through the in-memory driver (:func:`secagg.run_round`), and the
attack deviates only through the driver's hooks (:mod:`attacks.protocol.base`). The updates
are real: each client computes one FedSGD step of the global MLP on one of its own digits,
ring-encoded as in deployment (:mod:`attacks.protocol.victims`).

The adversarial conformance cases (:mod:`attacks.protocol.conformance`, one registered class
per attack class in :data:`ROUND_ATTACKS`) are rewrites written with the shared helper
:func:`attacks.protocol.rewrite.run_tampered`, each held to the outcome the threat model
promises; ``privagg audit`` runs them all.

One registered class per attack (:mod:`attacks.protocol.deviations`): ``model-inconsistency``,
``sybil-isolation``, ``fake-dropout``, ``both-shares``; ``protocol`` runs them all. Each runs
against the configurations ``unprotected`` (semi-honest mode, textbook client
``hardened=False``), ``semi-honest`` (semi-honest mode, hardened client checks) and
``active`` (privagg's default: signatures, session bound to the model digest, consistency
round), and where it applies against Flower's SecAgg+ client (:mod:`attacks.protocol.flower`).
Success means the server recovered the target's exact ring vector; the image reconstructed
from it is scored by PSNR.
"""

from attacks.protocol.base import (
    CONFIGS,
    PROTOCOL_CONFIGS,
    MaliciousRound,
    ProtocolAttack,
    ProtocolConfig,
    config_for,
)
from attacks.protocol.conformance import (
    ROUND_ATTACKS,
    RoundAttack,
    RoundAttackOutcome,
    register_round_attack,
    round_attack,
    run_round_attacks,
)
from attacks.protocol.deviations import (
    FLOWER_ATTACKS,
    PROTOCOL_ATTACKS,
    BothShares,
    FakeDropout,
    ModelInconsistency,
    ProtocolSuite,
    SybilIsolation,
    UnmaskAttack,
    protocol_attack,
    run_flower_attack,
    run_protocol_attack,
)
from attacks.protocol.rewrite import RawMessage, Tampered, TamperedRound, run_tampered, with_round
from attacks.protocol.victims import ProtocolAttackOutcome, ProtocolVictims, make_victims

__all__ = [
    "CONFIGS",
    "FLOWER_ATTACKS",
    "PROTOCOL_ATTACKS",
    "PROTOCOL_CONFIGS",
    "ROUND_ATTACKS",
    "BothShares",
    "FakeDropout",
    "MaliciousRound",
    "ModelInconsistency",
    "ProtocolAttack",
    "ProtocolAttackOutcome",
    "ProtocolConfig",
    "ProtocolSuite",
    "ProtocolVictims",
    "RawMessage",
    "RoundAttack",
    "RoundAttackOutcome",
    "SybilIsolation",
    "Tampered",
    "TamperedRound",
    "UnmaskAttack",
    "config_for",
    "make_victims",
    "protocol_attack",
    "register_round_attack",
    "round_attack",
    "run_flower_attack",
    "run_protocol_attack",
    "run_round_attacks",
    "run_tampered",
    "with_round",
]
