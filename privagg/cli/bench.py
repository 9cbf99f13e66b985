"""``privagg bench secagg|paillier|dp``: benchmarks that print figures measured side by side in one run.

Each target's arguments and printing live in ``privagg/cli/bench_<target>.py``; the engines
are :mod:`privagg.bench`. A target's flags are named after its engine's keyword arguments
(``--no-memory`` stores ``measure_memory``), so :func:`engine_kwargs` hands them over.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any

__all__ = ["add_parser", "engine_kwargs"]


def engine_kwargs(engine: Callable[..., object], args: argparse.Namespace) -> dict[str, Any]:
    """The parsed flags that are keyword arguments of ``engine`` (the others keep their defaults)."""
    accepted = inspect.signature(engine).parameters
    return {k: v for k, v in vars(args).items() if k in accepted}


def add_parser(sub: Any) -> None:
    from privagg.cli import bench_dp, bench_paillier, bench_secagg

    p: argparse.ArgumentParser = sub.add_parser(
        "bench",
        help="run a benchmark (secagg, paillier, dp)",
        description="Benchmarks that print figures measured side by side in one run.",
        epilog="examples:\n  privagg bench secagg --clients 100 --params 100000 --dropout 0.1\n"
        "  privagg bench paillier --clients 10 --params 10000\n  privagg bench dp --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bsub = p.add_subparsers(dest="target", metavar="TARGET", parser_class=type(p))
    for target in (bench_secagg, bench_paillier, bench_dp):
        target.add_parser(bsub)

    def _help(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
