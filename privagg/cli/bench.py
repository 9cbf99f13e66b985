"""``privagg bench <target>``: benchmarks that print figures measured side by side in one run.

Each target lives in ``privagg/cli/bench_<target>.py`` and exposes ``add_parser(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

_TARGETS = ("secagg", "paillier", "dp")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("bench", help="run a benchmark (secagg, paillier, dp)")
    bsub = p.add_subparsers(dest="target", metavar="TARGET", parser_class=type(p))
    for name in _TARGETS:
        try:
            module = importlib.import_module(f"privagg.cli.bench_{name}")
        except ModuleNotFoundError as e:
            if e.name != f"privagg.cli.bench_{name}":
                raise
            continue
        module.add_parser(bsub)

    def _help(args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=_help)
