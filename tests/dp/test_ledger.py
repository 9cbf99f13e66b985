"""The ledger records every round; the budget refuses a round before it overspends."""

from __future__ import annotations

import math

import pytest

from dp.accounting import Sampling, epsilon_for
from dp.ledger import PrivacyBudget, PrivacyLedger
from privagg.errors import ConfigurationError, PrivacyBudgetExceeded

S = Sampling.poisson(rate=0.1, population=100)


def test_ledger_records_every_round_in_both_accountants() -> None:
    led = PrivacyLedger(delta=1e-5)
    for r in range(1, 4):
        e = led.record(round=r, noise_multiplier=1.0, sampling=S, clip_norm=0.5)
        assert set(e.epsilon) == {"rdp", "prv"}
        assert e.info["clip_norm"] == 0.5
    assert [e.round for e in led.entries] == [1, 2, 3]
    rdp = [e.epsilon["rdp"] for e in led.entries]
    assert rdp[0] < rdp[1] < rdp[2]
    assert rdp[-1] == pytest.approx(epsilon_for(noise_multiplier=1.0, sampling=S, rounds=3, delta=1e-5))
    assert led.rows()[-1]["epsilon_prv"] == led.entries[-1].epsilon["prv"]


def test_budget_stops_the_round_before_overspending() -> None:
    # find how many rounds fit, then check the next one is refused *before* it is recorded
    budget = 3.0
    led = PrivacyLedger(delta=1e-5, budget=PrivacyBudget(epsilon=budget, delta=1e-5))
    allowed = 0
    with pytest.raises(PrivacyBudgetExceeded) as info:
        for r in range(1, 1000):
            led.check(noise_multiplier=1.0, sampling=S)
            led.record(round=r, noise_multiplier=1.0, sampling=S)
            allowed += 1
    assert allowed >= 1
    assert len(led.entries) == allowed  # the refused round left no trace
    assert led.epsilon("rdp") <= budget
    # the refused round really would have exceeded the budget, and the last accepted did not
    over = epsilon_for(noise_multiplier=1.0, sampling=S, rounds=allowed + 1, delta=1e-5)
    assert over > budget >= epsilon_for(noise_multiplier=1.0, sampling=S, rounds=allowed, delta=1e-5)
    err = info.value
    assert err.budget == budget and err.spent == pytest.approx(led.epsilon("rdp"))
    assert f"round {allowed + 1}" in str(err)


def test_budget_accountant_must_support_sampling() -> None:
    led = PrivacyLedger(delta=1e-5, budget=PrivacyBudget(epsilon=5.0, delta=1e-5, accountant="prv"))
    with pytest.raises(ConfigurationError, match="no valid bound"):
        led.check(noise_multiplier=1.0, sampling=Sampling.fixed(sample_size=5, population=50))


def test_unsupported_accountant_reads_nan_not_a_wrong_bound() -> None:
    led = PrivacyLedger(delta=1e-5)
    e = led.record(round=1, noise_multiplier=2.0, sampling=Sampling.fixed(sample_size=5, population=50))
    assert math.isnan(e.epsilon["prv"]) and e.epsilon["rdp"] > 0
    assert math.isnan(led.epsilon("prv"))


def test_budget_validation() -> None:
    with pytest.raises(ConfigurationError):
        PrivacyBudget(epsilon=0.0, delta=1e-5)
    with pytest.raises(ConfigurationError):
        PrivacyBudget(epsilon=1.0, delta=1.0)
    with pytest.raises(ConfigurationError):
        PrivacyLedger(delta=0.0)
    assert math.isnan(PrivacyLedger(delta=1e-5).check(noise_multiplier=1.0, sampling=S))


def test_state_is_saved_and_restored_with_the_entries(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    path = tmp_path / "ledger.json"
    led = PrivacyLedger(delta=1e-5)
    led.record(round=1, noise_multiplier=1.0, sampling=Sampling.poisson(rate=0.1, population=100))
    led.state["adaptive_clip"] = {"clip": 0.1 + 0.2}
    led.save(path)
    again = PrivacyLedger(delta=1e-5)
    again.load(path)
    assert again.state == {"adaptive_clip": {"clip": 0.1 + 0.2}} and len(again.entries) == 1
    data = json.loads(path.read_text())
    del data["state"]  # a file written before the state existed: loads, with an empty state
    path.write_text(json.dumps(data))
    older = PrivacyLedger(delta=1e-5)
    older.load(path)
    assert older.state == {} and len(older.entries) == 1
    data["state"] = [1, 2]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match="state"):
        PrivacyLedger(delta=1e-5).load(path)


def test_a_mechanism_with_its_own_curve_is_checked_recorded_and_resumed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dp.distributed_accounting import DistributedDGaussRDP

    # sigma 0.9 per share: KLS21's tau term is felt (at sigma 8 the curve is the Gaussian's to 1e-15)
    mech = DistributedDGaussRDP(l2_sensitivity=2.0, sigma=0.9, shares=100, dim=1024)
    led = PrivacyLedger(delta=1e-5, budget=PrivacyBudget(epsilon=2.0, delta=1e-5))
    for r in (1, 2):
        led.check(noise_multiplier=mech.noise_multiplier, sampling=S, mechanism=mech)
        entry = led.record(round=r, noise_multiplier=mech.noise_multiplier, sampling=S, mechanism=mech)
    assert entry.mechanism == mech and math.isfinite(entry.epsilon["rdp"]) and math.isnan(entry.epsilon["prv"])
    # its own curve, not the Gaussian of the same noise multiplier
    gauss = PrivacyLedger(delta=1e-5)
    gauss.record(round=1, noise_multiplier=mech.noise_multiplier, sampling=S)
    gauss.record(round=2, noise_multiplier=mech.noise_multiplier, sampling=S)
    assert led.epsilon("rdp") != pytest.approx(gauss.epsilon("rdp"))
    path = tmp_path / "ledger.json"
    led.save(path)
    again = PrivacyLedger(delta=1e-5)
    again.load(path)
    assert again.entries[1].mechanism == mech and again.epsilon("rdp") == led.epsilon("rdp")
    big = DistributedDGaussRDP(l2_sensitivity=50.0, sigma=0.6, shares=100, dim=1024)
    with pytest.raises(PrivacyBudgetExceeded):
        led.check(noise_multiplier=big.noise_multiplier, sampling=S, mechanism=big)
    fixed = Sampling.fixed(sample_size=10, population=100)
    with pytest.raises(ConfigurationError, match="no valid bound"):
        PrivacyLedger(delta=1e-5, budget=PrivacyBudget(epsilon=2.0, delta=1e-5)).check(
            noise_multiplier=1.0, sampling=fixed, mechanism=mech
        )
