"""The run report: training section, secagg / Paillier cost sections from typed records, the DP cost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from privagg.randomness import InsecureDeterministicSecrets
from privagg.report.aggregators import aggregator_sections, paillier_sections, secagg_sections
from privagg.report.run import run_report, run_sections, training_section
from privagg.run import RunOutcome, execute_run, run_config
from protocols.aggregation import ClientUpdate, MeanAggregator, RoundContext
from protocols.dp_fedavg import DPFedAvg
from protocols.paillier import PaillierAggregator
from protocols.secagg_aggregator import SecAggAggregator

SMALL = {"data": {"num_clients": 5}, "model": {"name": "logreg"}, "federation": {"rounds": 2}}


def _ctx(r: int = 1, n: int = 6) -> RoundContext:
    return RoundContext(
        round=r,
        population=n,
        sampled=tuple(range(n)),
        sampling="fixed",
        sampling_rate=1.0,
        rng=np.random.default_rng(r),
    )


def _updates(n: int = 6, dim: int = 40, seed: int = 0) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    return [ClientUpdate(c, rng.normal(0, 0.1, dim), int(rng.integers(5, 50))) for c in range(n)]


def test_run_outcome_renders_the_training_section_and_writes_the_page(tmp_path: Path) -> None:
    outcome = execute_run(run_config(overrides=SMALL), progress=False)
    assert isinstance(outcome, RunOutcome) and outcome.baseline is None
    report = run_report(outcome)
    d = report.to_dict()
    assert d["final_accuracy"] == outcome.result.final_accuracy and d["rounds"] == 2
    assert d["config"]["federation"] == {**d["config"]["federation"], "rounds": 2, "patience": 10}
    assert list(d["sections"]) == ["exposure", "costs", "training", "configuration", "environment"]
    settings = dict(next(s for s in report.sections if s.key == "configuration").summary)
    assert settings["federation.rounds"] == "2" and settings["seed"] == "0" and settings["model.name"] == "logreg"
    sec = training_section(outcome.result)
    assert sec.key == "training" and sec.title == "Federated training"
    assert [f.filename for f in sec.figures] == ["accuracy_loss.png", "client_accuracy.png"]
    assert [k for k, _ in sec.summary] == [
        "dataset",
        "clients",
        "model",
        "aggregator",
        "rounds",
        "final test accuracy",
        "worst client accuracy",
        "wall time",
    ]
    assert list(sec.data) == [
        "final_accuracy",
        "final_loss",
        "best_accuracy",
        "rounds",
        "worst_client_accuracy",
        "num_params",
        "history",
        "client_sizes",
    ]
    out = report.write(tmp_path / "r")
    assert sorted(p.name for p in out.iterdir()) == [
        "accuracy_loss.png",
        "client_accuracy.png",
        "report.html",
        "report.json",
    ]


def test_secagg_section_from_typed_rounds() -> None:
    agg = SecAggAggregator(threat="active", degree=4, threshold=3, secrets=InsecureDeterministicSecrets(b"s"))
    assert secagg_sections(agg) == []  # nothing to show before a round
    res = agg.aggregate(_updates(), _ctx(1))
    agg.aggregate(_updates(seed=1), _ctx(2))
    (sec,) = aggregator_sections(agg)
    assert sec.key == "secagg" and sec.title == "Secure aggregation (SecAgg+) cost"
    first = sec.data["rounds"][0]
    assert list(first) == ["round", "clients", *res.metrics]  # the page's JSON: round, clients, secagg_* metrics
    assert first == {"round": 1, "clients": 6, **res.metrics} and sec.data["threat"] == "active"
    assert dict(sec.summary)["rounds"] == "2" and dict(sec.summary)["threat model"] == "active"
    _caption, header, rows = sec.tables[0]
    assert header[2] == "survivors" and rows[0][:6] == [1, 6, 6, 4, 3, res.metrics["secagg_modulus_bits"]]


def test_paillier_section_from_typed_rounds() -> None:
    opts = dict(key_bits=512, allow_insecure=True, decryptors=3, threshold=2, min_clients=3)
    agg = PaillierAggregator(secrets=InsecureDeterministicSecrets(b"p"), **opts)
    assert paillier_sections(agg) == []
    res = agg.aggregate(_updates(), _ctx(1))
    refused = agg.aggregate(_updates(n=2), _ctx(2))
    (sec,) = aggregator_sections(agg)
    assert sec.key == "paillier" and sec.title == "Paillier aggregation cost"
    summary = dict(sec.summary)
    assert "threshold 2-of-3" in summary["key"] and summary["rounds decrypted / refused"] == "1 / 1"
    assert sec.data["rounds"][0] == {"round": 1, "clients": 6, "dim": 40, **res.metrics}
    assert sec.data["rounds"][1] == {"round": 2, "aborted": refused.metrics["paillier_aborted"]}
    assert sec.data["config"]["key_bits"] == 512 and sec.data["config"]["max_clients"] == 6
    assert [r[0] for r in sec.tables[0][2]][:2] == ["encode (clip + quantise)", "offline"]
    # no range proofs: one client can corrupt the sum or make the round abort (tests/protocols/paillier red team)
    assert "a malicious client can corrupt, not read, the sum, or abort the round" in sec.text


DP = {"noise_multiplier": 1.0, "clip_norm": 0.5}


@pytest.fixture(scope="module")
def dp_outcome() -> RunOutcome:
    agg_opts = {"name": "secagg", "options": {"threat": "semi-honest", "clip": 8.0}}
    return execute_run(run_config(overrides={**SMALL, "dp": DP, "aggregation": agg_opts}), progress=False)


def test_dp_run_adds_ledger_inner_cost_and_accuracy_cost(dp_outcome: RunOutcome) -> None:
    outcome = dp_outcome
    dp = DP
    assert outcome.baseline is not None and outcome.baseline.config.dp is None
    assert outcome.baseline.config.aggregation.name == "mean"  # the run without privacy: no secure sum either
    assert isinstance(outcome.result.aggregator, DPFedAvg)
    assert [s.key for s in run_sections(outcome.result)] == ["training", "dp", "secagg"]
    d = run_report(outcome).to_dict()
    assert list(d["sections"]) == [
        "exposure",
        "privacy",
        "costs",
        "training",
        "dp",
        "secagg",
        "dp_cost",
        "configuration",
        "environment",
    ]
    cost = d["sections"]["dp_cost"]
    assert cost["accuracy_cost"] == pytest.approx(cost["baseline_final_accuracy"] - cost["dp_final_accuracy"])
    assert d["config"]["dp"]["noise_multiplier"] == 1.0 and d["config"]["dp"]["clip_norm"] == 0.5
    json.dumps(d)
    no_base = execute_run(run_config(overrides={**SMALL, "dp": dp}), progress=False, baseline=False)
    assert no_base.baseline is None and "dp_cost" not in run_report(no_base).to_dict()["sections"]


def test_a_dp_report_opens_with_the_guarantee_and_leaves_out_per_client_statistics(
    dp_outcome: RunOutcome, tmp_path: Path
) -> None:
    report = run_report(dp_outcome, command="privagg run --config dp.toml")
    d = report.to_dict()
    # the JSON opens (after the provenance) with the guarantee; the page header says it in one line
    assert list(d)[:6] == ["title", "command", "seed", "timestamp", "privacy", "exposure"]
    g = d["privacy"]
    agg = dp_outcome.result.aggregator
    assert isinstance(agg, DPFedAvg)
    assert g["epsilon"] == pytest.approx(agg.ledger.epsilon("rdp")) and g["delta"] == 1e-5
    assert g["accountant"] == "rdp" and g["rounds"] == 2 and g["cohorts"] == "secret (OS CSPRNG)"
    assert g["sampling"].startswith("fixed-size") and g["secure_noise"] and g["private"]
    header = dict(report.header)
    assert header["privacy"].startswith("client-level (")
    assert "rdp accountant over 2 released rounds" in header["privacy"]
    assert header["privacy"].endswith("cohorts secret (OS CSPRNG)")
    assert report.sections[0].key == "exposure"  # who sees what, then the guarantee
    first = report.sections[1]
    assert first.key == "privacy" and first.summary[0] == ("guarantee", header["privacy"])
    not_covered = [v for k, v in first.summary if k == "not covered by DP"]
    assert not_covered == d["sections"]["privacy"]["not_covered"] and len(not_covered) == 2  # baseline, warnings
    # per-client accuracy and client sizes come from one client's data without noise: nowhere in the report
    text = report.to_json()
    for key in ("worst_client_accuracy", "median_client_accuracy", "client_sizes"):
        assert key not in text
    training = next(s for s in report.sections if s.key == "training")
    assert [f.filename for f in training.figures] == ["accuracy_loss.png"]
    assert not any("client accuracy" in k for k, _ in training.summary)
    assert sorted(p.name for p in report.write(tmp_path / "r").iterdir()) == [
        "accuracy_loss.png",
        "dp_accuracy_cost.png",
        "dp_epsilon.png",
        "report.html",
        "report.json",
    ]
    assert "client-level (" in (tmp_path / "r" / "report.html").read_text().split("<h2")[0]  # before any section


def test_per_client_statistics_under_dp_are_opt_in_and_labelled(dp_outcome: RunOutcome) -> None:
    report = run_report(dp_outcome, per_client_under_dp=True)
    training = next(s for s in report.sections if s.key == "training")
    assert [f.filename for f in training.figures] == ["accuracy_loss.png", "client_accuracy.png"]
    assert "not covered by DP" in training.figures[1].caption
    assert "worst client accuracy (not covered by DP)" in dict(training.summary)
    assert "client_sizes" in training.data and "not covered by DP" in training.text
    privacy = report.sections[1]
    assert privacy.key == "privacy"
    assert next(v for k, v in privacy.summary if k == "not covered by DP").startswith("per-client accuracy")


def test_an_aggregator_without_a_renderer_adds_no_section() -> None:
    assert aggregator_sections(MeanAggregator()) == []


def test_the_guarantee_line_says_when_the_guarantee_does_not_hold() -> None:
    from dp.rounds import REPRODUCIBLE_COHORTS, SECRET_COHORTS
    from privagg.report.dp import guarantee_line

    g = {"epsilon": 3.0, "delta": 1e-5, "accountant": "rdp", "rounds": 4, "sampling": "Poisson sampling, q = 0.1"}
    assert "NOT PRIVATE" not in guarantee_line({**g, "secure_noise": True, "cohorts": SECRET_COHORTS})
    seeded = guarantee_line({**g, "secure_noise": False, "cohorts": SECRET_COHORTS})
    assert "NOT PRIVATE: the noise was drawn from a public seed" in seeded
    public = guarantee_line({**g, "secure_noise": True, "cohorts": REPRODUCIBLE_COHORTS})
    assert "NOT PRIVATE: the accountant assumes secret cohorts" in public
