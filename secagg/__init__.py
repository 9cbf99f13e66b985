"""Pairwise-mask secure aggregation (Bonawitz et al. 2017; SecAgg+ of Bell et al. 2020).

The server learns only the sum of the surviving clients' vectors, in two threat models:
``semi-honest`` (Flower's) and ``active`` (the default: signed key advertisements bound to a
session id, a neighbour ring drawn from contributions committed before and revealed after the
roster (:mod:`secagg.seeding`), a signed consistency round, clients abort on any inconsistency). In both, every holder
checks its shares on receipt (:mod:`secagg.vss`) and a provably faulty dealer is excluded before
anyone masks.

- :class:`SecAggParams` (``derive`` / ``manual``): graph degree, threshold, ring.
- :class:`SecAggClient`, :class:`SecAggServer`: pure state machines over the messages of
  :mod:`secagg.messages` (each with a versioned binary codec).
- :func:`run_round`: the in-memory driver (dropouts at every stage, costs, hooks).
- :class:`ClientPolicy`: what a client accepts (minimum cohort, derived degree and threshold); every
  active-mode client holds one, or says ``ClientPolicy.trust_server()`` (unsafe: a :class:`TrustServer`).

Who may deviate and collude, what is trusted, what each party learns and what is not covered:
``secagg/THREAT_MODEL.md`` (the one statement; `privagg audit` runs an attack for each guarantee
it lists, ``attacks/protocol/``, and reports what happened).
"""

from secagg.client import ClientStage, SecAggClient
from secagg.driver import DropStage, RoundReport, make_identities, run_round
from secagg.messages import (
    Complaint,
    ConsistencyRequest,
    ConsistencySignature,
    DeliveredShare,
    EncryptedShares,
    Exclusion,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    MaskRequest,
    RevealedShare,
    RevealSet,
    RoundSetup,
    SeedReveal,
    ShareCheck,
    ShareDelivery,
    ShareEnvelope,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
)
from secagg.params import ClientPolicy, SecAggParams, ThreatModel, TrustServer
from secagg.server import AggregationOutcome, Envelope, SecAggServer, ServerStage

__all__ = [
    "SecAggParams",
    "ClientPolicy",
    "TrustServer",
    "ThreatModel",
    "SecAggClient",
    "ClientStage",
    "SecAggServer",
    "ServerStage",
    "Envelope",
    "AggregationOutcome",
    "run_round",
    "RoundReport",
    "DropStage",
    "make_identities",
    "RoundSetup",
    "KeyAdvertisement",
    "KeyRoster",
    "SeedReveal",
    "RevealSet",
    "EncryptedShares",
    "ShareEnvelope",
    "ShareDelivery",
    "DeliveredShare",
    "ShareCheck",
    "Complaint",
    "MaskRequest",
    "Exclusion",
    "MaskedInput",
    "ConsistencyRequest",
    "ConsistencySignature",
    "UnmaskRequest",
    "UnmaskResponse",
    "RevealedShare",
    "decode_message",
]
