"""``privagg bench secagg``: one SecAgg+ round on random vectors, with its costs.

    privagg bench secagg --clients 100 --params 100000 --dropout 0.1 \\
        [--threat semi-honest|active] [--drop-stage STAGE] [--degree K --threshold T] [--json]

Degree and threshold default to :meth:`secagg.SecAggParams.derive` for the population, the
dropout rate and ``--corruption``; overriding them matches another implementation's setting.
Inputs: ``--distinct`` random vectors in ``[-1, 1]`` (encoded once each with stochastic
rounding) are cycled over the clients, so generating inputs does not dominate a large run;
the protocol's cost does not depend on the values. ``correct`` checks the unmasked sum
against the exact sum of the survivors' encodings and the float sum within the quantisation
bound. ``prg_gbps`` (seed -> mask words, ``prg_words`` into a reused buffer), ``mask_add_gbps``
(seed -> mask added into an accumulator, ``prg_add_words``) and ``aes_ctr_gbps`` (raw OpenSSL
AES-256-CTR keystream) are measured interleaved in the same run at the mask size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np

from privagg.encoding import RingEncoding
from privagg.randomness import aes_ctr_keystream_rate, prg_add_words, prg_words, simulation_rng

__all__ = ["add_parser", "run_bench", "measure_prg"]


def measure_prg(words: int = 1 << 18, *, repeats: int = 7) -> dict[str, float]:
    """Interleaved medians (GB/s) of raw AES-256-CTR, ``prg_words`` and ``prg_add_words``.

    Default: 1 MiB of keystream per call, which stays in cache for all three (masks are
    generated in 128 KiB chunks anyway); at sizes beyond the cache the raw reference is
    bound by memory traffic on its input buffer, not by AES.
    """
    nbytes = 4 * words
    seed = os.urandom(32)
    out = np.empty(words, dtype=np.uint32)
    acc = np.zeros(words, dtype=np.uint32)
    raw, prg, add = [], [], []

    def inner(fn: Any) -> float:  # median of 3, exactly like aes_ctr_keystream_rate(repeats=3)
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return nbytes / sorted(ts)[1] / 1e9

    for i in range(repeats):
        raw.append(aes_ctr_keystream_rate(nbytes, repeats=3))  # median of 3: the first touches fresh pages
        info = b"bench/%d" % i
        prg.append(inner(lambda info=info: prg_words(seed, info=info, count=words, bits=32, out=out)))
        add.append(inner(lambda info=info: prg_add_words(acc, seed, info=info)))
    r, p, a = statistics.median(raw), statistics.median(prg), statistics.median(add)
    return {"aes_ctr_gbps": r, "prg_gbps": p, "mask_add_gbps": a, "prg_over_aes": p / r, "mask_add_over_aes": a / r}


def _warm_up(threat: str) -> None:
    """A tiny round first, so lazy imports (OpenSSL bindings...) are not billed to the measured one."""
    from secagg import SecAggParams, run_round

    p = SecAggParams.manual(num_clients=4, degree=2, threshold=2, threat=threat)
    run_round(p, client_ids=[0, 1, 2, 3], inputs=lambda c: np.zeros(8, dtype=np.uint32), dimension=8)


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
) -> dict[str, Any]:
    """One round; returns the JSON-able figures (see the module docstring)."""
    from privagg.errors import ConfigurationError
    from secagg import SecAggParams, run_round

    n, m = clients, params
    if n < 3 or m < 1:
        raise ConfigurationError("need at least 3 clients and 1 parameter", field="clients")
    if (degree is None) != (threshold is None):
        raise ConfigurationError("give both --degree and --threshold, or neither", field="degree")
    if degree is not None and threshold is not None:
        p = SecAggParams.manual(num_clients=n, degree=degree, threshold=threshold, threat=threat, value_bits=value_bits)
    else:
        p = SecAggParams.derive(
            num_clients=n, dropout_rate=dropout, corruption_rate=corruption, threat=threat, value_bits=value_bits
        )
    enc = RingEncoding(clip=1.0, value_bits=value_bits, max_summands=n, modulus_bits=p.modulus_bits)
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
    t0 = time.perf_counter()
    rep = run_round(
        p,
        client_ids=list(range(n)),
        inputs=lambda c: rings[c % len(rings)],
        dimension=m,
        dropouts={drop_stage: dropped},
        measure_memory=measure_memory,
        workers=workers,
    )
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {
        "clients": n,
        "params": m,
        "dropout": dropout,
        "drop_stage": drop_stage,
        "threat": p.threat.value,
        "degree": p.degree,
        "threshold": p.threshold,
        "modulus_bits": p.modulus_bits,
        "value_bits": value_bits,
        "derived": degree is None,
        "workers": workers,
        "aborted": None if rep.abort is None else str(rep.abort),
        "client_aborts": len(rep.client_aborts),
        "survivors": len(rep.survivors),
        "round_seconds": rep.round_seconds,
        "wall_seconds": wall,
        "stage_seconds": rep.stage_seconds,
    }
    correct = False
    max_err = None
    if rep.sum is not None:
        counts = np.bincount([c % len(rings) for c in rep.survivors], minlength=len(rings))
        exact = np.zeros(m, dtype=np.uint64)
        fsum = np.zeros(m)
        for i, cnt in enumerate(counts):
            if cnt:
                exact += np.uint64(cnt) * rings[i].astype(np.uint64)
                fsum += cnt * floats[i]
        exact &= np.uint64((1 << p.modulus_bits) - 1)
        err = np.abs(enc.decode(rep.sum) - fsum)
        max_err = float(err.max())
        correct = bool(np.array_equal(rep.sum, exact)) and max_err <= enc.sum_error_bound(len(rep.survivors))
    uploads = [rep.bytes_sent[c] for c in rep.survivors] or [0]
    vector_bytes = 8 * m
    out.update(
        {
            "correct": correct,
            "max_abs_error": max_err,
            "error_bound": enc.sum_error_bound(max(len(rep.survivors), 1)),
            "client_upload_bytes": float(np.mean(uploads)),
            "expansion": float(np.mean(uploads)) / (m * value_bits / 8),
            "server_sent_bytes": rep.bytes_sent["server"],
            "server_peak_bytes": rep.server_peak_bytes,
            "vector_bytes": vector_bytes,
            "server_peak_over_vector": rep.server_peak_bytes / vector_bytes,
            "memory_method": rep.memory_method if measure_memory else "not measured",
        }
    )
    out.update(measure_prg())
    out["loadavg"] = os.getloadavg()
    return out


def _cmd(args: argparse.Namespace) -> int:
    results = []
    for i in range(args.repeat):
        results.append(
            run_bench(
                clients=args.clients,
                params=args.params,
                dropout=args.dropout,
                threat=args.threat,
                drop_stage=args.drop_stage,
                degree=args.degree,
                threshold=args.threshold,
                corruption=args.corruption,
                value_bits=args.value_bits,
                seed=args.seed + i,
                measure_memory=not args.no_memory,
                workers=args.workers,
            )
        )
    res = dict(results[-1])
    if args.repeat > 1:
        res["round_seconds_all"] = [r["round_seconds"] for r in results]
        res["round_seconds"] = statistics.median(res["round_seconds_all"])
        res["correct"] = all(r["correct"] for r in results)
    if args.json:
        print(json.dumps(res, indent=2, default=float))
    else:
        print(
            f"SecAgg+ ({res['threat']}) N={res['clients']} M={res['params']} dropout={res['dropout']} "
            f"at {res['drop_stage']}: degree {res['degree']}, threshold {res['threshold']}, "
            f"ring {res['modulus_bits']} bits"
        )
        print(f"  correct: {res['correct']}  max |error| {res['max_abs_error']}  (bound {res['error_bound']:.3g})")
        print(
            f"  round: {res['round_seconds']:.3f} s  stages: "
            + ", ".join(f"{k} {v:.3f}" for k, v in res["stage_seconds"].items())
        )
        print(
            f"  upload/client {res['client_upload_bytes']:.0f} B, expansion {res['expansion']:.3f}x of "
            f"{res['value_bits']}-bit plaintext"
        )
        print(
            f"  server peak {res['server_peak_bytes'] / 1e6:.2f} MB = {res['server_peak_over_vector']:.2f}x one vector"
        )
        print(
            f"  PRG {res['prg_gbps']:.2f} GB/s, mask add {res['mask_add_gbps']:.2f} GB/s, "
            f"raw AES-CTR {res['aes_ctr_gbps']:.2f} GB/s ({100 * res['prg_over_aes']:.0f}%)"
        )
    return 0 if res["correct"] else 1


def add_parser(sub: Any) -> None:
    from secagg.driver import STAGE_NAMES

    p: argparse.ArgumentParser = sub.add_parser(
        "secagg", help="one SecAgg+ round on random vectors: time, bytes, memory"
    )
    p.add_argument("--clients", "-N", type=int, required=True)
    p.add_argument("--params", "-M", type=int, required=True, help="vector length")
    p.add_argument("--dropout", type=float, default=0.0, help="fraction of clients that drop at --drop-stage")
    p.add_argument("--threat", choices=("semi-honest", "active"), default="active")
    p.add_argument(
        "--drop-stage",
        choices=STAGE_NAMES,
        default="masked_input",
        help="stage at whose start the dropping clients stop (default: after sharing keys)",
    )
    p.add_argument("--degree", type=int, default=None, help="neighbours per client (default: derived)")
    p.add_argument("--threshold", type=int, default=None, help="shares needed (default: derived)")
    p.add_argument("--corruption", type=float, default=0.0, help="corruption rate the derivation assumes")
    p.add_argument("--value-bits", type=int, default=16)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="processes running the clients (the server stays in one)")
    p.add_argument("--no-memory", action="store_true", help="skip the server memory measurement (tracemalloc)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd)
