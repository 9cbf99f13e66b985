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
    p.add_argument("--strict", action="store_true", help="exit 1 when a finding fails")
    p.set_defaults(func=_main)


def _progress(message: str) -> None:
    print(message, file=sys.stderr)


def _main(args: argparse.Namespace) -> int:
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
