"""The DP round planner/finisher shared by DP-FedAvg and the Flower DP strategy."""

from __future__ import annotations

import math

import pytest

from dp.accounting import Sampling, epsilon_for
from dp.adaptive import AdaptiveClipConfig
from dp.config import DPConfig
from dp.ledger import PrivacyBudget
from dp.rounds import SECRET_COHORTS, WITHHELD, DPRounds, count_mechanism, noise_shares, update_mechanism
from privagg.errors import ConfigurationError, PrivacyBudgetExceeded, ProtocolAbort

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
    rounds = DPRounds(delta=1e-5, clip_norm=0.5, secure_noise=True, cohorts=SECRET_COHORTS)
    plan = rounds.plan(noise_multiplier=1.1, sampling=POISSON, cohort=10, dim=4)
    out = rounds.finish(plan, round=1, survivors=10)
    assert out.denominator == pytest.approx(0.1 * 100) and out.noise_multiplier_effective == 1.1
    assert math.isnan(out.unclipped_estimate) and out.next_clip == 0.5
    (row,) = rounds.ledger.rows()
    assert list(row)[5:] == ["clip_norm", "clipped_fraction", "noise_std", "sensitivity", "cohort", "participants"]
    # Poisson: the cohort size and the survivors reveal presence, the true clipped fraction is exact: withheld
    assert row["cohort"] == row["participants"] == row["clipped_fraction"] == WITHHELD
    assert row["noise_std"] == plan.mechanism.std
    assert out.metrics["dp_secure_noise"] is True and out.metrics["dp_cohorts"] == SECRET_COHORTS
    assert not {"dp_clipped_fraction", "dp_participants", "dp_cohort"} & set(out.metrics)
    assert out.metrics["dp_noise_std_on_mean"] == plan.mechanism.std / out.denominator
    assert out.metrics["dp_epsilon_rdp"] == out.entry.epsilon["rdp"] > 0
    assert out.metrics["dp_delta_times_population"] == pytest.approx(1e-5 * 100)
    # fixed-size sampling: the cohort size is public
    fixed = DPRounds(delta=1e-5, clip_norm=0.5)
    out = fixed.finish(fixed.plan(noise_multiplier=1.1, sampling=FIXED, cohort=10, dim=4), round=1, survivors=10)
    assert fixed.ledger.rows()[0]["cohort"] == fixed.ledger.rows()[0]["participants"] == 10
    # a driver that cannot see the sampler leaves that out; extra ledger fields go last
    weighted = DPRounds(delta=1e-5, clip_norm=0.5, total_weight=25.0, noise="client")
    plan = weighted.plan(noise_multiplier=1.1, sampling=POISSON, cohort=10, dim=4)
    out = weighted.finish(plan, round=1, survivors=10, noise_shares=plan.shares)
    assert out.denominator == pytest.approx(0.1 * 25.0)
    assert "dp_secure_noise" not in out.metrics and "dp_cohorts" not in out.metrics
    assert list(weighted.ledger.rows()[0])[-1] == "noise_shares"


def test_the_noise_is_split_over_the_fewest_honest_survivors() -> None:
    rounds = DPRounds(delta=1e-5, clip_norm=1.0, noise="client", honest_fraction=0.5)
    # 8 survivors allowed of 10, up to 5 dishonest: >= 3 honest shares in any released sum -> 3 shares, not 5
    plan = rounds.plan(noise_multiplier=2.0, sampling=POISSON, cohort=10, dim=3, min_survivors=8)
    assert plan.shares == 3 and plan.min_survivors == 8 and plan.worst_noise_multiplier == 2.0
    out = rounds.finish(plan, round=1, survivors=8)
    assert out.noise_multiplier_effective == 2.0 and rounds.ledger.entries[-1].noise_multiplier == 2.0
    assert out.metrics["dp_noise_std"] == out.metrics["dp_noise_std_planned"] == plan.mechanism.std
    # the utility price (more noise than accounted when more survive) would give away the survivor count
    # under Poisson sampling: withheld there, stated under fixed-size sampling
    assert out.metrics["dp_noise_std_survivors"] == WITHHELD
    fixed = DPRounds(delta=1e-5, clip_norm=1.0, noise="client", honest_fraction=0.5)
    fplan = fixed.plan(noise_multiplier=2.0, sampling=FIXED, cohort=10, dim=3, min_survivors=8)
    fout = fixed.finish(fplan, round=1, survivors=8)
    assert fout.metrics["dp_noise_std_survivors"] == pytest.approx(fplan.mechanism.std * math.sqrt(8 / 3))
    # a protocol that broke its promise (7 < 8 survivors, maybe 2 honest): recorded reduced, then withheld
    plan = rounds.plan(noise_multiplier=2.0, sampling=POISSON, cohort=10, dim=3, min_survivors=8)
    with pytest.raises(ProtocolAbort, match="withheld"):
        rounds.finish(plan, round=2, survivors=7)
    assert rounds.ledger.entries[-1].noise_multiplier == pytest.approx(2.0 * math.sqrt(2 / 3))
    assert rounds.ledger.rows()[-1]["noise_std"] == pytest.approx(plan.mechanism.std * math.sqrt(2 / 3))


def test_plan_refuses_a_protocol_that_may_release_a_sum_without_honest_noise() -> None:
    rounds = DPRounds(delta=1e-5, clip_norm=1.0, noise="client", honest_fraction=0.5)
    with pytest.raises(ProtocolAbort, match="no honest noise share guaranteed"):
        rounds.plan(noise_multiplier=2.0, sampling=POISSON, cohort=10, dim=3, min_survivors=5)
    assert rounds.ledger.entries == []
    with pytest.raises(ConfigurationError, match="min_survivors"):
        rounds.plan(noise_multiplier=2.0, sampling=POISSON, cohort=10, dim=3, min_survivors=11)


def test_the_budget_is_checked_for_the_calibrated_noise_whatever_the_dropouts_allowed() -> None:
    # the budget fits one round at z = 1. With 7 survivors allowed of 10 the noise is split into 7 shares, so
    # any released sum carries z = 1: the round runs; the next is refused at planning time
    eps_full = epsilon_for(noise_multiplier=1.0, sampling=POISSON, rounds=1, delta=1e-5)
    budget = PrivacyBudget(epsilon=eps_full * 1.01, delta=1e-5)
    rounds = DPRounds(delta=1e-5, clip_norm=1.0, noise="client", budget=budget)
    plan = rounds.plan(noise_multiplier=1.0, sampling=POISSON, cohort=10, dim=3, min_survivors=7)
    assert plan.shares == 7 and plan.worst_noise_multiplier == 1.0
    rounds.finish(plan, round=1, survivors=9)
    assert rounds.ledger.entries[-1].noise_multiplier == 1.0
    with pytest.raises(PrivacyBudgetExceeded):
        rounds.plan(noise_multiplier=1.0, sampling=POISSON, cohort=10, dim=3, min_survivors=7)
    # central noise does not depend on survivors
    central = DPRounds(delta=1e-5, clip_norm=1.0, budget=budget)
    assert central.plan(noise_multiplier=1.0, sampling=POISSON, cohort=10, dim=3, min_survivors=1).min_survivors == 0


def test_a_released_round_is_recorded_even_past_the_budget_then_withheld() -> None:
    eps_full = epsilon_for(noise_multiplier=1.0, sampling=POISSON, rounds=1, delta=1e-5)
    budget = PrivacyBudget(epsilon=eps_full * 1.01, delta=1e-5)
    rounds = DPRounds(delta=1e-5, clip_norm=1.0, noise="client", budget=budget)
    plan = rounds.plan(noise_multiplier=1.0, sampling=POISSON, cohort=10, dim=3)  # promised: all 10 survive
    with pytest.raises(ProtocolAbort, match="withheld"):
        rounds.finish(plan, round=1, survivors=7)  # the protocol broke its promise: 7 shares in the sum
    (entry,) = rounds.ledger.entries
    assert entry.noise_multiplier == pytest.approx(math.sqrt(0.7)) and entry.epsilon["rdp"] > budget.epsilon
    with pytest.raises(PrivacyBudgetExceeded):  # the truthful ledger refuses every later round
        rounds.plan(noise_multiplier=100.0, sampling=POISSON, cohort=10, dim=3)
    # no honest share at all: recorded as a release without a guarantee
    loose = DPRounds(delta=1e-5, clip_norm=1.0, noise="client", honest_fraction=0.5)
    plan = loose.plan(noise_multiplier=1.0, sampling=POISSON, cohort=10, dim=3)
    with pytest.raises(ProtocolAbort):
        loose.finish(plan, round=1, survivors=5)
    assert loose.ledger.entries[0].noise_multiplier == 0.0 and math.isinf(loose.ledger.epsilon("rdp"))


def test_an_empty_cohort_is_planned_with_central_noise_and_accounted() -> None:
    rounds = DPRounds(delta=1e-5, clip_norm=1.0, noise="client", honest_fraction=0.5)
    plan = rounds.plan(noise_multiplier=1.0, sampling=POISSON, cohort=0, dim=3)
    assert plan.central and plan.shares == 1 and plan.worst_noise_multiplier == 1.0
    out = rounds.finish(plan, round=1, survivors=0)
    assert out.noise_multiplier_effective == 1.0 and len(rounds.ledger.entries) == 1
    assert out.metrics["dp_noise_std"] == plan.mechanism.std


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
    # 5 survivors allowed of 10, half maybe dishonest: no honest share guaranteed, refused at planning,
    # before any client computes, and the clip does not move
    with pytest.raises(ProtocolAbort, match="no honest noise share"):
        rounds.plan(noise_multiplier=1.0, sampling=POISSON, cohort=10, dim=3, min_survivors=5)
    assert rounds.clip == out.next_clip and len(rounds.ledger.entries) == 1
    # a withheld round (fewer survivors than promised) is recorded but does not move the clip either
    plan = rounds.plan(noise_multiplier=1.0, sampling=POISSON, cohort=10, dim=3)
    with pytest.raises(ProtocolAbort):
        rounds.finish(plan, round=2, survivors=6, noised_count=-5.0)
    assert rounds.clip == out.next_clip and len(rounds.ledger.entries) == 2


def _adaptive_rounds(path: str, **kw: object) -> DPRounds:
    cfg = DPConfig(
        **{  # type: ignore[arg-type]
            "noise_multiplier": 1.0,
            "clip_norm": 1.0,
            "adaptive_clipping": True,
            "count_noise_std": 2.0,
            "clip_learning_rate": 0.3,
            "ledger_path": path,
            **kw,
        }
    )
    return DPRounds.from_config(cfg)


def _round(rounds: DPRounds, r: int, count: float, *, survivors: int = 10) -> None:
    plan = rounds.plan(noise_multiplier=1.0, sampling=POISSON, cohort=10, dim=3)
    rounds.finish(plan, round=r, survivors=survivors, noised_count=count)


def test_a_restart_resumes_the_adaptive_clip_exactly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "ledger.json")
    live = _adaptive_rounds(path)
    counts = [-5.0, 3.3, -1.7]
    for r, c in enumerate(counts, start=1):
        _round(live, r, c)
    assert live.clip != 1.0
    resumed = _adaptive_rounds(path)  # a new process: the ledger and the clip come back from the file
    assert resumed.clipper is not None and live.clipper is not None
    assert resumed.clip == live.clip and resumed.clipper.history == live.clipper.history  # bit for bit
    assert resumed.ledger.epsilon("rdp") == live.ledger.epsilon("rdp")
    # both continue identically: same plan (clip, mechanisms), same next clip
    for rounds in (live, resumed):
        _round(rounds, 4, 1.5)
    assert resumed.clip == live.clip and resumed.clipper.history == live.clipper.history
    assert [e.info["clip_norm"] for e in resumed.ledger.entries] == [e.info["clip_norm"] for e in live.ledger.entries]


def test_the_saved_clip_follows_withheld_rounds_and_malformed_counts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "ledger.json")
    live = _adaptive_rounds(path, noise="client", honest_fraction=0.5)
    _round(live, 1, -5.0)
    moved = live.clip
    with pytest.raises(ProtocolAbort):  # recorded, withheld: the clip holds, in memory and in the file
        _round(live, 2, -5.0, survivors=6)
    _round(live, 3, math.nan)  # a count that could not be read (malformed sum): recorded, the clip holds
    assert live.clip == moved and len(live.ledger.entries) == 3
    resumed = _adaptive_rounds(path, noise="client", honest_fraction=0.5)
    assert resumed.clip == moved and len(resumed.ledger.entries) == 3
    assert resumed.clipper is not None and resumed.clipper.history == [1.0, moved]


def test_a_ledger_the_clip_cannot_continue_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "ledger.json")
    _round(_adaptive_rounds(path), 1, -5.0)
    with pytest.raises(ConfigurationError, match=r"other settings.*learning_rate"):
        _adaptive_rounds(path, clip_learning_rate=0.5)
    with pytest.raises(ConfigurationError, match="adaptive clipping on"):
        DPRounds.from_config(DPConfig(noise_multiplier=1.0, clip_norm=1.0, ledger_path=path))
    fixed = str(tmp_path / "fixed.json")
    rounds = DPRounds.from_config(DPConfig(noise_multiplier=1.0, clip_norm=1.0, ledger_path=fixed))
    rounds.finish(rounds.plan(noise_multiplier=1.0, sampling=POISSON, cohort=10, dim=3), round=1, survivors=10)
    with pytest.raises(ConfigurationError, match="no adaptive clip state"):
        _adaptive_rounds(fixed)
