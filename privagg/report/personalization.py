"""A personalized run (FedLTN, LotteryFL) against FedAvg and FedAvg + fine-tuning, as a report.

:func:`personalization_report` renders a :class:`~protocols.personalization.PersonalizationComparison`:
a summary (mean and worst personalized accuracy against FedAvg's global model and FedAvg +
local fine-tuning, model size, upload), the per-client table (:func:`client_rows`: each
client's classes, its personalized accuracy on its own test split, FedAvg's and FedAvg+FT's
there, its model size and upload), the upload per round, the late joiners' jump-starts, and the
accuracy per round.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from privagg.report import Figure, Report, Section, environment_section, provenance
from protocols.personalization import PersonalizationComparison

__all__ = ["CLIENT_HEADER", "client_rows", "personalization_report", "upload_rows"]

CLIENT_HEADER = [
    "client",
    "classes",
    "train / test",
    "personalized",
    "FedAvg",
    "FedAvg + FT",
    "vs FedAvg + FT (points)",
    "nonzero params",
    "smaller by",
    "upload (bytes)",
    "joined at round",
]


def _pct(x: float | None) -> str:
    return "-" if x is None or np.isnan(x) else f"{100 * x:.1f}%"


def client_rows(comp: PersonalizationComparison) -> list[list[Any]]:
    """One row per client (final round); the mean and the worst client are in the summary."""
    n = comp.result.num_params
    rows: list[list[Any]] = []
    for r in comp.rows():
        gain = None if r.fine_tuned_accuracy is None else 100 * (r.accuracy - r.fine_tuned_accuracy)
        rows.append(
            [
                r.client,
                ", ".join(str(c) for c in r.classes),
                f"{r.train_size} / {r.test_size}",
                _pct(r.accuracy),
                _pct(r.fedavg_accuracy),
                _pct(r.fine_tuned_accuracy),
                "-" if gain is None else f"{gain:+.1f}",
                r.nonzeros,
                f"{n / r.nonzeros:.1f}x" if r.nonzeros else "-",
                r.upload_bytes,
                r.joined,
            ]
        )
    return rows


def upload_rows(comp: PersonalizationComparison) -> list[list[Any]]:
    """Per round: the algorithm's upload (all clients), FedAvg's, and the sparse encoding's under SecAgg+."""
    base = comp.baseline
    rows = []
    for r, b in zip(comp.result.rounds, base.rounds, strict=True):
        plain = "-" if r.plain_upload_bytes is None else int(r.plain_upload_bytes.sum())
        rows.append([r.round, int(r.upload_bytes.sum()), int(b.upload_bytes.sum()), plain, _pct(r.mean_accuracy)])
    return rows


def _curves(comp: PersonalizationComparison) -> Figure:
    mine = [r.mean_accuracy for r in comp.result.rounds]
    worst = [float(np.nanmin(r.accuracies)) for r in comp.result.rounds]
    base = [r.mean_accuracy for r in comp.baseline.rounds]
    ft = comp.baseline.fine_tuned_accuracies
    name = comp.options.name

    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        fig, ax = plt.subplots(figsize=(6.4, 4))
        x = list(range(len(mine)))
        ax.plot(x, mine, "o-", ms=3, label=f"{name}, mean of clients")
        ax.plot(x, worst, ":", label=f"{name}, worst client")
        if comp.fedavg is not None:
            ax.plot(x, base, "s--", ms=3, label="FedAvg global model, mean of clients")
        if ft is not None:
            ax.axhline(float(ft.mean()), color="k", lw=1, ls="-.", label="FedAvg + FT (final), mean")
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy on each client's own test split")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    return Figure("personalization_accuracy.png", "Accuracy per round on the clients' own test splits", draw)


def personalization_report(
    comp: PersonalizationComparison, *, command: str | None = None, timestamp: str | None = None
) -> Report:
    res, base = comp.result, comp.baseline
    name = comp.options.name
    report = Report(f"Personalized federated learning: {name} on {res.dataset}")
    provenance(report, command=command, seed=res.seed, timestamp=timestamp)
    ft = base.fine_tuned_accuracies
    best_ft = base.best_fine_tuned()
    nnz = float(res.nonzeros.mean())
    data: dict[str, Any] = {
        "options": comp.options,
        "num_params": res.num_params,
        "mean_accuracy": res.mean_accuracy,
        "worst_accuracy": res.worst_accuracy,
        "fedavg_mean_accuracy": base.mean_accuracy,
        "fedavg_worst_accuracy": base.worst_accuracy,
        "fine_tuned_mean_accuracy": None if ft is None else float(ft.mean()),
        "fine_tuned_worst_accuracy": None if ft is None else float(ft.min()),
        "fine_tuned_best_mean_accuracy": None if best_ft is None else float(best_ft.mean()),
        "mean_nonzeros": nnz,
        "total_upload_bytes": res.total_upload_bytes,
        "fedavg_total_upload_bytes": base.total_upload_bytes,
        "seconds": comp.seconds,
    }
    summary = [
        ("personalized accuracy (mean / worst client)", f"{_pct(res.mean_accuracy)} / {_pct(res.worst_accuracy)}"),
        ("FedAvg global model (mean / worst)", f"{_pct(base.mean_accuracy)} / {_pct(base.worst_accuracy)}"),
    ]
    if ft is not None:
        summary.append(
            (
                f"FedAvg + {comp.options.fine_tune_epochs} epoch(s) of local fine-tuning (mean / worst)",
                f"{_pct(float(ft.mean()))} / {_pct(float(ft.min()))}",
            )
        )
    if best_ft is not None:
        summary.append(("FedAvg + FT, best epoch count chosen on the test splits (mean)", _pct(float(best_ft.mean()))))
    summary += [
        ("model size per client", f"{nnz:.0f} of {res.num_params} parameters ({res.num_params / nnz:.1f}x smaller)"),
        (
            "total upload",
            f"{res.total_upload_bytes} B against FedAvg's {base.total_upload_bytes} B "
            f"({base.total_upload_bytes / max(res.total_upload_bytes, 1):.2f}x lower)",
        ),
        ("wall time", f"{comp.seconds:.1f} s"),
    ]
    report.add(Section("personalization", "Personalized accuracy, model size, upload", data=data, summary=summary))
    report.add(
        Section(
            "clients",
            "Per client (each client's own test split)",
            data={"rows": [asdict(r) for r in comp.rows()]},
            tables=[("final round", CLIENT_HEADER, client_rows(comp))],
            figures=[_curves(comp)],
        )
    )
    secure = any(r.plain_upload_bytes is not None for r in res.rounds)
    report.add(
        Section(
            "upload",
            "Upload per round" + (" (through SecAgg+: dense masked sums)" if secure else ""),
            data={"rows": upload_rows(comp)},
            tables=[
                (
                    "bytes uploaded by all clients",
                    [
                        "round",
                        name,
                        "FedAvg (= FedAvg + FT: fine-tuning is local)",
                        "sparse encoding (under SecAgg+)",
                        f"{name} mean accuracy",
                    ],
                    upload_rows(comp),
                )
            ],
        )
    )
    if res.joins:
        rows = [
            [j.client, "global model" if j.source is None else f"client {j.source}", _pct(j.scores[j.source][0])]
            for j in res.joins
        ]
        report.add(
            Section(
                "joins",
                "Late joiners' jump-start",
                data={"joins": [{"client": j.client, "source": j.source} for j in res.joins]},
                tables=[
                    ("start chosen", ["client", "started from", "its accuracy on the newcomer's train split"], rows)
                ],
                text=(
                    "A newcomer starts from the existing ticket (or the global model) most accurate on its own "
                    "training split; the candidates' tickets reach the newcomer."
                ),
            )
        )
    report.add(environment_section())
    return report
