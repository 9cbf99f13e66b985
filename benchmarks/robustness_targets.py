"""The targets of issue 18, measured: a stack's worst case and clean accuracy, and backdoors every round.

Run: ``python benchmarks/robustness_targets.py [--dataset digits] [--seeds 0,1,2] [--defenses ...] [--workers 2]``

Per seed, on the default task (20 clients, Dirichlet 0.5, 20% malicious, 15 rounds):

1. the matrix of every attack (both schedules, both knowledge models) against ``--defenses``
   (the clean baseline and the honest-only ceiling included);
2. one model-replacement client attacking every round (5% malicious), against the same defenses.

Checks, per defense and seed: worst case >= 0.80; clean within 2 points of the mean's clean;
backdoor success <= 5% with 1 and with 4 model-replacement attackers every round, main task
within 3 points of the defense's clean accuracy. Writes ``targets_<dataset>.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from attacks.robustness import RobustnessConfig, backdoor_success, honest_only_ceiling, run_matrix, worst_case

DEFENSES = ("mean", "fltrust", "nnm+fltrust", "bucketing+fltrust", "arc+nnm+fltrust")


def one_seed(dataset: str, seed: int, defenses: tuple[str, ...], workers: int) -> dict[str, Any]:
    cfg = RobustnessConfig(defenses=defenses).with_run({"seed": seed, "data": {"dataset": dataset}})
    t0 = time.perf_counter()
    res = run_matrix(cfg, workers=workers)
    one = run_matrix(
        replace(cfg, attacks=("model-replacement",), malicious=(0.05,), schedules=("every-round",)), workers=workers
    )
    wall = time.perf_counter() - t0
    wc, bd, top = worst_case(res), backdoor_success(res), honest_only_ceiling(res)
    clean = {r.defense: r.accuracy for r in res if r.attack == "none"}
    mr4 = {r.defense: r for r in res if r.attack == "model-replacement" and r.schedule == "every-round"}
    mr1 = {r.defense: r for r in one if r.attack == "model-replacement"}
    rows: dict[str, dict[str, Any]] = {}
    for d in defenses:
        w, a = wc.get((d, 0.2, 0.5), (float("nan"), "-"))
        r1, r4 = mr1.get(d), mr4.get(d)
        rows[d] = {
            "clean": clean.get(d),
            "worst": w,
            "worst_attack": a,
            "backdoor_every_round": bd.get((d, 0.2, 0.5, "every-round"), (None, "-")),
            "backdoor_single_shot": bd.get((d, 0.2, 0.5, "single-shot"), (None, "-")),
            "mr4_asr": None if r4 is None else r4.attack_success_rate,
            "mr4_accuracy": None if r4 is None else r4.accuracy,
            "mr1_asr": None if r1 is None else r1.attack_success_rate,
            "mr1_accuracy": None if r1 is None else r1.accuracy,
        }
        c, m = clean.get(d, float("nan")), clean.get("mean", float("nan"))
        rows[d]["checks"] = {
            "worst_ge_0.80": w >= 0.80,
            "clean_within_2_points_of_mean": abs(c - m) <= 0.02 or c >= m,
            "mr_le_5pct_main_within_3_points": all(
                r is not None and (r.attack_success_rate or 0.0) <= 0.05 and c - r.accuracy <= 0.03 for r in (r1, r4)
            ),
        }
    return {"seed": seed, "honest_only_ceiling": top.get((0.2, 0.5)), "wall_seconds": wall, "defenses": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--defenses", default=",".join(DEFENSES))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/robustness")
    args = ap.parse_args()
    defenses = tuple(d for d in args.defenses.split(",") if d)
    out = {
        "dataset": args.dataset,
        "load_average_at_start": os.getloadavg(),
        "seeds": [one_seed(args.dataset, int(s), defenses, args.workers) for s in args.seeds.split(",")],
        "load_average_at_end": os.getloadavg(),
    }
    path = Path(args.out)
    path.mkdir(parents=True, exist_ok=True)
    (path / f"targets_{args.dataset}.json").write_text(json.dumps(out, indent=2, default=str))
    for s in out["seeds"]:
        print(f"seed {s['seed']}: honest-only ceiling {s['honest_only_ceiling']:.3f}, {s['wall_seconds']:.0f} s")
        for d, r in s["defenses"].items():
            print(
                f"  {d:22s} clean {r['clean']:.3f} worst {r['worst']:.3f} ({r['worst_attack']}); "
                f"MR x4 {r['mr4_asr']:.3f}/{r['mr4_accuracy']:.3f}, x1 {r['mr1_asr']:.3f}/{r['mr1_accuracy']:.3f}; "
                f"{r['checks']}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
