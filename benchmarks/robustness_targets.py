"""The targets of issue 18, measured: a stack's worst case and clean accuracy, and backdoors every round.

Run in batches of a seed and a few defenses (each writes ``targets_<dataset>_s<seed>_<defenses>.json``
into ``--out``; the mean's clean accuracy, the reference of the checks, needs only ``--attacks none``),
then the summary:

    python benchmarks/robustness_targets.py --dataset digits --seeds 0 --defenses mean --attacks none
    python benchmarks/robustness_targets.py --dataset digits --seeds 0 --defenses nnm+fltrust [--workers 2]
    python benchmarks/robustness_targets.py --dataset digits --seeds 0,1,2 --defenses history+fltrust --tune-seed 1000
    python benchmarks/robustness_targets.py --dataset digits --summarize

``--tune-seed V`` first runs the tuning step (:func:`attacks.robustness.tune`) for ``--defenses`` on
validation seed ``V`` (not a reported seed): every candidate of each defense's grid against the
clean baseline and every attack (every round, partial knowledge), keeping the highest worst-case
accuracy. The chosen options and every trial go to ``tuning_<dataset>_<defenses>.json`` (reused
when it exists for the same seed and rounds) and into the reported runs' ``defense_options``
(``--defense-options`` wins over them).

Per seed, on the default task (20 clients, Dirichlet 0.5, 20% malicious, 30 rounds; ``--rounds``
overrides, e.g. 15 for mnist-5k, whose honest-only run is flat by then):

1. the matrix of every attack (both schedules, both knowledge models) against ``--defenses``
   (the clean baseline and the honest-only ceiling included);
2. one model-replacement client attacking every round (5% malicious), both knowledge models.

Model replacement with partial knowledge boosts by ``n / attackers``; with omniscient knowledge
it knows the defense and keeps to the honest median norm against a robust rule (the adaptive
attacker). Checks, per defense and seed: worst case >= 0.80; clean within 2 points of the
mean's clean; backdoor success <= 5% with 1 and with 4 model-replacement attackers every round
(the higher of the two knowledge models), main task within 3 points of the defense's clean
accuracy. ``--decorrelate 0.5,1,2`` runs instead four attackers every round who add fresh noise of
that many times their update's norm (``decorrelate_<dataset>_s<seed>_<defenses>.json``): the
adaptive attacker of a similarity screen such as ``history``. ``--align 0.4,0.6,0.8`` runs four
omniscient attackers every round who turn their update towards the honest consensus until its
cosine to it reaches that value (``align_<dataset>_s<seed>_<defenses>.json``): the adaptive attacker
of a screen that spares updates agreeing with the consensus; with ``--inside`` they also clamp every
coordinate into the range a trim keeps (``align-inside_...``), the adaptive attacker of ``fltrust-trim``.
``--focus 0.05,0.1`` runs four omniscient attackers who keep their backdoor only on that share of
coordinates where the honest mean moves most and send the honest mean elsewhere
(``focus_<dataset>_s<seed>_<defenses>.json``): the adaptive attacker of ``fltrust-trim``'s untrimmed
coordinates. ``--attack-options '{"align": 0.4}'`` adds options to a study (named in its file's prefix).
``--summarize`` gathers every seed's files into ``targets_<dataset>.json``: per defense and figure the
mean, a 95% t-interval over the seeds, the range, and the checks met per seed.
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
from attacks.robustness import (
    Cell,
    CellResult,
    RobustnessConfig,
    backdoor_success,
    defense_info,
    honest_only_ceiling,
    run_matrix,
    worst_case,
)
from attacks.robustness.runner import run_jobs
from attacks.robustness.tuning import DEFAULT_TOLERANCE, Trial, choose, tune

DEFENSES = (
    "mean",
    "nnm+fltrust",
    "history+fltrust",
    "history+nnm+fltrust",
    "history+support+fltrust",
    "history+support+fltrust-trim",
)
# two-sided 95% Student t quantiles by degrees of freedom (seeds - 1)


def _worst_mr(rows: list[CellResult]) -> CellResult | None:
    """The model-replacement cell with the highest backdoor success over the knowledge models."""
    ok = [r for r in rows if r.status == "ok" and r.attack_success_rate is not None]
    return max(ok, key=lambda r: r.attack_success_rate or 0.0) if ok else None


def one_seed(
    dataset: str,
    seed: int,
    defenses: tuple[str, ...],
    workers: int,
    rounds: int | None,
    attacks: tuple[str, ...] | None = None,
    defense_options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    changes: dict[str, Any] = {"seed": seed, "data": {"dataset": dataset}}
    if rounds is not None:
        changes["federation"] = {"rounds": rounds}
    cfg = RobustnessConfig(defenses=defenses, defense_options=defense_options or {}).with_run(changes)
    if attacks is not None:
        cfg = replace(cfg, attacks=attacks)
    t0 = time.perf_counter()
    res = run_matrix(cfg, workers=workers)
    one = (
        run_matrix(
            replace(cfg, attacks=("model-replacement",), malicious=(0.05,), schedules=("every-round",)),
            workers=workers,
        )
        if "model-replacement" in cfg.attacks
        else []
    )
    wall = time.perf_counter() - t0
    wc, bd, top = worst_case(res), backdoor_success(res), honest_only_ceiling(res)
    clean = {r.defense: r.accuracy for r in res if r.attack == "none"}
    rows: dict[str, dict[str, Any]] = {}
    for d in defenses:
        w, a = wc.get((d, 0.2, 0.5), (math.nan, "-"))
        mr4 = [r for r in res if r.defense == d and r.attack == "model-replacement" and r.schedule == "every-round"]
        mr1 = [r for r in one if r.defense == d and r.attack == "model-replacement"]
        r4, r1 = _worst_mr(mr4), _worst_mr(mr1)
        c = clean.get(d, math.nan)
        rows[d] = {
            "clean": c,
            "worst": w,
            "worst_attack": a,
            "backdoor_every_round": bd.get((d, 0.2, 0.5, "every-round"), (None, "-")),
            "backdoor_single_shot": bd.get((d, 0.2, 0.5, "single-shot"), (None, "-")),
            "mr4": {r.knowledge: [r.attack_success_rate, r.accuracy] for r in mr4},
            "mr1": {r.knowledge: [r.attack_success_rate, r.accuracy] for r in mr1},
            "mr4_asr": None if r4 is None else r4.attack_success_rate,
            "mr4_accuracy": None if r4 is None else r4.accuracy,
            "mr1_asr": None if r1 is None else r1.attack_success_rate,
            "mr1_accuracy": None if r1 is None else r1.accuracy,
            "sum_only": defense_info(d)["sum_only"],
        }
    return {
        "dataset": dataset,
        "seed": seed,
        "attacks": list(cfg.attacks),
        "defense_options": {k: dict(v) for k, v in cfg.defense_options.items()},
        "rounds": cfg.run.federation.rounds,
        "regime": cfg.regime,
        "honest_only_ceiling": top.get((0.2, 0.5)),
        "wall_seconds": wall,
        "workers": workers,
        "load_average_at_end": os.getloadavg(),
        "defenses": rows,
    }


#: The adaptive model-replacement studies: the attack option each varies and the attackers' knowledge.
STUDIES = {"decorrelate": "partial", "align": "omniscient", "focus": "omniscient"}


def decorrelation_study(
    dataset: str,
    seed: int,
    defenses: tuple[str, ...],
    values: tuple[float, ...],
    workers: int,
    rounds: int | None,
    defense_options: dict[str, dict[str, Any]] | None = None,
    option: str = "decorrelate",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Four model-replacement attackers every round with attack ``option`` set to each of ``values``:
    ``decorrelate`` adds fresh noise (that many times their update's norm) to look unalike, the
    adaptive attacker of a similarity screen; ``align`` (omniscient) turns their updates towards
    the honest consensus, the adaptive attacker of a screen that spares agreeing updates."""
    changes: dict[str, Any] = {"seed": seed, "data": {"dataset": dataset}}
    if rounds is not None:
        changes["federation"] = {"rounds": rounds}
    base = RobustnessConfig(defenses=defenses, defense_options=defense_options or {}).with_run(changes)
    t0 = time.perf_counter()
    jobs = [
        (
            replace(base, attack_options={"model-replacement": {option: v, **(extra or {})}}),
            Cell("model-replacement", d, 0.2, 0.5, knowledge=STUDIES[option]),
        )
        for d in defenses
        for v in values
    ]
    res = run_jobs(jobs, workers=workers)
    rows: dict[str, Any] = {}
    for k, d in enumerate(defenses):
        mine = res[k * len(values) : (k + 1) * len(values)]
        rows[d] = {str(v): [r.attack_success_rate, r.accuracy] for v, r in zip(values, mine)}
    return {
        "dataset": dataset,
        "seed": seed,
        "rounds": base.run.federation.rounds,
        "option": option,
        "extra_attack_options": extra or {},
        "knowledge": STUDIES[option],
        option: list(values),
        "defense_options": {k: dict(v) for k, v in base.defense_options.items()},
        "wall_seconds": time.perf_counter() - t0,
        "load_average_at_end": os.getloadavg(),
        "defenses": rows,
    }


def tuned_options(
    dataset: str, seed: int, defenses: tuple[str, ...], workers: int, rounds: int | None, path: Path
) -> dict[str, dict[str, Any]]:
    """The options the tuning step chooses for ``defenses`` on validation seed ``seed`` (cached in ``path``)."""
    if path.exists():
        rec = json.loads(path.read_text())
        if rec["validation_seed"] == seed and rec["rounds"] == rounds:
            trials = [Trial(**{k: v for k, v in t.items() if k != "chosen"}) for t in rec["trials"]]
            chosen = choose(trials)  # the trials are kept; the choice is re-made by the current rule
            if chosen != rec["chosen"] or rec.get("tolerance") != DEFAULT_TOLERANCE:
                rec["chosen"], rec["tolerance"] = chosen, DEFAULT_TOLERANCE
                rec["trials"] = [{**t, "chosen": chosen.get(t["defense"]) == t["options"]} for t in rec["trials"]]
                path.write_text(json.dumps(rec, indent=2, default=str) + "\n")
            return chosen
    changes: dict[str, Any] = {"seed": seed + 1, "data": {"dataset": dataset}}  # any seed but the validation one
    if rounds is not None:
        changes["federation"] = {"rounds": rounds}
    cfg = RobustnessConfig(defenses=defenses).with_run(changes)
    t0 = time.perf_counter()
    res = tune(cfg, validation_seed=seed, workers=workers)
    rec = {
        "dataset": dataset,
        "validation_seed": seed,
        "rounds": rounds,
        "chosen": res.chosen,
        "tolerance": DEFAULT_TOLERANCE,
        "trials": res.rows(),
        "wall_seconds": time.perf_counter() - t0,
        "load_average_at_end": os.getloadavg(),
    }
    path.write_text(json.dumps(rec, indent=2, default=str) + "\n")
    return {d: dict(o) for d, o in res.chosen.items()}


def _interval(xs: list[float], *, rate: bool = True) -> dict[str, Any]:
    """Mean, 95% t-interval (clipped to [0, 1] for a ``rate``, not for a difference), min, max and count."""
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return {"mean": None, "ci95": None, "min": None, "max": None, "n": 0}
    mean = statistics.fmean(xs)
    ci = None
    if len(xs) > 1:
        _, lo, hi = seed_interval(xs)
        ci = [max(0.0, lo), min(1.0, hi)] if rate else [lo, hi]  # rates live in [0, 1]
    return {"mean": mean, "ci95": ci, "min": min(xs), "max": max(xs), "n": len(xs)}


_DIFFERENCES = ("clean_minus_mean", "mr4_drop", "mr1_drop")


def _checks(r: dict[str, Any], mean_clean: float) -> dict[str, bool | None]:
    """The issue's checks for one defense and seed (``None``: not measured in that batch)."""
    c = r["clean"]
    mr = [(r["mr1_asr"], r["mr1_accuracy"]), (r["mr4_asr"], r["mr4_accuracy"])]
    measured = all(a is not None for a, _ in mr)
    return {
        "worst_ge_0.80": None if not math.isfinite(r["worst"]) else r["worst"] >= 0.80,
        "clean_within_2_points_of_mean": None if not math.isfinite(mean_clean) else c >= mean_clean - 0.02,
        "mr_le_5pct_main_within_3_points": (all(a <= 0.05 and c - acc <= 0.03 for a, acc in mr) if measured else None),
    }


def summarize(out: Path, dataset: str) -> dict[str, Any]:
    """Gather ``targets_<dataset>_s*.json`` into per-defense intervals and per-seed checks."""
    batches = [json.loads(p.read_text()) for p in sorted(out.glob(f"targets_{dataset}_s*.json"))]
    by_seed: dict[int, dict[str, Any]] = {}
    for b in sorted(batches, key=lambda b: b["seed"]):
        s = by_seed.setdefault(b["seed"], {**b, "defenses": {}, "wall_seconds": 0.0})
        s["defenses"].update(b["defenses"])
        s["wall_seconds"] += b["wall_seconds"]
    seeds = list(by_seed.values())
    for s in seeds:
        m = s["defenses"].get("mean", {}).get("clean", math.nan)
        for r in s["defenses"].values():
            r["checks"] = _checks(r, m)
            # the checks' own quantities, so that they get intervals over the seeds too
            r["clean_minus_mean"] = r["clean"] - m
            for k in ("mr4", "mr1"):
                acc = r.get(f"{k}_accuracy")
                r[f"{k}_drop"] = None if acc is None else r["clean"] - acc
    for prefix, label in (("decorrelate", "decorrelated"), ("align", "aligned"), ("focus", "focused")):
        for p in sorted(out.glob(f"{prefix}_{dataset}_s*.json")):
            study = json.loads(p.read_text())
            for d, by_value in study["defenses"].items():
                row = by_seed.get(study["seed"], {}).get("defenses", {}).get(d)
                if row is not None:
                    worst = max(by_value.items(), key=lambda kv: kv[1][0])
                    row[f"mr4_{label}"] = by_value
                    row[f"mr4_{label}_max_asr"], row[f"mr4_{label}_accuracy"] = worst[1]
                    row["checks"][f"{label}_mr4_le_5pct_main_within_3_points"] = (
                        worst[1][0] <= 0.05 and row["clean"] - worst[1][1] <= 0.03
                    )
    defenses = list(dict.fromkeys(d for s in seeds for d in s["defenses"]))
    per: dict[str, Any] = {}
    for d in defenses:
        rows = [(s["seed"], s["defenses"][d]) for s in seeds if d in s["defenses"]]
        per[d] = {
            figure: _interval([r.get(figure) for _, r in rows], rate=figure not in _DIFFERENCES)
            for figure in (
                "clean",
                "clean_minus_mean",
                "worst",
                "mr4_drop",
                "mr1_drop",
                "mr4_asr",
                "mr4_accuracy",
                "mr1_asr",
                "mr1_accuracy",
                "mr4_decorrelated_max_asr",
                "mr4_aligned_max_asr",
                "mr4_focused_max_asr",
            )
        }
        per[d]["checks_per_seed"] = {seed: r["checks"] for seed, r in rows}
        per[d]["worst_attack_per_seed"] = {seed: r["worst_attack"] for seed, r in rows}
        per[d]["sum_only"] = rows[0][1].get("sum_only") if rows else None
    summary = {
        "dataset": dataset,
        "seeds": [s["seed"] for s in seeds],
        "rounds": sorted({s["rounds"] for s in seeds}),
        "honest_only_ceiling": {s["seed"]: s["honest_only_ceiling"] for s in seeds},
        "honest_only_ceiling_interval": _interval([s["honest_only_ceiling"] for s in seeds]),
        "wall_seconds_per_seed": {s["seed"]: s["wall_seconds"] for s in seeds},
        "defenses": per,
    }
    (out / f"targets_{dataset}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--defenses", default=",".join(DEFENSES))
    ap.add_argument("--rounds", type=int, default=None, help="override the task's rounds (default: the task's 30)")
    ap.add_argument("--attacks", default=None, help="the matrix's attacks (default: all; the mean needs only none)")
    ap.add_argument("--defense-options", default="{}", help='JSON, e.g. {"history+fltrust": {"centre": false}}')
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tune-seed", type=int, default=None, help="choose the defenses' options on this validation seed")
    ap.add_argument("--out", default="benchmarks/results/robustness")
    ap.add_argument("--summarize", action="store_true", help="only gather the per-seed files into the summary")
    ap.add_argument(
        "--decorrelate", default=None, metavar="V[,V...]", help="run only the decorrelating attackers' study"
    )
    ap.add_argument("--align", default=None, metavar="C[,C...]", help="run only the aligning attackers' study")
    ap.add_argument("--focus", default=None, metavar="S[,S...]", help="run only the focused attackers' study")
    ap.add_argument(
        "--inside", action="store_true", help="with --align: the attackers also clamp into the trimmed range"
    )
    ap.add_argument("--attack-options", default="{}", help="JSON, more model-replacement options for a study")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    defenses = tuple(d for d in args.defenses.split(",") if d)
    tag = "_".join(defenses)
    options: dict[str, dict[str, Any]] = {}
    if args.tune_seed is not None and not args.summarize:
        path = out / f"tuning_{args.dataset}_{tag}.json"
        options = tuned_options(args.dataset, args.tune_seed, defenses, args.workers, args.rounds, path)
        print(f"tuned on validation seed {args.tune_seed}: {options}")
    for d, o in json.loads(args.defense_options).items():
        options[d] = {**options.get(d, {}), **o}
    given = {"align": args.align, "decorrelate": args.decorrelate, "focus": args.focus}
    study_option = next((k for k, v in given.items() if v is not None), None)
    if study_option is not None and not args.summarize:
        values = tuple(float(v) for v in given[study_option].split(","))
        for s in args.seeds.split(","):
            extra = {**json.loads(args.attack_options), **({"inside": True} if args.inside else {})} or None
            study = decorrelation_study(
                args.dataset, int(s), defenses, values, args.workers, args.rounds, options, study_option, extra
            )
            prefix = f"{study_option}-inside" if args.inside else study_option
            prefix += "".join(f"-{k}{v}" for k, v in json.loads(args.attack_options).items())  # e.g. focus-align0.4
            name = f"{prefix}_{args.dataset}_s{study['seed']}_{tag}.json"
            (out / name).write_text(json.dumps(study, indent=2, default=str) + "\n")
            print(json.dumps(study["defenses"]))
    elif not args.summarize:
        for s in args.seeds.split(","):
            if args.tune_seed is not None and int(s) == args.tune_seed:
                raise SystemExit(f"seed {s} is the validation seed: report other seeds")
            attacks = None if args.attacks is None else tuple(a for a in args.attacks.split(",") if a)
            rec = one_seed(args.dataset, int(s), defenses, args.workers, args.rounds, attacks, options)
            path = out / f"targets_{args.dataset}_s{rec['seed']}_{tag}.json"
            path.write_text(json.dumps(rec, indent=2, default=str) + "\n")
            top, wall = rec["honest_only_ceiling"], rec["wall_seconds"]
            print(f"seed {rec['seed']}: honest-only ceiling {top:.3f}, {wall:.0f} s")
            for d, r in rec["defenses"].items():
                print(
                    f"  {d:22s} clean {r['clean']:.3f} worst {r['worst']:.3f} ({r['worst_attack']}); "
                    f"MR x4 {r['mr4']}, x1 {r['mr1']}"
                )
    summary = summarize(out, args.dataset)
    for d, v in summary["defenses"].items():
        print(f"{d:22s} worst {v['worst']} clean {v['clean']} checks {v['checks_per_seed']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
