"""The tuning step: hyperparameters chosen by worst-case accuracy on a validation seed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

import attacks.robustness as R
from privagg.errors import ConfigurationError
from privagg.report.robustness import write_matrix

TASK = {
    "data": {"num_clients": 6},
    "model": {"name": "logreg"},
    "train": {"epochs": 1, "batch_size": 32, "lr": 0.1},
    "federation": {"rounds": 1},
}


def tiny(**axes: object) -> R.RobustnessConfig:
    return R.RobustnessConfig(**{"malicious": (0.2,), **axes}).with_run(TASK)  # type: ignore[arg-type]


def test_candidates_are_the_product_of_the_grids() -> None:
    assert R.candidates("trimmed-mean") == [{"trim": None}, {"trim": 2}]
    assert R.candidates("median") == []  # nothing to tune
    # a stack searches its stages' grids and its rule's
    assert R.candidates("bucketing+trimmed-mean") == [
        {"bucket_size": 2, "trim": None},
        {"bucket_size": 2, "trim": 2},
        {"bucket_size": 3, "trim": None},
        {"bucket_size": 3, "trim": 2},
    ]
    assert R.candidates("bucketing+trimmed-mean", {"trim": 1}) == [{"bucket_size": 2}, {"bucket_size": 3}]
    # FLTrust tunes its server's passes over the root sample, not the root sample's size (a resource)
    assert R.candidates("history+fltrust") == [{"root_passes": 1}, {"root_passes": 2}, {"root_passes": 3}]


def test_tune_picks_the_best_worst_case_on_the_validation_seed(tmp_path: Path) -> None:
    cfg = tiny(attacks=("sign-flip", "gaussian"), defenses=("trimmed-mean", "median"))
    with pytest.raises(ConfigurationError, match="validation seed"):
        R.tune(cfg, validation_seed=cfg.run.seed)
    seen: list[R.CellResult] = []
    res = R.tune(cfg, validation_seed=7, on_result=seen.append)
    assert res.validation_seed == 7 and all(r.seed == 7 for r in seen)
    assert len(seen) == 2 * 3  # two candidates x (clean + two attacks); median has no grid
    assert set(res.chosen) == {"trimmed-mean"}
    trials = [t for t in res.trials if t.defense == "trimmed-mean"]
    assert [t.options for t in trials] == [{"trim": None}, {"trim": 2}]
    for k, t in enumerate(trials):  # one worker: runs arrive in plan order, clean first
        clean, *attacked = seen[3 * k : 3 * k + 3]
        assert clean.attack == "none" and t.clean_accuracy == clean.accuracy
        worst = min(attacked, key=lambda r: r.accuracy)
        assert (t.worst_accuracy, t.worst_attack) == (worst.accuracy, worst.attack)
    best = max(trials, key=lambda t: (t.worst_accuracy, t.clean_accuracy))
    assert res.chosen["trimmed-mean"] == best.options
    tuned = res.apply(cfg)
    assert tuned.defense_options["trimmed-mean"] == best.options
    fixed = res.apply(
        tiny(attacks=("sign-flip",), defenses=("trimmed-mean",), defense_options={"trimmed-mean": {"trim": 1}})
    )
    assert fixed.defense_options["trimmed-mean"] == {"trim": 1}  # options the sweep fixed win
    # the report shows the chosen values and every trial
    tuned = replace(tuned, attacks=("sign-flip",), defenses=("trimmed-mean",))
    results = R.run_matrix(tuned)
    rep = write_matrix(
        tuned, results, tmp_path / "rep", tuning=res, command="test", started="2026-01-01T00:00:00+00:00"
    )
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["sections"]["tuning"]["chosen"] == {"trimmed-mean": best.options}
    assert data["seeds"]["validation_seed"] == 7 and data["command"] == "test"
    assert sum(t["chosen"] for t in data["sections"]["tuning"]["trials"]) == 1
    assert rep.header[0] == ("command", "test")


def test_choose_ties_worst_cases_within_the_tolerance_and_breaks_them_by_clean_accuracy() -> None:
    def t(opts: int, clean: float, worst: float, d: str = "fltrust") -> R.Trial:
        return R.Trial(d, {"root_passes": opts}, clean, worst, "dba")

    trials = [t(1, 0.879, 0.876), t(2, 0.897, 0.8744), t(3, 0.876, 0.8648), t(1, 0.5, float("nan"), "flame")]
    # the best worst case (0.876) and one 0.16 points below it tie: the higher clean accuracy wins;
    # 1.1 points below is a worse worst case
    assert R.choose(trials) == {"fltrust": {"root_passes": 2}, "flame": {"root_passes": 1}}
    assert R.choose(trials, tolerance=0.0) == {"fltrust": {"root_passes": 1}, "flame": {"root_passes": 1}}
    assert R.choose(trials, tolerance=0.02)["fltrust"] == {"root_passes": 2}
    assert R.choose([t(1, 0.9, 0.8), t(2, 0.95, 0.7)])["fltrust"] == {"root_passes": 1}  # 10 points: no tie
    assert R.choose([t(1, 0.9, 0.8), t(2, 0.9, 0.8)])["fltrust"] == {"root_passes": 1}  # full tie: grid order
    with pytest.raises(ConfigurationError, match="tolerance"):
        R.choose(trials, tolerance=-0.01)
