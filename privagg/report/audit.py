"""The audit's report: findings table, protocol attack outcomes, the privacy budget plot;
and the canary audit's page (empirical vs accounted epsilon per round, the bounds, a verdict)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from privagg.audit import AttackRow, AuditResult, BudgetCurve
from privagg.audit.canaries import CanaryAuditResult, EmpiricalCurve
from privagg.audit.noise_check import NoiseCheckResult
from privagg.report import Figure, Report, Section, environment_section

__all__ = ["audit_report", "empirical_report"]

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


_BOUND_COLUMNS = ["view", "method", "epsilon lower bound", "estimate", "confidence", "rests on", "counts"]


def empirical_report(result: CanaryAuditResult, noise: NoiseCheckResult | None = None) -> Report:
    """``report.json`` / ``report.html`` of a canary audit (plus ``empirical_epsilon.png`` per round),
    and of the noise check run beside it (:mod:`privagg.audit.noise_check`) when given."""
    r = result
    report = Report(
        "privagg audit --empirical",
        top={
            "verdict": r.verdict,
            # what ``--strict`` exits 1 on: the canaries flagged the mechanism or the noise check failed
            "failed": r.flagged or (noise is not None and noise.failed),
            "flagged": r.flagged,
            "noise_check": None if noise is None else {"verdict": noise.verdict, "failed": noise.failed},
            "claimed_epsilon": r.claimed_epsilon,
            "lower_bound": r.lower_bound.epsilon,
            "seconds": r.seconds,
            "config": r.config,
        },
    )
    rows = []
    for view, bounds in (("white-box (every round)", r.white_box), ("black-box (final model)", r.black_box)):
        for b in bounds:
            counts = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in b.detail.items())
            est = "-" if b.estimate is None else f"{b.estimate:.3g}"
            rows.append([view, b.method, f"{b.epsilon:.3g}", est, f"{b.confidence:.4f}", b.assumption, counts])
    figures = []
    if r.curve is not None:
        curve = r.curve
        figures.append(
            Figure(
                "empirical_epsilon.png",
                "Empirical (canaries, white-box) vs accounted epsilon per round",
                lambda path: _draw_empirical(curve, r, path),
            )
        )
    report.add(
        Section(
            "empirical",
            "Empirical privacy: canary clients through the deployed DP-FedAvg",
            data={
                "verdict": r.verdict,
                "game": r.game,
                "accounted": dict(r.accounted),
                "claimed_epsilon": r.claimed_epsilon,
                "delta": r.delta,
                "confidence": r.confidence,
                "white_box": [dataclasses.asdict(b) for b in r.white_box],
                "black_box": [dataclasses.asdict(b) for b in r.black_box],
                "curve": dataclasses.asdict(r.curve) if r.curve is not None else None,
            },
            summary=[
                ("verdict", "FLAGGED" if r.flagged else "NOT SHOWN (no violation shown; not evidence of privacy)"),
                ("accounted epsilon", ", ".join(f"{k.upper()} {v:.3g}" for k, v in r.accounted.items())),
                ("largest lower bound", f"{r.lower_bound.epsilon:.3g} ({r.lower_bound.method})"),
                ("canaries", f"{r.canaries} ({r.included} included), {r.game} game, dimension {r.dimension}"),
                ("rounds", f"{r.rounds} ({r.rounds_per_canary} per canary), rate {r.sampling_rate:.3g}"),
                ("not tested by canaries", "; ".join(r.untested)),
            ],
            tables=[("Epsilon lower bounds", _BOUND_COLUMNS, rows)],
            figures=figures,
            text=(
                "Each bound holds at the listed confidence; together they hold at "
                f"{r.confidence:.0%}. The Gaussian fit rests on its Gaussian model; the one-run bound "
                "needs no assumption beyond the canaries' fair coins."
            ),
        )
    )
    if noise is not None:
        report.add(_noise_section(noise))
    report.add(environment_section())
    return report


def _noise_section(n: NoiseCheckResult) -> Section:
    def ratio(x: Any) -> str:
        return f"{x.estimate:.4f} [{x.low:.4f}, {x.high:.4f}] ({x.samples} samples)"

    summary = [
        ("verdict", "FAIL" if n.failed else "PASS (measured)"),
        ("update noise, measured / charged", ratio(n.update)),
        *([("clip-count noise, measured / charged", ratio(n.count))] if n.count is not None else []),
        ("privacy loss, measured / charged", f"{n.loss_ratio:.4f} (lower bound {n.loss_ratio_low:.4f}; FAIL above 1)"),
        ("two rounds' noise, largest sqrt(d)|cos|", f"{n.correlation:.2f} (limit {n.correlation_limit:.2f})"),
        ("rounds", f"{n.rounds} measured, {n.rounds_skipped} without a charged release; dimension {n.dimension}"),
        ("not measured", "; ".join(n.not_measured)),
    ]
    return Section(
        "noise-check",
        "Noise check: the noise in the releases, measured against the ledger's charge",
        data={**dataclasses.asdict(n), "verdict": n.verdict, "failed": n.failed},
        summary=summary,
        text=(
            "Every sampled client runs the deployed protocol with a zero update, so each release is the "
            f"mechanism's noise alone. Intervals at {n.confidence:.1%} per part; FAIL when even the most generous "
            "end of the interval leaves less noise than the ledger charges."
        ),
    )


def _draw_empirical(curve: EmpiricalCurve, r: CanaryAuditResult, path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.plot(curve.rounds, curve.accounted, "o-", ms=3, label=f"accounted ({r.accountant.upper()})")
    ax.plot(curve.rounds, curve.estimate, "s--", ms=3, label="empirical estimate (Gaussian fit)")
    ax.plot(curve.rounds, curve.lower_bound, "^-", ms=3, label=f"empirical lower bound ({r.bound_confidence:.3f})")
    ax.set_xlabel("round")
    ax.set_ylabel(f"epsilon (delta = {r.delta:g})")
    ax.legend()
    ax.set_title("FLAGGED" if r.flagged else "No violation shown (not evidence of privacy)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
