"""In-memory driver: runs one SecAgg+ round between a server and its clients on this machine.

The server and the message routing live in the calling process; the clients too, or in
``workers`` forked processes (``run_round(..., workers=2)``) for large simulations, which then
also expand the masks the server removes in its last stage (they are idle by then).

Messages travel as bytes through their codecs (so byte counts are real wire sizes).
Dropouts are injectable at every stage: a client listed under a :class:`DropStage` stops
answering from that stage on.

Hooks let a study play a malicious server or a meddling network between the *real* parties:

- ``server_hook(envelope) -> [envelope, ...]`` rewrites the server's outbox per recipient
  (the messages to deliver instead; ``[]`` drops it);
- ``client_hook(sender, message) -> [message, ...]`` rewrites what a client sends (any object
  with ``encode() -> bytes`` goes: a malicious client may send bytes no codec would produce);
- ``server_observer(message)`` sees every client message the server receives (after
  ``client_hook``): what a malicious server learns from its inbox;
- ``external_clients`` are clients the caller built (e.g. a malicious server's Sybils, with a
  directory of their own and their inputs already set); messages reach them like the
  driver's own clients. Pass ``server=`` to run the round over a cohort of the caller's choice.

Server memory: ``server_peak_bytes`` is the buffers the server holds between steps
(explicit accounting: accumulator, dealings awaiting delivery (leaves, ciphertexts, check
polynomials), then their leaves, revealed shares) plus the input bytes of
the step, plus the peak of new allocations during the step (``tracemalloc``, to which numpy
reports its buffers), maximised over the round (``server_peak_by_stage``: per stage, a close
counted in the stage it closes). Tracing slows allocation, so every stage close (a deadline, or
the step of the last expected answer) and the first three messages of each stage are traced;
later messages of the same stage (same work, same size) are charged the traced peak.
"""

from __future__ import annotations

import contextlib
import enum
import functools
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
from secagg.crypto import apply_masks
from secagg.messages import DIGEST_BYTES, ClientMessage, decode_message
from secagg.params import ClientPolicy, SecAggParams, ThreatModel, TrustServer, checked_policy
from secagg.pools import ClientSpec, LocalPool, Pool, WorkerPool
from secagg.server import Envelope, SecAggServer

__all__ = ["DropStage", "RoundReport", "run_round", "make_identities", "STAGE_NAMES"]

_TRACED_CALLS_PER_STAGE = 3
_BATCH_BYTES = 32 << 20  # encoded server messages handed to the clients at once (the rest are encoded later)


def _named(fn: Callable[[], list[Envelope]], name: str) -> Callable[[], list[Envelope]]:
    def call() -> list[Envelope]:
        return fn()

    call.__name__ = name
    return call


class DropStage(enum.Enum):
    """The stage at whose start a dropping client stops answering."""

    ADVERTISE = "advertise"  # never advertises keys
    REVEAL = "reveal"  # advertised, never reveals its graph-seed contribution (active: the session aborts)
    SHARE_KEYS = "share_keys"  # advertised, never sends shares
    CHECK_SHARES = "check_shares"  # shared keys, never answers the share check (so never masks either)
    MASKED_INPUT = "masked_input"  # shared keys and passed the check, never sends its masked input
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
    memory_method: str = (
        "explicit accounting of the buffers the server holds + message size + tracemalloc peak of "
        "allocations within server steps (every stage close, deadline or last answer, and the first 3 "
        "messages of each stage traced; later same-stage steps use the traced peak); excludes the "
        "driver's encoded messages in flight (at most one 32 MiB batch of server messages at a time)"
    )
    clients: dict[int, SecAggClient] = field(default_factory=dict)
    #: the server's peak per stage it was in (same method as ``server_peak_bytes``)
    server_peak_by_stage: dict[str, int] = field(default_factory=dict)

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
    server_observer: Callable[[ClientMessage], None] | None = None,
    external_clients: Mapping[int, SecAggClient] | None = None,
    measure_memory: bool = True,
    keep_clients: bool = False,
    workers: int = 1,
    client_policy: ClientPolicy | TrustServer | None = None,
) -> RoundReport:
    """Run one round; a :class:`ProtocolAbort` of the server ends it (``report.abort``).

    ``inputs`` maps (or is called with) each client id to its ring vector, fetched just
    before that client masks (so a large simulation never holds every input at once).
    ``workers > 1`` runs the clients in that many forked processes (the server and all
    message routing stay here; client replies stream back one by one, so the server still
    adds masked vectors as they arrive). See the module docstring for the hooks;
    ``external_clients`` need ``workers=1`` and ids apart from ``client_ids``. ``client_policy``:
    what every driver client accepts (:class:`~secagg.params.ClientPolicy`); required in active mode
    (:class:`ConfigurationError` naming it before anything runs), where ``ClientPolicy.trust_server()`` is
    the one, unsafe, opt-out.
    """
    checked_policy(client_policy, params.threat, field="client_policy")
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
    if workers < 1:
        raise ConfigurationError(f"got {workers}", field="workers", accepted="an integer >= 1")
    external = dict(external_clients or {})
    if set(external) & set(client_ids):
        raise ConfigurationError("external client ids repeat driver client ids", field="external_clients")
    spec = ClientSpec(
        threat=threat,
        keys={c: keys[c].private_bytes_raw() for c in client_ids if c in keys} if keys else {},
        directory=dict(directory),
        round=round,
        hardened=hardened,
        policy=client_policy,
    )
    if workers > 1:
        if secrets is not SYSTEM_SECRETS:
            raise ConfigurationError("worker processes draw secrets from the OS only", field="secrets")
        if keep_clients:
            raise ConfigurationError("keep_clients needs workers=1", field="keep_clients")
        if external:
            raise ConfigurationError("external clients need workers=1", field="external_clients")
        pool: Pool = WorkerPool(spec, list(client_ids), inputs, workers)
    else:
        pool = LocalPool(spec, list(client_ids), inputs, secrets, external)
    srv = server or SecAggServer(
        params,
        # workers > 1: the server's mask removal runs on the worker processes too (they idle meanwhile)
        mask_expander=pool.expand_masks if isinstance(pool, WorkerPool) else apply_masks,
        clients=client_ids,
        dimension=dimension,
        round=round,
        model_digest=model_digest,
        # active: the server checks the same PKI as the clients (screened keys, messages bound to senders)
        directory=dict(directory) if threat is ThreatModel.ACTIVE else None,
        nonce=SYSTEM_SECRETS.token_bytes(DIGEST_BYTES),  # a fresh session (public, not a test-seam secret)
    )
    parties = [*client_ids, *external]
    sent: dict[Any, int] = {"server": 0, **{c: 0 for c in parties}}
    recv: dict[Any, int] = {"server": 0, **{c: 0 for c in parties}}
    stage_seconds: dict[str, float] = {}
    client_aborts: dict[int, ProtocolAbort] = {}
    peak = [0]
    by_stage: dict[str, int] = {}

    def note(stage: Any, value: int) -> None:
        peak[0] = max(peak[0], value)
        by_stage[stage.value] = max(by_stage.get(stage.value, 0), value)

    traced: dict[Any, int] = {}  # calls traced per server stage; transient peak per stage

    def server_call(fn: Callable[[], list[Envelope]], extra: int = 0, closing: bool = False) -> list[Envelope]:
        if not measure_memory:
            return fn()
        key = srv.stage
        held = srv.held_bytes() + extra
        # tracemalloc slows every allocation: trace the first calls of each stage (the steps of
        # one stage do the same work on same-sized messages) and every stage change (a deadline,
        # or the step of the last expected answer, which closes the stage inside it)
        if traced.get(key, 0) >= _TRACED_CALLS_PER_STAGE and fn.__name__ != "close_stage" and not closing:
            out = fn()
            note(key, max(held + transient.get(key, 0), srv.held_bytes()))
            return out
        traced[key] = traced.get(key, 0) + 1
        tracemalloc.start()
        try:
            out = fn()
        finally:
            _, p = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        after = srv.held_bytes()
        # what later steps of the stage are charged: the part of the peak the server did not keep
        # (what it kept, e.g. an accumulator made by the first step, is in their held bytes already)
        transient[key] = max(transient.get(key, 0), p - max(0, after - (held - extra)))
        note(key, max(held + p, after))
        return out

    transient: dict[Any, int] = {}

    def deliver(envelopes: list[Envelope], stage: DropStage) -> list[Envelope]:
        """Server -> clients, clients answer, answers -> server; returns the server's next envelopes."""
        if server_hook is not None:
            envelopes = [e2 for e in envelopes for e2 in server_hook(e)]
        last: tuple[object, bytes] | None = None  # a broadcast is one object to consecutive recipients
        nxt: list[Envelope] = []
        batch: list[tuple[int, bytes]] = []
        held = 0

        def run_batch() -> None:  # the clients of one batch answer, their answers reach the server
            for c, result in pool.run(batch, set_inputs=stage is DropStage.MASKED_INPUT):
                if isinstance(result, ProtocolAbort):
                    client_aborts[c] = result
                    continue
                for wire in result:
                    outs: list[bytes] = [wire]
                    if client_hook is not None:
                        outs = [m.encode() for m in client_hook(c, decode_message(wire))]  # type: ignore[arg-type]
                    for b in outs:
                        sent[c] += len(b)
                        recv["server"] += len(b)
                        if server_observer is not None:
                            with contextlib.suppress(ProtocolAbort):  # undecodable bytes: the server refuses them
                                server_observer(decode_message(b))  # type: ignore[arg-type]
                        closing = srv.pending <= 1 and c in srv.waiting_for
                        step = _named(functools.partial(srv.step, [b]), "step")
                        nxt.extend(server_call(step, extra=len(b), closing=closing))

        for env in envelopes:
            c = env.recipient
            if last is None or last[0] is not env.message:  # encode each distinct message once, keep one
                last = (env.message, env.message.encode())
            wire = last[1]
            sent["server"] += len(wire)
            if c not in sent or not alive(c, stage) or c in client_aborts:
                continue
            recv[c] += len(wire)
            batch.append((c, wire))
            held += len(wire)
            if held >= _BATCH_BYTES:  # deliveries stream: at most one batch of encoded messages at a time
                run_batch()
                batch, held = [], 0
        if batch:
            run_batch()
        return nxt

    t_round = time.perf_counter()
    abort: ProtocolAbort | None = None
    try:
        t0 = time.perf_counter()
        envs = server_call(srv.start)
        stage_plan = [DropStage.ADVERTISE, DropStage.SHARE_KEYS, DropStage.CHECK_SHARES, DropStage.MASKED_INPUT]
        if threat is ThreatModel.ACTIVE:
            stage_plan.insert(1, DropStage.REVEAL)
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
    finally:
        pool.close()
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
        server_peak_by_stage=by_stage,
        clients=pool.clients if keep_clients and isinstance(pool, LocalPool) else {},
    )
