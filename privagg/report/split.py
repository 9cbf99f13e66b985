"""Split learning as report pages: a run (accuracy, bytes per step) and the leak-against-utility study.

:func:`split_run_report` renders one :class:`~protocols.split.SplitRunResult`;
:func:`split_study_report` renders a :class:`~attacks.split.SplitStudyResult`: the attack x
defense table (leak and accuracy lost, mean and 95% Student-t interval over seeds), a
leak-against-utility scatter per attack, reconstructions per defense, split learning against
FedAvg on the same partition, and the bytes per step of each configuration.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from attacks.split.study import SPLIT_ATTACKS, SPLIT_DEFENSES, CellResult, SplitStudyResult, interval
from privagg.report import Figure, Report, Section, environment_section, provenance
from privagg.report.attacks import image_grid_figure
from protocols.split.simulation import SplitRunResult

__all__ = ["split_run_report", "split_study_report", "study_rows"]

STUDY_HEADER = [
    "attack",
    "defense",
    "metric",
    "leak",
    "leak 95% CI",
    "accuracy",
    "accuracy lost (points)",
    "lost 95% CI",
]


def _ci(v: tuple[float, float, float], scale: float = 1.0) -> str:
    return f"[{v[1] * scale:.3g}, {v[2] * scale:.3g}]"


def study_rows(result: SplitStudyResult) -> list[list[Any]]:
    """One row per attack x defense: the leak and the accuracy lost (points), with intervals."""
    rows = []
    for c in result.cells:
        leak, lost, acc = c.leak, c.utility_loss, interval(c.accuracy)
        rows.append(
            [
                c.attack,
                c.defense,
                c.metric,
                round(leak[0], 4),
                _ci(leak),
                round(acc[0], 4),
                round(100 * lost[0], 2),
                _ci(lost, 100.0),
            ]
        )
    return rows


def _scatter(filename: str, attack: str, cells: list[CellResult]) -> Figure:
    points = [(c.defense, c.leak, c.utility_loss) for c in cells]
    metric = cells[0].metric if cells else ""

    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.4, 4.2))
        for name, leak, lost in points:
            ax.errorbar(
                100 * lost[0],
                leak[0],
                xerr=[[100 * (lost[0] - lost[1])], [100 * (lost[2] - lost[0])]],
                yerr=[[leak[0] - leak[1]], [leak[2] - leak[0]]],
                fmt="o",
                capsize=3,
                label=name,
            )
        if metric.endswith("auc"):
            ax.axhline(0.5, color="k", ls="--", lw=1)
        ax.set_xlabel("test accuracy lost (points)")
        ax.set_ylabel(metric)
        ax.set_title(f"{attack}: leak against utility")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    return Figure(filename, f"{attack}: {metric} against accuracy lost, mean and 95% interval over seeds", draw)


def split_study_report(result: SplitStudyResult, *, command: str | None = None, timestamp: str | None = None) -> Report:
    cfg = result.config
    report = Report("Split learning: leak against utility")
    provenance(report, command=command, seed=cfg.seeds[0], timestamp=timestamp)
    config = {
        "base": asdict(cfg.base),
        "defenses": {d: dict(SPLIT_DEFENSES.get(d).changes) for d in cfg.defenses},
        "attacks": {a: SPLIT_ATTACKS.get(a).description for a in cfg.attacks},
        "seeds": list(cfg.seeds),
        "decoder_threshold_db": cfg.decoder_threshold_db,
    }
    report.add(
        Section(
            "configuration",
            "Configuration",
            data=config,
            summary=[
                ("dataset", cfg.base.dataset),
                ("mode", cfg.base.mode),
                ("cut", str(cfg.base.cut)),
                ("seeds", ", ".join(map(str, cfg.seeds))),
            ],
        )
    )
    rows = study_rows(result)
    figures = [_scatter(f"split-{a}.png", a, [c for c in result.cells if c.attack == a]) for a in cfg.attacks]
    text = (
        "Label attacks: leak AUC of the worst epoch (mean per-step AUC; 0.5 is chance). Decoder: median "
        f"per-image PSNR in dB; 'recovered' is the fraction at or above {cfg.decoder_threshold_db:g} dB."
    )
    report.add(
        Section(
            "matrix",
            "Attack x defense",
            data={"rows": rows, "cells": [asdict(c) for c in result.cells]},
            tables=[("leak and utility", STUDY_HEADER, rows)],
            figures=figures,
            text=text,
        )
    )
    if result.examples:
        grid = [("original", next(iter(result.examples.values()))[0])]
        grid += [(d, rec) for d, (_, rec) in result.examples.items()]
        report.add(
            Section(
                "reconstructions",
                "Decoder reconstructions",
                figures=[
                    image_grid_figure(
                        "split-reconstructions.png",
                        "originals and reconstructions from the smashed data, per defense",
                        grid,
                    )
                ],
            )
        )
    comm = [[d, round(b, 1)] for d, b in result.bytes_per_step.items()]
    report.add(
        Section(
            "communication",
            "Bytes per step",
            data=dict(result.bytes_per_step),
            tables=[("encoded cut-layer bytes per training step", ["defense", "bytes/step"], comm)],
        )
    )
    if result.fedavg_accuracy:
        sl, fa = interval(result.accuracy.get("none", [])), interval(result.fedavg_accuracy)
        report.add(
            Section(
                "fedavg",
                "Split learning against FedAvg",
                data={"split": sl, "fedavg": fa},
                summary=[("split learning", f"{sl[0]:.4f} {_ci(sl)}"), ("FedAvg", f"{fa[0]:.4f} {_ci(fa)}")],
            )
        )
    report.add(environment_section())
    return report


def split_run_report(
    result: SplitRunResult,
    *,
    command: str | None = None,
    timestamp: str | None = None,
    fedavg_accuracy: float | None = None,
) -> Report:
    cfg = result.config
    report = Report("Split learning run")
    provenance(report, command=command, seed=cfg.seed, timestamp=timestamp)
    b = result.bytes
    data: dict[str, Any] = {
        "config": asdict(cfg),
        "accuracy": result.accuracy,
        "loss": result.loss,
        "history": result.history,
        "bytes": {**asdict(b), "per_step": b.per_step},
    }
    summary = [
        ("test accuracy", f"{result.accuracy:.4f}"),
        ("steps", str(b.steps)),
        ("bytes per step", f"{b.per_step:.0f}"),
        ("client-part sync bytes", str(b.model_sync)),
    ]
    if fedavg_accuracy is not None:
        data["fedavg_accuracy"] = fedavg_accuracy
        summary.append(("FedAvg, same partition", f"{fedavg_accuracy:.4f}"))
    rows = [[k, v] for k, v in b.by_type.items()]
    report.add(
        Section(
            "split-run",
            f"{cfg.mode} split learning, {cfg.topology}",
            data=data,
            summary=summary,
            tables=[("bytes by message type", ["message", "bytes"], rows)],
        )
    )
    report.add(environment_section())
    return report
