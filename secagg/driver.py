"""In-memory driver: runs one SecAgg+ round between a server and clients in this process.

Messages travel as bytes through their codecs (so byte counts are real wire sizes).
Dropouts are injectable at every stage: a client listed under a :class:`DropStage` stops
answering from that stage on. ``server_hook`` / ``client_hook`` let a study play a
malicious server or a meddling network: each sees every envelope (server -> client) or
client message, and returns the list of messages to deliver instead (``[]`` drops it).

Server memory: ``server_peak_bytes`` is measured as the buffers the server holds between
steps (explicit accounting: accumulator, stored commitments/ciphertexts) plus the input
bytes of the step, plus the peak of new allocations during each server step
(``tracemalloc``, which numpy reports its buffers to), maximised over the round.
"""

from __future__ import annotations

import enum
import time
import tracemalloc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519

from privagg.errors import ConfigurationError, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from secagg.client import SecAggClient
from secagg.messages import DIGEST_BYTES, ClientMessage, Message
from secagg.params import SecAggParams, ThreatModel
from secagg.server import Envelope, SecAggServer

__all__ = ["DropStage", "RoundReport", "run_round", "make_identities", "STAGE_NAMES"]


class DropStage(enum.Enum):
    """The stage at whose start a dropping client stops answering."""

    ADVERTISE = "advertise"  # never advertises keys
    SHARE_KEYS = "share_keys"  # advertised, never sends shares
    MASKED_INPUT = "masked_input"  # shared keys, never sends its masked input ("after key sharing")
    CONSISTENCY = "consistency"  # sent its masked input, never signs (active mode)
    UNMASK = "unmask"  # never answers the unmask request

    @classmethod
    def parse(cls, value: DropStage | str) -> DropStage:
        if isinstance(value, DropStage):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ConfigurationError(
                f"unknown stage {value!r}", field="drop_stage", accepted=[s.value for s in cls]
            ) from None


STAGE_NAMES = tuple(s.value for s in DropStage)


@dataclass
class RoundReport:
    """What a round produced and cost."""

    params: SecAggParams
    sum: np.ndarray | None
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    abort: ProtocolAbort | None
    client_aborts: dict[int, ProtocolAbort]
    bytes_sent: dict[Any, int]
    bytes_received: dict[Any, int]
    stage_seconds: dict[str, float]
    round_seconds: float
    server_peak_bytes: int
    server: SecAggServer
    memory_method: str = "explicit accounting of held buffers + tracemalloc peak within each server step"
    clients: dict[int, SecAggClient] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.abort is None and self.sum is not None

    def client_upload_bytes(self) -> float:
        vals = [v for k, v in self.bytes_sent.items() if k != "server"]
        return float(np.mean(vals)) if vals else 0.0


def make_identities(
    client_ids: Iterable[int], *, secrets: SecretSource = SYSTEM_SECRETS
) -> tuple[dict[int, ed25519.Ed25519PrivateKey], dict[int, bytes]]:
    """Long-term Ed25519 identity keys and the public directory (the PKI) for active mode."""
    keys = {c: ed25519.Ed25519PrivateKey.from_private_bytes(secrets.token_bytes(32)) for c in client_ids}
    return keys, {c: k.public_key().public_bytes_raw() for c, k in keys.items()}


def run_round(
    params: SecAggParams,
    *,
    client_ids: Sequence[int],
    inputs: Mapping[int, np.ndarray] | Callable[[int], np.ndarray],
    dimension: int,
    round: int = 0,
    model_digest: bytes = bytes(DIGEST_BYTES),
    dropouts: Mapping[DropStage | str, Iterable[int]] | None = None,
    secrets: SecretSource = SYSTEM_SECRETS,
    identities: tuple[Mapping[int, ed25519.Ed25519PrivateKey], Mapping[int, bytes]] | None = None,
    hardened: bool = True,
    server: SecAggServer | None = None,
    server_hook: Callable[[Envelope], list[Envelope]] | None = None,
    client_hook: Callable[[int, ClientMessage], list[ClientMessage]] | None = None,
    measure_memory: bool = True,
    keep_clients: bool = False,
) -> RoundReport:
    """Run one round; a :class:`ProtocolAbort` of the server ends it (``report.abort``).

    ``inputs`` maps (or is called with) each client id to its ring vector, fetched just
    before that client masks (so a large simulation never holds every input at once).
    """
    drops: dict[DropStage, set[int]] = {s: set() for s in DropStage}
    for k, v in (dropouts or {}).items():
        drops[DropStage.parse(k)] |= {int(c) for c in v}
    order = list(DropStage)
    gone_at: dict[int, int] = {}
    for s, ids in drops.items():
        for c in ids:
            gone_at[c] = min(gone_at.get(c, 99), order.index(s))

    def alive(c: int, stage: DropStage) -> bool:
        return gone_at.get(c, 99) > order.index(stage)

    threat = params.threat
    if threat is ThreatModel.ACTIVE:
        keys, directory = identities if identities is not None else make_identities(client_ids, secrets=secrets)
    else:
        keys, directory = {}, {}
    clients = {
        c: SecAggClient(
            c,
            threat=threat,
            identity_key=keys.get(c),
            directory=directory if threat is ThreatModel.ACTIVE else None,
            round=round,
            hardened=hardened,
            secrets=secrets,
        )
        for c in client_ids
    }
    srv = server or SecAggServer(
        params, clients=client_ids, dimension=dimension, round=round, model_digest=model_digest
    )
    sent: dict[Any, int] = {"server": 0, **{c: 0 for c in client_ids}}
    recv: dict[Any, int] = {"server": 0, **{c: 0 for c in client_ids}}
    stage_seconds: dict[str, float] = {}
    client_aborts: dict[int, ProtocolAbort] = {}
    peak = [0]
    get_input = inputs if callable(inputs) else inputs.__getitem__

    def server_call(fn: Callable[[], list[Envelope]], extra: int = 0) -> list[Envelope]:
        if not measure_memory:
            return fn()
        held = srv.held_bytes() + extra
        tracemalloc.start()
        try:
            out = fn()
        finally:
            _, p = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        peak[0] = max(peak[0], held + p, srv.held_bytes())
        return out

    def deliver(envelopes: list[Envelope], stage: DropStage) -> list[Envelope]:
        """Server -> clients, clients answer, answers -> server; returns the server's next envelopes."""
        if server_hook is not None:
            envelopes = [e2 for e in envelopes for e2 in server_hook(e)]
        cache: dict[int, bytes] = {}
        nxt: list[Envelope] = []
        for env in envelopes:
            c = env.recipient
            wire = cache.get(id(env.message))
            if wire is None:
                wire = cache[id(env.message)] = env.message.encode()
            sent["server"] += len(wire)
            if c not in clients or not alive(c, stage) or c in client_aborts:
                continue
            recv[c] += len(wire)
            if stage is DropStage.MASKED_INPUT and clients[c]._input is None:
                clients[c].set_input(np.asarray(get_input(c)))
            try:
                replies: list[Message] = clients[c].step(wire)
            except ProtocolAbort as e:
                client_aborts[c] = e
                continue
            for r in replies:
                outs: list[Any] = [r]
                if client_hook is not None:
                    outs = client_hook(c, r)  # type: ignore[arg-type]
                for m in outs:
                    b = m.encode()
                    sent[c] += len(b)
                    recv["server"] += len(b)
                    nxt.extend(server_call(lambda b=b: srv.step([b]), extra=len(b)))
        return nxt

    t_round = time.perf_counter()
    abort: ProtocolAbort | None = None
    try:
        t0 = time.perf_counter()
        envs = server_call(srv.start)
        stage_plan = [
            DropStage.ADVERTISE,
            DropStage.SHARE_KEYS,
            DropStage.MASKED_INPUT,
        ]
        if threat is ThreatModel.ACTIVE:
            stage_plan.append(DropStage.CONSISTENCY)
        stage_plan.append(DropStage.UNMASK)
        for st in stage_plan:
            t0 = time.perf_counter()
            before = srv.stage
            nxt = deliver(envs, st)
            if srv.stage is before:  # deadline: whoever has not answered has dropped out
                nxt += server_call(srv.close_stage)
            stage_seconds[st.value] = time.perf_counter() - t0
            envs = nxt
            if srv.result is not None:
                break
    except ProtocolAbort as e:
        abort = e
        stage_seconds.setdefault("aborted", time.perf_counter() - t0)
    round_seconds = time.perf_counter() - t_round
    res = srv.result
    return RoundReport(
        params=params,
        sum=res.sum if res is not None else None,
        survivors=res.survivors if res is not None else (),
        dropped=res.dropped if res is not None else (),
        abort=abort,
        client_aborts=client_aborts,
        bytes_sent=sent,
        bytes_received=recv,
        stage_seconds=stage_seconds,
        round_seconds=round_seconds,
        server_peak_bytes=peak[0],
        server=srv,
        clients=clients if keep_clients else {},
    )

