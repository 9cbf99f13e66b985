"""``privagg bench secagg``: one SecAgg+ round on random vectors, with its costs.

    privagg bench secagg --clients 100 --params 100000 --dropout 0.1 \\
        [--threat semi-honest|active] [--drop-stage STAGE] [--degree K --threshold T] [--json]

Degree and threshold default to :meth:`secagg.SecAggParams.derive` for the population, the
dropout rate and ``--corruption``; overriding them matches another implementation's setting.
The engine, and what each figure means: :mod:`privagg.bench.secagg`.
"""

from __future__ import annotations

import argparse
from typing import Any

from privagg.cli.bench import engine_kwargs

__all__ = ["add_parser"]


def _cmd(args: argparse.Namespace) -> int:
    from privagg.bench.secagg import measure_vss, run_bench

    res = run_bench(**engine_kwargs(run_bench, args))
    if args.json:
        print(res.to_json())
        return 0 if res.correct else 1
    print(
        f"SecAgg+ ({res.threat}) N={res.clients} M={res.params} dropout={res.dropout} "
        f"at {res.drop_stage}: degree {res.degree}, threshold {res.threshold}, ring {res.modulus_bits} bits"
    )
    print(f"  correct: {res.correct}  max |error| {res.max_abs_error}  (bound {res.error_bound:.3g})")
    stages = ", ".join(f"{k} {v:.3f}" for k, v in res.stage_seconds.items())
    print(f"  round: {res.round_seconds:.3f} s  stages: {stages}")
    print(
        f"  upload/client {res.client_upload_bytes:.0f} B, expansion {res.expansion:.3f}x of "
        f"{res.value_bits}-bit plaintext"
    )
    print(f"  server peak {res.server_peak_bytes / 1e6:.2f} MB = {res.server_peak_over_vector:.2f}x one vector")
    cost = measure_vss(res.degree, res.threshold)  # measured after the round, in the same process
    print(f"  verifiable dealing per client: deal {cost.deal_ms:.2f} ms, check {cost.check_ms:.2f} ms (secagg.vss)")
    prg = res.prg
    print(
        f"  PRG {prg.prg_gbps:.2f} GB/s, mask add {prg.mask_add_gbps:.2f} GB/s, "
        f"raw AES-CTR {prg.aes_ctr_gbps:.2f} GB/s ({100 * prg.prg_over_aes:.0f}%)"
    )
    return 0 if res.correct else 1


def add_parser(sub: Any) -> None:
    from secagg.driver import STAGE_NAMES

    p: argparse.ArgumentParser = sub.add_parser(
        "secagg",
        help="one SecAgg+ round on random vectors: time, bytes, memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--clients", "-N", type=int, required=True, help="number of clients N")
    p.add_argument("--params", "-M", type=int, required=True, help="vector length")
    p.add_argument("--dropout", type=float, default=0.0, help="fraction of clients that drop at --drop-stage")
    p.add_argument(
        "--threat",
        choices=("semi-honest", "active"),
        default="active",
        help="protocol mode: active also stops a malicious server (default: %(default)s)",
    )
    p.add_argument(
        "--drop-stage",
        choices=STAGE_NAMES,
        default="masked_input",
        help="stage at whose start the dropping clients stop (default: after sharing keys)",
    )
    p.add_argument("--degree", type=int, default=None, help="neighbours per client (default: derived)")
    p.add_argument("--threshold", type=int, default=None, help="shares needed (default: derived)")
    p.add_argument("--corruption", type=float, default=0.0, help="corruption rate the derivation assumes")
    p.add_argument("--value-bits", type=int, default=16, help="quantisation bits per value (default 16)")
    p.add_argument("--repeat", type=int, default=1, help="rounds (seeds --seed, --seed + 1, ...); median round time")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input vectors (default 0)")
    p.add_argument("--workers", type=int, default=1, help="processes running the clients (the server stays in one)")
    p.add_argument(
        "--no-memory",
        dest="measure_memory",
        action="store_false",
        help="skip the server memory measurement (tracemalloc)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd)
