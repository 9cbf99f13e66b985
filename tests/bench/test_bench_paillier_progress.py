"""``privagg bench paillier`` reports progress (issue 21): a bar with a time estimate on a terminal's
stderr, nothing with ``--no-progress`` or when stderr is not a terminal."""

from __future__ import annotations

import json
import sys

import pytest

from privagg.bench.paillier import run_bench
from privagg.cli import main

TOY = "bench paillier --clients 2 --params 30 --key-bits 256 --allow-insecure --variants headline --phe-budget 0.2"


def test_the_engine_reports_every_step_in_order() -> None:
    calls: list[tuple[str, int, int]] = []
    res = run_bench(
        clients=2,
        params=30,
        key_bits=256,
        allow_insecure=True,
        variants="headline",
        decryptors=3,
        threshold=2,
        phe_budget=0.2,
        repeats=2,
        progress=lambda what, done, total: calls.append((what, done, total)),
    )
    assert res.correct
    total = 1 * (2 + 2) + 2 + 1  # per variant: keys, 2 rounds, ceiling; phe: keys, 2 runs
    assert {c[2] for c in calls} == {total} and len(calls) == total + 1
    assert [c[1] for c in calls] == list(range(total + 1))
    assert [c[0] for c in calls] == [
        "fixed-base+threshold-2of3: keys and tables",
        "fixed-base+threshold-2of3: round 1 of 2",
        "fixed-base+threshold-2of3: round 2 of 2",
        "fixed-base+threshold-2of3: ceiling",
        "python-paillier: keys",
        "python-paillier: run 1 of 2",
        "python-paillier: run 2 of 2",
        "done",
    ]


@pytest.mark.parametrize("tty", [False, True])
def test_the_cli_shows_progress_on_a_terminal_only(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tty: bool
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    monkeypatch.setenv("COLUMNS", "100")
    assert main([*TOY.split(), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["correct"] is True  # stdout holds the JSON alone, either way
    if tty:
        assert "python-paillier" in err or "done" in err
    else:
        assert err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main([*TOY.split(), "--json", "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
