"""Defense variants on development seeds: the runs a change of the #18 stack is chosen on.

A variant is a defense and its options. Each runs, per seed, the cases named (issue-18 task: 20
clients, Dirichlet 0.5, 20% malicious, every round); one JSON line per run is appended to
``--out`` (``runs.jsonl``), and a per-variant summary (mean, 95% t-interval, worst seed) is printed:

- ``none``: clean; ``absent``: the malicious clients send nothing (their data lost, no attack);
- ``mr4``: four model-replacement attackers (partial knowledge; the plain adaptive attacker);
- ``a4in`` / ``a6in``: four omniscient attackers aligned to cosine 0.4 / 0.6, then clamped into
  the trimmed range (``ModelReplacement(align=c, inside=True)``);
- ``f05`` / ``f10``: four omniscient attackers whose backdoor sits only on the 5% / 10% of
  coordinates where the honest mean moves most (``ModelReplacement(focus=s)``);
- ``f05a4``: the same at 5%, aligned to cosine 0.4 first.

    python benchmarks/robustness_variants.py --dataset digits --seeds 1000-1009 --cases none,mr4,a4in,f05 \\
        --variant 'shipped={"defense": "history+support+fltrust-trim", "options": {"root_passes": 3}}' \\
        --out benchmarks/results/robustness/session8/exploration/runs.jsonl

The trim's centre is an option of the stack's rule, e.g. ``--variant 'centre_median={"defense":
"history+support+fltrust-trim", "options": {"root_passes": 3, "trim_centre": "median"}}'`` (``"root"``,
``"median"``, ``"blend"``; ``around_root: true`` is ``"root"``).

Development seeds only (1000-1009): nothing is chosen on the reported seeds.
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

from attacks.robustness import Cell, RobustnessConfig
from attacks.robustness.config import HONEST_ONLY, NO_ATTACK, seed_list
from attacks.robustness.runner import run_jobs

MR = "model-replacement"
#: case -> (attack, knowledge, model-replacement options)
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "none": (NO_ATTACK, "partial", {}),
    "absent": (HONEST_ONLY, "partial", {}),
    "mr4": (MR, "partial", {}),
    "a4in": (MR, "omniscient", {"align": 0.4, "inside": True}),
    "a6in": (MR, "omniscient", {"align": 0.6, "inside": True}),
    "f05": (MR, "omniscient", {"focus": 0.05}),
    "f10": (MR, "omniscient", {"focus": 0.1}),
    "f05a4": (MR, "omniscient", {"focus": 0.05, "align": 0.4}),
}


def summarize(path: Path, dataset: str, reference: str = "mean") -> dict[str, dict[str, Any]]:
    """Per variant in ``path`` (``dataset`` only; a variant's latest run of each seed and case): clean
    accuracy and its worst gap to ``reference``'s clean on the same seed, the largest main-task drop
    under ``mr4``, and the highest backdoor of every attacked case, each with its seed."""
    runs: dict[tuple[str, int, str], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["dataset"] == dataset:
            runs[(r["variant"], r["seed"], r["case"])] = r
    ref = {s: r["accuracy"] for (v, s, c), r in runs.items() if v == reference and c == "none"}
    out: dict[str, dict[str, Any]] = {}
    for v in dict.fromkeys(k[0] for k in runs):
        mine = {(s, c): r for (vv, s, c), r in runs.items() if vv == v}
        clean = {s: r["accuracy"] for (s, c), r in mine.items() if c == "none"}
        row: dict[str, Any] = {"clean_mean": statistics.fmean(clean.values()) if clean else None}
        gaps = {s: a - ref[s] for s, a in clean.items() if s in ref}
        if gaps:
            s_min = min(gaps, key=lambda s: gaps[s])
            row["clean_minus_ref_mean"] = statistics.fmean(gaps.values())
            row["clean_minus_ref_worst"] = (gaps[s_min], s_min)
        for c in sorted({c for _, c in mine}):
            if c == "none":
                continue
            rs = {s: r for (s, cc), r in mine.items() if cc == c}
            drops = {s: clean[s] - r["accuracy"] for s, r in rs.items() if s in clean}
            asr = {s: r["asr"] or 0.0 for s, r in rs.items()}
            s_asr = max(asr, key=lambda s: asr[s])
            row[c] = {"asr_mean": statistics.fmean(asr.values()), "asr_max": (asr[s_asr], s_asr)}
            if drops:
                s_drop = max(drops, key=lambda s: drops[s])
                row[c] |= {"drop_mean": statistics.fmean(drops.values()), "drop_max": (drops[s_drop], s_drop)}
        out[v] = row
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--seeds", default="1000-1009")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--cases", default="none,mr4,a4in,f05")
    ap.add_argument("--variant", action="append", default=[], help='NAME={"defense": ..., "options": {...}}')
    ap.add_argument("--summarize", action="store_true", help="only print the summary of --out's runs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/robustness/session8/exploration/runs.jsonl")
    args = ap.parse_args()
    if args.summarize:
        print(json.dumps(summarize(Path(args.out), args.dataset), indent=1))
        return 0
    variants = {}
    for v in args.variant:
        name, spec = v.split("=", 1)
        variants[name] = json.loads(spec)
    cases = [c for c in args.cases.split(",") if c]
    jobs: list[tuple[RobustnessConfig, Cell]] = []
    meta: list[tuple[str, int, str]] = []
    for name, spec in variants.items():
        d = spec["defense"]
        for s in seed_list(args.seeds):
            changes: dict[str, Any] = {"seed": s, "data": {"dataset": args.dataset}}
            if args.rounds is not None:
                changes["federation"] = {"rounds": args.rounds}
            base = RobustnessConfig(defenses=(d,), defense_options={d: spec.get("options", {})}).with_run(changes)
            for c in cases:
                attack, knowledge, opts = CASES[c]
                cfg = replace(base, attacks=(MR,), attack_options={MR: opts})
                jobs.append((cfg, Cell(attack, d, 0.2, 0.5, knowledge=knowledge)))
                meta.append((name, s, c))
    t0 = time.perf_counter()
    res = run_jobs(jobs, workers=args.workers)
    wall, load = time.perf_counter() - t0, os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    by: dict[tuple[str, str], list[tuple[int, float, float | None]]] = {}
    with out.open("a") as fh:
        for (name, s, c), r in zip(meta, res):
            row = {
                "variant": name,
                "spec": variants[name],
                "dataset": args.dataset,
                "rounds": r.details.get("rounds", args.rounds),
                "seed": s,
                "case": c,
                "accuracy": r.accuracy,
                "asr": r.attack_success_rate,
                "status": r.status,
            }
            fh.write(json.dumps(row) + "\n")
            by.setdefault((name, c), []).append((s, r.accuracy, r.attack_success_rate))
    for (name, c), rows in by.items():
        acc = [a for _, a, _ in rows if math.isfinite(a)]
        asr = [b for _, _, b in rows if b is not None]
        worst = max(rows, key=lambda t: t[2] or 0.0)
        sd = statistics.stdev(acc) if len(acc) > 1 else math.nan
        print(
            f"{name:14s} {c:6s} acc {statistics.fmean(acc):.4f} (sd {sd:.4f}, min {min(acc):.3f}) "
            f"asr mean {statistics.fmean(asr) if asr else math.nan:.4f} max {worst[2] or 0.0:.4f} (seed {worst[0]})"
        )
    print(f"{len(res)} runs, {wall:.0f} s, load {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
