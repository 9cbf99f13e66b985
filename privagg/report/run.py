"""The report of a federated run: training curves, per-client accuracy, aggregation cost sections.

* :func:`run_report`: a :class:`~privagg.run.RunOutcome` -> the ``privagg run`` report
  (training, the aggregator's sections, with DP the accuracy cost, the environment). A DP
  run's report opens with its guarantee (:func:`privagg.report.dp.guarantee_section`, also
  under ``privacy`` at the top of the JSON and in the page header) and leaves out per-client
  accuracy and client sizes, which are not differentially private, unless
  ``per_client_under_dp=True`` asks for them: they are then labelled "not covered by DP";
* :func:`exposure_section`: what every report opens with (key ``exposure``, also at the top of
  the JSON): who sees what, the threat model (the protocol's page) and its assumptions, the DP
  guarantee in one line (or none), and the leakage *measured* in the same run when
  :func:`~privagg.run.execute_run` ran with ``leakage=True`` (the malicious-model attack, and
  membership inference on the final model with its utility beside it); each row says measured
  or assumed;
* :func:`costs_section`: what the privacy costs, measured in the same command: accuracy against the
  same run without privacy (:func:`privagg.run.without_privacy`), time, upload per client;
* :func:`run_sections` / :func:`training_section`: the sections of one
  :class:`~protocols.fedavg.RunResult`;
* the aggregator's own sections come from :func:`~privagg.report.aggregators.aggregator_sections`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from privagg.config import config_to_dict
from privagg.report import Figure, Report, Section, environment_section, provenance
from privagg.report.aggregators import aggregator_sections
from privagg.report.dp import (
    NOT_COVERED_BASELINE,
    NOT_COVERED_MEMBERSHIP,
    NOT_COVERED_PER_CLIENT,
    NOT_COVERED_UPLOAD,
    NOT_COVERED_WARNINGS,
    accuracy_cost_section,
    guarantee,
    guarantee_line,
    guarantee_section,
)
from privagg.run import RunOutcome, has_privacy
from protocols.fedavg import RunResult
from secagg import ClientPolicy

__all__ = [
    "configuration_section",
    "costs_section",
    "exposure_section",
    "run_report",
    "run_sections",
    "training_section",
]

#: the threat-model page of each aggregator that hides the individual updates
MODES = {
    "active": " (signed messages, a consistency round, sender checks: a deviating server is caught)",
    "semi-honest": " (every party is assumed to follow the protocol)",
}
THREAT_MODEL_PAGES = {"secagg": "secagg/THREAT_MODEL.md", "paillier": "protocols/paillier/THREAT_MODEL.md"}


def run_report(
    outcome: RunOutcome,
    *,
    command: str | None = None,
    timestamp: str | None = None,
    per_client_under_dp: bool = False,
) -> Report:
    """The ``privagg run`` report: headline numbers, the run's sections, the DP cost, the environment.

    The top states ``command`` (as typed), the seed, ``timestamp`` (UTC, default now) and the
    versions; the one wall time is ``outcome.seconds`` (with DP, the no-DP baseline included).
    Every report opens with :func:`exposure_section` (who sees what, threat model, measured
    leakage); a DP run's report follows it with its guarantee; per-client statistics appear in
    a DP report only with ``per_client_under_dp`` (labelled as not covered by DP).
    """
    result = outcome.result
    dp = outcome.config.dp is not None and hasattr(result.aggregator, "ledger")
    top: dict[str, Any] = {}
    if dp:
        top["privacy"] = guarantee(result)
    exposure = exposure_section(outcome)
    top["exposure"] = exposure.data
    top.update(
        final_accuracy=result.final_accuracy,
        rounds=len(result.history),
        seconds=outcome.seconds,
        config=config_to_dict(outcome.config),
    )
    report = Report("privagg run", top=top)
    provenance(report, command=command, seed=outcome.config.seed, timestamp=timestamp)
    per_client = not dp or per_client_under_dp
    if dp:
        report.header.append(("privacy", guarantee_line(top["privacy"])))
    report.header.append(("server sees", exposure.data["server_sees"]))
    if outcome.leakage is not None:
        report.header.append(("measured leakage", outcome.leakage.exposure.verdict()))
    if outcome.membership is not None:
        report.header.append(("measured membership", outcome.membership.verdict()))
    costs = costs_section(outcome)
    report.header.append(("cost", costs.data["line"]))
    report.add(exposure)
    if dp:
        not_covered = [NOT_COVERED_PER_CLIENT] if per_client else []
        if outcome.baseline is not None:
            not_covered += [NOT_COVERED_BASELINE, NOT_COVERED_WARNINGS]
        if outcome.membership is not None:
            not_covered.append(NOT_COVERED_MEMBERSHIP)
        if costs.data["upload_not_covered"]:
            not_covered.append(NOT_COVERED_UPLOAD)
        report.add(guarantee_section(result, not_covered=not_covered))
    report.add(costs)
    report.add(
        training_section(
            result,
            seconds=outcome.seconds,
            baseline_included=outcome.baseline is not None,
            per_client="not covered by DP" if dp and per_client else per_client,
        )
    )
    for s in aggregator_sections(result.aggregator):
        report.add(s)
    if outcome.baseline is not None:
        report.add(accuracy_cost_section(result, outcome.baseline, key="dp_cost"))
    report.add(configuration_section(report.top["config"]))
    report.add(environment_section())
    return report


def exposure_section(outcome: RunOutcome) -> Section:
    """Who sees what, the threat model, the DP guarantee (one line) and the measured leakage of a run."""
    cfg = outcome.config
    result = outcome.result
    agg: Any = getattr(result.aggregator, "inner", result.aggregator)  # DP-FedAvg wraps the aggregator it noises
    name = cfg.aggregation.name
    page = THREAT_MODEL_PAGES.get(name)
    dp = cfg.dp is not None and hasattr(result.aggregator, "ledger")
    rows: list[tuple[str, str]] = []
    data: dict[str, Any] = {"aggregator": name, "threat_model_page": page}
    noise = cfg.dp.noise if dp and cfg.dp is not None else None
    if page is None:
        sees = "every client's update, in the clear (no protocol hides it)"
        if noise == "central":
            sees += "; the server adds the DP noise after it has seen them"
        rows.append(("threat model", "none: the server is trusted with every update (a plain FedAvg deployment)"))
    else:
        sees = "only the sum of the updates of each round's survivors"
        if noise in ("client", "distributed"):
            sees += ", with the DP noise already in it (the clients add it inside the secure sum)"
        elif noise == "central":
            sees += ", without noise (central DP: the noise is added after)"
        rows.append(("threat model", f"{page} (who may deviate or collude, what is trusted, what is not covered)"))
    if name == "secagg":
        o = agg.options
        last = agg.rounds[-1] if getattr(agg, "rounds", None) else None
        derived = "derived" if o.degree is None else "set by hand"
        zero = o.dropout_rate == 0 and o.corruption_rate == 0
        graph = f"degree {last.degree}, threshold {last.threshold} ({derived})" if last else "no round ran"
        if dp and o.degree is None:  # derived from the round's exact cohort size, which DP keeps private
            graph = "derived per round from the cohort size: withheld under DP (it would reveal the cohort size)"
        data.update(threat=o.threat, dropout_rate=o.dropout_rate, corruption_rate=o.corruption_rate)
        rows += [
            ("assumed: protocol mode", o.threat + (MODES.get(o.threat, ""))),
            (
                "assumed: rates",
                f"dropout {o.dropout_rate:g}, corrupted clients {o.corruption_rate:g}"
                + (": the graph assumes no client drops and none is corrupted" if zero else "")
                + " (the graph is derived from these rates; a higher real rate voids the derivation)",
            ),
            ("secure-aggregation graph", graph),
            ("secure-aggregation security", _secagg_security(agg)),
        ]
    elif name == "paillier":
        o = agg.options
        data.update(decryptors=o.decryptors, threshold=o.threshold)
        rows.append(
            ("assumed: trusted", f"the dealer, and fewer than {o.threshold} of {o.decryptors} decryptors colluding")
        )
    data["server_sees"] = sees
    rows.insert(0, ("the server sees", sees))
    if dp:
        rows.append(("DP guarantee", guarantee_line(guarantee(result)) + " (see Privacy guarantee below)"))
    else:
        rows.append(("DP guarantee", "none: nothing bounds what the updates or the model reveal about one client"))
    leak = outcome.leakage
    if leak is None:
        rows.append(("measured leakage", "not measured in this run (--no-leakage)"))
        data["leakage"] = None
    else:
        exp = leak.exposure
        data["leakage"] = {
            "attack": "imprint (malicious server, crafted model)",
            "defense": leak.defense,
            "modelled": leak.modelled,
            "fractions": list(exp.fractions),
            "interval": list(exp.interval),
            "median_psnr": list(exp.median_psnr),
            "leaks": exp.leaks,
            "stopped": exp.stopped,
            "control_defense": exp.control_defense,
            "control_fractions": list(exp.control_fractions),
            "seconds": leak.seconds,
        }
        rows += [
            ("measured: malicious model", exp.verdict()),
            ("assumed: how measured", f"attack case '{leak.defense}' on digits, 10 clients, batch 1: {leak.modelled}"),
        ]
    member = outcome.membership
    if member is not None:
        data["membership"] = {
            "attack": "loss threshold (Yeom et al. 2018) on the final global model",
            "run": dataclasses.asdict(member.run),
            "without_privacy": dataclasses.asdict(member.baseline) if member.baseline is not None else None,
            "seconds": member.seconds,
        }
        rows.append(("measured: membership inference", member.verdict()))
        rows.append(
            (
                "how measured",
                f"score = minus the example's loss on the final model; members: the {member.run.members} training "
                f"examples of the clients that took part; non-members: the {member.run.non_members} held-out test "
                "examples; AUC 0.5 = guessing (95% Hanley-McNeil interval)",
            )
        )
    elif leak is not None:
        rows.append(("measured: membership inference", "not measured (no client took part in a released round)"))
    if leak is None:
        rows.append(("measured: membership inference", "not measured in this run (--no-leakage)"))
    return Section(
        key="exposure",
        title="Privacy: who sees what, the threat model, measured leakage",
        text=(
            "What the server of this deployment sees, under which threat model, what guarantee bounds it, and "
            "what an attacker in the server's place recovered in a measurement run beside this one. "
            "Rows marked 'assumed' are stated, not tested here; 'measured' rows ran."
        ),
        data=data,
        summary=rows,
    )


def _secagg_security(agg: Any) -> str:
    """The security and failure levels the secure-aggregation graph was derived for (or that none was stated)."""
    o = agg.options
    if o.degree is not None:
        return f"degree {o.degree} and threshold {o.threshold} set by hand: no security level is derived or stated"
    pol = agg.client_policy() or ClientPolicy(
        min_clients=o.min_clients, dropout_rate=o.dropout_rate, corruption_rate=o.corruption_rate
    )
    return (
        f"the graph is derived for 2^-{pol.security_bits} security (the chance that the server and the corrupted "
        f"clients learn more than the sum of the honest inputs) and 2^-{pol.failure_bits} failure (the chance that "
        "dropouts at the assumed rate abort a round), at the rates above"
    )


def _upload_per_client(agg: Any) -> float | None:
    """Median bytes a client sent per round under a secure aggregator (``None``: it sends its update in the clear)."""
    rounds = getattr(agg, "rounds", None) or []
    values = [float(getattr(r, "client_upload_bytes", getattr(r, "bytes_per_client", math.nan))) for r in rounds]
    values = [v for v in values if math.isfinite(v)]
    return statistics.median(values) if values else None


def costs_section(outcome: RunOutcome) -> Section:
    """What this run's privacy costs, measured in the same command: accuracy, time, upload per client.

    The accuracy is compared with :func:`privagg.run.without_privacy` (same seed, data, clients,
    sampling, training and rounds; no DP, plain mean) when :func:`~privagg.run.execute_run` ran it;
    otherwise the row says it was skipped. A plain run (no privacy) says there is nothing to compare.
    """
    cfg = outcome.config
    result, base = outcome.result, outcome.baseline
    private = has_privacy(cfg)
    agg: Any = getattr(result.aggregator, "inner", result.aggregator)
    plain_bytes = 4.0 * result.num_params  # a float32 update in the clear
    upload = _upload_per_client(agg)
    dp = cfg.dp is not None and hasattr(result.aggregator, "ledger")
    poisson = cfg.federation.sampling == "poisson"
    upload_not_covered = upload is not None and dp and poisson
    data: dict[str, Any] = {
        "private": private,
        "final_accuracy": result.final_accuracy,
        "without_privacy_final_accuracy": base.final_accuracy if base is not None else None,
        "accuracy_cost_points": 100 * (base.final_accuracy - result.final_accuracy) if base is not None else None,
        "comparison": (
            "measured" if base is not None else ("skipped (--no-baseline)" if private else "none: no privacy")
        ),
        "seconds": {
            "run": result.seconds,
            "without_privacy": base.seconds if base is not None else None,
            "wall": outcome.seconds,
        },
        "upload_bytes_per_client": upload if upload is not None else plain_bytes,
        "plain_upload_bytes_per_client": plain_bytes,
        "upload_not_covered": upload_not_covered,
    }
    if not private:
        acc = f"{result.final_accuracy:.4f}: this run has no privacy, nothing to compare and nothing protected"
        line = f"none: no privacy (accuracy {result.final_accuracy:.3f}, {plain_bytes / 1e3:.1f} kB per update)"
    elif base is None:
        acc = f"{result.final_accuracy:.4f}; the run without privacy was skipped (--no-baseline): cost not measured"
        line = f"accuracy {result.final_accuracy:.3f}; cost not measured (--no-baseline)"
    else:
        pts = data["accuracy_cost_points"]
        acc = (
            f"{result.final_accuracy:.4f} against {base.final_accuracy:.4f} without privacy: {pts:.1f} points lost "
            "(measured: the same seed, data, clients, sampling, training and rounds, with the plain mean and no DP)"
        )
        line = f"accuracy {result.final_accuracy:.3f} vs {base.final_accuracy:.3f} without privacy ({-pts:+.1f} points)"
    rows = [("accuracy", acc)]
    if upload is not None:
        tag = " (median over rounds; it depends on the cohort size: not covered by DP)" if upload_not_covered else ""
        rows.append(
            (
                "upload per client per round",
                f"{upload / 1e3:.1f} kB (keys, shares, masked input, signatures) against {plain_bytes / 1e3:.1f} kB "
                f"for the float32 update in the clear: {upload / plain_bytes:.1f}x{tag}",
            )
        )
        if private and base is not None:
            line += f"; upload {upload / 1e3:.1f} kB vs {plain_bytes / 1e3:.1f} kB per client per round"
    else:
        rows.append(("upload per client per round", f"{plain_bytes / 1e3:.1f} kB: the float32 update, in the clear"))
    times = f"{result.seconds:.1f} s for this run's training"
    if base is not None:
        times += f", {base.seconds:.1f} s for the run without privacy"
    rows.append(("time", f"{times}; {outcome.seconds:.1f} s wall for the whole command"))
    data["line"] = line
    return Section(
        key="costs",
        title="Costs of privacy",
        text=(
            "What this run's protections cost against the same run without them, measured in the same "
            "command: accuracy, upload per client and time. The accuracy of the run without privacy comes "
            "from the clients' data without noise, which the DP guarantee does not cover."
        ),
        data=data,
        summary=rows,
    )


def configuration_section(config: Mapping[str, Any]) -> Section:
    """Every setting of the run, flattened (``federation.rounds``); the JSON keeps it once, in ``config``."""

    def flat(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        for k, v in d.items():
            if isinstance(v, Mapping) and v:
                rows += flat(v, f"{prefix}{k}.")
            else:
                rows.append((f"{prefix}{k}", "-" if v is None else str(v)))
        return rows

    return Section(
        key="configuration",
        title="Configuration",
        text="The full configuration of this run: a TOML file with these settings (or --config) reproduces it.",
        data={"settings": len(flat(config))},
        summary=flat(config),
    )


def run_sections(result: RunResult) -> list[Section]:
    """The training section, then the aggregator's sections (cost tables, privacy ledger)."""
    return [training_section(result), *aggregator_sections(result.aggregator)]


def training_section(
    result: RunResult,
    *,
    seconds: float | None = None,
    baseline_included: bool = False,
    per_client: bool | str = True,
) -> Section:
    """Accuracy and loss per round, the per-client accuracy of the final model, the summary.

    ``seconds``: the wall time to show (the report's one number; default ``result.seconds``).
    ``per_client``: show per-client accuracy and client sizes (``False``: left out everywhere,
    figures, summary and JSON, as a DP report does; a string: shown, with that label, e.g.
    ``"not covered by DP"``).
    """
    wall = result.seconds if seconds is None else seconds
    wall_text = f"{wall:.1f} s" + (" (with the no-DP baseline run)" if baseline_included else "")
    history = result.history
    rounds = [h.round for h in history]
    acc = [h.accuracy for h in history]
    loss = [h.loss for h in history]
    show = per_client is not False
    tag = f" ({per_client})" if isinstance(per_client, str) else ""
    clients = np.stack([h.client_accuracies for h in history]) if history and show else np.zeros((0, 0))

    def curves(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax1 = plt.subplots(figsize=(6.4, 4))
        ax1.plot(rounds, acc, "o-", ms=3, color="tab:blue", label="test accuracy")
        if clients.size:
            ax1.fill_between(
                rounds,
                clients.min(1),
                clients.max(1),
                alpha=0.15,
                color="tab:blue",
                label=f"client accuracy range{tag}",
            )
        ax1.set_xlabel("round")
        ax1.set_ylabel("accuracy")
        ax1.set_ylim(0, 1)
        ax2 = ax1.twinx()
        ax2.plot(rounds, loss, "s--", ms=3, color="tab:red", label="test loss")
        ax2.set_ylabel("loss")
        h1, l1 = ax1.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax1.legend(h1 + h2, l1 + l2, loc="center right")
        ax1.set_title(f"FedAvg on {result.dataset}: accuracy and loss per round")
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    def per_client_bars(path: Path) -> None:
        import matplotlib.pyplot as plt

        final = clients[-1] if clients.size else np.zeros(0)
        order = np.argsort(final)
        fig, ax = plt.subplots(figsize=(6.4, 4))
        ax.bar(range(len(final)), final[order], color="tab:green")
        ax.set_xticks(range(len(final)), [str(i) for i in order], fontsize=7)
        ax.axhline(result.final_accuracy, color="k", ls="--", lw=1, label="global test accuracy")
        ax.set_xlabel("client (sorted by accuracy)")
        ax.set_ylabel("accuracy on the client's label mix")
        ax.set_ylim(0, 1)
        ax.legend(loc="lower right")
        ax.set_title(f"Per-client accuracy of the final model{tag}")
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    s = result.summary()
    cfg = result.config
    worst = s["worst_client_accuracy"]
    summary = [
        ("dataset", f"{result.dataset} ({sum(result.client_sizes)} training samples)"),
        ("clients", f"{cfg.data.num_clients} ({cfg.data.partition}, alpha={cfg.data.alpha})"),
        ("model", f"{cfg.model.name} ({result.num_params} parameters)"),
        ("aggregator", result.aggregator.name),
        ("rounds", str(s["rounds"])),
        ("final test accuracy", f"{s['final_accuracy']:.4f}"),
    ]
    figures = [Figure("accuracy_loss.png", "Global test accuracy and loss per round", curves)]
    records = [h.to_dict() for h in history]
    if show:
        text = (
            "Per-client accuracy weighs the global model's per-class test accuracy by each client's "
            "label mix: under label skew the worst client shows who the model serves badly."
        )
        if tag:
            text += f" Per-client accuracy and client sizes are {per_client}: each comes from one client's data."
        data: dict[str, Any] = {**s, "history": records, "client_sizes": result.client_sizes}
        if tag:
            data["per_client_statistics"] = per_client  # the label travels with the numbers in the JSON
        summary.append((f"worst client accuracy{tag}", f"{worst:.4f}" if worst is not None else "-"))
        figures.append(Figure("client_accuracy.png", f"Per-client accuracy of the final model{tag}", per_client_bars))
    else:
        text = (
            "Per-client accuracy and client sizes are left out: each is computed from one client's data "
            "without noise, which the differential privacy guarantee does not cover."
        )
        data = {k: v for k, v in s.items() if k != "worst_client_accuracy"}
        data["history"] = [
            {k: v for k, v in r.items() if k not in ("worst_client_accuracy", "median_client_accuracy")}
            for r in records
        ]
    refused = [h.round for h in history if h.refused is not None]
    if refused:
        reason = next(h.refused for h in history if h.refused is not None)
        summary.append(
            ("refused rounds", f"{len(refused)} of {len(history)} ({reason}): nothing released, model unchanged")
        )
        data["refused_rounds"] = refused
    stop = getattr(result, "budget_stop", None)
    if stop is not None:  # the privacy section says which guarantee and the figure
        summary.append(("stopped", f"before round {stop.round}: the DP budget would be exceeded (see privacy)"))
        data["stopped_before_round"] = stop.round
    summary.append(("wall time", wall_text))
    return Section(key="training", title="Federated training", text=text, data=data, summary=summary, figures=figures)
