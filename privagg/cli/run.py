"""``privagg run``: the main job — a federated training run with its report.

Defaults (``protocols.fedavg.RunConfig()``): FedAvg on ``digits`` (scikit-learn, embedded),
20 clients with Dirichlet(0.5) label skew, an MLP, up to 50 rounds with early stopping on a
plateau. ``--preset NAME`` starts from a named configuration instead (``hardened``: active
secure aggregation + client-level DP over 1,000 clients); ``--config run.toml`` overrides any
setting (same section names as :class:`protocols.fedavg.RunConfig`). The report opens with
privacy: who sees what, the threat model, the DP guarantee, and a measured malicious-model
attack on what this configuration's server sees (about 1 s; ``--no-leakage`` skips it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from privagg.cli._console import names_help
from privagg.errors import ConfigurationError

__all__ = ["add_parser"]

_EXAMPLES = """examples:
  privagg run                                  # report in privagg-report/
  privagg run --rounds 10 --seed 1 --out privagg-seed1
  privagg run --aggregator secagg              # under secure aggregation
  privagg run --preset hardened                # active secure aggregation + client-level DP
  privagg run --config dp.toml                 # [dp] table: DP and its cost
  privagg run --json --no-progress > report.json"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="federated training run with a report (default: FedAvg on digits, 20 non-IID clients)",
        description=__doc__,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset", action=names_help("named configuration (default: plain): {names}", "privagg.run:PRESETS.keys")
    )
    p.add_argument("--config", metavar="TOML", help="TOML file overriding any setting of the run (and the preset)")
    p.add_argument("--out", default="privagg-report", metavar="DIR", help="report directory (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")
    p.add_argument("--seed", type=int, help="run seed (simulation randomness only)")
    p.add_argument("--rounds", type=int, help="round budget")
    p.add_argument("--dataset", action=names_help("dataset: {names}", "protocols.datasets:DATASETS.names"))
    p.add_argument("--aggregator", action=names_help("aggregator: {names}", "protocols.aggregation:AGGREGATORS.names"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-baseline", action="store_true", help="with DP enabled: skip the same run without DP (accuracy cost)"
    )
    p.add_argument("--no-leakage", action="store_true", help="skip the measured malicious-model attack (about 1 s)")
    p.add_argument(
        "--per-client-stats",
        action="store_true",
        help="with DP enabled: show per-client accuracy and client sizes anyway (labelled: not covered by DP)",
    )
    p.set_defaults(func=_main)


def _cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    o: dict[str, Any] = {}
    if args.seed is not None:
        o["seed"] = args.seed
    if args.rounds is not None:
        o.setdefault("federation", {})["rounds"] = args.rounds
    if args.dataset is not None:
        o.setdefault("data", {})["dataset"] = args.dataset
    if args.aggregator is not None:
        o.setdefault("aggregation", {})["name"] = args.aggregator
    return o


def _main(args: argparse.Namespace) -> int:
    from privagg.cli import command_line, utc_now
    from privagg.report.run import run_report
    from privagg.run import execute_run, run_config

    cfg = run_config(args.config, _cli_overrides(args), preset=args.preset)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"{out} exists and is not a directory", field="--out")
    started = utc_now()
    progress = not args.no_progress and not args.json
    outcome = execute_run(cfg, progress=progress, baseline=not args.no_baseline, leakage=not args.no_leakage)
    per_client = args.per_client_stats
    report = run_report(outcome, command=command_line(args), timestamp=started, per_client_under_dp=per_client)
    report.write(out)
    if outcome.config.dp is not None:
        from privagg.report.dp import dp_warnings

        for line in dp_warnings(outcome.result, outcome.baseline):
            print(f"privagg: warning: {line}", file=sys.stderr)
    if args.json:
        print(report.to_json())
    else:
        d = report.to_dict()
        print(
            f"final accuracy {d['final_accuracy']:.4f} after {d['rounds']} rounds in {d['seconds']:.1f} s; "
            f"report: {out / 'report.html'}",
            file=sys.stderr,
        )
        print(f"server sees: {d['exposure']['server_sees']}", file=sys.stderr)
        if outcome.leakage is not None:
            print(f"measured: {outcome.leakage.exposure.verdict()}", file=sys.stderr)
    return 0
