"""Membership inference: score functions on synthetic outputs with a known answer, a tiny real
federated experiment, and (slow) the LiRA acceptance figures with and without DP-FedAvg."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.membership import (
    LossThreshold,
    MembershipResult,
    MembershipScores,
    collect_membership_scores,
    lira_offline_scores,
    lira_online_scores,
    logit_confidence,
    loss_scores,
    shadow_model_scores,
)
from attacks.metrics import membership_metrics
from attacks.registry import AttackCase
from attacks.runner import run_attack
from privagg.errors import ConfigurationError

pytestmark = pytest.mark.usefixtures("one_quiet_thread")


def test_logit_confidence_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((7, 5)) * 3
    y = rng.integers(0, 5, 7)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    py = p[np.arange(7), y]
    assert np.allclose(logit_confidence(z, y), np.log(py) - np.log(1 - py))
    # stable for confident logits
    big = np.array([[60.0, 0.0, 0.0]])
    assert np.isfinite(logit_confidence(big, np.array([0])))[0]


def _synthetic(signal: float, *, k: int = 16, n: int = 400, seed: int = 0) -> MembershipScores:
    """Per-example difficulty + a membership shift of ``signal`` on the true-class logit."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    members = rng.random((k, n)) < 0.5
    difficulty = rng.normal(0, 2, n)
    logits = rng.normal(0, 0.3, (k, n, 3))
    logits[:, np.arange(n), labels] += difficulty + signal * members
    return MembershipScores(
        logits=logits, labels=labels, members=members, train_accuracy=np.ones(k), test_accuracy=np.ones(k)
    )


@pytest.mark.parametrize("fn", [lira_online_scores, lira_offline_scores])
def test_lira_finds_members_and_is_chance_without_signal(fn) -> None:  # type: ignore[no-untyped-def]
    targets = np.arange(16)
    strong = _synthetic(1.0)
    m = membership_metrics(fn(strong, targets).ravel(), strong.members[targets].ravel())
    assert m["auc"] > 0.85
    assert m["tpr@1%fpr"] > 0.2
    none = _synthetic(0.0, seed=1)  # seeded; tolerance: AUC within 0.03 of 1/2 for 6,400 pairs
    m0 = membership_metrics(fn(none, targets).ravel(), none.members[targets].ravel())
    assert abs(m0["auc"] - 0.5) < 0.03


def test_lira_beats_the_loss_threshold_when_examples_differ_in_difficulty() -> None:
    s = _synthetic(1.0)
    t = np.arange(16)
    lira = membership_metrics(lira_online_scores(s, t).ravel(), s.members[t].ravel())
    loss = membership_metrics(loss_scores(s, t).ravel(), s.members[t].ravel())
    assert lira["tpr@1%fpr"] > 2 * loss["tpr@1%fpr"]


def test_shadow_model_attack_learns_the_signal() -> None:
    s = _synthetic(2.0, k=6)
    t = np.arange(3)
    m = membership_metrics(shadow_model_scores(s, t).ravel(), s.members[t].ravel())
    assert m["auc"] > 0.6


def test_tiny_federated_experiment_runs_end_to_end() -> None:
    case = AttackCase.create(num_clients=2, options={"num_models": 4, "population": 60, "rounds": 1, "local_epochs": 1})
    s = collect_membership_scores(case)
    assert s.logits.shape == (4, 60, 10) and s.members.shape == (4, 60)
    assert 0.2 < s.members.mean() < 0.8
    r = run_attack("lira-offline", case)
    for k in ("auc", "tpr@0.1%fpr", "tpr@1%fpr"):
        assert 0.0 <= r.metrics[k] <= 1.0
    assert isinstance(r, MembershipResult) and r.scores.shape == r.labels.shape == (4 * 60,)
    assert r.metrics["auc"] == membership_metrics(r.scores, r.labels)["auc"]
    # deterministic
    assert np.array_equal(collect_membership_scores(case).logits, s.logits)


def test_single_client_target_marks_only_that_clients_data() -> None:
    case = AttackCase.create(
        num_clients=3,
        options={"num_models": 4, "population": 90, "rounds": 1, "local_epochs": 1, "target_model": "client"},
    )
    s = collect_membership_scores(case)
    assert 0.05 < s.members.mean() < 0.35  # about half the population, a third of it on the target client


def test_defended_models_are_measured_beside_undefended_ones() -> None:
    """Utility beside the attack: a defended case also trains undefended models on the same splits."""
    opts = {"num_models": 4, "population": 60, "rounds": 1, "local_epochs": 1, "reference_models": 2}
    none = collect_membership_scores(AttackCase.create(num_clients=2, options=opts), progress=True)
    assert none.reference_test_accuracy.size == 0
    case = AttackCase.create(num_clients=2, defense="dp", options=opts)
    dp = collect_membership_scores(case, progress=True)
    assert dp.reference_test_accuracy.shape == (2,)
    # the reference is the undefended training of the same splits: model 0 and 1 of the undefended run
    assert np.allclose(dp.reference_test_accuracy, none.test_accuracy[:2])
    r = LossThreshold().run(case, scores=dp)
    gap = 100 * (r.metrics["undefended_test_accuracy"] - r.metrics["model_test_accuracy"])
    assert r.metrics["utility_gap_points"] == pytest.approx(gap)
    assert "Threat model" in r.data["threat_model"]


def test_bad_options() -> None:
    with pytest.raises(ConfigurationError):
        collect_membership_scores(AttackCase(options={"num_models": 2}))
    with pytest.raises(ConfigurationError):
        collect_membership_scores(AttackCase(options={"target_model": "server"}))
    with pytest.raises(ConfigurationError):
        collect_membership_scores(AttackCase(options={"population": 10**6}))


@pytest.mark.slow
def test_lira_against_an_overfit_model_and_dp_fedavg() -> None:
    """LiRA: TPR at 1% FPR >= 5x the FPR against the overfit FedAvg model; DP-FedAvg (epsilon 8)
    brings it to chance (TPR@1%FPR below 2%, AUC within 0.05 of 1/2)."""
    case = AttackCase.create(num_clients=5, hidden=(256,))
    r = run_attack("lira-online", case)
    assert r.metrics["tpr@1%fpr"] >= 0.05
    d = run_attack("lira-online", case.with_(defense="dp", dp_epsilon=8.0))
    assert d.metrics["tpr@1%fpr"] < 0.02
    assert abs(d.metrics["auc"] - 0.5) < 0.05
    assert "utility_gap_points" in d.metrics  # the verdict weighs chance AUC against the accuracy lost


def test_suite_runs_every_membership_attack_on_one_set_of_models(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from attacks.runner import SuiteEntry, run_suite
    from privagg.report.attacks import attack_figures, attack_report

    opts = {"num_models": 4, "population": 80, "rounds": 2, "local_epochs": 4}
    res = run_suite([SuiteEntry("lira-online", ("none",), case={"num_clients": 2, "options": opts})])
    assert [r.attack for r in res] == ["lira-online", "lira-offline", "shadow-models", "loss-threshold"]
    assert attack_figures(res[0])[0].filename == "mia_roc_all_none_global.png"
    assert [f.filename for f in attack_figures(res[1])] == ["mia_roc_lira-offline_none_global.png"]
    out = attack_report(res).write(tmp_path / "rep")
    assert (out / "mia_roc_all_none_global.png").exists()
    assert "scores" not in (out / "report.json").read_text()  # raw arrays stay in memory
