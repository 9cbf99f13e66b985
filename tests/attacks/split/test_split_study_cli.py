"""The study engine, the registered attacks, the report and the `privagg split` command (smoke)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from attacks.registry import ATTACKS, AttackCase
from attacks.runner import run_attack
from attacks.split.study import SplitStudyConfig, interval, run_split_study
from privagg.cli import split as split_cli
from privagg.errors import ConfigurationError
from privagg.report.split import split_study_report
from protocols.split.simulation import SplitConfig


def test_interval() -> None:
    assert interval([1.0]) == (1.0, 1.0, 1.0)
    m, lo, hi = interval([1.0, 2.0, 3.0])
    assert m == 2.0 and lo < 2.0 < hi
    assert interval([1.0, 1.0, 1.0]) == (1.0, 1.0, 1.0)


def test_study_cells_and_report(tmp_path: Path) -> None:
    study = SplitStudyConfig(
        base=SplitConfig(epochs=1), defenses=("none", "max-norm"), attacks=("norm",), seeds=(0, 1), fedavg=True
    )
    r = run_split_study(study)
    assert {(c.attack, c.defense) for c in r.cells} == {("norm", "none"), ("norm", "max-norm")}
    assert r.cell("norm", "none").accuracy_loss == [0.0, 0.0]
    assert len(r.fedavg_accuracy) == 2
    out = split_study_report(r, command="test").write(tmp_path / "rep")
    data = json.loads((out / "report.json").read_text())
    assert len(data["sections"]["matrix"]["rows"]) == 2
    assert (out / "split-norm.png").exists()
    with pytest.raises(ConfigurationError):
        SplitStudyConfig(defenses=("nope",))


def test_registered_attacks_run_on_a_case() -> None:
    assert {"split-norm", "split-direction", "split-decoder"} <= set(ATTACKS.names())
    case = AttackCase.create(dataset="breast-cancer", hidden=(32, 16), num_clients=1, options={"epochs": 1})
    r = run_attack("split-norm", case)
    assert 0.0 <= r.metrics["leak_auc"] <= 1.0 and "accuracy" in r.metrics
    with pytest.raises(ConfigurationError, match="does not apply"):
        run_attack("split-norm", AttackCase.create(dataset="digits"))


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="privagg")
    split_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    args.argv = argv
    return int(args.func(args))


def test_cli_run_and_attack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["split", "run", "--epochs", "1", "--topology", "splitfed", "--clients", "2", "--fedavg"]) == 0
    assert "bytes/step" in capsys.readouterr().out
    out = tmp_path / "study"
    assert (
        _cli(["split", "attack", "--epochs", "1", "--seeds", "0", "--defenses", "none,u-shaped", "--out", str(out)])
        == 0
    )
    assert (out / "report.html").exists()
    assert "leak" in capsys.readouterr().out
    assert _cli(["split", "run", "--epochs", "1", "--mode", "u-shaped", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sections"]["split-run"]["accuracy"] > 0.5


def test_cli_bad_input_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="seeds"):
        _cli(["split", "attack", "--seeds", "0,x"])
    with pytest.raises(ConfigurationError, match="split defense"):
        _cli(["split", "run", "--defense", "nope"])
    assert _cli(["split"]) == 2
