"""Report sections for differential privacy: the DP-FedAvg ledger, the accuracy cost, sample-level DP.

(DP-FedAvg's own section, the ledger, is rendered in :mod:`privagg.report.aggregators`.)

* :func:`accuracy_cost_section`: a DP run against the same run without DP;
* :func:`sample_level_section`: Opacus DP-SGD inside the clients (:class:`SampleLevelDP`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from privagg.report import Figure, Section
from protocols.dp_fedavg import SampleLevelDP

__all__ = ["accuracy_cost_section", "sample_level_section"]


def accuracy_cost_section(dp_run: Any, baseline_run: Any, *, key: str = "dp-cost") -> Section:
    """A report section comparing a DP run with the same run without DP (accuracy per round).

    ``dp_run`` and ``baseline_run`` are ``RunResult``-like: ``history`` (records with ``round``
    and ``accuracy``) and ``final_accuracy``; epsilon is read from the DP run's round metrics.
    """
    dp_hist = [(r.round, r.accuracy, r.metrics.get("dp_epsilon_rdp", math.nan)) for r in dp_run.history]
    base_hist = [(r.round, r.accuracy) for r in baseline_run.history]
    cost = float(baseline_run.final_accuracy - dp_run.final_accuracy)
    eps = dp_hist[-1][2] if dp_hist else math.nan

    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot([h[0] for h in base_hist], [h[1] for h in base_hist], label="without DP")
        ax.plot([h[0] for h in dp_hist], [h[1] for h in dp_hist], label=f"DP-FedAvg (epsilon {eps:.3g})")
        ax.set_xlabel("round")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)

    return Section(
        key=key,
        title="Accuracy cost of differential privacy",
        data={
            "dp_final_accuracy": dp_run.final_accuracy,
            "baseline_final_accuracy": baseline_run.final_accuracy,
            "accuracy_cost": cost,
            "epsilon_rdp": eps,
        },
        summary=[
            ("final accuracy with DP", f"{dp_run.final_accuracy:.4f} (epsilon {eps:.4g})"),
            ("final accuracy without DP", f"{baseline_run.final_accuracy:.4f}"),
            ("cost", f"{100 * cost:.1f} points"),
        ],
        figures=[Figure("dp_accuracy_cost.png", "Test accuracy per round with and without DP", draw)],
    )


def sample_level_section(trainer: SampleLevelDP) -> Section:
    """What the sample-level guarantee is, and the worst client's epsilon."""
    per_client = trainer.epsilons()
    worst = per_client[-1] if per_client else 0.0
    return Section(
        key="dp-sample-level",
        title="Sample-level DP inside clients (Opacus DP-SGD)",
        data={
            "epsilon_per_client": per_client,
            "delta": trainer.delta,
            "noise_multiplier": trainer.noise_multiplier,
            "max_grad_norm": trainer.max_grad_norm,
        },
        summary=[
            (
                "guarantee",
                f"example-level ({worst:.4g}, {trainer.delta:g})-DP for the worst of {len(per_client)} clients",
            ),
            (
                "mechanism",
                f"DP-SGD, Poisson batches, per-example clip {trainer.max_grad_norm:g}, "
                f"noise multiplier {trainer.noise_multiplier:g} (RDP accounting per client)",
            ),
        ],
        text=(
            "Each client's local training is differentially private with respect to any single training "
            "example of that client, composed over every round the client took part in. This does not "
            "protect a client's dataset as a whole (use client-level DP-FedAvg for that); combined with "
            "DP-FedAvg, both guarantees hold at once, each for its own unit of privacy."
        ),
    )
