"""The audit's report: findings table, protocol attack outcomes, the privacy budget plot."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from privagg.audit import AttackRow, AuditResult, BudgetCurve
from privagg.report import Figure, Report, Section, environment_section

__all__ = ["audit_report"]

_VERDICT = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}
_ATTACK_COLUMNS = ["attack", "by", "mode", "outcome", "what happened when run", "promised", "PSNR (dB)"]


def audit_report(result: AuditResult) -> Report:
    """``report.json`` / ``report.html`` of an audit (plus ``epsilon.png`` when DP is deployed)."""
    counts = result.counts
    findings = result.findings
    report = Report(
        "privagg audit",
        top={
            "verdict": result.verdict,
            "counts": counts,
            "seconds": result.seconds,
            "config": result.config.to_mapping(),
        },
    )
    report.add(
        Section(
            "findings",
            "Findings",
            data={"counts": counts, "findings": [dataclasses.asdict(f) for f in findings]},
            summary=[
                ("verdict", _VERDICT[result.verdict]),
                ("findings", f"{counts['fail']} fail, {counts['warn']} warn, {counts['pass']} pass"),
            ],
            tables=[
                (
                    "Findings",
                    ["severity", "check", "title", "detail"],
                    [[f.severity.upper(), f.id, f.title, f.detail] for f in findings],
                )
            ],
        )
    )
    if result.attacks is not None:
        rows = [_attack_row(r) for r in result.attacks]
        report.add(
            Section(
                "protocol_attacks",
                "Protocol attacks: every class run against real state machines (not assumed)",
                data={"rows": rows},
                tables=[("Outcome per attack and mode", _ATTACK_COLUMNS, rows)],
            )
        )
    if result.budget is not None:
        b = result.budget
        report.add(
            Section(
                "dp_budget",
                "Privacy budget",
                data={**{k: list(v) for k, v in b.epsilon.items()}, "rounds": list(b.rounds)},
                figures=[Figure("epsilon.png", "Epsilon per round (RDP and PRV)", lambda path: _draw_budget(b, path))],
            )
        )
    report.add(environment_section())
    return report


def _attack_row(r: AttackRow) -> list[Any]:
    psnr: Any = r.psnr if r.psnr is not None else "-"
    by = "server (isolation)" if r.kind == "isolation" else r.kind
    promise = r.promise or "the target's update stays hidden"
    return [r.attack, by, r.mode, r.outcome, r.stopped_by, promise, psnr]


def _draw_budget(b: BudgetCurve, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name in ("rdp", "prv"):
        if name in b.epsilon:
            ax.plot(b.rounds, b.epsilon[name], "o-", ms=3, label=name.upper())
    ax.axhline(b.max_epsilon, color="r", ls="--", lw=1, label="limit")
    ax.set_xlabel("round")
    ax.set_ylabel(f"epsilon (delta = {b.delta:g})")
    ax.legend()
    ax.set_title("Client-level privacy budget over the planned rounds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
