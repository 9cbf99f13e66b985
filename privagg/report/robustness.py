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
from attacks.robustness import (
    HONEST_ONLY,
    NO_ATTACK,
    CellResult,
    RobustnessConfig,
    TuningResult,
    attack_label,
    backdoor_success,
    defense_info,
    honest_only_ceiling,
    worst_case,
)
from privagg.report import Figure, Report, Section, environment_section, provenance
from protocols.robust import max_byzantine

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
        "schedules": cfg.schedules,
        "knowledge": cfg.knowledge,
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
    "schedule",
    "knowledge",
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

        fig, ax = plt.subplots(figsize=(3.0 + 0.62 * len(cols), 1.2 + 0.38 * len(rows)))  # room for row labels
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


def _row_labels(results: Sequence[CellResult], defenses: list[str]) -> list[str]:
    """The attack rows of the heatmaps: the clean baseline, then every attack variant in run order."""
    seen = dict.fromkeys(attack_label(r) for r in results if r.attack != HONEST_ONLY and r.defense in defenses)
    return [NO_ATTACK, *(a for a in seen if a != NO_ATTACK)]


def _opts(cfg: RobustnessConfig, d: str) -> str:
    opts = cfg.defense_options.get(d, {})
    return ", ".join(f"{k}={v}" for k, v in opts.items()) or "-"


def matrix_report(
    cfg: RobustnessConfig,
    results: Sequence[CellResult],
    *,
    seconds: float | None = None,
    tuning: TuningResult | None = None,
) -> Report:
    """The sweep as a report: per defense its clean and worst-case accuracy, backdoor success per
    schedule, the secure-aggregation column; heatmaps, the tuning trials and every run."""
    defenses = list(cfg.defenses)
    report = Report(
        "privagg robustness: poisoning attacks x robust aggregation",
        top={
            "config": _config_data(cfg),
            "seeds": {
                "run_seed": cfg.run.seed,
                "validation_seed": None if tuning is None else tuning.validation_seed,
                "streams": "simulation_rng(seed, ...) per client, attack and round",
            },
            "seconds": seconds,
        },
    )
    by = {(attack_label(r), r.defense, r.malicious_fraction, r.alpha): r for r in results}
    wc = worst_case(results)
    bd = backdoor_success(results)
    ceiling = honest_only_ceiling(results)
    rows_all = _row_labels(results, defenses)
    backdoor_rows = [
        a for a in rows_all if a != NO_ATTACK and getattr(ATTACKS.get(a.split(" (")[0]), "is_backdoor", False)
    ]
    figures: list[Figure] = []
    tables: list[tuple[str, list[str], list[list[Any]]]] = []
    summary_rows: list[dict[str, Any]] = []
    for alpha in cfg.alphas:
        for frac in cfg.malicious:
            tag = f"m{frac:g}_a{alpha:g}".replace(".", "p")

            def cell(a: str, d: str, key: str, frac: float = frac, alpha: float = alpha) -> float:
                r = by.get((a, d, cfg.malicious[0] if a == NO_ATTACK else frac, alpha))
                if r is None or r.status != "ok":
                    return math.nan
                v = getattr(r, key)
                return math.nan if v is None else float(v)

            where = f"{frac:.0%} malicious, alpha={alpha:g}"
            acc = np.array([[cell(a, d, "accuracy") for d in defenses] for a in rows_all])
            figures.append(
                Figure(
                    f"accuracy_{tag}.png",
                    f"Main-task accuracy, {where}",
                    _heatmap(acc, rows_all, defenses, f"Main-task accuracy ({where})", "test accuracy", cmap="viridis"),
                )
            )
            if backdoor_rows:
                asr_rows = [NO_ATTACK, *backdoor_rows]
                asr = np.array([[cell(a, d, "attack_success_rate") for d in defenses] for a in asr_rows])
                figures.append(
                    Figure(
                        f"backdoor_asr_{tag}.png",
                        f"Backdoor attack success rate, {where}",
                        _heatmap(
                            asr, asr_rows, defenses, f"Backdoor success ({where})", "attack success rate", cmap="magma"
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
            rows: list[list[Any]] = []
            for i, d in enumerate(defenses):
                every = bd.get((d, frac, alpha, "every-round"), (math.nan, "-"))
                single = bd.get((d, frac, alpha, "single-shot"), (math.nan, "-"))
                info = defense_info(d)
                rows.append(
                    [d, clean[i], worst[i][0], worst[i][1], every[0], single[0], info["sum_only"], _opts(cfg, d)]
                )
                summary_rows.append(
                    {
                        "defense": d,
                        "malicious_fraction": frac,
                        "alpha": alpha,
                        "clean_accuracy": clean[i],
                        "worst_accuracy": worst[i][0],
                        "worst_attack": worst[i][1],
                        "backdoor_every_round": every[0],
                        "backdoor_every_round_attack": every[1],
                        "backdoor_single_shot": single[0],
                        "backdoor_single_shot_attack": single[1],
                        "sum_only": info["sum_only"],
                        "options": dict(cfg.defense_options.get(d, {})),
                    }
                )
            top = ceiling.get((frac, alpha), math.nan)
            tables.append(
                (
                    f"Per defense ({where}; honest-only ceiling {top:.3f})",
                    [
                        "defense",
                        "clean",
                        "worst",
                        "worst attack",
                        "backdoor every round",
                        "backdoor single shot",
                        "server sees only sums",
                        "options",
                    ],
                    rows,
                )
            )
    tables.append(
        (
            "All runs",
            ["attack", "defense", "malicious", "alpha", "status", "accuracy", "clean", "ASR", "seconds"],
            [
                [
                    attack_label(r),
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
                "Worst = lowest accuracy over every attack and variant (single shot = the last round only; "
                "omniscient = the attackers read every honest update; model replacement then also knows the defense "
                "and keeps to the honest median norm against a robust rule). Backdoor success = share of triggered "
                "test images of other classes classified as the target label, the highest over the backdoors, per "
                "schedule (the 'none' row gives the trigger's rate on a clean model). The honest-only ceiling is "
                "FedAvg on the honest clients alone: no defense that discards the attackers' updates can expect "
                "more, since their data leaves with them. Refused cells (shown '-') ask a defense to tolerate more "
                "Byzantine clients than its bound."
            ),
            data={
                "cells": [{**r.row(), "details": r.details} for r in results],
                "per_defense": summary_rows,
                "honest_only_ceiling": [
                    {"malicious_fraction": m, "alpha": a, "accuracy": v} for (m, a), v in ceiling.items()
                ],
                "worst_case": [
                    {"defense": d, "malicious_fraction": m, "alpha": a, "accuracy": v[0], "attack": v[1]}
                    for (d, m, a), v in wc.items()
                ],
            },
            summary=[
                ("task", task),
                ("training regime", cfg.regime),
                ("threat model", threat.describe().replace(f"{cfg.malicious[0]:.0%} of clients", "fraction per run")),
                ("attackers' knowledge", ", ".join(cfg.knowledge)),
                ("schedules", ", ".join(cfg.schedules) + " (single shot: backdoors, last round)"),
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
    if tuning is not None:
        report.add(
            Section(
                key="tuning",
                title="Hyperparameters chosen by worst-case accuracy",
                text=(
                    f"Every candidate ran against the clean baseline and every attack on the validation seed "
                    f"{tuning.validation_seed} (not a reported seed); the highest worst-case accuracy was kept; "
                    f"worst cases within {100 * tuning.tolerance:g} point(s) of it count as ties, broken by the "
                    "higher clean accuracy."
                ),
                data={"validation_seed": tuning.validation_seed, "chosen": tuning.chosen, "trials": tuning.rows()},
                tables=[
                    (
                        "Trials",
                        ["defense", "options", "clean", "worst", "worst attack", "chosen"],
                        [
                            [
                                t["defense"],
                                t["options"],
                                t["clean_accuracy"],
                                t["worst_accuracy"],
                                t["worst_attack"],
                                "yes" if t["chosen"] else "",
                            ]
                            for t in tuning.rows()
                        ],
                    )
                ],
            )
        )
    infos = [defense_info(d) for d in defenses]
    report.add(
        Section(
            key="defenses",
            title="Defenses when the server sees only sums",
            text=(
                "global sum: one secure sum of every update suffices. bucket sums: secure aggregation within "
                "each bucket, the rest of the stack on the bucket means. no: needs every update in plaintext."
            ),
            data={"defenses": infos},
            tables=[
                (
                    "Secure-aggregation column",
                    ["defense", "server sees only sums", f"max f (n={cfg.run.data.num_clients})", "what it assumes"],
                    [
                        [i["defense"], i["sum_only"], max_byzantine(i["defense"], cfg.run.data.num_clients), i["note"]]
                        for i in infos
                    ],
                )
            ],
        )
    )
    return report


def write_matrix(
    cfg: RobustnessConfig,
    results: Sequence[CellResult],
    out: str | Path,
    *,
    seconds: float | None = None,
    tuning: TuningResult | None = None,
    command: str | None = None,
    started: str | None = None,
) -> Report:
    """Write the sweep's report (``report.json``, ``report.html``, figures) and ``robustness.csv`` into ``out``.

    The report opens with its provenance (``command``, seed, UTC timestamp ``started``, versions)
    and ends with the environment.
    """
    report = matrix_report(cfg, results, seconds=seconds, tuning=tuning)
    provenance(report, command=command, seed=cfg.run.seed, timestamp=started)
    report.add(environment_section())
    path = report.write(Path(out))
    write_csv(results, path / "robustness.csv")
    return report
