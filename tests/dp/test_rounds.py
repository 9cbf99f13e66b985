"""The DP round planner/finisher shared by DP-FedAvg and the Flower DP strategy."""

from __future__ import annotations

import math

import pytest

from dp.accounting import Sampling
from dp.adaptive import AdaptiveClipConfig
from dp.config import DPConfig
from dp.ledger import PrivacyBudget
from dp.rounds import DPRounds, count_mechanism, noise_shares, update_mechanism
from privagg.errors import PrivacyBudgetExceeded, ProtocolAbort

POISSON = Sampling.poisson(rate=0.1, population=100)
FIXED = Sampling.fixed(sample_size=10, population=100)


def test_noise_shares_is_ceil_of_the_honest_part() -> None:
    assert noise_shares(0.7, 10) == 7  # 0.7 * 10 = 7.000000000000001 in floating point
    assert noise_shares(1.0, 10) == 10
    assert noise_shares(0.5, 9) == 5
    assert noise_shares(0.01, 3) == 1


def test_mechanisms_match_the_sensitivities() -> None:
    mech = update_mechanism(clip=0.5, sensitivity_factor=2.0, noise_multiplier=1.5, dim=10, resolution=1000.0)
    assert mech.sensitivity == 1.0 and mech.noise_multiplier == 1.5 and mech.dim == 10
    count = count_mechanism(sensitivity_factor=1.0, noise_multiplier=3.0, resolution=1000.0)
    assert count.sensitivity == 0.5 and count.dim == 1


def test_plan_central_and_client() -> None:
    central = DPRounds(delta=1e-5, clip_norm=0.5)
    plan = central.plan(noise_multiplier=1.2, sampling=FIXED, cohort=10, dim=7)
    assert plan.shares == 1 and plan.count_mechanism is None and plan.count_noise_multiplier == 0.0
    assert plan.update_noise_multiplier == plan.noise_multiplier == 1.2
    assert plan.sensitivity == 1.0 and plan.clip == 0.5 and plan.expected_cohort == 10
    client = DPRounds(delta=1e-5, clip_norm=0.5, noise="client", honest_fraction=0.7)
    assert client.plan(noise_multiplier=1.2, sampling=POISSON, cohort=10, dim=7).shares == 7


def test_plan_splits_the_noise_for_adaptive_clipping() -> None:
    rounds = DPRounds(delta=1e-5, clip_norm=1.0, adaptive=AdaptiveClipConfig(initial_clip=1.0, count_noise_std=2.0))
    plan = rounds.plan(noise_multiplier=1.0, sampling=POISSON, cohort=10, dim=3)
    assert plan.count_noise_multiplier == 2.0 / 0.5
    assert plan.update_noise_multiplier == pytest.approx((1.0 - 4.0**-2) ** -0.5)
    assert plan.count_mechanism is not None and plan.count_mechanism.noise_multiplier == 4.0


def test_plan_checks_the_budget_first() -> None:
    rounds = DPRounds(delta=1e-5, clip_norm=1.0, budget=PrivacyBudget(epsilon=0.01, delta=1e-5))
    with pytest.raises(PrivacyBudgetExceeded):
        rounds.plan(noise_multiplier=1.0, sampling=POISSON, cohort=10, dim=3)
    assert rounds.ledger.entries == []


def test_finish_fixed_denominator_ledger_and_metrics() -> None:
    rounds = DPRounds(delta=1e-5, clip_norm=0.5, secure_noise=True)
    plan = rounds.plan(noise_multiplier=1.1, sampling=POISSON, cohort=10, dim=4)
    out = rounds.finish(plan, round=1, survivors=10, clipped_fraction=0.25)
    assert out.denominator == pytest.approx(0.1 * 100) and out.noise_multiplier_effective == 1.1
    assert math.isnan(out.unclipped_estimate) and out.next_clip == 0.5
    (row,) = rounds.ledger.rows()
    assert list(row)[5:] == ["clip_norm", "clipped_fraction", "noise_std", "sensitivity", "cohort", "participants"]
    assert row["noise_std"] == plan.mechanism.std and row["participants"] == 10
    assert out.metrics["dp_secure_noise"] is True and out.metrics["dp_clipped_fraction"] == 0.25
    assert out.metrics["dp_noise_std_on_mean"] == plan.mechanism.std / out.denominator
    assert out.metrics["dp_epsilon_rdp"] == out.entry.epsilon["rdp"] > 0
    # a driver that cannot see the clip bits or the sampler leaves those out; extra ledger fields go last
    weighted = DPRounds(delta=1e-5, clip_norm=0.5, total_weight=25.0, noise="client")
    plan = weighted.plan(noise_multiplier=1.1, sampling=POISSON, cohort=10, dim=4)
    out = weighted.finish(plan, round=1, survivors=10, noise_shares=plan.shares)
    assert out.denominator == pytest.approx(0.1 * 25.0)
    assert "dp_secure_noise" not in out.metrics and "dp_clipped_fraction" not in out.metrics
    assert list(weighted.ledger.rows()[0])[-1] == "noise_shares"


def test_finish_reduces_the_noise_for_missing_honest_shares_or_withholds() -> None:
    rounds = DPRounds(delta=1e-5, clip_norm=1.0, noise="client", honest_fraction=0.5)
    plan = rounds.plan(noise_multiplier=2.0, sampling=POISSON, cohort=10, dim=3)
    assert plan.shares == 5
    out = rounds.finish(plan, round=1, survivors=6)  # up to 5 dishonest: >= 1 honest share of 5
    assert out.noise_multiplier_effective == pytest.approx(2.0 * math.sqrt(1 / 5))
    assert rounds.ledger.entries[-1].noise_multiplier == out.noise_multiplier_effective
    assert rounds.ledger.rows()[-1]["noise_std"] == pytest.approx(plan.mechanism.std * math.sqrt(1 / 5))
    plan = rounds.plan(noise_multiplier=2.0, sampling=POISSON, cohort=10, dim=3)
    with pytest.raises(ProtocolAbort, match="honest"):
        rounds.finish(plan, round=2, survivors=5)
    assert len(rounds.ledger.entries) == 1


def test_finish_moves_the_adaptive_clip_only_for_an_accounted_round() -> None:
    cfg = DPConfig(
        noise_multiplier=1.0,
        budget_epsilon=5.0,
        clip_norm=1.0,
        adaptive_clipping=True,
        count_noise_std=2.0,
        noise="client",
        honest_fraction=0.5,
    )
    rounds = DPRounds.from_config(cfg)
    assert rounds.clipper is not None
    plan = rounds.plan(noise_multiplier=1.0, sampling=POISSON, cohort=10, dim=3)
    out = rounds.finish(plan, round=1, survivors=10, noised_count=-5.0)  # every update clipped
    assert out.unclipped_estimate == 0.0 and out.next_clip > 1.0 == plan.clip
    assert rounds.clip == out.next_clip
    # 6 survivors of 10, half maybe dishonest: noise multiplier sqrt(1/5) of the planned one, over budget
    plan = rounds.plan(noise_multiplier=1.0, sampling=POISSON, cohort=10, dim=3)
    with pytest.raises(PrivacyBudgetExceeded):
        rounds.finish(plan, round=2, survivors=6, noised_count=-5.0)
    assert rounds.clip == out.next_clip and len(rounds.ledger.entries) == 1
