"""Split learning: label leakage and input reconstruction against defenses, and split learning against FedAvg.

Three measurements (real training, seeded; intervals are 95% Student-t over seeds):

A. **Label leakage on breast-cancer** (binary, 37% minority): vanilla split learning, one
   client, MLP 30-32-16-2 cut before the logit layer (the server holds the labels and the last
   layer), 10 epochs; norm and direction scoring (Li et al., ICLR 2022) against every defense
   of :data:`attacks.split.SPLIT_DEFENSES`; leak AUC of the worst epoch and test accuracy lost.
B. **Decoder inversion on digits**: MLP 64-64-10 cut after the first hidden layer, 10 epochs;
   the server's decoder (trained on the test split as its public data) inverts 200 training
   images; median PSNR and the fraction >= 20 dB, with and without defenses.
C. **Feature-space hijacking on digits**: the same client part trained by a malicious server
   for 3000 steps (batch 64); the client's optimiser is Adam (lr 1e-4, as in the FSHA paper's
   setting) or the SGD-momentum of B; the server's pilot starts from the client's initial
   weights (it shipped them) or from its own draw; with and without NoPeek.
D. **Split learning against FedAvg** on the same IID partition into 5 clients, the same model,
   initialisation and optimiser: FedAvg with the same passes over the data (10 rounds of one
   local epoch) and with 5 times as many rounds; both split topologies.

Usage: ``python benchmarks/split_learning.py [--seeds 0,1,2,3,4] [--out benchmarks/results]``;
writes ``split_learning.json`` and the study reports ``split_learning_{labels,decoder}/``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from attacks.split.study import SplitStudyConfig, interval, run_split_study
from privagg.report.split import split_study_report, study_rows
from protocols.split.simulation import SplitConfig, fedavg_baseline, run_split

LABELS = SplitConfig(dataset="breast-cancer", hidden=(32, 16), cut=5, epochs=10)
DIGITS = SplitConfig(dataset="digits", hidden=(64,), cut=3, epochs=10, lr=0.05, momentum=0.9)


ADAM_CLIENT = replace(DIGITS, optimizer="adam", lr=1e-4, momentum=0.0, batch_size=64)


def _fsha(seeds: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    for client, name in ((ADAM_CLIENT, "adam-1e-4"), (replace(DIGITS, batch_size=64), "sgd-momentum")):
        for pilot in ("shared-init", "independent"):
            if name == "sgd-momentum" and pilot == "independent":
                continue
            defenses = ("none", "nopeek") if name == "adam-1e-4" else ("none",)
            study = SplitStudyConfig(base=client, defenses=defenses, attacks=("fsha",), seeds=seeds, fsha_pilot=pilot)
            result = run_split_study(study)
            cells = [c.__dict__ for c in result.cells]
            rows.append({"client": name, "pilot": pilot, "rows": study_rows(result), "cells": cells})
    return rows


def _versus_fedavg(seeds: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    for base in (LABELS, DIGITS):
        fed = [fedavg_baseline(replace(base, topology="splitfed", num_clients=5, seed=s)) for s in seeds]
        fed5 = [
            fedavg_baseline(replace(base, topology="splitfed", num_clients=5, seed=s), rounds=5 * base.epochs)
            for s in seeds
        ]
        for topology in ("sequential", "splitfed"):
            runs = [run_split(replace(base, topology=topology, num_clients=5, seed=s)) for s in seeds]
            rows.append(
                {
                    "dataset": base.dataset,
                    "topology": topology,
                    "split_accuracy": [r.accuracy for r in runs],
                    "split_interval": interval([r.accuracy for r in runs]),
                    "fedavg_accuracy": fed,
                    "fedavg_interval": interval(fed),
                    "fedavg_5x_rounds_accuracy": fed5,
                    "fedavg_5x_rounds_interval": interval(fed5),
                    "bytes_per_step": runs[0].bytes.per_step,
                    "cut_bytes_total": runs[0].bytes.upload + runs[0].bytes.download,
                    "client_part_sync_bytes": runs[0].bytes.model_sync,
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    labels = run_split_study(SplitStudyConfig(base=LABELS, attacks=("norm", "direction"), seeds=seeds))
    split_study_report(labels, command="python benchmarks/split_learning.py").write(out / "split_learning_labels")
    decoder = run_split_study(
        SplitStudyConfig(base=DIGITS, defenses=("none", "nopeek"), attacks=("decoder",), seeds=seeds[:3])
    )
    split_study_report(decoder, command="python benchmarks/split_learning.py").write(out / "split_learning_decoder")
    fsha = _fsha(seeds[:3])
    versus = _versus_fedavg(seeds[:3])
    record = {
        "labels": {"rows": study_rows(labels), "cells": [c.__dict__ for c in labels.cells]},
        "decoder": {"rows": study_rows(decoder), "cells": [c.__dict__ for c in decoder.cells]},
        "fsha": fsha,
        "split_vs_fedavg": versus,
        "bytes_per_step": {"labels": labels.bytes_per_step, "decoder": decoder.bytes_per_step},
        "seconds": time.perf_counter() - t0,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    (out / "split_learning.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    for name, header in (("labels", labels), ("decoder", decoder)):
        print(name)
        for row in study_rows(header):
            print("  ", row)
    for f in fsha:
        print("fsha", f["client"], f["pilot"])
        for row in f["rows"]:
            print("  ", row)
    for row in versus:
        print(
            row["dataset"],
            row["topology"],
            "split",
            row["split_interval"],
            "fedavg",
            row["fedavg_interval"],
            "fedavg 5x",
            row["fedavg_5x_rounds_interval"],
        )


if __name__ == "__main__":
    main()
