"""``privagg evaluate robustness``: the poisoning attack x robust aggregation matrix.

Sweeps attack (every round / single shot, partial / omniscient) x defense (rules and stacks) x
malicious fraction x Dirichlet alpha, optionally after tuning each defense on a validation
seed, then writes ``report.json``, ``report.html``, ``robustness.csv`` and heatmaps into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from privagg.cli._console import names_help
from privagg.errors import ConfigurationError

__all__ = ["add_parser"]


def _names(values: list[str] | None) -> tuple[str, ...] | None:
    if not values:
        return None
    return tuple(s.strip() for v in values for s in v.split(",") if s.strip())


def _floats(text: str, field: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigurationError(f"expected comma-separated numbers, got {text!r}", field=field) from None
    if not vals:
        raise ConfigurationError("give at least one value", field=field)
    return vals


_TASK: tuple[tuple[str, str, str, Callable[[str], Any], str], ...] = (
    ("rounds", "federation", "rounds", int, "FedAvg rounds per run (default 30)"),
    ("clients", "data", "num_clients", int, "number of clients (default 20)"),
    ("dataset", "data", "dataset", str, "dataset (default digits; backdoors need images)"),
    ("model", "model", "name", str, "model (default mlp)"),
)
_AXES: tuple[tuple[str, Callable[[str], Any], str], ...] = (
    ("norm_bound", float, "norm-bound defense: clipping bound M (default 2.0)"),
    ("noise_multiplier", float, "norm-bound: weak-DP noise multiplier (0.1)"),
    ("local_steps", int, "K mini-batch steps per round instead of full local epochs (1 = FedSGD)"),
    ("validation_seed", int, "with --tune: the seed hyperparameters are chosen on (default: seed + 1000)"),
)


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "evaluate",
        help="evaluate defenses against attacks (robustness)",
        description="Evaluate defenses against attacks; `robustness` is the poisoning x robust aggregation matrix.",
    )
    esub = p.add_subparsers(dest="target", metavar="TARGET", parser_class=type(p))
    r = esub.add_parser(
        "robustness",
        help="poisoning attacks x robust aggregators and stacks: accuracy, backdoor success, worst case",
        description=(
            "Run every poisoning attack against every robust aggregator (and stacks such as\n"
            "arc+nnm+trimmed-mean) and write CSV, JSON, HTML and heatmaps. Lists are comma-\n"
            "separated. The clean baseline and the honest-only ceiling always run."
        ),
        epilog="examples:\n  privagg evaluate robustness --rounds 5 --attacks alie --defenses mean,nnm+krum\n"
        "  privagg evaluate robustness --tune --workers 2\n"
        "  privagg evaluate robustness --secure-aggregation --defenses mean,norm-bound,bucketing+median",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, what in (("--attacks", "poisoning attacks"), ("--defenses", "aggregators")):
        names = f"attacks.robustness.config:default_{flag[2:]}"
        action = names_help(what + ", default: {names}", names, argparse._ExtendAction)
        r.add_argument(flag, nargs="+", metavar="NAME", action=action)
    r.add_argument("--malicious", default="0.2", metavar="F[,F...]", help="malicious fractions (%(default)s)")
    r.add_argument("--alpha", default="0.5", metavar="A[,A...]", help="Dirichlet label-skew levels (%(default)s)")
    r.add_argument("--schedules", default=None, help="every-round,single-shot (default both; single shot: backdoors)")
    r.add_argument("--knowledge", default=None, help="partial,omniscient (default both; omniscient: attacks that read)")
    for opt, _, _, typ, what in _TASK:
        r.add_argument(f"--{opt}", type=typ, default=None, help=what)
    r.add_argument("--seed", type=int, default=0, help="run seed; every stream derives from it (%(default)s)")
    r.add_argument("--non-colluding", action="store_true", help="malicious clients do not share what they know")
    r.add_argument("--secure-aggregation", action="store_true", help="the server sees only sums (see the report)")
    for opt, typ, what in _AXES:
        r.add_argument(f"--{opt.replace('_', '-')}", type=typ, default=None, help=what)
    r.add_argument("--partition", choices=["dirichlet", "iid"], default=None, help="client data split (dirichlet)")
    r.add_argument("--tune", action="store_true", help="choose each defense's hyperparameters by worst case first")
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
    from attacks.robustness import RobustnessConfig, run_matrix, tune
    from privagg.cli import command_line, utc_now
    from privagg.report.robustness import write_matrix

    started = utc_now()
    axes: dict[str, Any] = {
        "malicious": _floats(args.malicious, "--malicious"),
        "alphas": _floats(args.alpha, "--alpha"),
        "colluding": not args.non_colluding,
        "secure_aggregation": args.secure_aggregation,
    }
    for key in ("attacks", "defenses", "schedules", "knowledge"):
        value = getattr(args, key)
        if (names := _names([value] if isinstance(value, str) else value)) is not None:
            axes[key] = names
    axes.update({k: getattr(args, k) for k, _, _ in _AXES[:3] if getattr(args, k) is not None})
    task: dict[str, dict[str, Any]] = {"data": {}, "model": {}, "federation": {}}
    for opt, section, key, _, _ in (*_TASK, ("partition", "data", "partition", str, "")):
        if (v := getattr(args, opt)) is not None:
            task[section][key] = v
    cfg = RobustnessConfig(**axes).with_run({"seed": args.seed, **task})
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"{out} exists and is not a directory", field="--out")
    t0 = time.perf_counter()
    tuning = None
    if args.tune:
        vseed = args.validation_seed if args.validation_seed is not None else args.seed + 1000
        tuning = tune(cfg, validation_seed=vseed, workers=args.workers)
        cfg = tuning.apply(cfg)
    results = run_matrix(cfg, progress=not args.no_progress and not args.json, workers=args.workers)
    seconds = time.perf_counter() - t0
    command = command_line(args)
    report = write_matrix(cfg, results, out, seconds=seconds, tuning=tuning, command=command, started=started)
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
