"""Robustness benchmark: the default attack x defense matrix, timed, and the published shapes.

Run: ``python benchmarks/robustness_matrix.py [--out DIR] [--seeds 3] [--skip-matrix] [--skip-studies]``

1. The default matrix (every poisoning attack x every defense, 20% malicious, digits, 20
   clients, Dirichlet alpha = 0.5) with its wall-clock and CPU time.
2. Studies, each the median over ``--seeds`` seeds, measured side by side in one run:
   - ALIE (z from Baruch et al.) with 20% malicious clients against plain FedAvg, beside the
     clean run (and the omniscient variant, and larger z for the record), and on a near-IID
     split (alpha = 100, the paper's setting) against mean, median, trimmed mean and Krum;
   - one model-replacement client attacking in the last round: backdoor success under FedAvg;
   - the same against norm bounding with weak DP (Sun et al.): backdoor success and
     main-task accuracy against the clean FedAvg run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from attacks.robustness import NO_ATTACK, RobustnessConfig, run_cell, run_matrix
from privagg.report.robustness import write_matrix


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def matrix(out: Path, workers: int) -> dict[str, Any]:
    cfg = RobustnessConfig()
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_matrix(cfg, progress=sys.stderr.isatty(), workers=workers)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    write_matrix(cfg, res, out / "matrix", seconds=wall)
    return {
        "cells": len(res),
        "refused": sum(r.status != "ok" for r in res),
        "wall_seconds": wall,
        "cpu_seconds_main_process": cpu,  # excludes worker processes
        "cpu_seconds_cells": sum(r.seconds for r in res),
        "workers": workers,
        "median_cell_seconds": _median([r.seconds for r in res if r.status == "ok"]),
    }


def studies(seeds: int) -> dict[str, Any]:
    rounds = 20
    base = RobustnessConfig().with_run({"federation": {"rounds": rounds}})
    rows: dict[str, list[dict[str, Any]]] = {}

    def cell(
        key: str,
        cfg: RobustnessConfig,
        attack: str,
        defense: str,
        frac: float,
        alpha: float = 0.5,
        know: str = "partial",
    ) -> None:
        r = run_cell(cfg, attack, defense, frac, alpha, knowledge=know)
        rows.setdefault(key, []).append({"seed": cfg.run.seed, "accuracy": r.accuracy, "asr": r.attack_success_rate})

    for seed in range(seeds):
        cfg = base.with_run({"seed": seed})
        cell("fedavg clean", cfg, NO_ATTACK, "mean", 0.2)
        cell("fedavg + alie (paper z, 20%)", cfg, "alie", "mean", 0.2)
        cell("fedavg + alie omniscient (paper z, 20%)", cfg, "alie", "mean", 0.2, know="omniscient")
        for z in (1.0, 2.0):
            cell(f"fedavg + alie z={z:g} (20%)", replace(cfg, attack_options={"alie": {"z": z}}), "alie", "mean", 0.2)
        cell("median + alie (paper z, 20%)", cfg, "alie", "median", 0.2)
        cell("median clean", cfg, NO_ATTACK, "median", 0.2)
        # near-IID split (the ALIE paper's setting): ALIE against the coordinate-wise and Krum rules
        for d in ("mean", "median", "trimmed-mean", "krum"):
            cell(f"IID (alpha=100) {d} clean", cfg, NO_ATTACK, d, 0.2, 100.0)
            cell(f"IID (alpha=100) {d} + alie (paper z, 20%)", cfg, "alie", d, 0.2, 100.0)
        # one model-replacement client, attacking in the last round (omniscient: knows the example weights)
        mr = replace(cfg, attack_options={"model-replacement": {"attack_rounds": [rounds]}})
        f1 = 1 / cfg.run.data.num_clients
        omni = "omniscient"
        cell("fedavg + 1 model-replacement client", mr, "model-replacement", "mean", f1, know=omni)
        cell("norm-bound clean", cfg, NO_ATTACK, "norm-bound", f1)
        cell("norm-bound + 1 model-replacement client", mr, "model-replacement", "norm-bound", f1, know=omni)
        early = replace(mr, attack_options={"model-replacement": {"attack_rounds": [rounds - 5]}})
        cell(
            "fedavg + 1 model-replacement client, 5 rounds before the end",
            early,
            "model-replacement",
            "mean",
            f1,
            know=omni,
        )
    summary: dict[str, Any] = {
        k: {
            "median_accuracy": _median([v["accuracy"] for v in vs]),
            "median_asr": None if vs[0]["asr"] is None else _median([v["asr"] for v in vs]),
            "runs": vs,
        }
        for k, vs in rows.items()
    }
    clean = summary["fedavg clean"]["median_accuracy"]
    alie = summary["fedavg + alie (paper z, 20%)"]["median_accuracy"]
    nb = summary["norm-bound + 1 model-replacement client"]
    summary["checks"] = {
        "alie_accuracy_drop_points": 100 * (clean - alie),
        "model_replacement_asr_fedavg": summary["fedavg + 1 model-replacement client"]["median_asr"],
        "norm_bound_asr": nb["median_asr"],
        "norm_bound_main_task_loss_points": 100 * (clean - nb["median_accuracy"]),
        "seeds": seeds,
        "rounds": rounds,
    }
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/robustness", help="output directory")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="processes for the matrix (the machine has 2 cores)")
    ap.add_argument("--skip-matrix", action="store_true")
    ap.add_argument("--skip-studies", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    if not args.skip_studies:
        result["studies"] = studies(args.seeds)
        for k, v in result["studies"].items():
            if k == "checks":
                continue
            asr = "" if v["median_asr"] is None else f"  backdoor success {v['median_asr']:.3f}"
            print(f"{k:62s} accuracy {v['median_accuracy']:.3f}{asr}")
        print(json.dumps(result["studies"]["checks"], indent=2))
    if not args.skip_matrix:
        result["matrix"] = matrix(out, args.workers)
        m = result["matrix"]
        print(
            f"default matrix: {m['cells']} runs ({m['refused']} refused), wall {m['wall_seconds']:.1f} s, "
            f"{m['workers']} workers, sum of per-run wall times {m['cpu_seconds_cells']:.1f} s, "
            f"median run {m['median_cell_seconds']:.2f} s; report in {out / 'matrix'}"
        )
    (out / "benchmark.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
