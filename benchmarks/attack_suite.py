#!/usr/bin/env python3
"""The default inference-attack suite: every attack family against no defense and the defenses
that should stop it, in one run, with its wall time (target: under 3 minutes on this machine).

Measured (all real training on sklearn's digits, seeded):

* gradient inversion (iDLG, Inverting Gradients, DLG) on one client's FedSGD update (no defense),
  on the 10-client secure aggregate, on the DP-FedAvg release (client-level epsilon = 8), and on
  both; iDLG's PSNR vs victim batch size (1, 2, 4, 8);
* membership inference (LiRA online/offline, loss threshold, shadow models) against an overfit
  FedAvg model, without and with DP-FedAvg;
* property inference (Melis et al.) from one update vs from the secure aggregate;
* the malicious-server protocol attacks against the unprotected / semi-honest / active SecAgg.

``--seeds K`` repeats the inversion-vs-defense measurements over K seeds and reports medians
(not part of the timed default suite).

Usage: ``python benchmarks/attack_suite.py [--out benchmarks/results/attack_suite] [--seeds 5]``.
Writes a privagg report (``report.html``, ``report.json``, figures) into ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any


def _inversion_medians(seeds: int) -> list[list[Any]]:
    from attacks.registry import AttackCase
    from attacks.runner import run_attack

    rows = []
    for name in ("idlg", "inverting-gradients"):
        for defense in ("none", "secagg", "dp", "secagg+dp"):
            vals: dict[str, list[float]] = {}
            for s in range(seeds):
                r = run_attack(name, AttackCase.create(defense=defense, num_clients=10, seed=s))
                for k in (
                    "psnr",
                    "ssim",
                    "label_accuracy",
                    "mean_image_psnr",
                    "random_same_class_psnr",
                    "random_image_psnr",
                ):
                    vals.setdefault(k, []).append(r.metrics[k])
            rows.append(
                [
                    name,
                    defense,
                    *[
                        statistics.median(vals[k])
                        for k in (
                            "psnr",
                            "ssim",
                            "label_accuracy",
                            "mean_image_psnr",
                            "random_same_class_psnr",
                            "random_image_psnr",
                        )
                    ],
                ]
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/attack_suite", help="report directory")
    p.add_argument("--seeds", type=int, default=0, help="also: inversion medians over this many seeds")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)  # DP-FedAvg's seeded (reproducible) simulation noise
    from attacks.runner import DEFAULT_SUITE, run_suite
    from privagg.report import Section, environment_section
    from privagg.report.attacks import attack_report

    t0 = time.perf_counter()
    results = run_suite(DEFAULT_SUITE)
    suite_seconds = time.perf_counter() - t0
    print(f"default attack suite: {len(results)} results in {suite_seconds:.1f} s (target < 180 s)")
    for r in results:
        shown = {k: round(v, 4) for k, v in r.metrics.items() if isinstance(v, float)}
        print(f"  {r.attack:20s} {r.case.defense:10s} {r.seconds:6.1f} s  {shown}")
    report = attack_report(
        results, title="privagg default attack suite", top={"suite_seconds": suite_seconds, "target_seconds": 180}
    )
    if args.seeds:
        t1 = time.perf_counter()
        rows = _inversion_medians(args.seeds)
        header = [
            "attack",
            "defense",
            "PSNR",
            "SSIM",
            "label acc.",
            "mean-image PSNR",
            "same-class PSNR",
            "uniform-noise PSNR",
        ]
        print(f"inversion medians over {args.seeds} seeds ({time.perf_counter() - t1:.1f} s):")
        for row in rows:
            print("  " + "  ".join(f"{c:.3g}" if isinstance(c, float) else str(c) for c in row))
        report.add(
            Section(
                key="inversion-medians",
                title=f"Gradient inversion, medians over {args.seeds} seeds",
                data={"header": header, "rows": rows},
                tables=[("medians", header, rows)],
            )
        )
    report.add(environment_section())
    out = report.write(Path(args.out))
    print(f"report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
