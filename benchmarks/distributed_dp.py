"""Distributed DP inside secure aggregation vs central DP: accuracy against bits per coordinate.

Task (the README's DP example): sklearn digits re-partitioned IID into 1,000 clients, logreg,
Poisson sampling q (default 0.05, secret cohorts), clip C = 0.5, delta = 1e-5, one local epoch.
For epsilon in {2, 8}:

* **central DP**: DP-FedAvg with the server adding the Gaussian noise (secure discrete Gaussian on
  a fine grid; tight subsampled-Gaussian RDP of Opacus);
* ``central*``: the same central noise at the Gaussian-equivalent noise multiplier the
  distributed accounting needs (its epsilon by the tight Gaussian accounting is then below target):
  it isolates what the distributed accounting costs from what the bits cost (not run by default:
  with the accounting of ``dp.distributed_accounting.subsampled_rdp`` the multiplier is within
  0.3% of central DP's at q = 0.05, epsilon 2);
* **dgauss / skellam** at bits in {12, 14, 16, 18, 20}: ``[dp] noise = "distributed"``: each client
  clips, rotates, scales, rounds conditionally, adds its integer share (secure source), reduces mod
  2^b; the server sums mod 2^b, unscales and rotates back; accounted by each mechanism's own RDP
  bound, Poisson-subsampled in both directions (``dp.distributed_accounting.subsampled_rdp``);
  parameters chosen automatically.

The accuracy runs take the sum mod 2^b in-process (``MeanAggregator.modular_sum``, the same ring
arithmetic SecAgg+ computes; ``tests/protocols/test_distributed_dp.py`` checks the secure sum is
bit-identical), so every cohort member survives (the protocol releases only complete sums: noise
split into n shares). Upload per client and round time come from one real SecAgg+ round per bits
value (active threat model, derived parameters, the expected cohort of ``qN`` clients) in the same
run: ``upload`` is the bytes one client sent during the whole round (keys, shares, masked vector,
signatures), ``round s`` the driver's wall time for the round. The central row's round is plain
SecAgg+ with its fixed-point encoding (16 value bits, ring sized for the sum), for comparison.

Secure noise is not reproducible by design; the seed fixes partition, model init and batch order, so
seed ``s`` of every row is paired with seed ``s`` of central DP. Accuracy is the mean of the last 5
rounds' test accuracy; each row gives its mean over seeds with a 95% Student-t interval, and the
paired difference from central DP (points) with its 95% interval; a target (1 point at 16 bits, 2 at
12) is *met* when the interval's lower end is above minus the tolerance, *missed* when its upper end
is below it, else *unresolved*.

Batches (each under 10 minutes on one core) write ``distributed_dp_<tag>.json``; ``--merge``
joins them (rows of one configuration run in several batches pool their seeds) into
``distributed_dp.json`` with the table and ``distributed_dp.png``. The committed results::

    B="python benchmarks/distributed_dp.py --repeats 6"
    for e in 2 8; do
      $B --epsilons $e --noises central --tag e${e}_central
      for m in dgauss skellam; do
        $B --epsilons $e --noises $m --bits 12 14 16 --tag e${e}_$m
        $B --epsilons $e --noises $m --bits 18 20 --tag e${e}_${m}_hi; done; done
    # 8 more seeds (6..13) for the target rows (12 and 16 bits)
    for e in 2 8; do
      python benchmarks/distributed_dp.py --repeats 8 --seed0 6 --epsilons $e --noises central dgauss \\
          --bits 12 16 --tag e${e}_more_a
      python benchmarks/distributed_dp.py --repeats 8 --seed0 6 --epsilons $e --noises skellam --bits 12 16 \\
          --tag e${e}_more_b; done
    python benchmarks/distributed_dp.py --secagg --noises --tag costs
    python benchmarks/distributed_dp.py --merge benchmarks/results/distributed_dp_e*_*.json \\
        benchmarks/results/distributed_dp_costs.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dp.config import DPConfig
from privagg.config import load_config
from protocols.aggregation import MeanAggregator, RoundContext
from protocols.dp_fedavg import DPFedAvg
from protocols.fedavg import FedAvgSimulation, RunConfig
from protocols.secagg_aggregator import SecAggAggregator

DELTA = 1e-5
CLIP = 0.5
BITS = (12, 14, 16, 18, 20)
EPSILONS = (2.0, 8.0)
MECHANISMS = ("dgauss", "skellam")


def base(rounds: int, q: float, seed: int) -> dict[str, Any]:
    return {
        "seed": seed,
        "data": {"dataset": "digits", "num_clients": 1000, "partition": "iid"},
        "model": {"name": "logreg"},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "federation": {"rounds": rounds, "sampling": "poisson", "sampling_rate": q, "patience": rounds},
    }


def train(cfg: dict[str, Any], dp: dict[str, Any], rounds: int) -> tuple[float, float, dict[str, Any], float]:
    """Final accuracy, mean accuracy of the last 5 rounds, last metrics, seconds."""
    run_cfg = load_config(RunConfig, cfg)
    agg = DPFedAvg(MeanAggregator(weighted=False), config=DPConfig(**dp), population=1000, rounds=rounds)
    t0 = time.perf_counter()
    res = FedAvgSimulation(run_cfg, aggregator=agg).run()
    last5 = float(np.mean([h.accuracy for h in res.history[-5:]]))
    return res.final_accuracy, last5, dict(res.history[-1].metrics), time.perf_counter() - t0


def secagg_round(bits: int | None, cohort: int, dim: int) -> dict[str, float]:
    """One real SecAgg+ round of ``cohort`` clients: the distributed ring (``bits``) or plain fixed point."""
    rng = np.random.default_rng(0)
    ctx = RoundContext(
        round=0, population=1000, sampled=tuple(range(cohort)), sampling="poisson", sampling_rate=cohort / 1000, rng=rng
    )
    agg = SecAggAggregator()
    if bits is None:
        from protocols.aggregation import ClientUpdate

        ups = [ClientUpdate(c, rng.normal(size=dim) * 0.01, 1) for c in range(cohort)]
        agg.aggregate(ups, ctx)
    else:
        padded = 1 << (dim - 1).bit_length()
        vecs = {c: rng.integers(0, 2**bits, size=padded, dtype=np.uint64) for c in range(cohort)}
        agg.modular_sum(vecs, bits=bits, ctx=ctx)
    st = agg.rounds[-1]
    return {
        "upload_bytes": st.client_upload_bytes,
        "round_seconds": st.round_seconds,
        "modulus_bits": st.modulus_bits,
        "degree": st.degree,
        "threshold": st.threshold,
    }


def ddp_noise_multiplier(eps: float, args: argparse.Namespace) -> float:
    """The Gaussian-equivalent noise multiplier of the distributed plan (20 bits: no quantisation cost)."""
    from dp.distributed import choose_parameters

    n = round(args.q * 1000)
    p = choose_parameters(
        mechanism="dgauss",
        bits=20,
        clip=CLIP,
        dim=650,
        epsilon=eps,
        delta=DELTA,
        rounds=args.rounds,
        sampling_rate=args.q,
        cohort=math.ceil(n + 4 * math.sqrt(n * (1 - args.q))),
        shares=n,
    )
    return p.sigma / p.l2_sensitivity


def interval(xs: list[float]) -> tuple[float, float, float]:
    """Mean and its two-sided 95% Student-t interval (one value: a zero-width interval)."""
    from scipy import stats

    m = float(np.mean(xs))
    if len(xs) < 2:
        return m, m, m
    h = float(stats.t.ppf(0.975, len(xs) - 1) * np.std(xs, ddof=1) / math.sqrt(len(xs)))
    return m, m - h, m + h


def run_config(eps: float, name: str, bits: int | None, dp: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One row: every seed of one configuration (the seed fixes partition, model init and batches, so seed
    ``s`` of every row is paired; the DP noise comes from the secure source and differs)."""
    accs: list[float] = []
    last5s: list[float] = []
    secs: list[float] = []
    m: dict[str, Any] = {}
    for s in range(args.seed0, args.seed0 + args.repeats):
        try:
            acc, last5, m, sec = train(base(args.rounds, args.q, s), dp, args.rounds)
        except Exception as e:  # a refused configuration is a result, reported as such
            m = {"error": f"{type(e).__name__}: {e}"}
            break
        accs.append(acc)
        last5s.append(last5)
        secs.append(sec)
    return {
        "epsilon": eps,
        "noise": name,
        "bits": bits,
        "seeds": list(range(args.seed0, args.seed0 + len(accs))),
        "accuracy": statistics.median(accs) if accs else None,
        "accuracies": accs,
        "accuracy_last5": statistics.median(last5s) if last5s else None,
        "accuracies_last5": last5s,
        "epsilon_spent": m.get("dp_epsilon_rdp"),
        "noise_std_on_mean": m.get("dp_noise_std_on_mean"),
        "noise_inflation": m.get("dp_noise_inflation"),
        "ring_overflow_bound": m.get("dp_ring_overflow_bound"),
        "scale": m.get("dp_scale"),
        "train_seconds": statistics.median(secs) if secs else None,
        "error": m.get("error"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--q", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=5, help="seeds per configuration")
    ap.add_argument("--seed0", type=int, default=0, help="first seed")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="", help="write distributed_dp<_tag>.json (a batch of a larger table)")
    ap.add_argument("--secagg", action="store_true", help="also run one real SecAgg+ round per bits (cost columns)")
    ap.add_argument("--bits", type=int, nargs="+", default=list(BITS), help="bits per coordinate to run")
    ap.add_argument("--epsilons", type=float, nargs="+", default=list(EPSILONS))
    ap.add_argument("--noises", nargs="*", default=["central", *MECHANISMS], help="central, central*, dgauss, skellam")
    ap.add_argument("--merge", nargs="+", help="batch JSON files: merge them into one table, plot and summary")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merge([Path(p) for p in args.merge], out)
        return
    t_start = time.perf_counter()
    dim = 64 * 10 + 10  # logreg on digits
    cohort = round(args.q * 1000)
    costs: dict[str, dict[str, float]] = {}
    if args.secagg:
        costs["central"] = secagg_round(None, cohort, dim)
        for b in args.bits:
            costs[str(b)] = secagg_round(b, cohort, dim)
            print(f"secagg {b} bits: {costs[str(b)]}", flush=True)
    rows: list[dict[str, Any]] = []
    name = f"distributed_dp_{args.tag}.json" if args.tag else "distributed_dp.json"

    def save() -> None:  # after every row: a batch cut short keeps what it finished
        result = {
            "task": f"digits, 1000 IID clients, logreg, Poisson q = {args.q}, clip {CLIP}, delta {DELTA}",
            "rounds": args.rounds,
            "q": args.q,
            "repeats": args.repeats,
            "rows": rows,
            "secagg_costs": costs,
            "seconds": time.perf_counter() - t_start,
            "loadavg": os.getloadavg(),
        }
        (out / name).write_text(json.dumps(result, indent=2) + "\n")

    for eps in args.epsilons:
        configs: list[tuple[str, int | None, dict[str, Any]]] = []
        if "central" in args.noises:
            configs.append(("central", None, {"target_epsilon": eps, "delta": DELTA, "clip_norm": CLIP}))
        if "central*" in args.noises:  # central noise at the distributed plan's Gaussian-equivalent multiplier
            z = ddp_noise_multiplier(eps, args)
            configs.append(("central*", None, {"noise_multiplier": z, "delta": DELTA, "clip_norm": CLIP}))
        for mech in (m for m in MECHANISMS if m in args.noises):
            for b in args.bits:
                dp = dict(target_epsilon=eps, delta=DELTA, clip_norm=CLIP, noise="distributed", mechanism=mech, bits=b)
                configs.append((mech, b, dp))
        for label, bits, dp in configs:
            row = run_config(eps, label, bits, dp, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
            save()
    save()


def merge(paths: list[Path], out: Path) -> None:
    """One table from batch files: intervals per row and, paired by seed, the difference from central DP."""
    rows: list[dict[str, Any]] = []
    costs: dict[str, dict[str, float]] = {}
    meta: list[dict[str, Any]] = []
    for p in paths:
        d = json.loads(p.read_text())
        for r in d["rows"]:  # a configuration run in several batches (more seeds) becomes one row
            same = next(
                (x for x in rows if (x["epsilon"], x["noise"], x["bits"]) == (r["epsilon"], r["noise"], r["bits"])),
                None,
            )
            if same is None:
                rows.append(r)
            else:
                for key in ("seeds", "accuracies", "accuracies_last5"):
                    same[key] = same[key] + r[key]
                same["accuracy"] = statistics.median(same["accuracies"]) if same["accuracies"] else None
                same["accuracy_last5"] = (
                    statistics.median(same["accuracies_last5"]) if same["accuracies_last5"] else None
                )
        costs.update(d.get("secagg_costs", {}))
        meta.append({"file": p.name, "seconds": d.get("seconds"), "loadavg": d.get("loadavg")})
    for r in rows:
        cost = costs.get("central" if r["bits"] is None else str(r["bits"]), {})
        r["upload_bytes"], r["secagg_round_seconds"] = cost.get("upload_bytes"), cost.get("round_seconds")
        for key in ("accuracies", "accuracies_last5"):
            xs = r.get(key) or []
            r[f"{key}_mean_ci95"] = list(interval(xs)) if xs else None
        central = next((c for c in rows if c["epsilon"] == r["epsilon"] and c["noise"] == "central"), None)
        if central is not None and r is not central and r.get("accuracies_last5"):
            pairs = dict(zip(central["seeds"], central["accuracies_last5"], strict=True))
            diffs = [100 * (a - pairs[s]) for s, a in zip(r["seeds"], r["accuracies_last5"], strict=True) if s in pairs]
            r["diff_last5_points_ci95"] = list(interval(diffs)) if diffs else None
    result = {"batches": meta, "rows": rows, "secagg_costs": costs}
    (out / "distributed_dp.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, out / "distributed_dp.png")
    table(rows)


TARGETS = {16: 1.0, 12: 2.0}  # the issue: within 1 point of central DP at 16 bits, 2 points at 12 bits


def verdict(r: dict[str, Any]) -> str:
    """met / missed / unresolved: the 95% interval of the paired difference against the target's tolerance."""
    tol = TARGETS.get(r["bits"]) if r["noise"] in MECHANISMS else None
    ci = r.get("diff_last5_points_ci95")
    if tol is None or not ci:
        return ""
    if ci[1] >= -tol:
        return "met"
    if ci[2] < -tol:
        return "missed"
    return "unresolved"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epsilons = sorted({r["epsilon"] for r in rows})
    fig, axes = plt.subplots(1, len(epsilons), figsize=(5 * len(epsilons), 3.6), sharey=True)
    for ax, eps in zip(np.atleast_1d(axes), epsilons, strict=True):
        for r in rows:
            if r["epsilon"] == eps and r["noise"] == "central" and r.get("accuracies_last5_mean_ci95"):
                m, lo, hi = r["accuracies_last5_mean_ci95"]
                ax.axhline(m, color="k", ls="--", label="central DP")
                ax.axhspan(lo, hi, color="k", alpha=0.1)
        for k, (mech, marker) in enumerate(zip(MECHANISMS, "os", strict=True)):
            pts = [
                (r["bits"] + 0.15 * (2 * k - 1), *r["accuracies_last5_mean_ci95"])
                for r in rows
                if r["epsilon"] == eps and r["noise"] == mech and r.get("accuracies_last5_mean_ci95")
            ]
            if pts:
                x, m, lo, hi = (np.asarray(v) for v in zip(*pts, strict=True))
                ax.errorbar(x, m, yerr=[m - lo, hi - m], marker=marker, capsize=3, label=mech)
        ax.set_title(f"epsilon = {eps:g}")
        ax.set_xlabel("bits per coordinate")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("test accuracy (mean of last 5 rounds, 95% CI)")
    np.atleast_1d(axes)[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(rows: list[dict[str, Any]]) -> None:
    def f(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    def ci(v: list[float] | None, scale: float, fmt: str) -> str:
        return f"{v[0] * scale:{fmt}} [{v[1] * scale:{fmt}}, {v[2] * scale:{fmt}}]" if v else "-"

    print(
        f"{'eps':>4} {'noise':>8} {'bits':>4} {'n':>2} {'acc (last 5) [95% CI]':>24} "
        f"{'vs central, points [95% CI]':>28} "
        f"{'target':>10} {'std/mean':>9} {'infl':>6} {'eps spent':>9} {'upload B':>9} {'round s':>8}"
    )

    def order(r: dict[str, Any]) -> tuple[float, bool, str, int]:
        return (r["epsilon"], r["noise"] not in ("central", "central*"), r["noise"], r["bits"] or 0)

    for r in sorted(rows, key=order):
        print(
            f"{r['epsilon']:>4g} {r['noise']:>8} {f(r['bits'], 'd'):>4} {len(r.get('accuracies') or []):>2} "
            f"{ci(r.get('accuracies_last5_mean_ci95'), 1, '.3f'):>24} "
            f"{ci(r.get('diff_last5_points_ci95'), 1, '+.1f'):>28} "
            f"{verdict(r):>10} {f(r['noise_std_on_mean'], '.4f'):>9} {f(r['noise_inflation'], '.3f'):>6} "
            f"{f(r['epsilon_spent'], '.3f'):>9} {f(r.get('upload_bytes'), '.0f'):>9} "
            f"{f(r.get('secagg_round_seconds'), '.2f'):>8}" + (f"  REFUSED: {r['error'][:80]}" if r["error"] else "")
        )


if __name__ == "__main__":
    main()
