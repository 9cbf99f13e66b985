"""``privagg run`` with a ``[personalization]`` table: the run plan carries the section, the CLI dispatches it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privagg.cli import main
from privagg.errors import ConfigurationError
from privagg.run import run_config, run_plan
from protocols.personalization import PersonalizationOptions

TOML = """
[data]
dataset = "digits"
num_clients = 5
partition = "shards"
shards_per_client = 2

[model]
name = "logreg"

[personalization]
name = "fedltn"
rounds = 3
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fedltn.toml"
    p.write_text(text)
    return p


def test_the_plan_loads_the_personalization_section_and_later_layers_refine_it(tmp_path: Path) -> None:
    cfg, sections = run_plan(_write(tmp_path, TOML), {"personalization": {"rounds": 2}})
    opts = sections["personalization"]
    assert isinstance(opts, PersonalizationOptions) and opts.name == "fedltn" and opts.rounds == 2
    assert cfg.data.num_clients == 5 and cfg.data.partition == "shards"
    assert run_config(_write(tmp_path, TOML)) == cfg  # run_config: the same RunConfig, sections left out
    assert run_plan(overrides={"seed": 3})[1] == {}
    with pytest.raises(ConfigurationError) as e:
        run_plan(_write(tmp_path, TOML + "bogus = 1\n"))
    assert e.value.field == "personalization.bogus"


def test_the_cli_runs_a_personalized_comparison_and_refuses_an_aggregator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _write(tmp_path, TOML)
    out = tmp_path / "r"
    assert main(["run", "--config", str(cfg), "--rounds", "1", "--no-progress", "--json", "--out", str(out)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["title"].startswith("Personalized federated learning: fedltn") and (out / "report.json").exists()
    assert main(["run", "--config", str(cfg), "--aggregator", "secagg", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--aggregator: not used with [personalization]" in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
