"""Distributed DP inside secure aggregation vs central DP: accuracy against bits per coordinate.

Task (the README's DP example): sklearn digits re-partitioned IID into 1,000 clients, logreg,
Poisson sampling q (default 0.2, secret cohorts), clip C = 0.5, delta = 1e-5, one local epoch.
For epsilon in {2, 8}:

* **central DP**: DP-FedAvg with the server adding the Gaussian noise (secure discrete Gaussian on
  a fine grid; tight subsampled-Gaussian RDP of Opacus);
* ``central*``: the same central noise at the Gaussian-equivalent noise multiplier the
  distributed accounting needs (its epsilon by the tight Gaussian accounting is then below target):
  it isolates what the general subsampling bound costs from what the bits cost;
* **dgauss / skellam** at bits in {12, 14, 16, 18, 20}: ``[dp] noise = "distributed"``: each client
  clips, rotates, scales, rounds conditionally, adds its integer share (secure source), reduces mod
  2^b; the server sums mod 2^b, unscales and rotates back; accounted by each mechanism's own RDP
  bound with Zhu-Wang's general Poisson-subsampling bound; parameters chosen automatically.

The accuracy runs take the sum mod 2^b in-process (``MeanAggregator.modular_sum``, the same ring
arithmetic SecAgg+ computes; ``tests/protocols/test_distributed_dp.py`` checks the secure sum is
bit-identical), so every cohort member survives (the protocol releases only complete sums: noise
split into n shares). Upload per client and round time come from one real SecAgg+ round per bits
value (active threat model, derived parameters, the expected cohort of ``qN`` clients) in the same
run: ``upload`` is the bytes one client sent during the whole round (keys, shares, masked vector,
signatures), ``round s`` the driver's wall time for the round. The central row's round is plain
SecAgg+ with its fixed-point encoding (16 value bits, ring sized for the sum), for comparison.

Secure noise is not reproducible by design; the partition and model init are seeded. Accuracies
are medians over ``--repeats`` runs. Writes ``distributed_dp.json`` and ``distributed_dp.png``.

Usage: ``python benchmarks/distributed_dp.py [--rounds 40] [--repeats 1] [--out benchmarks/results]``.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--q", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--no-secagg", action="store_true", help="skip the SecAgg+ cost rounds")
    ap.add_argument("--bits", type=int, nargs="+", default=list(BITS), help="bits per coordinate to run")
    ap.add_argument("--resume", help="a previous run's log: its finished rows (JSON lines) are kept, not rerun")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    dim = 64 * 10 + 10  # logreg on digits
    cohort = round(args.q * 1000)
    costs: dict[str, dict[str, float]] = {}
    if not args.no_secagg:
        costs["central"] = secagg_round(None, cohort, dim)
        for b in args.bits:
            costs[str(b)] = secagg_round(b, cohort, dim)
            print(f"secagg {b} bits: {costs[str(b)]}", flush=True)
    rows: list[dict[str, Any]] = []
    done: dict[tuple[float, str, int | None], dict[str, Any]] = {}
    if args.resume:
        for line in Path(args.resume).read_text().splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                done[(r["epsilon"], r["noise"], r["bits"])] = r
    for eps in EPSILONS:
        configs: list[tuple[str, int | None, dict[str, Any]]] = [
            ("central", None, {"target_epsilon": eps, "delta": DELTA, "clip_norm": CLIP}),
            # central Gaussian noise at the noise multiplier the distributed accounting needs (20 bits):
            # separates the cost of the accounting (general subsampling bound) from that of the bits
            (
                "central*",
                None,
                {"noise_multiplier": ddp_noise_multiplier(eps, args), "delta": DELTA, "clip_norm": CLIP},
            ),
        ]
        for mech in MECHANISMS:
            for b in args.bits:
                dp = {
                    "target_epsilon": eps,
                    "delta": DELTA,
                    "clip_norm": CLIP,
                    "noise": "distributed",
                    "mechanism": mech,
                    "bits": b,
                }
                configs.append((mech, b, dp))
        for name, bits, dp in configs:
            if (eps, name, bits) in done:
                rows.append(done[(eps, name, bits)])
                print(json.dumps(done[(eps, name, bits)]), flush=True)
                continue
            accs: list[float] = []
            last5s: list[float] = []
            secs: list[float] = []
            m: dict[str, Any] = {}
            for s in range(args.repeats):
                try:
                    acc, last5, m, sec = train(base(args.rounds, args.q, s), dp, args.rounds)
                except Exception as e:  # a refused configuration is a result, reported as such
                    m = {"error": f"{type(e).__name__}: {e}"}
                    break
                accs.append(acc)
                last5s.append(last5)
                secs.append(sec)
            cost = costs.get("central" if bits is None else str(bits), {})
            row = {
                "epsilon": eps,
                "noise": name,
                "bits": bits,
                "accuracy": statistics.median(accs) if accs else None,
                "accuracies": accs,
                "accuracy_last5": statistics.median(last5s) if last5s else None,
                "epsilon_spent": m.get("dp_epsilon_rdp"),
                "noise_std_on_mean": m.get("dp_noise_std_on_mean"),
                "noise_inflation": m.get("dp_noise_inflation"),
                "ring_overflow_bound": m.get("dp_ring_overflow_bound"),
                "scale": m.get("dp_scale"),
                "upload_bytes": cost.get("upload_bytes"),
                "secagg_round_seconds": cost.get("round_seconds"),
                "train_seconds": statistics.median(secs) if secs else None,
                "error": m.get("error"),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "task": "digits, 1000 IID clients, logreg, Poisson q, clip 0.5, delta 1e-5",
        "rounds": args.rounds,
        "q": args.q,
        "repeats": args.repeats,
        "rows": rows,
        "secagg_costs": costs,
        "seconds": time.perf_counter() - t_start,
        "loadavg": os.getloadavg(),
    }
    (out / "distributed_dp.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, out / "distributed_dp.png")
    table(rows)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(EPSILONS), figsize=(5 * len(EPSILONS), 3.6), sharey=True)
    for ax, eps in zip(np.atleast_1d(axes), EPSILONS, strict=True):
        for name, style in (("central", "--"), ("central*", ":")):
            central = [r["accuracy"] for r in rows if r["epsilon"] == eps and r["noise"] == name]
            if central and central[0] is not None:
                ax.axhline(central[0], color="k", ls=style, label=f"{name} DP")
        for mech, marker in zip(MECHANISMS, "os", strict=True):
            pts = [
                (r["bits"], r["accuracy"])
                for r in rows
                if r["epsilon"] == eps and r["noise"] == mech and r["accuracy"] is not None
            ]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker=marker, label=mech)
        ax.set_title(f"epsilon = {eps:g}")
        ax.set_xlabel("bits per coordinate")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("test accuracy")
    np.atleast_1d(axes)[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(rows: list[dict[str, Any]]) -> None:
    def f(v: Any, fmt: str) -> str:
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    print(
        f"{'eps':>4} {'noise':>8} {'bits':>4} {'acc':>6} {'vs c.':>6} {'last5':>6} {'vs c.':>6} {'std/mean':>9} "
        f"{'infl':>6} {'upload B':>9} {'round s':>8}"
    )
    for eps in EPSILONS:
        central = next((r for r in rows if r["epsilon"] == eps and r["noise"] == "central"), None)
        for r in (r for r in rows if r["epsilon"] == eps):
            d1 = d2 = None
            if central and r["accuracy"] is not None and central["accuracy"] is not None:
                d1 = (r["accuracy"] - central["accuracy"]) * 100
                d2 = (r["accuracy_last5"] - central["accuracy_last5"]) * 100
            print(
                f"{eps:>4g} {r['noise']:>8} {f(r['bits'], 'd'):>4} {f(r['accuracy'], '.3f'):>6} {f(d1, '+.1f'):>6} "
                f"{f(r['accuracy_last5'], '.3f'):>6} {f(d2, '+.1f'):>6} {f(r['noise_std_on_mean'], '.4f'):>9} "
                f"{f(r['noise_inflation'], '.3f'):>6} {f(r['upload_bytes'], '.0f'):>9} "
                f"{f(r['secagg_round_seconds'], '.2f'):>8}" + (f"  REFUSED: {r['error'][:80]}" if r["error"] else "")
            )


if __name__ == "__main__":
    main()
