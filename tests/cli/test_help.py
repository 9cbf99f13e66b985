"""Every command's help: examples, a description, help text for every option, valid names, no markup."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from privagg.cli import build_parser, main

MARKUP = re.compile(r"``|:(class|func|meth|mod|data|attr):|`[^`\s]+`_")


Parsers = Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]


def _parsers(p: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Parsers:
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from _parsers(sp, (*path, name))


ALL = list(_parsers(build_parser()))
IDS = [" ".join(path) or "privagg" for path, _ in ALL]


@pytest.mark.parametrize(("path", "parser"), ALL, ids=IDS)
def test_no_markup_leaks_and_every_command_is_described(path, parser) -> None:
    text = parser.format_help()
    assert not MARKUP.search(text), MARKUP.search(text)
    assert parser.description, f"privagg {' '.join(path)} has no description"


@pytest.mark.parametrize(("path", "parser"), ALL, ids=IDS)
def test_every_option_has_help(path, parser) -> None:
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        assert a.help and a.help is not argparse.SUPPRESS, f"privagg {' '.join(path)} {a.option_strings or a.dest}"


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["attack", "--help"]])
def test_help_shows_examples(argv, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out.lower()
    assert re.search(r"^\s+privagg \w+", out, re.M)


def test_evaluate_lists_valid_attack_and_defense_names(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "robustness", "--help"])
    out = re.sub(r"-\s+", "-", " ".join(capsys.readouterr().out.split()))  # argparse wraps at hyphens
    from attacks.robustness.config import default_attacks, default_defenses

    assert "alie" in default_attacks() and "krum" in default_defenses()
    assert all(n in out for n in (*default_attacks(), *default_defenses()))


@pytest.mark.parametrize(
    ("argv", "registry"),
    [
        (["run", "--help"], "protocols.aggregation:AGGREGATORS"),
        (["run", "--help"], "protocols.datasets:DATASETS"),
        (["attack", "--help"], "attacks.registry:DEFENSES"),
    ],
)
def test_name_options_list_the_registry(argv, registry, capsys) -> None:
    import importlib

    module, attr = registry.split(":")
    names = getattr(importlib.import_module(module), attr).names()
    with pytest.raises(SystemExit):
        main(argv)
    out = re.sub(r"-\s+", "-", " ".join(capsys.readouterr().out.split()))  # argparse wraps at hyphens
    assert len(names) >= 2 and all(n in out for n in names)


def test_markup_is_stripped() -> None:
    from privagg.cli._console import plain

    assert plain("see :class:`~protocols.fedavg.RunConfig` and ``digits``::") == (
        "see protocols.fedavg.RunConfig and digits:"
    )
