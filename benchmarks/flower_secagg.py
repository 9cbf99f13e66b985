#!/usr/bin/env python3
"""Side by side in the same Flower run: privagg's SecAgg workflow vs Flower's own SecAgg+.

Both systems run the same ServerApp (legacy FedAvg + ``DefaultWorkflow``) and the same
ClientApp (a NumPyClient whose ``fit`` returns an N(0, 1) float32 vector of ``M``
parameters), on the same engine, in one process, one after the other:

* ``flower``: ``SecAggPlusWorkflow`` + ``secaggplus_mod`` (unmodified Flower 1.41),
  ``num_shares = K``, ``reconstruction_threshold = T`` (defaults: Flower's example sizing
  ``K = 2 ceil(log2 N) + 1``, ``T = ceil(2K/3)``), clip 8, quantisation 2**22, modulus 2**32;
* ``privagg-sh`` / ``privagg-active``: :class:`protocols.flower.PrivAggSecAggWorkflow` +
  ``make_secagg_mod``, semi-honest / active threat model, on the *same graph* (degree
  ``K - 1`` neighbours, threshold ``T``), clip 8, ``value_bits = 23`` (quantisation step
  1.9e-6, finer than Flower's 3.8e-6), ring ``2**32`` like Flower's (``--modulus-bits 0``:
  privagg's smallest ring, 30 bits at N=100, bit-packed on the wire);
  The active server screens advertisements and senders with the clients' PKI (as deployed);
* ``privagg-active-derived``: active, graph derived by ``SecAggParams.derive`` for
  2^-40 security / 2^-20 failure at the given dropout rate (a larger degree: stronger, slower);
* ``plain``: Flower's default FedAvg fit workflow, no secure aggregation (the floor: model
  broadcast, the clients' ``fit``, message handling). ``secure_overhead_s`` = round - plain.

``--dropout`` clients (partition ids ``< round(dropout * N)``) fail when the masking stage
starts (after sharing their keys: the expensive case, the server must remove their pairwise
masks). The round is timed inside the server workflow (engine start-up excluded). Every
round's aggregate is checked against the plain mean of the survivors (``max_abs_err``).

Engines: ``inproc`` (default: a synchronous in-process Grid, pure protocol compute on one
core) and ``ray`` (Flower's simulation engine; one warm-up round with M=1 absorbs actor
start-up and is excluded).

    python benchmarks/flower_secagg.py --clients 100 --params 100000 --dropout 0.1 --repeat 3
    python benchmarks/flower_secagg.py --engine ray --clients 100 --params 100000 --dropout 0.1 --repeat 2
    # the nodes' party cache (protocols.flower._state) on and off, side by side:
    python benchmarks/flower_secagg.py --systems privagg-sh,privagg-sh-nocache,privagg-active,privagg-active-nocache

Prints one JSON ``SUMMARY`` line: per system the median round seconds, and the ratios
``flower / privagg`` (wall clock; with the inproc engine also of this process's CPU time,
``cpu_speedup_vs_flower``, which a busy machine disturbs less), with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

__all__ = ["main"]

SYSTEMS = ("plain", "flower", "privagg-sh", "privagg-active", "privagg-active-derived")
#: not run by default: a privagg system with its nodes' process-local party cache off (every party restored
#: from its node state, as after a process change before every message), e.g. ``privagg-sh-nocache``
NOCACHE = "-nocache"


def _flower_k(n: int) -> int:
    k = 2 * math.ceil(math.log2(n)) + 1
    return n if k >= n else k


def _timed(workflow: Any, log: list[float], cpu: list[float]) -> Any:
    def fit(grid: Any, context: Any) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        workflow(grid, context)
        log.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # this process's CPU: robust to a busy machine (inproc engine only)

    return fit


def _flower_aggregate(context: Any) -> np.ndarray | None:
    import flwr.compat.common.recorddict_compat as compat
    from flwr.common import parameters_to_ndarrays
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    arrs = parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    )
    return arrs[0] if len(arrs) == 1 else None


def run_system(name: str, args: argparse.Namespace, pki: str) -> dict[str, Any]:
    from flwr.client.mod import secaggplus_mod
    from flwr.server.workflow import SecAggPlusWorkflow

    from protocols.flower import PrivAggSecAggWorkflow, SecAggWorkflowConfig, make_secagg_mod
    from protocols.flower.apps import dropout_mod, expected_mean, send_metrics_mod, vector_client_app, vector_server_app
    from protocols.flower.inproc import run_inprocess
    from secagg.params import ClientPolicy, ThreatModel

    n, m = args.clients, args.params
    k = args.num_shares or _flower_k(n)
    t = args.threshold or max(2, min(k - 1, math.ceil(2 * k / 3)))
    n_drop = round(args.dropout * n)
    warm = 1 if args.engine == "ray" else 0
    rounds = warm + args.repeat

    def dim_of(rnd: int) -> int:
        return 1 if rnd <= warm else m

    times: list[float] = []
    errors: list[float] = []
    included: list[int] = []
    seed = args.seed
    if name == "plain":
        from flwr.server.workflow.default_workflows import default_fit_workflow

        inner: Any = default_fit_workflow
        mods: list[Any] = []  # no dropout: the plain floor

        def check(context: Any, rnd: int) -> None:
            agg = _flower_aggregate(context)
            if agg is not None and agg.shape == (dim_of(rnd),):
                exp = expected_mean(seed, rnd, range(n), dim_of(rnd))
                errors.append(float(np.max(np.abs(agg.astype(np.float64) - exp))))
                included.append(n)
            else:
                errors.append(math.inf)

    elif name == "flower":
        inner = SecAggPlusWorkflow(
            num_shares=k,
            reconstruction_threshold=t,
            max_weight=1000.0,
            clipping_range=8.0,
            quantization_range=1 << 22,
            modulus_range=1 << 32,
            timeout=None,
        )
        mods = [dropout_mod(partitions=range(n_drop), stage="collect_masked_vectors", record="secaggplus_configs")]
        mods.append(secaggplus_mod)

        def check(context: Any, rnd: int) -> None:
            agg = _flower_aggregate(context)
            if agg is not None and agg.shape == (dim_of(rnd),):
                exp = expected_mean(seed, rnd, range(n_drop, n), dim_of(rnd))
                errors.append(float(np.max(np.abs(agg.astype(np.float64) - exp))))
                included.append(n - n_drop)
            else:
                errors.append(math.inf)

    else:
        threat = ThreatModel.SEMI_HONEST if name.startswith("privagg-sh") else ThreatModel.ACTIVE
        config = SecAggWorkflowConfig(
            threat=threat,
            dropout_rate=args.dropout,
            clipping_range=8.0,
            value_bits=23,
            modulus_bits=args.modulus_bits,
            pki=pki if threat is ThreatModel.ACTIVE else None,  # active: the server screens with the clients' PKI
        )
        if not name.removesuffix(NOCACHE).endswith("derived"):  # Flower's graph: K - 1 neighbours, threshold T
            config = dataclasses.replace(config, degree=k - 1, threshold=t)
        inner = PrivAggSecAggWorkflow(config)
        # the test clients opt in to reporting their partition id in the clear (the check below reads it)
        mods = [send_metrics_mod, dropout_mod(partitions=range(n_drop), stage="delivery")]
        # active nodes need a policy of their own (they refuse to run without one); a benchmark assumes no colluder
        own = ClientPolicy(min_clients=2, dropout_rate=0.0, corruption_rate=0.0)
        mods.append(make_secagg_mod(threat=threat, pki=pki, policy=own if threat is ThreatModel.ACTIVE else None))

        def check(context: Any, rnd: int) -> None:
            rec = inner.history[-1]
            if rec.ok:
                # the partition id each survivor reported in its FitRes metrics (test clients only)
                pids = sorted(int(rec.fit_metrics[nd]["pid"]) for nd in rec.survivors)
                exp = expected_mean(seed, rnd, pids, dim_of(rnd))
                errors.append(float(np.max(np.abs(rec.aggregate[0].astype(np.float64) - exp))))
                included.append(len(pids))
            else:
                errors.append(math.inf)

    log: list[float] = []
    counter = [0]
    cpu: list[float] = []
    timed = _timed(inner, log, cpu)

    def workflow(grid: Any, context: Any) -> None:
        counter[0] += 1
        timed(grid, context)
        check(context, counter[0])

    server_app = vector_server_app(workflow, num_clients=n, dimension=m, rounds=rounds, dimension_of_round=dim_of)
    client_app = vector_client_app(dimension=m, seed=seed, mods=mods)
    from protocols.flower.secagg import _STORE

    hits, restores, entries = _STORE.hits, _STORE.restores, _STORE.max_entries
    if name.endswith(NOCACHE):
        _STORE.max_entries = 0
    t0 = time.perf_counter()
    if args.engine == "ray":
        from flwr.simulation import run_simulation

        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=n,
            backend_config={
                "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                "init_args": {"num_cpus": args.actors},
            },
        )
    else:
        run_inprocess(server_app, client_app, num_nodes=n)
    _STORE.max_entries = entries
    total = time.perf_counter() - t0
    times = log[warm:]
    errs = errors[warm:]
    ok = all(e < 8.0 / (1 << 21) for e in errs) and len(errs) == args.repeat
    out = {
        "system": name,
        "round_s": times,
        "round_s_median": statistics.median(times) if times else None,
        "round_cpu_s": cpu[warm:],
        "round_cpu_s_median": statistics.median(cpu[warm:]) if cpu[warm:] else None,
        "max_abs_err": max(errs) if errs else None,
        "included_clients": included[warm:],
        "ok": ok,
        "total_s": total,
    }
    if name == "plain":
        out["params"] = "no secure aggregation, no dropout"
    elif name != "flower":
        out["params"] = repr(inner.history[-1].params)
        out["stage_s_last"] = {s: round(v, 4) for s, v in inner.history[-1].stage_seconds.items()}
        out["server_s_last"] = inner.history[-1].server_seconds
        # node parties taken from this process's cache / restored from their node state (protocols.flower._state;
        # with the ray engine the actors' counts are not seen here)
        out["party_cache_hits"], out["party_restores"] = _STORE.hits - hits, _STORE.restores - restores
    else:
        out["params"] = f"num_shares={k} (degree {k - 1}) threshold={t}"
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", "-N", type=int, default=100)
    p.add_argument("--params", "-M", type=int, default=100_000)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--engine", choices=("inproc", "ray"), default="inproc")
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--num-shares", type=int, default=None, help="Flower's K (ring incl. the client)")
    p.add_argument("--threshold", type=int, default=None)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument(
        "--modulus-bits",
        type=int,
        default=32,
        help="privagg ring (default 32 = Flower's 2**32 modulus; 0 = the smallest ring, 30 bits for N=100)",
    )
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.modulus_bits = args.modulus_bits or None
    logging.getLogger("flwr").setLevel(logging.WARNING)
    logging.getLogger("privagg.flower").setLevel(logging.ERROR)

    import flwr

    from protocols.flower import create_identities

    systems = [s for s in args.systems.split(",") if s]
    for s in systems:
        if s not in SYSTEMS and not (s.endswith(NOCACHE) and s.removesuffix(NOCACHE) in SYSTEMS[2:]):
            p.error(f"unknown system {s!r}; choose from {SYSTEMS}")
    print(
        f"# Flower {flwr.__version__} engine={args.engine} N={args.clients} M={args.params} "
        f"dropout={args.dropout} repeat={args.repeat}",
        flush=True,
    )
    results = []
    load_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as pki:
        create_identities(pki, range(args.clients))
        for s in systems:
            r = run_system(s, args, pki)
            results.append(r)
            print(json.dumps(r), flush=True)
    by = {r["system"]: r for r in results}
    summary: dict[str, Any] = {"engine": args.engine, "N": args.clients, "M": args.params, "dropout": args.dropout}
    summary["load_avg_1m_start_end"] = [load_start, round(os.getloadavg()[0], 2)]  # 2 cores: above ~1 is a busy machine
    summary["round_s_median"] = {s: r["round_s_median"] for s, r in by.items()}
    fl = by.get("flower", {}).get("round_s_median")
    if fl:
        summary["speedup_vs_flower"] = {
            s: fl / r["round_s_median"] for s, r in by.items() if s not in ("flower", "plain") and r["round_s_median"]
        }
    fl_cpu = by.get("flower", {}).get("round_cpu_s_median")
    if fl_cpu and args.engine == "inproc":  # (with ray the clients' CPU is in the actors)
        summary["cpu_speedup_vs_flower"] = {
            s: fl_cpu / r["round_cpu_s_median"]
            for s, r in by.items()
            if s not in ("flower", "plain") and r["round_cpu_s_median"]
        }
    plain = by.get("plain", {}).get("round_s_median")
    if plain:
        over = {s: r["round_s_median"] - plain for s, r in by.items() if s != "plain" and r["round_s_median"]}
        summary["secure_overhead_s"] = over
        if over.get("flower"):
            summary["overhead_speedup_vs_flower"] = {
                s: over["flower"] / v for s, v in over.items() if s != "flower" and v > 0
            }
    summary["all_ok"] = all(r["ok"] for r in results)
    print("SUMMARY " + json.dumps(summary), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "results": results}, f, indent=1)
    return 0 if summary["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
