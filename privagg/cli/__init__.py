"""The ``privagg`` command: ``run``, ``audit``, ``bench``, ``attack``, ``evaluate``, ``split``.

Each sub-command lives in its own module exposing ``add_parser(subparsers)``; the parser
it adds sets ``func(args) -> int``. Bad input becomes one clear line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import shlex
import sys
from collections.abc import Sequence

from privagg import __version__
from privagg.errors import ConfigurationError, PrivAggError

__all__ = ["main", "build_parser", "command_line", "utc_now"]

# Top-level sub-commands, in help order.
_COMMANDS = ("run", "audit", "bench", "attack", "evaluate", "split")

_EXAMPLES = """examples:
  privagg run                          # the main job; report in privagg-report/
  privagg run --aggregator secagg      # the same run under secure aggregation
  privagg audit --config deployment.toml
  privagg attack --list                # the registered attacks
  privagg attack idlg --defense secagg
  privagg bench secagg --clients 100 --params 100000 --dropout 0.1
  privagg evaluate robustness --rounds 5
  privagg split attack --seeds 0,1,2   # split learning: label leakage x defenses

`privagg COMMAND --help` shows each command's options and examples."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"privagg: error: {message}\n(see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="privagg",
        description="Privacy-hardened secure aggregation toolkit for federated learning.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    _tidy(parser)
    return parser


def _tidy(parser: argparse.ArgumentParser) -> None:
    """Docstrings serve as descriptions: strip their Sphinx markup from every help text."""
    from privagg.cli._console import plain

    parser.description, parser.epilog = plain(parser.description), plain(parser.epilog)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action.choices.values():
                _tidy(choice)
        elif not isinstance(getattr(type(action), "help", None), property) and isinstance(action.help, str):
            action.help = plain(action.help)


def command_line(args: argparse.Namespace) -> str:
    """The command as typed (``privagg run --rounds 3``), for the top of a report."""
    return shlex.join(["privagg", *getattr(args, "argv", [])])


def utc_now() -> str:
    """Now, ISO 8601 in UTC to the second: a report's timestamp."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
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
