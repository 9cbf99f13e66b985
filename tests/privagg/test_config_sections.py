"""Extra tables of a run file (``[personalization]``) load into their own frozen dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from privagg.config import override, read_toml, split_sections
from privagg.errors import ConfigurationError
from protocols.fedavg import RunConfig
from protocols.personalization import PersonalizationOptions

SECTIONS = {"personalization": PersonalizationOptions}


def test_run_file_with_a_personalization_table(tmp_path: Path) -> None:
    f = tmp_path / "run.toml"
    f.write_text(
        '[data]\npartition = "shards"\nnum_clients = 10\n\n'
        '[personalization]\nname = "fedltn"\nrounds = 12\ntarget_sparsity = 0.8\njump_start = "global"\n'
    )
    rest, found = split_sections(read_toml(f), SECTIONS)
    cfg = override(RunConfig(), rest)
    assert cfg.data.partition == "shards" and cfg.data.num_clients == 10
    opts = found["personalization"]
    assert opts == PersonalizationOptions(name="fedltn", rounds=12, target_sparsity=0.8, jump_start="global")
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.rounds = 3  # type: ignore[misc]
    # a later table refines the earlier one, keeping what it does not name
    _, later = split_sections({"personalization": {"rounds": 20}}, SECTIONS, current=found)
    assert later["personalization"].rounds == 20 and later["personalization"].target_sparsity == 0.8
    # no table: nothing loaded, the data passes through
    assert split_sections({"seed": 3}, SECTIONS) == ({"seed": 3}, {})


@pytest.mark.parametrize(
    ("table", "field", "message"),
    [
        ({"name": "nope"}, "personalization.name", "accepted: fedavg, fedltn, lotteryfl"),
        ({"rounds": 0}, "personalization.rounds", "must be >= 1"),
        ({"rounds": "ten"}, "personalization.rounds", "expected an integer"),
        ({"target_sparsity": 1.0}, "personalization.target_sparsity", "must be in [0, 1)"),
        ({"prune_rate": 0.0}, "personalization.prune_rate", "must be in (0, 1)"),
        ({"jump_start": "best"}, "personalization.jump_start", "invalid value"),
        ({"late_clients": 2, "join_round": 0}, "personalization.join_round", "join after round 0"),
        ({"secagg_clip": 0.5}, "personalization.secagg_clip", "must be >= 1"),
        ({"colour": "red"}, "personalization.colour", "unknown setting"),
    ],
)
def test_bad_personalization_tables_name_the_field(table: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        split_sections({"personalization": table}, SECTIONS)
    assert e.value.field == field
    assert message in str(e.value)


def test_a_section_must_be_a_table() -> None:
    with pytest.raises(ConfigurationError, match="personalization: expected a table"):
        split_sections({"personalization": "fedltn"}, SECTIONS)
    with pytest.raises(ConfigurationError) as e:
        split_sections(
            {"personalization": {"rounds": 0}}, SECTIONS, current={"personalization": PersonalizationOptions()}
        )
    assert e.value.field == "personalization.rounds"
