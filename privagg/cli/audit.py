"""``privagg audit``: check a federated deployment's privacy configuration, with evidence.

A privacy engineer describes the deployment (population, dropout and corruption rates,
secure-aggregation threat model and graph, differential privacy, aggregation rule) in a TOML
file; the audit

1. analyses the secure-aggregation parameters (privacy and failure probabilities of the
   configured graph and threshold, against the derived ones and the stated targets);
2. *runs* the malicious-server protocol attacks (model inconsistency, Sybil isolation, fake
   dropouts, both shares) against real state machines in the configured threat model, and
   in privagg's active mode for comparison;
3. accounts the differential-privacy budget (RDP and PRV) over the planned rounds;
4. checks that the aggregation rule can run under secure aggregation at all;
5. estimates each client's upload.

Each check becomes a finding (pass / warn / fail) in ``report.json`` and ``report.html``.
The default deployment is Flower's SecAgg+ defaults (100 clients, 14 neighbours, threshold 10,
semi-honest server, no DP): ``privagg audit`` shows what an auditor would flag there.
``--strict`` exits 1 when a finding fails (for CI gates).

``--empirical`` measures instead of analysing: it runs a *run* configuration (the TOML
``privagg run --config`` takes; default: the main job with DP, Poisson 0.5, 20 rounds) through
the same DP-FedAvg aggregator path with inserted canary clients, and prints one verdict line:
the empirical epsilon lower bound (white-box: every released round; black-box: the final
model) beside the accountant's. ``--strict`` then exits 1 when the audit flags the mechanism.

examples:
  privagg audit --config deployment.toml --strict
  privagg audit --empirical --canaries 1000
  privagg audit --empirical --config run.toml --rounds 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "audit",
        help="audit a deployment's privacy configuration (runs the protocol attacks)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="TOML", help="deployment description ([deployment], [dp] tables)")
    p.add_argument("--out", default="privagg-audit", metavar="DIR", help="report directory (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")
    p.add_argument("--no-attacks", action="store_true", help="skip running the protocol attacks")
    p.add_argument("--strict", action="store_true", help="exit 1 when a finding fails (or the mechanism is flagged)")
    e = p.add_argument_group("empirical audit (canary clients)")
    e.add_argument("--empirical", action="store_true", help="measure epsilon with canaries; --config is a run TOML")
    e.add_argument("--canaries", type=int, default=1000, metavar="N", help="canary clients (default: %(default)s)")
    e.add_argument("--confidence", type=float, default=0.95, help="of all bounds together (default: %(default)s)")
    e.add_argument("--seed", type=int, default=0, help="seed of the canaries' directions and coins (default: 0)")
    e.add_argument("--rounds", type=int, metavar="R", help="override federation.rounds of the run")
    p.set_defaults(func=_main)


def _progress(message: str) -> None:
    print(message, file=sys.stderr)


def _empirical(args: argparse.Namespace) -> int:
    from privagg.audit.canaries import CanaryConfig, empirical_run_config, run_canary_audit
    from privagg.audit.noise_check import run_noise_check
    from privagg.cli import command_line, utc_now
    from privagg.report import provenance
    from privagg.report.audit import empirical_report

    run = empirical_run_config(args.config, rounds=args.rounds)
    canary = CanaryConfig(canaries=args.canaries, seed=args.seed, confidence=args.confidence)
    started = utc_now()
    result = run_canary_audit(run, canary, progress=None if args.json else _progress)
    noise = run_noise_check(run, progress=None if args.json else _progress)
    report = empirical_report(result, noise)
    provenance(report, command=command_line(args), seed=args.seed, timestamp=started)
    report.write(args.out)
    if args.json:
        print(report.to_json())
    else:
        print(result.verdict)
        print(f"noise check: {noise.verdict}")
        print(f"report: {Path(args.out) / 'report.html'}", file=sys.stderr)
    return 1 if ((result.flagged or noise.failed) and args.strict) else 0


def _main(args: argparse.Namespace) -> int:
    if args.empirical:
        return _empirical(args)
    from privagg.audit import FLOWER_DEFAULTS, AuditConfig, run_audit
    from privagg.cli import command_line, utc_now
    from privagg.config import read_toml
    from privagg.report import provenance
    from privagg.report.audit import audit_report

    data: dict[str, Any] = read_toml(args.config) if args.config else {**FLOWER_DEFAULTS}
    if args.no_attacks:
        data["protocol_attacks"] = False
    started = utc_now()
    result = run_audit(AuditConfig.from_mapping(data), progress=None if args.json else _progress)
    report = audit_report(result)
    provenance(report, command=command_line(args), seed=None, timestamp=started)
    report.write(args.out)
    if args.json:
        print(report.to_json())
    else:
        mark = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}
        for f in result.findings:
            print(f"[{mark[f.severity]}] {f.title}: {f.detail}")
        print(f"report: {Path(args.out) / 'report.html'}", file=sys.stderr)
    return 1 if (result.failed and args.strict) else 0
