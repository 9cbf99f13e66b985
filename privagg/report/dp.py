"""Report sections for differential privacy: the DP-FedAvg ledger, the accuracy cost, sample-level DP.

(DP-FedAvg's own section, the ledger, is rendered in :mod:`privagg.report.aggregators`.)

* :func:`guarantee` / :func:`guarantee_section`: what a DP run's report opens with: against whom
  (client and distributed noise: the server, which sees who took part, gets the unamplified
  figure of :mod:`dp.server_view`, ``epsilon_server``; an observer of the released models the
  amplified ``epsilon``; central noise: the server is trusted), delta, the accountant, the
  sampling, how cohorts were drawn, the noise, and what in the report is *not* covered;
* :func:`accuracy_cost_section`: a DP run against the same run without DP, with how cohorts
  were drawn (secret, or "cohorts reproducible from the seed: not private"), ``delta * N`` and
  the warnings of :func:`dp_warnings`;
* :func:`dp_warnings`: one line each, naming the knob, when DP leaves the model near chance or
  clips every update (for ``privagg run`` to print);
* :func:`sample_level_section`: Opacus DP-SGD inside the clients (:class:`SampleLevelDP`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dp.guarantee import SERVER_SEES_ROSTERS, LedgerGuarantee, guarantee_line, ledger_guarantee, server_clause
from privagg.report import Figure, Section
from protocols.dp_fedavg import SampleLevelDP

__all__ = [
    "NOT_COVERED_BASELINE",
    "NOT_COVERED_MEMBERSHIP",
    "NOT_COVERED_PER_CLIENT",
    "NOT_COVERED_UPLOAD",
    "NOT_COVERED_WARNINGS",
    "SERVER_SEES_ROSTERS",
    "accuracy_cost_section",
    "budget_line",
    "budget_stop_line",
    "dp_warnings",
    "guarantee",
    "guarantee_line",
    "guarantee_section",
    "sample_level_section",
]

#: what a DP run's report shows that the client-level guarantee does not cover
NOT_COVERED_BASELINE = "the no-DP baseline run (its accuracy is a figure of the clients' data without noise)"
NOT_COVERED_PER_CLIENT = "per-client accuracy and client sizes (each from one client's own data, without noise)"
NOT_COVERED_WARNINGS = "the operator warnings (they read the exact clipped fraction)"
NOT_COVERED_MEMBERSHIP = "the membership-inference figures (computed from the clients' training examples without noise)"
NOT_COVERED_UPLOAD = "the median upload per client (it depends on the exact cohort sizes)"


def guarantee(dp_run: Any) -> dict[str, Any]:
    """The guarantee of a DP run, from its aggregator's ledger and configuration (a JSON-able dict).

    The core is :func:`dp.guarantee.ledger_guarantee` (the Flower DP drivers state the same one):
    ``epsilon`` is the budget accountant's (``accountant``) over the ``rounds`` released, amplified by
    sampling: it holds against an observer of the released models who does not see the rosters, at
    ``delta + delta_refusal``. ``epsilon_server`` (client and distributed noise; ``nan`` for central
    noise, where the server is trusted) holds against the server, which sees who took part: zero-out
    neighbours, the worst client's ``server_rounds`` rounds composed unamplified
    (:func:`dp.server_view.server_view`); ``against_server`` / ``against_observer`` say so in words.
    ``epsilon_by_accountant`` every accountant of the ledger (``nan``: no valid bound, refused
    rather than approximated). ``private`` is False when the noise was seeded or the cohorts
    are reproducible from the public seed (the sampling amplification then does not hold).
    """
    agg = dp_run.aggregator
    ledger = agg.ledger
    cfg = agg.config
    last = dp_run.history[-1].metrics if dp_run.history else {}
    cohorts = str(agg.dp_rounds.cohorts or last.get("dp_cohorts") or "drawn by the caller (not stated)")
    source = getattr(getattr(agg, "distributed", None), "noise", None) or agg.sampler  # distributed DP: its own
    secure = bool(getattr(source, "secure", False))
    population = getattr(agg, "population", None)
    core = _ledger_guarantee(agg, cohorts=cohorts, secure_noise=secure)
    stop = getattr(dp_run, "budget_stop", None)
    return {
        "budget_stop": dataclasses.asdict(stop) if stop is not None else None,
        "unit": "client-level (all updates of one client, every round)",
        **core.as_dict(),
        "noise_sampler": type(source).__name__,
        "budget_epsilon": cfg.budget,
        "budget_against": str(getattr(cfg, "budget_against", "observers")),
        "delta_times_population": float(ledger.delta * population) if population else math.nan,
        "private": secure and "not private" not in cohorts,
    }


def _ledger_guarantee(agg: Any, *, cohorts: str | None = None, secure_noise: bool = True) -> LedgerGuarantee:
    """:func:`dp.guarantee.ledger_guarantee` of a DP aggregator (its ledger, configuration and protocol)."""
    return ledger_guarantee(
        agg.ledger,
        noise=str(agg.config.noise),
        accountant=str(agg.config.accountant),
        population=getattr(agg, "population", None),
        min_cohort=int(agg.min_cohort()) if hasattr(agg, "min_cohort") else 1,
        empty_released=bool(getattr(agg, "aggregates_empty_rounds", False)),
        cohorts=cohorts,
        secure_noise=secure_noise,
    )


def budget_line(g: dict[str, Any]) -> str:
    """The budget and which guarantee it enforces before each round (``budget_against``)."""
    if g.get("budget_epsilon") is None:
        return "none"
    head = f"{g['budget_epsilon']:g} ({g['accountant']}), "
    if g.get("budget_against") == "server":
        return head + (
            "enforced against the server: a round is refused before it would bring the worst client's "
            "unamplified epsilon against the server (or the amplified one) over it"
        )
    return head + (
        "enforced against observers of the released models (the amplified epsilon); the epsilon against "
        "the server is reported, not enforced"
        if g.get("noise") in SERVER_SEES_ROSTERS
        else "enforced against observers of the released models (the amplified epsilon)"
    )


def budget_stop_line(stop: Mapping[str, Any] | None) -> str | None:
    """``training stopped before round r: ...``: the round the budget refused and the figure it would have
    reached (``stop``: :attr:`protocols.fedavg.RunResult.budget_stop` as a dict); ``None``: not stopped."""
    if not stop:
        return None
    against = {"server": "against the server", "observers": "against observers of the released models"}
    whom = against.get(str(stop["against"]), "the guarantee it enforces: not recorded")
    which = {"server": "the worst client's unamplified ", "observers": "the amplified "}.get(str(stop["against"]), "")
    figure = (
        f"{which}epsilon would reach {stop['epsilon']:.4g} > budget {stop['budget']:.4g} (delta {stop['delta']:g})"
        if math.isfinite(stop["epsilon"])
        else str(stop["message"])
    )
    r = int(stop["round"])
    return (
        f"training stopped before round {r}: the budget ({whom}) would be exceeded: {figure}; spent "
        f"{stop['spent']:.4g} over the {r - 1} rounds run, nothing of round {r} released or charged; the model "
        "and this report are those of the rounds run"
    )


def _refused_rows(g: dict[str, Any]) -> list[tuple[str, str]]:
    """The refused rounds (a cohort the secure sum refused), and what whether a round ran costs observers."""
    rows: list[tuple[str, str]] = []
    refused = list(g.get("refused_rounds") or ())
    if refused:
        shown = ", ".join(str(r) for r in refused[:20]) + (", ..." if len(refused) > 20 else "")
        rows.append(
            (
                "refused rounds",
                f"{len(refused)} of {g['rounds']} (rounds {shown}): the cohort was below the protocol's minimum; "
                "nothing was released and the model was left as it was; each is charged like a released round",
            )
        )
    d_ref = float(g.get("delta_refusal") or 0.0)
    if d_ref > 0 or refused:
        rows.append(
            (
                "whether rounds ran",
                "reveals whether the cohort reached the protocol's minimum (a function of who was sampled): it adds "
                f"delta {d_ref:.3g} to the observers' guarantee (dp/refusal.py, proof in dp/SUBSAMPLING.md); the "
                "server sees the roster sizes anyway",
            )
        )
    return rows


def guarantee_section(dp_run: Any, *, not_covered: list[str]) -> Section:
    """The first section of a DP run's report: the guarantee, then what the report shows outside it."""
    g = guarantee(dp_run)
    eps_rows = ", ".join(
        f"{name} {v:.4g}" if math.isfinite(v) else f"{name} n/a (no valid bound: refused, not approximated)"
        for name, v in g["epsilon_by_accountant"].items()
    )
    noise = f"{g['noise']}, {g['noise_sampler']}" + (
        " (exact discrete Gaussian, CSPRNG)" if g["secure_noise"] else " (SEEDED: reproducible, protects nobody)"
    )
    delta_n = g["delta_times_population"]
    return Section(
        key="privacy",
        title="Privacy guarantee",
        text=(
            "What this run's released models guarantee, and what this report shows outside that guarantee. "
            "Test accuracies are measured on the held-out test set, not on client data."
        ),
        data={**g, "not_covered": list(not_covered)},
        summary=[
            ("guarantee", guarantee_line(g)),
            ("against the server", server_clause(g) if g["noise"] in SERVER_SEES_ROSTERS else g["against_server"]),
            ("against observers of the models", f"epsilon {g['epsilon']:.4g}, {g['against_observer']}"),
            ("epsilon by accountant", eps_rows),
            ("sampling", g["sampling"]),
            ("cohorts", g["cohorts"]),
            ("noise", noise),
            *_refused_rows(g),
            ("budget", budget_line(g)),
            *([("training stopped", line)] if (line := budget_stop_line(g["budget_stop"])) else []),
            ("delta x population", f"{delta_n:.3g} (must stay below 1)" if math.isfinite(delta_n) else "-"),
            *[("not covered by DP", item) for item in not_covered],
        ],
    )


def dp_warnings(dp_run: Any, baseline_run: Any = None) -> list[str]:
    """One-line warnings, each naming the knob, for a DP run that trained a useless model.

    * near chance: final accuracy below ``1.5 / classes``; or more than 20 points under the run
      without DP;
    * every update clipped in the last rounds (the aggregator's operator diagnostic, never published);
    * refused rounds (a cohort below the protocol's minimum): charged, nothing released;
    * whether rounds ran costs observers more delta than ``dp.delta`` (dp/refusal.py);
    * first, the round the budget refused, which stopped training (:func:`budget_stop_line`).
    """
    stop = getattr(dp_run, "budget_stop", None)
    line = budget_stop_line(dataclasses.asdict(stop) if stop is not None else None)
    out: list[str] = [f"{line} (raise dp.budget_epsilon or the noise, or lower federation.rounds)"] if line else []
    classes = int(getattr(getattr(dp_run, "label_counts", None), "shape", (0, 0))[1] or 0)
    acc = float(dp_run.final_accuracy)
    base = float(baseline_run.final_accuracy) if baseline_run is not None else math.nan
    knob = (
        ": more clients per round (data.num_clients, federation.sampling_rate) or a larger "
        "dp.target_epsilon / smaller dp.noise_multiplier"
    )
    if classes and acc < 1.5 / classes:
        versus = f" vs {base:.2f} without DP" if math.isfinite(base) else ""
        out.append(f"DP leaves the model near chance (accuracy {acc:.2f}{versus}){knob}")
    elif math.isfinite(base) and base - acc > 0.2:
        out.append(f"DP costs {100 * (base - acc):.0f} accuracy points ({acc:.2f} vs {base:.2f} without DP){knob}")
    fractions = list(getattr(getattr(dp_run, "aggregator", None), "operator_clipped_fractions", []))[-3:]
    if fractions and min(fractions) >= 1.0:
        out.append("DP clips every update: raise dp.clip_norm or set dp.adaptive_clipping = true")
    refused = [h.round for h in getattr(dp_run, "history", []) if getattr(h, "refused", None) is not None]
    if refused:
        out.append(
            f"{len(refused)} of {len(dp_run.history)} rounds refused (cohort below the protocol's minimum), each "
            "charged to the DP ledger with nothing released: raise federation.sampling_rate or data.num_clients"
        )
    agg = getattr(dp_run, "aggregator", None)
    if getattr(agg, "ledger", None) is not None:
        out.extend(_ledger_guarantee(agg).warnings())
    return out


def accuracy_cost_section(dp_run: Any, baseline_run: Any, *, key: str = "dp-cost") -> Section:
    """A report section comparing a DP run with the same run without DP (accuracy per round).

    ``dp_run`` and ``baseline_run`` are ``RunResult``-like: ``history`` (records with ``round``
    and ``accuracy``) and ``final_accuracy``; epsilon is read from the DP run's round metrics.
    """
    dp_hist = [(r.round, r.accuracy, r.metrics.get("dp_epsilon_rdp", math.nan)) for r in dp_run.history]
    base_hist = [(r.round, r.accuracy) for r in baseline_run.history]
    cost = float(baseline_run.final_accuracy - dp_run.final_accuracy)
    eps = dp_hist[-1][2] if dp_hist else math.nan
    last = dp_run.history[-1].metrics if dp_run.history else {}
    cohorts = str(last.get("dp_cohorts", "not stated"))
    delta_n = float(last.get("dp_delta_times_population", math.nan))
    warnings = dp_warnings(dp_run, baseline_run)

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
            "cohorts": cohorts,
            "delta_times_population": delta_n,
            "warnings": warnings,
        },
        summary=[
            (
                "final accuracy with DP",
                f"{dp_run.final_accuracy:.4f} (epsilon {eps:.4g} against observers of the released models; "
                "see Privacy guarantee for the server)",
            ),
            ("final accuracy without DP", f"{baseline_run.final_accuracy:.4f}"),
            ("cost", f"{100 * cost:.1f} points"),
            ("cohorts", cohorts),
            ("delta x population", f"{delta_n:.3g} (must stay below 1)"),
            *[("warning", w) for w in warnings],
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
