"""``privagg evaluate robustness``: the poisoning attack x robust aggregation matrix.

Sweeps attack x defense x malicious fraction x Dirichlet alpha, then writes ``report.json``,
``report.html``, ``robustness.csv`` and heatmaps (main-task accuracy, backdoor success,
worst-case accuracy per defense) into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from privagg.cli._console import names_help
from privagg.errors import ConfigurationError

__all__ = ["add_parser"]


def _names(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    out: list[str] = []
    for v in values:
        out.extend(s.strip() for s in v.split(",") if s.strip())
    return tuple(out)


def _floats(text: str, field: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigurationError(f"expected comma-separated numbers, got {text!r}", field=field) from None
    if not vals:
        raise ConfigurationError("give at least one value", field=field)
    return vals


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "evaluate",
        help="evaluate defenses against attacks (robustness)",
        description="Evaluate defenses against attacks; `robustness` is the poisoning x robust aggregation matrix.",
    )
    esub = p.add_subparsers(dest="target", metavar="TARGET", parser_class=type(p))
    r = esub.add_parser(
        "robustness",
        help="poisoning attacks x robust aggregators: accuracy, backdoor success, worst case",
        description=(
            "Run every poisoning attack against every robust aggregator on one federated task\n"
            "and write CSV, JSON, HTML and heatmaps. Lists are comma-separated (or space-\n"
            "separated). 'none' is the clean baseline."
        ),
        epilog="examples:\n  privagg evaluate robustness --rounds 5 --attacks alie --defenses mean,krum\n"
        "  privagg evaluate robustness --secure-aggregation --malicious 0.1,0.2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, what in (("--attacks", "poisoning attacks"), ("--defenses", "aggregators")):
        names = f"attacks.robustness.config:default_{flag[2:]}"
        action = names_help(what + ", default all: {names}", names, argparse._ExtendAction)
        r.add_argument(flag, nargs="+", metavar="NAME", action=action)
    r.add_argument("--malicious", default="0.2", metavar="F[,F...]", help="malicious fractions (%(default)s)")
    r.add_argument("--alpha", default="0.5", metavar="A[,A...]", help="Dirichlet label-skew levels (%(default)s)")
    r.add_argument("--rounds", type=int, default=None, help="FedAvg rounds per run (default 15)")
    r.add_argument("--clients", type=int, default=None, help="number of clients (default 20)")
    r.add_argument("--dataset", default=None, help="dataset (default digits; backdoors need images)")
    r.add_argument("--model", default=None, help="model (default mlp)")
    r.add_argument("--seed", type=int, default=0, help="run seed; every stream derives from it (%(default)s)")
    r.add_argument("--omniscient", action="store_true", help="attackers read every honest update of the round")
    r.add_argument("--non-colluding", action="store_true", help="malicious clients do not share what they know")
    r.add_argument(
        "--secure-aggregation",
        action="store_true",
        help="the server only sees the sum: defenses that need individual updates are refused",
    )
    r.add_argument("--norm-bound", type=float, default=None, help="norm-bound defense: clipping bound M (default 2.0)")
    r.add_argument("--noise-multiplier", type=float, default=None, help="norm-bound: weak-DP noise multiplier (0.1)")
    r.add_argument(
        "--partition", choices=["dirichlet", "iid"], default=None, help="how clients' data is split (dirichlet)"
    )
    r.add_argument(
        "--local-steps",
        type=int,
        default=None,
        metavar="K",
        help="K mini-batch steps per round instead of full local epochs (1 = FedSGD, the ALIE paper's regime)",
    )
    r.add_argument("--workers", type=int, default=1, help="processes running cells in parallel (%(default)s)")
    r.add_argument("--out", default="privagg-robustness", metavar="DIR", help="report directory (default: %(default)s)")
    r.add_argument("--json", action="store_true", help="print report.json to stdout")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=_robustness)

    def _help(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)


def _robustness(args: argparse.Namespace) -> int:
    from attacks.robustness import RobustnessConfig, run_matrix
    from privagg.report.robustness import write_matrix

    axes: dict[str, Any] = {
        "malicious": _floats(args.malicious, "--malicious"),
        "alphas": _floats(args.alpha, "--alpha"),
        "omniscient": args.omniscient,
        "colluding": not args.non_colluding,
        "secure_aggregation": args.secure_aggregation,
    }
    for opt, key in (("attacks", "attacks"), ("defenses", "defenses")):
        if (names := _names(getattr(args, opt))) is not None:
            axes[key] = names
    for opt in ("norm_bound", "noise_multiplier", "local_steps"):
        if (v := getattr(args, opt)) is not None:
            axes[opt] = v
    task: dict[str, dict[str, Any]] = {"data": {}, "model": {}, "federation": {}}
    for opt, section, key in (
        ("rounds", "federation", "rounds"),
        ("clients", "data", "num_clients"),
        ("dataset", "data", "dataset"),
        ("partition", "data", "partition"),
        ("model", "model", "name"),
    ):
        if (v := getattr(args, opt)) is not None:
            task[section][key] = v
    cfg = RobustnessConfig(**axes).with_run({"seed": args.seed, **task})
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"{out} exists and is not a directory", field="--out")
    t0 = time.perf_counter()
    results = run_matrix(cfg, progress=not args.no_progress and not args.json, workers=args.workers)
    seconds = time.perf_counter() - t0
    report = write_matrix(cfg, results, out, seconds=seconds)
    if args.json:
        print(report.to_json())
    else:
        refused = sum(r.status != "ok" for r in results)
        print(
            f"{len(results)} runs ({refused} refused) in {seconds:.1f} s; "
            f"report: {out / 'report.html'}, table: {out / 'robustness.csv'}",
            file=sys.stderr,
        )
    return 0
