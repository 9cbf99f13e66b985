"""DP-FedAvg accuracy on ``digits``: the cost of client-level (epsilon, 1e-5)-DP, and the population it needs.

Three measurements, all real training on sklearn's digits (logreg, 30 rounds, clip C = 0.5,
central secure discrete-Gaussian noise, noise multiplier calibrated by RDP for the run):

A. **Trend at N = 20 clients** (every client every round, fixed-size sampling, replace-one):
   final accuracy vs epsilon, against the non-DP run of the same configuration.
B. **Real larger populations**: digits re-partitioned into N = 100, 500, 1347 clients (IID;
   1347 = one example per client), Poisson sampling q = 0.1, DP at epsilon = 2 vs non-DP.
C. **Emulated populations** beyond what 1,348 examples allow: the 20-client federation of A
   (Poisson-like q = 0.1 cohort emulated by all 20 clients), with the Gaussian noise on the
   averaged update that a population of N' clients sampled at q = 0.1 would need for
   epsilon = 2 (std ``z(q, T, eps) * C / (q N')``). This assumes the mean clipped update of a
   cohort of ``q N'`` clients behaves like the mean of the 20 real ones (the noise term is exact;
   the sampling variance of the signal is not modelled).

D. **The README's ``[dp]`` example** (``--readme`` runs only this): digits re-partitioned into
   1,000 IID clients, Poisson q = 0.2 (secret cohorts), 60 rounds, logreg, clip 0.5, epsilon = 8,
   against the same run without DP, per seed.

Usage: ``python benchmarks/dp_accuracy.py [--quick] [--readme] [--out benchmarks/results]``. Writes
``dp_accuracy.json`` and ``dp_accuracy.png``. Medians over ``--repeats`` (secure noise is not
reproducible by design; partitions/model init are seeded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from dp.accounting import Sampling, calibrate
from dp.config import DPConfig
from privagg.config import load_config
from protocols.aggregation import MeanAggregator
from protocols.dp_fedavg import DPFedAvg
from protocols.fedavg import FedAvgSimulation, RunConfig

DELTA = 1e-5
CLIP = 0.5


def run(cfg_dict: dict[str, Any], *, aggregator: Any = None) -> tuple[float, dict[str, Any]]:
    cfg = load_config(RunConfig, cfg_dict)
    sim = FedAvgSimulation(cfg, aggregator=aggregator)
    res = sim.run()
    metrics = dict(res.history[-1].metrics)
    ledger = getattr(res.aggregator, "ledger", None)
    if ledger is not None:  # PRV is computed when asked, not every round
        metrics["dp_epsilon_prv"] = ledger.epsilon("prv")
    return res.final_accuracy, metrics


def base_config(*, num_clients: int, rounds: int, seed: int, partition: str, sampling: dict[str, Any]) -> dict:
    return {
        "seed": seed,
        "data": {"dataset": "digits", "num_clients": num_clients, "partition": partition},
        "model": {"name": "logreg"},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "federation": {"rounds": rounds, **sampling},
    }


#: the README's [dp] example (D): a population where client-level DP makes sense
#: (the README's TOML, applied over ``RunConfig()``'s defaults exactly as ``privagg run`` does)
README_EXAMPLE: dict[str, Any] = {
    "data": {"num_clients": 1000, "partition": "iid"},
    "model": {"name": "logreg"},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.1},
    "federation": {"rounds": 60, "sampling": "poisson", "sampling_rate": 0.2, "patience": 60},
}
README_DP = {"target_epsilon": 8.0, "delta": DELTA, "clip_norm": CLIP}


def run_cli_config(table: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Like :func:`run`, with ``table`` merged over ``RunConfig()`` (what ``privagg run --config`` does)."""
    from privagg.run import run_config

    res = FedAvgSimulation(run_config(None, table)).run()
    return res.final_accuracy, dict(res.history[-1].metrics)


def readme_example(seeds: range) -> list[dict[str, Any]]:
    """D: the README's example with and without DP, one row per seed."""
    rows = []
    for s in seeds:
        nondp, _ = run_cli_config({**README_EXAMPLE, "seed": s})
        acc, m = run_cli_config({**README_EXAMPLE, "seed": s, "dp": README_DP})
        rows.append({"seed": s, "nondp_accuracy": nondp, "dp_accuracy": acc, "epsilon_rdp": m["dp_epsilon_rdp"]})
        print(f"D seed {s}: DP {acc:.3f} (epsilon {m['dp_epsilon_rdp']:.3f}) vs non-DP {nondp:.3f}")
    return rows


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few points, few rounds (development)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--readme", action="store_true", help="only D: the README's [dp] example")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.readme:
        rows = readme_example(range(args.repeats))
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "dp_readme_example.json").write_text(json.dumps(rows, indent=2) + "\n")
        return
    rounds = 5 if args.quick else args.rounds
    reps = 1 if args.quick else args.repeats
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"delta": DELTA, "clip": CLIP, "rounds": rounds, "repeats": reps, "model": "logreg"}

    # ---- A: N = 20, accuracy vs epsilon -------------------------------------------------
    n20 = base_config(num_clients=20, rounds=rounds, seed=0, partition="dirichlet", sampling={"sampling": "all"})
    nondp = [run({**n20, "seed": s})[0] for s in range(reps)]
    epsilons = [2.0, 32.0, 512.0] if args.quick else [1.0, 2.0, 8.0, 32.0, 128.0, 512.0, 2048.0]
    trend = []
    for eps in epsilons:
        accs, z = [], None
        for s in range(reps):
            acc, m = run({**n20, "seed": s, "dp": {"target_epsilon": eps, "delta": DELTA, "clip_norm": CLIP}})
            accs.append(acc)
            z = m["dp_noise_multiplier"]
            spent = m["dp_epsilon_rdp"]
        trend.append(
            {
                "epsilon": eps,
                "accuracy": median(accs),
                "accuracies": accs,
                "noise_multiplier": z,
                "epsilon_spent_rdp": spent,
            }
        )
        print(
            f"[A] N=20 eps={eps:g}: acc {median(accs):.3f} (z={z:.3g}, spent {spent:.3f}); non-DP {median(nondp):.3f}"
        )
    result["A_n20"] = {
        "nondp_accuracy": median(nondp),
        "nondp_accuracies": nondp,
        "trend": trend,
        "sampling": "all 20 clients every round (fixed-size, replace-one)",
        "partition": "dirichlet alpha=0.5",
    }

    # ---- B: real larger populations (re-partitioned digits) -------------------------------
    real = []
    from protocols.datasets import load_dataset

    n_train = len(load_dataset("digits", seed=0).y_train)  # one example per client at most
    for n in [100] if args.quick else [100, 500, n_train]:
        cfg = base_config(
            num_clients=n,
            rounds=rounds,
            seed=0,
            partition="iid",
            sampling={"sampling": "poisson", "sampling_rate": 0.1},
        )
        base = [run({**cfg, "seed": s})[0] for s in range(reps)]
        dpa, z = [], None
        for s in range(reps):
            acc, m = run({**cfg, "seed": s, "dp": {"target_epsilon": 2.0, "delta": DELTA, "clip_norm": CLIP}})
            dpa.append(acc)
            z = m["dp_noise_multiplier"]
            eps_spent = (m["dp_epsilon_rdp"], m["dp_epsilon_prv"])
        real.append(
            {
                "population": n,
                "q": 0.1,
                "nondp_accuracy": median(base),
                "dp_accuracy": median(dpa),
                "noise_multiplier": z,
                "epsilon_rdp": eps_spent[0],
                "epsilon_prv": eps_spent[1],
            }
        )
        print(
            f"[B] N={n} q=0.1 eps=2: DP {median(dpa):.3f} vs non-DP {median(base):.3f} (z={z:.3g}, "
            f"spent RDP {eps_spent[0]:.3f} / PRV {eps_spent[1]:.3f})"
        )
    result["B_real_populations"] = real

    # ---- C: emulated populations (noise of N' clients at q = 0.1 on the 20-client federation) --
    emu = []
    q = 0.1
    for n_big in [200, 2000] if args.quick else [100, 300, 1000, 3000, 10_000, 100_000]:
        z_target = calibrate(
            target_epsilon=2.0, delta=DELTA, rounds=rounds, sampling=Sampling.poisson(rate=q, population=n_big)
        )
        std_on_mean = z_target * CLIP / (q * n_big)
        # the 20-client run (all clients, replace-one sensitivity 2C, denominator 20) with that std
        z_emul = std_on_mean / (2 * CLIP / 20)
        accs = []
        for s in range(reps):
            agg = DPFedAvg(MeanAggregator(), config=DPConfig(noise_multiplier=z_emul, clip_norm=CLIP))
            accs.append(run({**n20, "seed": s}, aggregator=agg)[0])
        emu.append(
            {
                "population": n_big,
                "q": q,
                "noise_multiplier": z_target,
                "noise_std_on_mean": std_on_mean,
                "accuracy": median(accs),
                "accuracies": accs,
            }
        )
        print(
            f"[C] emulated N'={n_big} q={q}: z={z_target:.3g}, noise std on mean {std_on_mean:.2e}, "
            f"acc {median(accs):.3f}"
        )
    result["C_emulated_populations"] = emu
    result["seconds"] = time.perf_counter() - t0

    (out_dir / "dp_accuracy.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out_dir / "dp_accuracy.png")
    print(f"wrote {out_dir / 'dp_accuracy.json'} and {out_dir / 'dp_accuracy.png'} ({result['seconds']:.0f} s)")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    A = result["A_n20"]
    eps = [t["epsilon"] for t in A["trend"]]
    a.plot(eps, [t["accuracy"] for t in A["trend"]], marker="o", label="DP-FedAvg (N = 20)")
    a.axhline(A["nondp_accuracy"], color="k", linestyle="--", label="non-DP, same config")
    a.axhline(A["nondp_accuracy"] - 0.10, color="gray", linestyle=":", label="non-DP - 10 points")
    a.set_xscale("log")
    a.set_xlabel(f"epsilon (delta = {result['delta']:g}, RDP)")
    a.set_ylabel("final test accuracy")
    a.set_title(f"digits, 20 clients, {result['rounds']} rounds")
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    C = result["C_emulated_populations"]
    b.plot(
        [c["population"] for c in C],
        [c["accuracy"] for c in C],
        marker="o",
        label="emulated population (noise of N' clients)",
    )
    R = result["B_real_populations"]
    b.plot(
        [r["population"] for r in R],
        [r["dp_accuracy"] for r in R],
        marker="s",
        linestyle="none",
        label="real re-partition, DP",
    )
    b.plot(
        [r["population"] for r in R],
        [r["nondp_accuracy"] for r in R],
        marker="x",
        linestyle="none",
        label="real re-partition, non-DP",
    )
    b.axhline(A["nondp_accuracy"], color="k", linestyle="--", label="non-DP (20 clients)")
    b.axhline(A["nondp_accuracy"] - 0.10, color="gray", linestyle=":")
    b.set_xscale("log")
    b.set_xlabel("population N (Poisson q = 0.1)")
    b.set_ylabel("final test accuracy at epsilon = 2")
    b.set_title("Population needed for epsilon = 2")
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
