"""The run report's measured privacy figures: membership inference on the final model, the costs block."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from privagg.report.run import costs_section, run_report
from privagg.run import RunOutcome, execute_run, measure_membership, membership_figure, run_config
from protocols.fedavg import FedAvgSimulation

SMALL = {"data": {"num_clients": 5}, "model": {"name": "logreg"}, "federation": {"rounds": 2}}
SECAGG = {**SMALL, "aggregation": {"name": "secagg"}}


@pytest.fixture(scope="module")
def secagg() -> RunOutcome:
    return execute_run(run_config(overrides=SECAGG), progress=False, leakage=True)


def test_membership_is_measured_on_the_final_models_of_both_runs(secagg: RunOutcome) -> None:
    m = secagg.membership
    assert m is not None and m.baseline is not None and secagg.baseline is not None
    # the figure is taken on the very model the run released: its test accuracy is the run's
    assert m.run.test_accuracy == pytest.approx(secagg.result.final_accuracy)
    assert m.baseline.test_accuracy == pytest.approx(secagg.baseline.final_accuracy)
    assert m.run.members == sum(secagg.result.client_sizes) and m.run.non_members == 450
    lo, hi = m.run.auc_interval
    assert lo < m.run.auc < hi and 0.0 <= m.run.tpr_at_1pct_fpr <= 1.0
    data = run_report(secagg).to_dict()["exposure"]["membership"]
    assert data["run"]["auc"] == m.run.auc and data["without_privacy"]["auc"] == m.baseline.auc


def test_members_are_only_the_clients_that_took_part_and_the_auc_is_the_textbook_one() -> None:
    cfg = run_config(
        overrides={
            **SMALL,
            "data": {"num_clients": 20},
            "federation": {"rounds": 1, "sampling": "fixed", "clients_per_round": 3},
        }
    )
    sim = FedAvgSimulation(cfg)
    sim.run()
    took_part = sorted(sim.history[0].participants)
    fig = membership_figure(sim, sim.global_params, sim.history)
    assert len(took_part) == 3 and fig.members == sum(len(sim.client_indices[c]) for c in took_part)
    # the same scores through scikit-learn: minus the cross-entropy of each example
    import torch

    from protocols.models import set_flat_params
    from protocols.training import predict_logits

    set_flat_params(sim.model, sim.global_params)
    idx = np.concatenate([sim.client_indices[c] for c in took_part])
    ds = sim.dataset
    x = np.concatenate([ds.x_train[idx], ds.x_test])
    y = np.concatenate([ds.y_train[idx], ds.y_test])
    loss = torch.nn.functional.cross_entropy(
        torch.from_numpy(predict_logits(sim.model, x)), torch.from_numpy(y), reduction="none"
    )
    labels = np.r_[np.ones(len(idx)), np.zeros(len(ds.y_test))]
    assert fig.auc == pytest.approx(roc_auc_score(labels, -loss.numpy()), abs=1e-6)


def test_an_overfit_model_is_flagged_by_the_membership_figure() -> None:
    """Two clients memorise 180 examples (train accuracy 1.0): the loss threshold tells members apart."""
    over = {
        "data": {"num_clients": 2, "test_fraction": 0.9, "partition": "iid"},
        "model": {"name": "mlp", "hidden": [128]},
        "train": {"epochs": 30},
        "federation": {"rounds": 3},
    }
    sim = FedAvgSimulation(run_config(overrides=over))
    sim.run()
    m = measure_membership(sim)
    assert m.baseline is None and m.run.train_accuracy == 1.0
    assert m.run.auc_interval[0] > 0.5 and m.run.advantage > 0.05
    assert "AUC" in m.verdict() and "without privacy" not in m.verdict()


def test_the_costs_block_compares_with_the_measured_run_without_privacy(secagg: RunOutcome) -> None:
    sec = costs_section(secagg)
    d = sec.data
    assert d["comparison"] == "measured" and d["private"]
    assert secagg.baseline is not None and secagg.baseline.config.aggregation.name == "mean"
    assert d["accuracy_cost_points"] == pytest.approx(
        100 * (secagg.baseline.final_accuracy - secagg.result.final_accuracy)
    )
    agg = secagg.result.aggregator
    assert d["upload_bytes_per_client"] == pytest.approx(float(np.median([r.client_upload_bytes for r in agg.rounds])))  # type: ignore[attr-defined]
    assert d["plain_upload_bytes_per_client"] == 4 * secagg.result.num_params
    rows = dict(sec.summary)
    assert rows["accuracy"].endswith("with the plain mean and no DP)") and "measured" in rows["accuracy"]
    assert rows["time"].endswith(f"{secagg.seconds:.1f} s wall for the whole command")
    assert not d["upload_not_covered"]  # no DP here
    report = run_report(secagg)
    assert [s.key for s in report.sections][:2] == ["exposure", "costs"]
    assert dict(report.header)["cost"] == d["line"]


def test_the_costs_block_says_when_the_comparison_was_skipped_or_has_no_object(secagg: RunOutcome) -> None:
    skipped = costs_section(dataclasses.replace(secagg, baseline=None)).data
    assert skipped["comparison"] == "skipped (--no-baseline)" and skipped["accuracy_cost_points"] is None
    plain = execute_run(run_config(overrides=SMALL), progress=False)
    assert plain.baseline is None  # nothing to compare a run without privacy with
    d = costs_section(plain).data
    assert d["comparison"] == "none: no privacy" and d["upload_bytes_per_client"] == d["plain_upload_bytes_per_client"]


def test_under_dp_with_poisson_sampling_the_upload_and_membership_are_listed_as_not_covered() -> None:
    overrides = {
        **SMALL,
        "data": {"num_clients": 20},
        "aggregation": {"name": "secagg", "options": {"clip": 16.0, "value_bits": 24}},
        "federation": {"rounds": 1, "sampling": "poisson", "sampling_rate": 0.5},
        "dp": {"noise_multiplier": 1.0, "noise": "client", "clip_norm": 0.5, "delta": 1e-3},
    }
    outcome = execute_run(run_config(overrides=overrides), progress=False, leakage=True)
    report = run_report(outcome).to_dict()
    assert report["sections"]["costs"]["upload_not_covered"] is True
    not_covered = report["sections"]["privacy"]["not_covered"]
    assert any(n.startswith("the membership-inference figures") for n in not_covered)
    assert any(n.startswith("the median upload per client") for n in not_covered)
