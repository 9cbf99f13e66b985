"""The ``privagg`` command: ``run``, ``audit``, ``bench``, ``attack``, ``evaluate``.

Each sub-command lives in its own module exposing ``add_parser(subparsers)``; the parser
it adds sets ``func(args) -> int``. Bad input becomes one clear line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from privagg import __version__
from privagg.errors import ConfigurationError, PrivAggError

__all__ = ["main", "build_parser"]

# Top-level sub-commands, in help order.
_COMMANDS = ("run", "audit", "bench", "attack", "evaluate")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"privagg: error: {message}\n(see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="privagg", description="Privacy-hardened secure aggregation toolkit for federated learning.")
    parser.add_argument("--version", action="version", version=f"privagg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"privagg.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"privagg.cli.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigurationError as e:
        print(f"privagg: error: {e}", file=sys.stderr)
        return 2
    except PrivAggError as e:
        print(f"privagg: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("privagg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
