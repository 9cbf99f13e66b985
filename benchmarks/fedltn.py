"""FedLTN against FedAvg, FedAvg + local fine-tuning and LotteryFL under pathological non-IID data.

Setting: 10 clients, ``shards`` partition with 2 shards per client (McMahan's pathological
split; each client's pooled part split 75/25 into its own train/test), the registry's ``cnn``
(no batch-norm: nothing stays local), 2 local epochs of SGD (lr 0.05, momentum 0.9, batch 16),
all clients every round. FedLTN: target weight sparsity 0.9, prune rate 0.2 per pruning round,
accuracy threshold 0.6 (on the client's train split), server momentum 0.5. FedAvg + FT: the
final global model fine-tuned one local epoch on each client.

Issue 19's targets, per dataset, on the mean over seeds (each seed's numbers are printed too):
personalized accuracy >= FedAvg + 10 points and >= FedAvg+FT + 10 points; worst client
>= FedAvg's worst + 10 points; per-client model (nonzero parameters) >= 8x smaller; upload
>= 4x lower than FedAvg at equal accuracy (bytes FedAvg uploads until its final mean accuracy
against bytes FedLTN uploads until it first reaches that accuracy). Total upload over the same
number of rounds is reported beside it.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/fedltn.py [--seeds 0,1] [--datasets digits,mnist-5k]
[--out benchmarks/results]``; writes ``fedltn.json``. The first seed on digits also runs FedLTN with
its per-coordinate averaging through SecAgg+ (``[mask * delta, mask]`` summed, semi-honest) and
reports that upload against the sparse encoding's.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from protocols.fedavg import DataConfig, ModelConfig, RunConfig
from protocols.personalization import PersonalizationOptions, PersonalizationResult, client_splits, run_fedltn

ROUNDS = {"digits": 20, "mnist-5k": 12}
ALGOS = {"digits": ("fedavg", "fedltn", "lotteryfl"), "mnist-5k": ("fedavg", "fedltn")}


def _summary(r: PersonalizationResult) -> dict[str, Any]:
    return {
        "mean_accuracy": r.mean_accuracy,
        "worst_accuracy": r.worst_accuracy,
        "client_accuracies": [float(a) for a in r.client_accuracies],
        "mean_nonzeros": float(r.nonzeros.mean()),
        "num_params": r.num_params,
        "upload_per_round_bytes": [int(x.upload_bytes.sum()) for x in r.rounds],
        "total_upload_bytes": r.total_upload_bytes,
        "curve": [x.mean_accuracy for x in r.rounds],
        "fine_tuned_mean": None if r.fine_tuned_accuracies is None else float(r.fine_tuned_accuracies.mean()),
        "fine_tuned_worst": None if r.fine_tuned_accuracies is None else float(r.fine_tuned_accuracies.min()),
    }


def run_seed(dataset: str, seed: int, *, secure: bool = False) -> dict[str, Any]:
    rc = RunConfig(
        seed=seed,
        data=DataConfig(dataset=dataset, num_clients=10, partition="shards", shards_per_client=2),
        model=ModelConfig(name="cnn"),
    )
    clients = client_splits(rc)
    out: dict[str, Any] = {}
    results: dict[str, PersonalizationResult] = {}
    for name in ALGOS[dataset]:
        t0 = time.perf_counter()
        results[name] = run_fedltn(rc, PersonalizationOptions(name=name, rounds=ROUNDS[dataset]), clients=clients)
        out[name] = _summary(results[name]) | {"seconds": time.perf_counter() - t0}
    if secure:
        t0 = time.perf_counter()
        sec = run_fedltn(
            rc, PersonalizationOptions(name="fedltn", rounds=ROUNDS[dataset], secure_aggregation=True), clients=clients
        )
        plain = sum(int(x.plain_upload_bytes.sum()) for x in sec.rounds if x.plain_upload_bytes is not None)
        out["fedltn_secagg"] = _summary(sec) | {
            "seconds": time.perf_counter() - t0,
            "sparse_encoding_total_bytes": plain,
            "secagg_over_sparse": sec.total_upload_bytes / plain,
        }
    avg, ltn = results["fedavg"], results["fedltn"]
    need_avg = avg.upload_to_reach(avg.mean_accuracy)
    need_ltn = ltn.upload_to_reach(avg.mean_accuracy)
    assert avg.fine_tuned_accuracies is not None
    out["targets"] = {
        "acc_gain_vs_fedavg": ltn.mean_accuracy - avg.mean_accuracy,
        "acc_gain_vs_fedavg_ft": ltn.mean_accuracy - float(avg.fine_tuned_accuracies.mean()),
        "worst_gain_vs_fedavg": ltn.worst_accuracy - avg.worst_accuracy,
        "worst_gain_vs_fedavg_ft": ltn.worst_accuracy - float(avg.fine_tuned_accuracies.min()),
        "model_size_ratio": ltn.num_params / float(ltn.nonzeros.mean()),
        "upload_ratio_equal_accuracy": None if need_ltn is None or need_avg is None else need_avg / need_ltn,
        "upload_ratio_equal_rounds": avg.total_upload_bytes / ltn.total_upload_bytes,
    }
    return out


CHECKS = [
    ("personalized accuracy >= FedAvg + 10 pts", "acc_gain_vs_fedavg", 0.10),
    ("personalized accuracy >= FedAvg+FT + 10 pts", "acc_gain_vs_fedavg_ft", 0.10),
    ("worst client >= FedAvg worst + 10 pts", "worst_gain_vs_fedavg", 0.10),
    ("per-client model >= 8x smaller", "model_size_ratio", 8.0),
    ("upload >= 4x lower at equal accuracy", "upload_ratio_equal_accuracy", 4.0),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--datasets", default="digits,mnist-5k")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    report: dict[str, Any] = {"load_before": os.getloadavg()[0], "datasets": {}}
    for ds in args.datasets.split(","):
        per_seed = {seed: run_seed(ds, seed, secure=ds == "digits" and seed == seeds[0]) for seed in seeds}
        report["datasets"][ds] = per_seed
        print(f"\n== {ds}: CNN, 10 clients, shards x2, {ROUNDS[ds]} rounds, seeds {seeds}")
        for seed, res in per_seed.items():
            line = []
            for name in ALGOS[ds]:
                s = res[name]
                line.append(f"{name} mean {s['mean_accuracy']:.3f} worst {s['worst_accuracy']:.3f}")
            ft = res["fedavg"]
            line.append(f"fedavg+ft mean {ft['fine_tuned_mean']:.3f} worst {ft['fine_tuned_worst']:.3f}")
            print(f"  seed {seed}: " + " | ".join(line))
            print(
                f"    nonzeros fedltn {res['fedltn']['mean_nonzeros']:.0f}/{res['fedltn']['num_params']}; "
                f"upload total fedavg {res['fedavg']['total_upload_bytes']} B, fedltn "
                f"{res['fedltn']['total_upload_bytes']} B; per round fedltn "
                f"{res['fedltn']['upload_per_round_bytes']}"
            )
        sec = per_seed[seeds[0]].get("fedltn_secagg")
        if sec is not None:
            print(
                f"  fedltn + SecAgg+ (seed {seeds[0]}, semi-honest, 20-bit values): mean {sec['mean_accuracy']:.3f} "
                f"worst {sec['worst_accuracy']:.3f}; upload total {sec['total_upload_bytes']} B vs the sparse "
                f"encoding's {sec['sparse_encoding_total_bytes']} B ({sec['secagg_over_sparse']:.2f}x), "
                f"vs FedAvg dense {per_seed[seeds[0]]['fedavg']['total_upload_bytes']} B; {sec['seconds']:.0f} s"
            )
        for label, key, bound in CHECKS:
            vals = [res["targets"][key] for res in per_seed.values()]
            if any(v is None for v in vals):
                print(f"  MISSED {label}: never reached (per seed {vals})")
                continue
            mean = float(np.mean(vals))
            verdict = "MET   " if mean >= bound else "MISSED"
            print(f"  {verdict} {label}: mean {mean:.3f} (per seed {', '.join(f'{v:.3f}' for v in vals)})")
        worst_ft = [res["targets"]["worst_gain_vs_fedavg_ft"] for res in per_seed.values()]
        print(f"  (worst client against FedAvg+FT's worst: {', '.join(f'{v:+.3f}' for v in worst_ft)})")
        ratios = [res["targets"]["upload_ratio_equal_rounds"] for res in per_seed.values()]
        print(f"  (total upload over the same rounds, FedAvg / FedLTN: {', '.join(f'{v:.2f}' for v in ratios)})")
    report["seconds"] = time.perf_counter() - t0
    report["load_after"] = os.getloadavg()[0]
    print(f"\nwall {report['seconds']:.0f} s, load average {report['load_before']:.2f} -> {report['load_after']:.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fedltn.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
