"""Where the in-memory driver's clients run (a part of :mod:`secagg.driver`, kept apart for size).

:class:`LocalPool`: in the calling process. :class:`WorkerPool`: in forked worker processes whose
replies stream back one by one; once the clients have answered the last stage the workers are idle,
so they also expand the masks the server removes (:meth:`WorkerPool.expand_masks`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519

from privagg.errors import ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from secagg.client import ClientStage, SecAggClient
from secagg.crypto import MaskTask, apply_masks
from secagg.params import ClientPolicy, ThreatModel, TrustServer, checked_policy

__all__ = ["ClientSpec", "Pool", "LocalPool", "WorkerPool"]


@dataclass(frozen=True)
class ClientSpec:
    threat: ThreatModel
    keys: dict[int, bytes]
    directory: dict[int, bytes]
    round: int
    hardened: bool
    #: required in active mode, as for every :class:`SecAggClient` (``ClientPolicy.trust_server()``: unsafe opt-out)
    policy: ClientPolicy | TrustServer | None = None

    def __post_init__(self) -> None:
        checked_policy(self.policy, self.threat, field="client_policy")  # refused here, before any fork

    def make(self, c: int, secrets: SecretSource) -> SecAggClient:
        active = self.threat is ThreatModel.ACTIVE
        return SecAggClient(
            c,
            threat=self.threat,
            identity_key=ed25519.Ed25519PrivateKey.from_private_bytes(self.keys[c]) if active else None,
            directory=self.directory if active else None,
            round=self.round,
            hardened=self.hardened,
            secrets=secrets,
            policy=self.policy,
        )


_Result = list[bytes] | ProtocolAbort


def _step_one(client: SecAggClient, wire: bytes) -> _Result:
    try:
        return [m.encode() for m in client.step(wire)]
    except ProtocolAbort as e:
        return e


class Pool:
    def run(self, items: list[tuple[int, bytes]], *, set_inputs: bool) -> Iterator[tuple[int, _Result]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalPool(Pool):
    """Clients in this process: the driver's own (inputs fetched just before masking) and the
    caller's ``external`` ones (inputs set by the caller)."""

    def __init__(
        self,
        spec: ClientSpec,
        ids: list[int],
        inputs: Any,
        secrets: SecretSource,
        external: Mapping[int, SecAggClient] | None = None,
    ) -> None:
        self.clients = {c: spec.make(c, secrets) for c in ids}
        self._needs_input = set(ids)
        self.clients.update(external or {})
        self._get = inputs if callable(inputs) else inputs.__getitem__

    def run(self, items: list[tuple[int, bytes]], *, set_inputs: bool) -> Iterator[tuple[int, _Result]]:
        for c, wire in items:
            client = self.clients[c]
            if set_inputs and c in self._needs_input and client.stage is ClientStage.AWAIT_MASK:
                client.set_input(np.asarray(self._get(c)))
                self._needs_input.discard(c)
            yield c, _step_one(client, wire)


@dataclass(frozen=True)
class _MaskJob:
    """The server's share of mask removal sent to a worker: it returns the masks' sum (``dtype`` words)."""

    dtype: str
    size: int
    tasks: list[MaskTask]


@dataclass(frozen=True)
class _MaskSum:
    """A worker's masks' sum follows as raw bytes (``nbytes``; 0: it got no mask, nothing follows)."""

    nbytes: int


_MASK_BATCH = 64  # masks per job sent to a worker
_SUM_CHUNK = 1 << 18  # bytes per chunk of a worker's masks' sum (a multiple of every word size)
_MASK_SUM = "mask-sum"  # a worker's cue to send its masks' sum (and start a new one)


def _worker_main(conn: Any, spec: ClientSpec, ids: list[int], inputs: Any) -> None:
    pool = LocalPool(spec, ids, inputs, SYSTEM_SECRETS)
    part: np.ndarray | None = None
    while True:
        cmd = conn.recv()
        if cmd is None:
            return
        if isinstance(cmd, _MaskJob):
            if part is None:
                part = np.zeros(cmd.size, dtype=cmd.dtype)
            apply_masks(part, cmd.tasks)
            continue
        if cmd == _MASK_SUM:
            conn.send(_MaskSum(part.nbytes if part is not None else 0))
            if part is not None:  # raw chunks (no pickled vector): the server adds each as it arrives
                raw = part.data.cast("B")
                for lo in range(0, part.nbytes, _SUM_CHUNK):
                    conn.send_bytes(raw[lo : lo + _SUM_CHUNK])
            part = None
            continue
        items, set_inputs = cmd
        for c, res in pool.run(items, set_inputs=set_inputs):
            if isinstance(res, ProtocolAbort):
                conn.send((c, ("abort", res.reason, res.stage)))
            else:
                conn.send((c, res))
        conn.send(None)


class WorkerPool(Pool):
    """Clients in forked worker processes; replies stream back as they are produced."""

    def __init__(self, spec: ClientSpec, ids: list[int], inputs: Any, workers: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self._conns = []
        self._procs = []
        self._owner: dict[int, int] = {}
        self._backlog: list[list[Any]] = [[] for _ in range(workers)]  # replies read ahead by expand_masks
        for w in range(workers):
            mine = ids[w::workers]
            for c in mine:
                self._owner[c] = w
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child, spec, mine, inputs), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def run(self, items: list[tuple[int, bytes]], *, set_inputs: bool) -> Iterator[tuple[int, _Result]]:
        from multiprocessing.connection import wait

        per: list[list[tuple[int, bytes]]] = [[] for _ in self._conns]
        for c, wire in items:
            per[self._owner[c]].append((c, wire))
        for conn, lst in zip(self._conns, per):
            conn.send((lst, set_inputs))
        pending = set(range(len(self._conns)))
        index = {id(c): i for i, c in enumerate(self._conns)}
        while pending:  # one message at a time: a yield may run expand_masks, which reads ahead
            i = next((j for j in sorted(pending) if self._backlog[j]), None)
            if i is None:
                i = index[id(wait([self._conns[j] for j in sorted(pending)])[0])]
                msg = self._conns[i].recv()
            else:
                msg = self._backlog[i].pop(0)
            if msg is None:
                pending.discard(i)
                continue
            cid: int = msg[0]
            res: Any = msg[1]
            if isinstance(res, tuple):
                yield cid, ProtocolAbort(res[1], stage=res[2], party=cid)
            else:
                yield cid, list(res)

    def expand_masks(self, acc: np.ndarray, tasks: Iterable[MaskTask]) -> None:
        """The server's :data:`~secagg.crypto.MaskExpander` over the workers (idle while the server
        unmasks): batches of ``tasks`` go round-robin as they are produced (the server never holds them
        all), each worker sums its masks into a zero vector, and the sums are added into ``acc``
        (wrapping addition: the same sum as one by one)."""
        batch: list[MaskTask] = []
        turn = 0
        for task in tasks:
            batch.append(task)
            if len(batch) == _MASK_BATCH:
                self._conns[turn % len(self._conns)].send(_MaskJob(acc.dtype.str, acc.size, batch))
                batch, turn = [], turn + 1
        if batch:
            self._conns[turn % len(self._conns)].send(_MaskJob(acc.dtype.str, acc.size, batch))
        flat = acc.reshape(-1)
        for i, conn in enumerate(self._conns):
            conn.send(_MASK_SUM)
            while not isinstance(msg := conn.recv(), _MaskSum):  # the end of a stage still streaming
                self._backlog[i].append(msg)
            if msg.nbytes not in (0, acc.nbytes):  # 0: a worker that got no mask sends nothing to add
                raise RuntimeError("a worker's mask sum has the wrong size")
            at = 0  # the sum arrives in chunks, each added where it belongs: no vector-sized scratch
            while at < msg.nbytes:
                chunk = np.frombuffer(conn.recv_bytes(), dtype=acc.dtype)
                seg = flat[at // acc.itemsize : at // acc.itemsize + chunk.size]
                np.add(seg, chunk, out=seg)
                at += chunk.nbytes

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(None)
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
