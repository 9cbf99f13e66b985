"""SecAgg+ bench engine: one round of the real driver on random vectors, with its costs.

Degree and threshold default to :meth:`secagg.SecAggParams.derive` for the population, the
dropout rate and ``corruption``; giving both matches another implementation's setting.
Inputs: ``distinct`` random vectors in ``[-1, 1]`` (encoded once each with stochastic
rounding) are cycled over the clients, so generating inputs does not dominate a large run;
the protocol's cost does not depend on the values. ``correct`` checks the unmasked sum
against the exact sum of the survivors' encodings and the float sum within the quantisation
bound. ``prg_gbps`` (seed -> mask words, ``prg_words`` into a reused buffer), ``mask_add_gbps``
(seed -> mask added into an accumulator, ``prg_add_words``) and ``aes_ctr_gbps`` (raw OpenSSL
AES-256-CTR keystream) are measured interleaved in the same run at the mask size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from privagg.encoding import RingEncoding
from privagg.errors import ConfigurationError
from privagg.randomness import SYSTEM_SECRETS, prg_add_words, prg_words, simulation_rng
from secagg import ClientPolicy, EncryptedShares, RoundReport, SecAggParams, TrustServer, run_round, vss

from .timing import JsonResult, aes_ctr_keystream_rate, best_seconds, median, median_seconds, timed

__all__ = ["PrgRates", "VssCost", "SecAggBenchResult", "measure_prg", "measure_vss", "run_bench", "combine_runs"]


@dataclass(frozen=True, slots=True)
class PrgRates(JsonResult):
    """Medians (GB/s) of the raw AES-256 counter-mode keystream (the PRG's engine), ``prg_words`` and
    ``prg_add_words``, measured interleaved."""

    aes_ctr_gbps: float
    prg_gbps: float
    mask_add_gbps: float

    @property
    def prg_over_aes(self) -> float:
        return self.prg_gbps / self.aes_ctr_gbps

    @property
    def mask_add_over_aes(self) -> float:
        return self.mask_add_gbps / self.aes_ctr_gbps

    def to_dict(self) -> dict[str, Any]:
        return {
            "aes_ctr_gbps": self.aes_ctr_gbps,
            "prg_gbps": self.prg_gbps,
            "mask_add_gbps": self.mask_add_gbps,
            "prg_over_aes": self.prg_over_aes,
            "mask_add_over_aes": self.mask_add_over_aes,
        }


@dataclass(frozen=True, slots=True)
class VssCost(JsonResult):
    """Median milliseconds per client of the verifiable dealing (``secagg.vss``) at the round's
    degree and threshold: sealing one dealing for ``degree`` holders (shares, commitments, check
    polynomials, encryption), and opening and checking ``degree`` dealers' deliveries."""

    deal_ms: float
    check_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"vss_deal_ms": self.deal_ms, "vss_check_ms": self.check_ms}


@dataclass(frozen=True, slots=True)
class SecAggBenchResult(JsonResult):
    """One round's figures (or several rounds': ``round_seconds`` is then their median)."""

    clients: int
    params: int
    dropout: float
    drop_stage: str
    threat: str
    degree: int
    threshold: int
    modulus_bits: int
    value_bits: int
    derived: bool
    workers: int
    aborted: str | None
    client_aborts: int
    survivors: int
    round_seconds: float
    wall_seconds: float
    stage_seconds: Mapping[str, float]
    correct: bool
    max_abs_error: float | None
    error_bound: float
    client_upload_bytes: float
    expansion: float
    server_sent_bytes: int
    server_peak_bytes: int
    memory_method: str
    prg: PrgRates
    loadavg: tuple[float, float, float]
    #: every round's time when several rounds were combined (:func:`combine_runs`)
    round_seconds_all: tuple[float, ...] = ()
    #: the server's peak per stage (``RoundReport.server_peak_by_stage``, same method as ``server_peak_bytes``)
    server_peak_by_stage: Mapping[str, int] = field(default_factory=dict)

    @property
    def vector_bytes(self) -> int:
        """One float64 vector of ``params`` values."""
        return 8 * self.params

    @property
    def server_peak_over_vector(self) -> float:
        return self.server_peak_bytes / self.vector_bytes

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "clients": self.clients,
            "params": self.params,
            "dropout": self.dropout,
            "drop_stage": self.drop_stage,
            "threat": self.threat,
            "degree": self.degree,
            "threshold": self.threshold,
            "modulus_bits": self.modulus_bits,
            "value_bits": self.value_bits,
            "derived": self.derived,
            "workers": self.workers,
            "aborted": self.aborted,
            "client_aborts": self.client_aborts,
            "survivors": self.survivors,
            "round_seconds": self.round_seconds,
            "wall_seconds": self.wall_seconds,
            "stage_seconds": dict(self.stage_seconds),
            "correct": self.correct,
            "max_abs_error": self.max_abs_error,
            "error_bound": self.error_bound,
            "client_upload_bytes": self.client_upload_bytes,
            "expansion": self.expansion,
            "server_sent_bytes": self.server_sent_bytes,
            "server_peak_bytes": self.server_peak_bytes,
            "vector_bytes": self.vector_bytes,
            "server_peak_over_vector": self.server_peak_over_vector,
            "server_peak_by_stage": dict(self.server_peak_by_stage),
            "memory_method": self.memory_method,
            **self.prg.to_dict(),
            "loadavg": list(self.loadavg),
        }
        if len(self.round_seconds_all) > 1:
            out["round_seconds_all"] = list(self.round_seconds_all)
        return out


def measure_prg(words: int = 1 << 18, *, repeats: int = 7) -> PrgRates:
    """Interleaved medians (GB/s) of raw AES-256-CTR, ``prg_words`` and ``prg_add_words``.

    Default: 1 MiB of keystream per call, which stays in cache for all three (masks are
    generated in 512 KiB chunks anyway); at sizes beyond the cache the raw reference is
    bound by memory traffic on its input buffer, not by AES. Within each of ``repeats`` rounds
    every figure is the fastest of 3 calls after a warm-up (:func:`.timing.best_seconds`, as
    :func:`.timing.aes_ctr_keystream_rate`), so the three are measured alike.
    """
    nbytes = 4 * words
    seed = os.urandom(32)
    out = np.empty(words, dtype=np.uint32)
    acc = np.zeros(words, dtype=np.uint32)
    raw, prg, add = [], [], []
    for i in range(repeats):
        raw.append(aes_ctr_keystream_rate(nbytes, repeats=3))
        info = b"bench/%d" % i
        prg.append(nbytes / best_seconds(partial(prg_words, seed, info=info, count=words, bits=32, out=out), 3) / 1e9)
        add.append(nbytes / best_seconds(partial(prg_add_words, acc, seed, info=info), 3) / 1e9)
    return PrgRates(aes_ctr_gbps=median(raw), prg_gbps=median(prg), mask_add_gbps=median(add))


def measure_vss(degree: int, threshold: int, *, repeats: int = 5) -> VssCost:
    """:class:`VssCost`: one client dealing to ``degree`` holders, and one holder checking ``degree``
    dealers (each dealing checked by its first holder), medians over ``repeats``."""
    holders = list(range(1, degree + 1))
    deal_s, check_s = [], []
    for _ in range(repeats):
        keys = {v: os.urandom(32) for v in holders}
        session = os.urandom(32)

        def seal(d: int, ks: dict[int, bytes] = keys, sid: bytes = session) -> EncryptedShares:
            msg, _own = vss.seal_dealing(
                session=sid,
                round=0,
                dealer=d,
                self_seed=os.urandom(32),
                mask_key=os.urandom(32),
                keys={v + d: k for v, k in ks.items()},
                threshold=threshold,
                source=SYSTEM_SECRETS,
            )
            return msg

        deal_s.append(median_seconds(partial(seal, 0), 1))
        # holder `degree + 1` receives from `degree` dealers d = 1..degree (its key from each: keys[degree + 1 - d])
        me = degree + 1
        dealings = {d: seal(d) for d in range(1, degree + 1)}
        delivered = vss.deliveries(dealings, frozenset({me}))[me]
        ks = [keys[me - ds.sender] for ds in delivered]
        check_s.append(
            median_seconds(
                partial(vss.open_shares, delivered, keys=ks, session=session, round=0, holder=me, threshold=threshold),
                1,
            )
        )
    return VssCost(deal_ms=1e3 * median(deal_s), check_ms=1e3 * median(check_s))


def combine_runs(runs: Sequence[SecAggBenchResult]) -> SecAggBenchResult:
    """Several rounds as one: the last round's figures (memory per stage included), the median round
    time, correct if all were."""
    if not runs:
        raise ConfigurationError("no rounds to combine", field="repeat", accepted=">= 1")
    times = tuple(r.round_seconds for r in runs)
    return replace(runs[-1], round_seconds=median(times), correct=all(r.correct for r in runs), round_seconds_all=times)


def run_bench(
    *,
    clients: int,
    params: int,
    dropout: float,
    threat: str = "active",
    drop_stage: str = "masked_input",
    degree: int | None = None,
    threshold: int | None = None,
    corruption: float = 0.0,
    value_bits: int = 16,
    seed: int = 0,
    distinct: int = 8,
    measure_memory: bool = True,
    workers: int = 1,
    repeat: int = 1,
    client_policy: ClientPolicy | TrustServer | None = None,
) -> SecAggBenchResult:
    """``repeat`` rounds (seeds ``seed``, ``seed + 1``, ...) combined by :func:`combine_runs`.

    ``client_policy``: what every client accepts (:class:`secagg.ClientPolicy`; in active mode a client with
    one also waits for the consistency quorum before revealing, which every active Flower node now does; ``None``:
    ``ClientPolicy.trust_server()``, the clients take the bench's numbers, as before a policy was required)."""
    if clients < 3 or params < 1:
        raise ConfigurationError("need at least 3 clients and 1 parameter", field="clients")
    if (degree is None) != (threshold is None):
        raise ConfigurationError("give both --degree and --threshold, or neither", field="degree")
    if repeat < 1:
        raise ConfigurationError(f"got {repeat}", field="repeat", accepted=">= 1")
    if degree is not None and threshold is not None:
        p = SecAggParams.manual(
            num_clients=clients, degree=degree, threshold=threshold, threat=threat, value_bits=value_bits
        )
    else:
        p = SecAggParams.derive(
            num_clients=clients, dropout_rate=dropout, corruption_rate=corruption, threat=threat, value_bits=value_bits
        )
    return combine_runs(
        [
            _one_round(
                p,
                params=params,
                dropout=dropout,
                drop_stage=drop_stage,
                derived=degree is None,
                seed=seed + i,
                distinct=distinct,
                measure_memory=measure_memory,
                workers=workers,
                client_policy=client_policy,
            )
            for i in range(repeat)
        ]
    )


def _warm_up(threat: str) -> None:
    """A tiny round first, so lazy imports (OpenSSL bindings...) are not billed to the measured one."""
    p = SecAggParams.manual(num_clients=4, degree=2, threshold=2, threat=threat)
    zeros, trust = (lambda c: np.zeros(8, dtype=np.uint32)), ClientPolicy.trust_server()  # nothing to protect
    run_round(p, client_ids=[0, 1, 2, 3], inputs=zeros, dimension=8, client_policy=trust)


def _one_round(
    p: SecAggParams,
    *,
    params: int,
    dropout: float,
    drop_stage: str,
    derived: bool,
    seed: int,
    distinct: int,
    measure_memory: bool,
    workers: int,
    client_policy: ClientPolicy | TrustServer | None = None,
) -> SecAggBenchResult:
    n, m = p.num_clients, params
    enc = RingEncoding(clip=1.0, value_bits=p.value_bits, max_summands=n, modulus_bits=p.modulus_bits)
    rng = simulation_rng(seed, "bench-secagg")
    word = np.uint32 if p.word_bits == 32 else np.uint64
    floats, rings = [], []
    for _ in range(min(distinct, n)):
        x = rng.uniform(-1.0, 1.0, m)
        floats.append(x)
        rings.append(enc.encode(x, rng).values.astype(word))
    n_drop = round(dropout * n)
    dropped = sorted(int(c) for c in rng.choice(n, size=n_drop, replace=False)) if n_drop else []
    _warm_up(p.threat.value)
    rep, wall = timed(
        lambda: run_round(
            p,
            client_ids=list(range(n)),
            inputs=lambda c: rings[c % len(rings)],
            dimension=m,
            dropouts={drop_stage: dropped},
            measure_memory=measure_memory,
            workers=workers,
            client_policy=client_policy if client_policy is not None else ClientPolicy.trust_server(),
        )
    )
    correct, max_err = _check_sum(rep, enc, floats, rings)
    uploads = [rep.bytes_sent[c] for c in rep.survivors] or [0]
    return SecAggBenchResult(
        clients=n,
        params=m,
        dropout=dropout,
        drop_stage=drop_stage,
        threat=p.threat.value,
        degree=p.degree,
        threshold=p.threshold,
        modulus_bits=p.modulus_bits,
        value_bits=p.value_bits,
        derived=derived,
        workers=workers,
        aborted=None if rep.abort is None else str(rep.abort),
        client_aborts=len(rep.client_aborts),
        survivors=len(rep.survivors),
        round_seconds=rep.round_seconds,
        wall_seconds=wall,
        stage_seconds=rep.stage_seconds,
        correct=correct,
        max_abs_error=max_err,
        error_bound=enc.sum_error_bound(max(len(rep.survivors), 1)),
        client_upload_bytes=float(np.mean(uploads)),
        expansion=float(np.mean(uploads)) / (m * p.value_bits / 8),
        server_sent_bytes=rep.bytes_sent["server"],
        server_peak_bytes=rep.server_peak_bytes,
        server_peak_by_stage=dict(rep.server_peak_by_stage),
        memory_method=rep.memory_method if measure_memory else "not measured",
        prg=measure_prg(),
        loadavg=os.getloadavg(),
    )


def _check_sum(
    rep: RoundReport, enc: RingEncoding, floats: list[np.ndarray], rings: list[np.ndarray]
) -> tuple[bool, float | None]:
    """Exact ring sum of the survivors' encodings, and the decoded sum within the quantisation bound."""
    if rep.sum is None:
        return False, None
    counts = np.bincount([c % len(rings) for c in rep.survivors], minlength=len(rings))
    exact = np.zeros(rep.sum.shape, dtype=np.uint64)
    fsum = np.zeros(rep.sum.shape)
    for i, cnt in enumerate(counts):
        if cnt:
            exact += np.uint64(cnt) * rings[i].astype(np.uint64)
            fsum += cnt * floats[i]
    exact &= np.uint64((1 << rep.params.modulus_bits) - 1)
    max_err = float(np.abs(enc.decode(rep.sum) - fsum).max())
    return bool(np.array_equal(rep.sum, exact)) and max_err <= enc.sum_error_bound(len(rep.survivors)), max_err
