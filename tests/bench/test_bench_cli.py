"""``privagg bench dp`` and ``privagg bench secagg --repeat`` end to end on toy sizes."""

from __future__ import annotations

import json

import pytest

from privagg.cli import main


def test_bench_dp_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "dp", "--dim", "1000", "--repeats", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dim"] == 1000 and len(out["median_seconds"]) == 4 and "secure_meets_target" in out
    assert main(["bench", "dp", "--dim", "1000", "--repeats", "1"]) == 0
    assert "raw AES-256-CTR keystream" in capsys.readouterr().out


def test_bench_dp_bad_input_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "dp", "--dim", "0"]) == 2
    assert "dim" in capsys.readouterr().err


def test_bench_secagg_repeat(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "secagg", "-N", "6", "-M", "100", "--degree", "4", "--threshold", "3", "--repeat", "2"]
    assert main([*argv, "--no-memory", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["round_seconds_all"]) == 2 and out["memory_method"] == "not measured"


def test_bench_without_target_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench"]) == 2
    assert "secagg" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("target", "engine"),
    [("secagg", "privagg.bench.secagg"), ("paillier", "privagg.bench.paillier"), ("dp", "privagg.bench.dp")],
)
def test_every_flag_reaches_the_engine(target: str, engine: str) -> None:
    """Flags are named after the engine's keyword arguments; a flag the engine does not take would be lost."""
    import argparse
    import importlib
    import inspect

    from privagg.cli import build_parser

    def subparser(p: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        return action.choices[name]

    p = subparser(subparser(build_parser(), "bench"), target)
    dests = {a.dest for a in p._actions} - {"help", "json"}
    accepted = inspect.signature(importlib.import_module(engine).run_bench).parameters
    assert dests <= set(accepted), dests - set(accepted)
