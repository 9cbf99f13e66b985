"""Where the main-task drop under model replacement comes from: the attackers' lost data, or the defense.

Per seed and defense, on the issue-18 task (20 clients, Dirichlet 0.5, 20% malicious, every round):

- ``clean``: no attack (every client honest, every client's data used);
- ``absent``: the malicious clients send nothing (attack ``honest-only``, the same seeded draw of
  clients the attack uses), so their data is lost and nothing else changes;
- ``attacked``: four model-replacement attackers every round (partial knowledge; against the
  stacks measured here both knowledge models give identical runs, see session 7).

The drop ``clean - attacked`` splits into ``clean - absent`` (i: the attackers' data, lost with them)
and ``absent - attacked`` (ii: what the attack costs beyond that, the defense's own cost). The
mean's ``clean - absent`` is the data's worth without any defense in the way.

    python benchmarks/robustness_absent.py --dataset digits --seeds 0-9 --defenses mean,history+support+fltrust-trim \
        --defense-options '{"history+support+fltrust-trim": {"root_passes": 3}}' --out DIR

writes ``absent_<dataset>_<defenses>.json`` (per seed and defense the three accuracies, the split,
and per figure the mean and a 95% t-interval over the seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from attacks.metrics import seed_interval
from attacks.robustness import Cell, RobustnessConfig
from attacks.robustness.config import HONEST_ONLY, NO_ATTACK, seed_list
from attacks.robustness.runner import run_jobs

MR = "model-replacement"
CASES = (NO_ATTACK, HONEST_ONLY, MR)


def interval(xs: list[float]) -> dict[str, Any]:
    """Mean, 95% Student-t interval (unclipped: these are differences), min and max of ``xs``."""
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return {"mean": None, "ci95": None, "min": None, "max": None, "n": 0}
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return {"mean": m, "ci95": None, "min": m, "max": m, "n": 1}
    _, lo, hi = seed_interval(xs)
    return {"mean": m, "ci95": [lo, hi], "min": min(xs), "max": max(xs), "n": len(xs)}


def run(
    dataset: str,
    seeds: list[int],
    defenses: tuple[str, ...],
    options: dict[str, dict[str, Any]],
    rounds: int | None,
    workers: int,
    cases: tuple[str, ...] = CASES,
) -> dict[str, Any]:
    jobs: list[tuple[RobustnessConfig, Cell]] = []
    for s in seeds:
        changes: dict[str, Any] = {"seed": s, "data": {"dataset": dataset}}
        if rounds is not None:
            changes["federation"] = {"rounds": rounds}
        cfg = RobustnessConfig(defenses=defenses, defense_options=options).with_run(changes)
        cfg = replace(cfg, attacks=("model-replacement",))
        # the mean has no defense to cost anything: only its clean and absent runs
        jobs += [(cfg, Cell(a, d, 0.2, 0.5)) for d in defenses for a in cases if (d, a) != ("mean", MR)]
    t0 = time.perf_counter()
    res = run_jobs(jobs, workers=workers)
    acc = {(r.seed, r.defense, r.attack): r.accuracy for r in res}
    asr = {(r.seed, r.defense): r.attack_success_rate for r in res if r.attack == "model-replacement"}
    per_seed: dict[str, Any] = {}
    figures: dict[str, dict[str, list[float]]] = {d: {} for d in defenses}
    for s in seeds:
        row: dict[str, Any] = {}
        for d in defenses:
            c, a = acc.get((s, d, NO_ATTACK), math.nan), acc.get((s, d, HONEST_ONLY), math.nan)
            x = acc.get((s, d, "model-replacement"), math.nan)
            vals = {
                "clean": c,
                "absent": a,
                "attacked": x,
                "backdoor": asr.get((s, d)),
                "drop": c - x,
                "data_lost": c - a,
                "defense_cost": a - x,
            }
            row[d] = vals
            for k, v in vals.items():
                if isinstance(v, float):
                    figures[d].setdefault(k, []).append(v)
        per_seed[str(s)] = row
    return {
        "dataset": dataset,
        "seeds": seeds,
        "rounds": rounds,
        "defense_options": options,
        "per_seed": per_seed,
        "summary": {d: {k: interval(v) for k, v in f.items()} for d, f in figures.items()},
        "wall_seconds": time.perf_counter() - t0,
        "workers": workers,
        "load_average_at_end": os.getloadavg(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--seeds", default="0-9")
    ap.add_argument("--defenses", default="mean,history+support+fltrust-trim")
    ap.add_argument("--defense-options", default="{}")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cases", default=",".join(CASES), help="a subset of none,honest-only,model-replacement")
    ap.add_argument("--tag", default="", help="appended to the output file's name")
    ap.add_argument("--out", default="benchmarks/results/robustness/session8")
    args = ap.parse_args()
    defenses = tuple(d for d in args.defenses.split(",") if d)
    cases = tuple(c for c in args.cases.split(",") if c)
    rec = run(
        args.dataset,
        seed_list(args.seeds),
        defenses,
        json.loads(args.defense_options),
        args.rounds,
        args.workers,
        cases,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"absent_{args.dataset}_{'_'.join(defenses)}{args.tag}.json"
    (out / name).write_text(json.dumps(rec, indent=2, default=str) + "\n")
    for d, figs in rec["summary"].items():
        print(d, {k: (round(v["mean"], 4) if v["mean"] is not None else None) for k, v in figs.items()})
    for s, row in rec["per_seed"].items():
        print(s, {d: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for d, r in row.items()})
    print(f"{rec['wall_seconds']:.0f} s, load {rec['load_average_at_end']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
