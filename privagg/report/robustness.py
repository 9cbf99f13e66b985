"""The attack x defense matrix as a report: tables, JSON, CSV, heatmaps and the worst case per defense.

:func:`matrix_report` turns the cells of :func:`attacks.robustness.run_matrix` into a
:class:`~privagg.report.Report` (main-task accuracy and backdoor success heatmaps, worst-case
accuracy over attacks per defense, which defense composes with secure aggregation);
:func:`write_csv` writes the flat table beside it.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from attacks.registry import ATTACKS
from attacks.robustness import NO_ATTACK, CellResult, RobustnessConfig, defense_info, worst_case
from privagg.report import Figure, Report, Section
from protocols.robust import max_byzantine, secure_aggregation_compatible

__all__ = ["matrix_report", "write_csv", "write_matrix"]


def _config_data(cfg: RobustnessConfig) -> dict[str, Any]:
    """The sweep's configuration as the report shows it: the task's settings beside the sweep's axes."""
    run = cfg.run
    return {
        "attacks": cfg.attacks,
        "defenses": cfg.defenses,
        "malicious": cfg.malicious,
        "alphas": cfg.alphas,
        "rounds": run.federation.rounds,
        "num_clients": run.data.num_clients,
        "dataset": run.data.dataset,
        "model": run.model.name,
        "hidden": run.model.hidden,
        "seed": run.seed,
        "omniscient": cfg.omniscient,
        "colluding": cfg.colluding,
        "secure_aggregation": cfg.secure_aggregation,
        "norm_bound": cfg.norm_bound,
        "noise_multiplier": cfg.noise_multiplier,
        "root_size": cfg.root_size,
        "partition": run.data.partition,
        "local_steps": cfg.local_steps,
        "train": asdict(run.train),
        "attack_options": {k: dict(v) for k, v in cfg.attack_options.items()},
        "defense_options": {k: dict(v) for k, v in cfg.defense_options.items()},
    }


_CSV_FIELDS = [
    "attack",
    "defense",
    "malicious_fraction",
    "num_malicious",
    "alpha",
    "seed",
    "status",
    "accuracy",
    "best_accuracy",
    "clean_accuracy",
    "accuracy_drop",
    "attack_success_rate",
    "seconds",
    "omniscient",
    "colluding",
    "secure_aggregation",
]


def write_csv(results: Sequence[CellResult], path: str | Path) -> Path:
    """The flat table of the cells: one row per run, the columns of ``_CSV_FIELDS``."""
    p = Path(path)
    with p.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=_CSV_FIELDS)
        w.writeheader()
        for r in results:
            row = r.row()
            w.writerow({k: row[k] for k in _CSV_FIELDS})
    return p


def _heatmap(
    mat: np.ndarray, rows: list[str], cols: list[str], title: str, cbar: str, *, cmap: str
) -> Callable[[Path], None]:
    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(1.0 + 0.62 * len(cols), 1.2 + 0.38 * len(rows)))
        im = ax.imshow(np.ma.masked_invalid(mat), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, rotation=55, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        for i in range(len(rows)):
            for j in range(len(cols)):
                v = mat[i, j]
                txt = "–" if not np.isfinite(v) else f"{v:.2f}"
                ax.text(
                    j,
                    i,
                    txt,
                    ha="center",
                    va="center",
                    fontsize=6.5,
                    color="k" if not np.isfinite(v) or v >= 0.5 else "w",
                )
        fig.colorbar(im, ax=ax, label=cbar, fraction=0.04)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    return draw


def _worst_case_bars(
    defenses: list[str], worst: list[tuple[float, str]], clean: list[float], frac: float, alpha: float
) -> Callable[[Path], None]:
    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        xs = np.arange(len(defenses))
        fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(defenses), 4))
        ax.bar(xs - 0.2, clean, 0.4, label="no attack", color="tab:green")
        ax.bar(xs + 0.2, [w[0] for w in worst], 0.4, label="worst attack", color="tab:red")
        for x, (v, a) in zip(xs, worst):
            if np.isfinite(v):
                ax.text(x + 0.2, v + 0.01, a, rotation=90, ha="center", va="bottom", fontsize=6.5)
        ax.set_xticks(xs, defenses, rotation=55, ha="right", fontsize=8)
        ax.set_ylim(0, 1.15)
        ax.set_ylabel("test accuracy")
        ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"Worst-case accuracy over attacks ({frac:.0%} malicious, alpha={alpha:g})", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    return draw


def matrix_report(cfg: RobustnessConfig, results: Sequence[CellResult], *, seconds: float | None = None) -> Report:
    """The sweep as a report: a table per cell, heatmaps and per-defense worst case."""
    attacks = [a for a in cfg.attacks]
    defenses = list(cfg.defenses)
    report = Report(
        "privagg robustness: poisoning attacks x robust aggregation",
        top={
            "config": _config_data(cfg),
            "seeds": {"run_seed": cfg.run.seed, "streams": "simulation_rng(seed, ...) per client, attack and round"},
            "seconds": seconds,
        },
    )
    by = {(r.attack, r.defense, r.malicious_fraction, r.alpha): r for r in results}
    wc = worst_case(results)
    figures: list[Figure] = []
    tables: list[tuple[str, list[str], list[list[Any]]]] = []
    backdoors = [a for a in attacks if a != NO_ATTACK and getattr(ATTACKS.get(a), "is_backdoor", False)]
    for alpha in cfg.alphas:
        for frac in cfg.malicious:
            tag = f"m{frac:g}_a{alpha:g}".replace(".", "p")

            def cell(a: str, d: str, key: str, frac: float = frac, alpha: float = alpha) -> float:
                r = by.get((a, d, cfg.malicious[0] if a == NO_ATTACK else frac, alpha))
                if r is None or r.status != "ok":
                    return math.nan
                v = getattr(r, key)
                return math.nan if v is None else float(v)

            acc = np.array([[cell(a, d, "accuracy") for d in defenses] for a in attacks])
            figures.append(
                Figure(
                    f"accuracy_{tag}.png",
                    f"Main-task accuracy, {frac:.0%} malicious, alpha={alpha:g}",
                    _heatmap(
                        acc,
                        attacks,
                        defenses,
                        f"Main-task accuracy ({frac:.0%} malicious, alpha={alpha:g})",
                        "test accuracy",
                        cmap="viridis",
                    ),
                )
            )
            if backdoors:
                asr = np.array([[cell(a, d, "attack_success_rate") for d in defenses] for a in [NO_ATTACK, *backdoors]])
                figures.append(
                    Figure(
                        f"backdoor_asr_{tag}.png",
                        f"Backdoor attack success rate, {frac:.0%} malicious, alpha={alpha:g}",
                        _heatmap(
                            asr,
                            [NO_ATTACK, *backdoors],
                            defenses,
                            f"Backdoor success ({frac:.0%} malicious, alpha={alpha:g})",
                            "attack success rate",
                            cmap="magma",
                        ),
                    )
                )
            worst = [wc.get((d, frac, alpha), (math.nan, "-")) for d in defenses]
            clean = [cell(NO_ATTACK, d, "accuracy") for d in defenses]

            figures.append(
                Figure(
                    f"worst_case_{tag}.png",
                    f"Worst-case accuracy per defense, {frac:.0%} malicious",
                    _worst_case_bars(defenses, worst, clean, frac, alpha),
                )
            )
            tables.append(
                (
                    f"Worst case per defense ({frac:.0%} malicious, alpha={alpha:g})",
                    ["defense", "clean accuracy", "worst accuracy", "worst attack", "secagg compatible"],
                    [
                        [d, clean[i], worst[i][0], worst[i][1], "yes" if secure_aggregation_compatible(d) else "no"]
                        for i, d in enumerate(defenses)
                    ],
                )
            )
    tables.append(
        (
            "All runs",
            ["attack", "defense", "malicious", "alpha", "status", "accuracy", "clean", "ASR", "seconds"],
            [
                [
                    r.attack,
                    r.defense,
                    r.malicious_fraction,
                    r.alpha,
                    r.status,
                    r.accuracy,
                    r.clean_accuracy,
                    "-" if r.attack_success_rate is None else r.attack_success_rate,
                    r.seconds,
                ]
                for r in results
            ],
        )
    )
    threat = cfg.adversary(cfg.malicious[0])
    run = cfg.run
    task = f"{run.data.dataset}, {run.data.num_clients} clients, {run.model.name}, {run.federation.rounds} rounds"
    report.add(
        Section(
            key="robustness",
            title="Poisoning attacks x robust aggregation",
            text=(
                "One FedAvg run per cell on the same seeded task; defenses assume f = number of malicious clients. "
                "Backdoor success = share of triggered test images of other classes classified as the target label "
                "(the 'none' row gives the trigger's rate on a clean model). Refused cells (shown '–') ask a defense "
                "to tolerate more Byzantine clients than its bound."
            ),
            data={
                "cells": [{**r.row(), "details": r.details} for r in results],
                "defenses": [defense_info(d) for d in defenses],
                "worst_case": [
                    {"defense": d, "malicious_fraction": m, "alpha": a, "accuracy": v[0], "attack": v[1]}
                    for (d, m, a), v in wc.items()
                ],
            },
            summary=[
                ("task", task),
                ("training regime", cfg.regime),
                ("threat model", threat.describe().replace(f"{cfg.malicious[0]:.0%} of clients", "fraction per run")),
                ("malicious fractions", ", ".join(f"{m:g}" for m in cfg.malicious)),
                ("Dirichlet alpha", ", ".join(f"{a:g}" for a in cfg.alphas)),
                ("secure aggregation", "yes" if cfg.secure_aggregation else "no"),
                ("seed", str(cfg.run.seed)),
                ("cells", str(len(results))),
            ]
            + ([("wall time", f"{seconds:.1f} s")] if seconds is not None else []),
            figures=figures,
            tables=tables,
        )
    )
    report.add(
        Section(
            key="defenses",
            title="Defenses and secure aggregation",
            data={"defenses": [defense_info(d) for d in defenses]},
            tables=[
                (
                    "Which defense composes with secure aggregation",
                    ["defense", "secagg compatible", f"max f (n={cfg.run.data.num_clients})", "note"],
                    [
                        [
                            d,
                            "yes" if secure_aggregation_compatible(d) else "no",
                            max_byzantine(d, cfg.run.data.num_clients),
                            defense_info(d)["note"],
                        ]
                        for d in defenses
                    ],
                )
            ],
        )
    )
    return report


def write_matrix(
    cfg: RobustnessConfig, results: Sequence[CellResult], out: str | Path, *, seconds: float | None = None
) -> Report:
    """Write the sweep's report (``report.json``, ``report.html``, figures) and ``robustness.csv`` into ``out``."""
    report = matrix_report(cfg, results, seconds=seconds)
    path = report.write(Path(out))
    write_csv(results, path / "robustness.csv")
    return report
