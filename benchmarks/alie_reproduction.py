"""ALIE (Baruch et al. 2019, "A Little Is Enough") at small scale: two training regimes side by side.

Run: ``python benchmarks/alie_reproduction.py [--seeds 3] [--datasets digits,mnist-5k] [--workers 2]``

For every dataset, seed and defense (mean = FedAvg, coordinate median, trimmed mean, Krum),
three runs with the same seed: clean, ALIE with 20% malicious clients and the paper's ``z``
(``z_max = Phi^-1((n - s) / n)``, ``s = floor(n/2 + 1) - m``; 0.385 for n = 20, m = 4) where the
colluding attackers estimate mean and std from their own genuine updates (the paper's threat
model), and the omniscient variant (mean and std of the honest updates). Two regimes:

- ``fedavg``: the default matrix's regime (Dirichlet alpha = 0.5, 2 local epochs of batch 16,
  lr 0.1, 20 rounds): clients send multi-epoch model deltas;
- ``fedsgd``: the paper's regime, synchronous distributed SGD (:meth:`RobustnessConfig.fedsgd`):
  IID split, every round each client sends one mini-batch gradient step (batch 16, lr 0.1, no
  momentum), ``--fedsgd-rounds`` rounds.

Then, *beyond the paper's definition* (labelled as such in the output), the same FedSGD runs with
a larger ``z`` (``--zs``, omniscient) to show how the damage grows with the shift.

Writes ``results_<dataset>.json`` (every run with its accuracy curve, and the summaries: mean, min and max
over seeds of the final accuracy and of the cost in points against the clean run of the same
seed and defense) and plots (accuracy per round, clean vs ALIE, one panel per defense; final
accuracy vs ``z``) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from attacks.poisoning import alie_z
from attacks.robustness import NO_ATTACK, RobustnessConfig, run_cell

FRACTION = 0.2
ALPHA = 0.5  # the Dirichlet alpha of the fedavg regime (unused by the IID fedsgd regime)
DEFENSES = ("mean", "median", "trimmed-mean", "krum")
VARIANTS = ("clean", "alie", "alie-omniscient")
CHECKPOINTS = (10, 20, 50, 100, 200, 300)  # rounds at which the summary also gives the cost (effect vs rounds)

Job = tuple[str, str, str, str, int, float | None]  # regime, dataset, defense, variant, seed, z override


def regime_config(regime: str, dataset: str, seed: int, fedsgd_rounds: int) -> RobustnessConfig:
    task = {"seed": seed, "data": {"dataset": dataset}}
    if regime == "fedavg":  # the default matrix's regime (2 local epochs of batch 16, lr 0.1) for 20 rounds
        return RobustnessConfig().with_run({**task, "federation": {"rounds": 20}})
    if regime == "fedsgd":
        return RobustnessConfig.fedsgd().with_run({**task, "federation": {"rounds": fedsgd_rounds}})
    raise ValueError(regime)


def run_job(job: Job, fedsgd_rounds: int) -> dict[str, Any]:
    regime, dataset, defense, variant, seed, z = job
    cfg = regime_config(regime, dataset, seed, fedsgd_rounds)
    attack = NO_ATTACK if variant == "clean" else "alie"
    cfg = replace(cfg, attack_options={"alie": {"z": z}} if z is not None else {})
    knowledge = "omniscient" if variant == "alie-omniscient" else "partial"
    r = run_cell(cfg, attack, defense, FRACTION, ALPHA, knowledge=knowledge)
    return {
        "regime": regime,
        "regime_description": cfg.regime,
        "dataset": dataset,
        "defense": defense,
        "variant": variant,
        "seed": seed,
        "z": r.details.get("last_z"),
        "z_override": z,
        "num_malicious": r.num_malicious,
        "status": r.status,
        "accuracy": r.accuracy,
        "best_accuracy": r.best_accuracy,
        "accuracy_curve": r.details.get("accuracy_curve", []),
        "seconds": r.seconds,
    }


def _worker(args: tuple[Job, int]) -> dict[str, Any]:
    return run_job(*args)


def run_all(jobs: list[Job], fedsgd_rounds: int, workers: int, on_done: Callable[[dict[str, Any]], None]) -> None:
    if workers == 1:
        for j in jobs:
            on_done(run_job(j, fedsgd_rounds))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futs = [pool.submit(_worker, (j, fedsgd_rounds)) for j in jobs]
        for f in as_completed(futs):
            on_done(f.result())


def update_statistics(regime: str, dataset: str, seed: int, fedsgd_rounds: int) -> list[dict[str, float]]:
    """Per round of a clean FedAvg (mean) run: the size of the honest updates' mean and spread.

    ``signal = ||mu||`` (norm of the coordinate-wise mean of the updates) and
    ``spread = ||sigma||`` (norm of the coordinate-wise standard deviations). ALIE with ``m``
    of ``n`` attackers moves the mean aggregate by ``(m/n) z ||sigma||`` (a coordinate-wise
    median or trimmed mean by a few tenths of ``||sigma||``), so ``spread / signal`` says how
    large the paper's small shift is against the honest step.
    """
    import numpy as np

    from attacks.robustness import single_threaded
    from protocols.fedavg import FedAvgSimulation
    from protocols.training import local_steps_trainer, train_local

    cfg = regime_config(regime, dataset, seed, fedsgd_rounds)
    run_cfg = cfg.cell_run(ALPHA)  # the task with the plain mean
    rows: list[dict[str, float]] = []

    def hook(updates: list[Any], ctx: Any, sim: Any) -> list[Any]:
        x = np.stack([u.delta for u in updates])
        mu, sd = x.mean(0), x.std(0)
        rows.append(
            {
                "round": ctx.round,
                "signal": float(np.linalg.norm(mu)),
                "spread": float(np.linalg.norm(sd)),
                "median_coordinate_snr": float(np.median(np.abs(mu)[sd > 0] / sd[sd > 0])),
            }
        )
        return updates

    trainer = train_local if cfg.local_steps is None else local_steps_trainer(cfg.local_steps)
    with single_threaded():
        FedAvgSimulation(run_cfg, update_hooks=[hook], local_trainer=trainer).run()
    return rows


def _key(r: dict[str, Any]) -> tuple[str, str, str, str, float | None]:
    return (r["regime"], r["dataset"], r["defense"], r["variant"], r["z_override"])


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean/min/max over seeds of the final accuracy and of the cost in points vs the clean run."""
    clean = {
        (r["regime"], r["dataset"], r["defense"], r["seed"]): r["accuracy"] for r in runs if r["variant"] == "clean"
    }
    clean_curve = {
        (r["regime"], r["dataset"], r["defense"], r["seed"]): r["accuracy_curve"]
        for r in runs
        if r["variant"] == "clean"
    }
    groups: dict[tuple[str, str, str, str, float | None], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(_key(r), []).append(r)
    out = []
    for k, rs in sorted(groups.items(), key=lambda kv: tuple("" if v is None else str(v) for v in kv[0])):
        accs = [r["accuracy"] for r in rs]
        costs = [
            100 * (clean[(r["regime"], r["dataset"], r["defense"], r["seed"])] - r["accuracy"])
            for r in rs
            if (r["regime"], r["dataset"], r["defense"], r["seed"]) in clean
        ]
        checkpoints: dict[str, float] = {}
        for cp in CHECKPOINTS:
            at = [
                100
                * (
                    clean_curve[(r["regime"], r["dataset"], r["defense"], r["seed"])][cp - 1]
                    - r["accuracy_curve"][cp - 1]
                )
                for r in rs
                if (r["regime"], r["dataset"], r["defense"], r["seed"]) in clean_curve
                and len(r["accuracy_curve"]) >= cp
                and len(clean_curve[(r["regime"], r["dataset"], r["defense"], r["seed"])]) >= cp
            ]
            if at:
                checkpoints[str(cp)] = statistics.fmean(at)
        out.append(
            {
                "regime": k[0],
                "dataset": k[1],
                "defense": k[2],
                "variant": k[3],
                "z": rs[0]["z"],
                "beyond_paper_z": k[4] is not None,
                "seeds": sorted(r["seed"] for r in rs),
                "accuracy_mean": statistics.fmean(accs),
                "accuracy_min": min(accs),
                "accuracy_max": max(accs),
                "cost_points_mean": statistics.fmean(costs) if costs else math.nan,
                "cost_points_min": min(costs) if costs else math.nan,
                "cost_points_max": max(costs) if costs else math.nan,
                "cost_points_mean_at_round": checkpoints,
            }
        )
    return out


def plot_curves(runs: list[dict[str, Any]], regime: str, dataset: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    colors = {"clean": "tab:green", "alie": "tab:red", "alie-omniscient": "tab:purple"}
    fig, axes = plt.subplots(1, len(DEFENSES), figsize=(4.0 * len(DEFENSES), 3.6), sharey=True)
    desc = ""
    for ax, d in zip(axes, DEFENSES):
        for v in VARIANTS:
            rs = [
                r
                for r in runs
                if (r["regime"], r["dataset"], r["defense"], r["variant"]) == (regime, dataset, d, v)
                and r["z_override"] is None
                and r["accuracy_curve"]
            ]
            if not rs:
                continue
            desc = rs[0]["regime_description"]
            curves = np.array([r["accuracy_curve"] for r in rs])
            xs = np.arange(1, curves.shape[1] + 1)
            label = {"clean": "clean", "alie": "ALIE (own updates)", "alie-omniscient": "ALIE omniscient"}[v]
            if v != "clean":
                label += f", z={rs[0]['z']:.3g}"
            ax.plot(xs, curves.mean(0), color=colors[v], lw=1.3, label=label)
            ax.fill_between(xs, curves.min(0), curves.max(0), color=colors[v], alpha=0.15, lw=0)
        ax.set_title(f"{d}", fontsize=10)
        ax.set_xlabel("round")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (mean over seeds, min-max band)")
    axes[0].legend(loc="lower right", fontsize=7)
    fig.suptitle(f"ALIE, {FRACTION:.0%} malicious, {dataset}: {desc}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_z(summary: list[dict[str, Any]], dataset: str, path: Path) -> None:
    """Cost in points vs ``z`` (FedSGD, omniscient): at the last round and at round 50."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    paper = alie_z(20, 4)
    for ax, at in zip(axes, ("final", "50")):
        for d in DEFENSES:
            rows = [
                s
                for s in summary
                if (s["regime"], s["dataset"], s["defense"], s["variant"]) == ("fedsgd", dataset, d, "alie-omniscient")
            ]
            rows.sort(key=lambda s: s["z"])
            if not rows:
                continue
            if at == "final":
                ax.errorbar(
                    [s["z"] for s in rows],
                    [s["cost_points_mean"] for s in rows],
                    yerr=[
                        [s["cost_points_mean"] - s["cost_points_min"] for s in rows],
                        [s["cost_points_max"] - s["cost_points_mean"] for s in rows],
                    ],
                    marker="o",
                    capsize=3,
                    label=d,
                )
            else:
                pts = [(s["z"], s["cost_points_mean_at_round"].get(at)) for s in rows]
                ax.plot([z for z, c in pts if c is not None], [c for z, c in pts if c is not None], "o-", label=d)
        ax.axvline(paper, color="k", ls="--", lw=0.8)
        ax.axhline(0, color="grey", lw=0.6)
        ax.text(paper, 0.5, f" paper z={paper:.3f}", fontsize=7)
        ax.set_xlabel("z (dashed: the paper's value; larger z is beyond the paper's attack)")
        ax.grid(alpha=0.3)
        ax.set_title(
            "cost at the last round (mean, min-max over seeds)" if at == "final" else f"cost at round {at} (mean)",
            fontsize=9,
        )
    axes[0].set_ylabel("accuracy cost vs clean run (points)")
    axes[0].legend(fontsize=8, title="defense", title_fontsize=8)
    fig.suptitle(f"FedSGD on {dataset}, 20% omniscient ALIE: cost vs z", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_dataset(ds: str, regimes: list[str], zs: list[float], args: argparse.Namespace, out: Path) -> None:
    """All runs on one dataset; writes ``results_<ds>.json`` and its plots."""
    jobs: list[Job] = []
    for regime in regimes:
        for seed in range(args.seeds):
            for d in DEFENSES:
                for v in VARIANTS:
                    jobs.append((regime, ds, d, v, seed, None))
    if "fedsgd" in regimes:
        for seed in range(args.seeds):
            for d in DEFENSES:
                for z in zs:
                    jobs.append(("fedsgd", ds, d, "alie-omniscient", seed, z))
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def done(r: dict[str, Any]) -> None:
        runs.append(r)
        zs_ = "" if r["z"] is None else f" z={r['z']:.3f}"
        print(
            f"[{len(runs)}/{len(jobs)} {time.perf_counter() - t0:6.0f}s] {r['regime']:6s} {r['dataset']:8s} "
            f"{r['defense']:12s} {r['variant']:15s}{zs_:9s} seed {r['seed']}: {r['accuracy']:.3f}",
            flush=True,
        )

    run_all(jobs, args.fedsgd_rounds, args.workers, done)
    wall = time.perf_counter() - t0
    runs.sort(key=lambda r: (*(("" if v is None else str(v)) for v in _key(r)), r["seed"]))
    summary = summarise(runs)
    stats = {r: update_statistics(r, ds, 0, args.fedsgd_rounds) for r in regimes}
    spread_to_signal = {
        r: {
            "median_over_rounds": statistics.median(x["spread"] / x["signal"] for x in rows),
            "first_round": rows[0]["spread"] / rows[0]["signal"],
            "last_round": rows[-1]["spread"] / rows[-1]["signal"],
            "median_coordinate_snr_last_round": rows[-1]["median_coordinate_snr"],
        }
        for r, rows in stats.items()
    }
    result = {
        "dataset": ds,
        "study": "ALIE (Baruch et al. 2019) with 20% malicious clients, clean vs attacked, per defense",
        "paper_z_n20_m4": alie_z(20, 4),
        "fraction_malicious": FRACTION,
        "num_clients": 20,
        "regimes": {r: regime_config(r, ds, 0, args.fedsgd_rounds).regime for r in regimes},
        "seeds": list(range(args.seeds)),
        "wall_seconds": wall,
        "workers": args.workers,
        "command": " ".join(["python", *sys.argv]),
        "summary": summary,
        "honest_update_spread_to_signal_seed0": spread_to_signal,
        "honest_update_statistics_seed0": stats,
        "runs": runs,
    }
    finish(result, out)


def finish(result: dict[str, Any], out: Path) -> None:
    """Write ``results_<dataset>.json`` and the plots, print the table (also used by ``--replot``)."""
    ds, runs = result["dataset"], result["runs"]
    regimes = list(result["regimes"])
    summary = result["summary"] = summarise(runs)
    zs = any(r["z_override"] is not None for r in runs)
    (out / f"results_{ds}.json").write_text(json.dumps(result, indent=2) + "\n")
    for regime in regimes:
        plot_curves(runs, regime, ds, out / f"curves_{regime}_{ds}.png")
    if zs and "fedsgd" in regimes:
        plot_z(summary, ds, out / f"accuracy_vs_z_fedsgd_{ds}.png")
    head = f"{'regime':7s} {'dataset':9s} {'defense':13s} {'variant':16s} {'z':>6s}"
    print(f"\n{head}  accuracy (min-max)     cost pts (min-max)   mean cost at round")
    for row in summary:
        tag = " (beyond paper)" if row["beyond_paper_z"] else ""
        zt = "-" if row["z"] is None else f"{row['z']:.3f}"
        print(
            f"{row['regime']:7s} {row['dataset']:9s} {row['defense']:13s} {row['variant']:16s} {zt:>6s}  "
            f"{row['accuracy_mean']:.3f} ({row['accuracy_min']:.3f}-{row['accuracy_max']:.3f})   "
            f"{row['cost_points_mean']:6.1f} ({row['cost_points_min']:.1f} to {row['cost_points_max']:.1f})   "
            + " ".join(f"r{k}:{v:.1f}" for k, v in row["cost_points_mean_at_round"].items())
            + tag
        )
    for reg, ratio in result["honest_update_spread_to_signal_seed0"].items():
        print(
            f"{reg}: ||sigma|| / ||mu|| of the honest updates (clean mean run, seed 0): first round "
            f"{ratio['first_round']:.2f}, median over rounds {ratio['median_over_rounds']:.2f}, "
            f"last round {ratio['last_round']:.2f}"
        )
    print(f"{ds}: wall {result['wall_seconds']:.0f} s; results in {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="benchmarks/results/robustness/alie")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--datasets", default="digits", help="comma-separated: digits, mnist-5k")
    ap.add_argument("--regimes", default="fedavg,fedsgd")
    ap.add_argument("--fedsgd-rounds", type=int, default=300)
    ap.add_argument("--zs", default="1,2", help="larger z values (beyond the paper) for the FedSGD sweep; '' for none")
    ap.add_argument("--z-datasets", default="digits", help="datasets on which to run the z sweep")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--replot", action="store_true", help="re-summarise and re-plot the stored results, no runs")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    datasets = [d for d in args.datasets.split(",") if d]
    if args.replot:
        for ds in datasets:
            finish(json.loads((out / f"results_{ds}.json").read_text()), out)
        return 0
    regimes = [r for r in args.regimes.split(",") if r]
    zs = [float(z) for z in args.zs.split(",") if z]
    for ds in datasets:
        run_dataset(ds, regimes, zs if ds in args.z_datasets.split(",") else [], args, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
