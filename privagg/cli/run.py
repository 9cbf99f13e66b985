"""``privagg run``: the main job — a federated training run with its privacy report.

With no arguments it runs the ``hardened`` preset: active secure aggregation plus distributed
client-level DP (epsilon 8 against model observers, ~25 against the server, delta 1e-5) on
``digits`` split into 1,000 clients with secret Poisson sampling, then the same run without privacy
(the measured cost). ``--preset NAME`` starts from another named configuration (``plain`` is
``RunConfig()``: FedAvg, plain mean, 20 non-IID clients); ``--config run.toml`` describes a whole
run from ``RunConfig()`` (same section names as :class:`protocols.fedavg.RunConfig`), on top of
``--preset`` when both are given; flags come last.
The report opens with privacy: who sees what, the threat model, the DP guarantee, what an attacker
learns, measured in the same command (a malicious-model attack on what this server sees,
membership inference on the final model; about 1 s, ``--no-leakage`` skips them), and the costs.
A ``[personalization]`` table in the config runs FedLTN / LotteryFL beside FedAvg instead.
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
  privagg run                                  # hardened preset, report in privagg-report/
  privagg run --rounds 10 --seed 1 --out privagg-seed1
  privagg run --preset plain                   # FedAvg, plain mean, no privacy (RunConfig())
  privagg run --preset plain --aggregator secagg   # the plain run under secure aggregation
  privagg run --config dp.toml                 # a run from RunConfig() with a [dp] table
  privagg run --json --no-progress > report.json"""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="federated training run with a privacy report (default: the hardened preset)",
        description=__doc__,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        action=names_help(
            "named configuration (default: hardened, or RunConfig() with --config): {names}", "privagg.run:PRESETS.keys"
        ),
    )
    p.add_argument("--config", metavar="TOML", help="TOML file: a run from RunConfig(), or on top of --preset")
    p.add_argument("--out", default="privagg-report", metavar="DIR", help="report directory (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")
    p.add_argument("--seed", type=int, help="run seed (simulation randomness only)")
    p.add_argument("--rounds", type=int, help="round budget")
    p.add_argument("--dataset", action=names_help("dataset: {names}", "protocols.datasets:DATASETS.names"))
    p.add_argument("--aggregator", action=names_help("aggregator: {names}", "protocols.aggregation:AGGREGATORS.names"))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-baseline", action="store_true", help="skip the same run without privacy (the measured accuracy cost)"
    )
    p.add_argument(
        "--no-leakage", action="store_true", help="skip the measured attacks: malicious model, membership (about 1 s)"
    )
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


def _personalized(args: argparse.Namespace, cfg: Any, options: Any, out: Path, started: str) -> int:
    """``[personalization]``: the chosen algorithm beside FedAvg (+ fine-tuning); ``--rounds`` sets its rounds."""
    import dataclasses

    from privagg.cli import command_line
    from privagg.report.personalization import personalization_report
    from privagg.run import execute_personalized

    if args.aggregator is not None:
        raise ConfigurationError("not used with [personalization] (it runs its own aggregation)", field="--aggregator")
    if args.rounds is not None:
        options = dataclasses.replace(options, rounds=args.rounds)
    comp = execute_personalized(cfg, options)
    report = personalization_report(comp, command=command_line(args), timestamp=started)
    report.write(out)
    res = comp.result
    line = f"personalized accuracy {res.mean_accuracy:.4f} (worst {res.worst_accuracy:.4f}) with {options.name}"
    if args.json:
        print(report.to_json())
    else:
        print(f"{line}; report: {out / 'report.html'}", file=sys.stderr)
    return 0


def _main(args: argparse.Namespace) -> int:
    from privagg.cli import command_line, utc_now
    from privagg.report.dp import dp_warnings, guarantee_line
    from privagg.report.run import run_report
    from privagg.run import DEFAULT_PRESET, execute_run, run_plan

    preset = args.preset or (None if args.config else DEFAULT_PRESET)
    cfg, sections = run_plan(args.config, _cli_overrides(args), preset=preset)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"{out} exists and is not a directory", field="--out")
    started = utc_now()
    if "personalization" in sections:
        return _personalized(args, cfg, sections["personalization"], out, started)
    progress = not args.no_progress and not args.json
    outcome = execute_run(cfg, progress=progress, baseline=not args.no_baseline, leakage=not args.no_leakage)
    per_client = args.per_client_stats
    report = run_report(outcome, command=command_line(args), timestamp=started, per_client_under_dp=per_client)
    report.write(out)
    if outcome.config.dp is not None:
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
        if "privacy" in d:
            print(f"privacy: {guarantee_line(d['privacy'])}", file=sys.stderr)
        print(f"server sees: {d['exposure']['server_sees']}", file=sys.stderr)
        if outcome.leakage is not None:
            print(f"measured: {outcome.leakage.exposure.verdict()}", file=sys.stderr)
        if outcome.membership is not None:
            print(f"measured: {outcome.membership.verdict()}", file=sys.stderr)
        if "costs" in d["sections"]:
            print(f"cost: {d['sections']['costs']['line']}", file=sys.stderr)
    return 0
