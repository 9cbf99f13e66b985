"""``privagg run``: the main job — a federated training run with its report.

Defaults: FedAvg on ``digits`` (scikit-learn, embedded), 20 clients with Dirichlet(0.5)
label skew, an MLP, up to 50 rounds with early stopping on a plateau. ``--config run.toml``
overrides any setting (same section names as :class:`protocols.fedavg.RunConfig`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from privagg.config import config_to_dict, load_config, override, read_toml
from privagg.report import Report, environment_section

__all__ = ["DEFAULT_RUN", "add_parser", "default_run_config", "execute_run"]

DEFAULT_RUN: dict[str, Any] = {
    "seed": 0,
    "data": {"dataset": "digits", "num_clients": 20, "partition": "dirichlet", "alpha": 0.5},
    "model": {"name": "mlp", "hidden": [64]},
    "train": {"epochs": 2, "batch_size": 16, "lr": 0.05, "momentum": 0.9},
    "federation": {"rounds": 50, "sampling": "all", "patience": 10},
    "aggregation": {"name": "mean"},
}


def default_run_config() -> Any:
    from protocols.fedavg import RunConfig

    return load_config(RunConfig, DEFAULT_RUN)


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="federated training run with a report (default: FedAvg on digits, 20 non-IID clients)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="TOML", help="TOML file overriding any setting of the run")
    p.add_argument("--out", default="privagg-report", metavar="DIR", help="report directory (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")
    p.add_argument("--seed", type=int, help="run seed (simulation randomness only)")
    p.add_argument("--rounds", type=int, help="round budget")
    p.add_argument("--dataset", help="dataset name (digits, breast-cancer, mnist-5k)")
    p.add_argument("--aggregator", help="aggregator name (mean, secagg, paillier, ...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--no-baseline", action="store_true", help="with DP enabled: skip the same run without DP (accuracy cost)"
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


def execute_run(cfg: Any, *, progress: bool = True, baseline: bool = True) -> Report:
    """Run the configured federation (and, with DP, the same run without it) into a Report."""
    from protocols.fedavg import FedAvgSimulation

    t0 = time.perf_counter()
    result = FedAvgSimulation(cfg).run(progress=progress, description="FedAvg")
    sections = result.report_sections()
    if cfg.dp is not None and baseline:
        base_cfg = dataclasses.replace(cfg, dp=None)
        base = FedAvgSimulation(base_cfg).run(progress=progress, description="baseline (no DP)")
        from protocols.dp_fedavg import accuracy_cost_section

        sections.append(accuracy_cost_section(result, base, key="dp_cost"))
    report = Report(
        "privagg run",
        top={
            "final_accuracy": result.final_accuracy,
            "rounds": len(result.history),
            "seconds": time.perf_counter() - t0,
            "config": config_to_dict(cfg),
        },
    )
    for s in sections:
        report.add(s)
    report.add(environment_section())
    return report


def _main(args: argparse.Namespace) -> int:
    cfg = default_run_config()
    if args.config:
        cfg = override(cfg, read_toml(args.config))
    cli = _cli_overrides(args)
    if cli:
        cfg = override(cfg, cli)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        from privagg.errors import ConfigurationError

        raise ConfigurationError(f"{out} exists and is not a directory", field="--out")
    report = execute_run(cfg, progress=not args.no_progress and not args.json, baseline=not args.no_baseline)
    report.write(out)
    if args.json:
        print(report.to_json())
    else:
        d = report.to_dict()
        print(
            f"final accuracy {d['final_accuracy']:.4f} after {d['rounds']} rounds in {d['seconds']:.1f} s; "
            f"report: {out / 'report.html'}",
            file=sys.stderr,
        )
    return 0
