"""PRV epsilon is computed only when asked, once per ledger length, and equals the eager figure."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from dp.accounting import PRVAccountant, Sampling, make_accountant
from dp.ledger import Epsilons, LedgerEntry, PrivacyBudget, PrivacyLedger

S = Sampling.poisson(rate=0.1, population=200)
#: a recorded ledger: noise multipliers of 12 rounds (adaptive-clipping-like drift, one weaker round)
ZS = (1.1, 1.1, 1.1, 0.9, 1.2, 1.2, 1.2, 1.2, 0.8, 1.0, 1.0, 1.3)


def computed(entry: LedgerEntry) -> bool:
    """Whether the entry's PRV figure is already known (no computation)."""
    assert isinstance(entry.epsilon, Epsilons)
    return entry.epsilon.computed("prv")


class Calls:
    n = 0


@pytest.fixture
def prv_calls(monkeypatch: pytest.MonkeyPatch) -> type[Calls]:
    """Count the calls that reach Opacus's PRV computation (the real one runs)."""
    real = PRVAccountant._epsilon
    Calls.n = 0

    def counted(self: PRVAccountant, delta: float) -> float:
        Calls.n += 1
        return real(self, delta)

    monkeypatch.setattr(PRVAccountant, "_epsilon", counted)
    return Calls


def eager(zs: tuple[float, ...], delta: float, marks: tuple[int, ...]) -> dict[int, float]:
    """What the ledger recorded before: the PRV accountant's epsilon after round ``m`` (of ``marks``), computed
    as the round was recorded."""
    acc = make_accountant("prv")
    out = {}
    for r, z in enumerate(zs, 1):
        acc.step(noise_multiplier=z, sampling=S)
        if r in marks:
            out[r] = acc.get_epsilon(delta)
    return out


def test_lazy_prv_equals_the_eager_figure_on_a_recorded_ledger(tmp_path: Path) -> None:
    led = PrivacyLedger(delta=1e-5)
    for r, z in enumerate(ZS, 1):
        led.record(round=r, noise_multiplier=z, sampling=S, roster=[r, r + 1])
    assert not any(computed(e) for e in led.entries)  # record computed no PRV
    want = eager(ZS, 1e-5, (3, 9, 12))
    for r in (3, 9):
        assert led.entries[r - 1].epsilon["prv"] == pytest.approx(want[r], abs=1e-12, rel=0)
    assert led.epsilon("prv") == pytest.approx(want[12], abs=1e-12, rel=0)
    # replayed from the saved file: the same figures
    led.save(tmp_path / "ledger.json")
    again = PrivacyLedger(delta=1e-5)
    again.load(tmp_path / "ledger.json")
    assert again.epsilon("prv") == pytest.approx(want[12], abs=1e-12, rel=0)
    # the ledger survives a pickle with its pending figures
    assert pickle.loads(pickle.dumps(again)).entries[8].epsilon["prv"] == pytest.approx(want[9], abs=1e-12, rel=0)


def test_prv_is_computed_once_per_ledger_length_and_only_when_asked(prv_calls: type[Calls]) -> None:
    led = PrivacyLedger(delta=1e-5)
    for r in range(1, 6):
        led.record(round=r, noise_multiplier=1.0, sampling=S)
        assert led.entries[-1].epsilon["rdp"] > 0  # RDP is there at once
    assert prv_calls.n == 0
    first = led.epsilon("prv")
    assert led.epsilon("prv") == first and led.entries[-1].epsilon["prv"] == first
    assert led.rows()[-1]["epsilon_prv"] == first and "epsilon_prv" not in led.rows()[0]
    assert prv_calls.n == 1
    led.record(round=6, noise_multiplier=1.0, sampling=S)
    assert led.epsilon("prv") > first and prv_calls.n == 2


def test_a_prv_budget_check_is_reused_by_the_record(prv_calls: type[Calls]) -> None:
    led = PrivacyLedger(delta=1e-5, budget=PrivacyBudget(epsilon=50.0, delta=1e-5, accountant="prv"))
    checked = led.check(noise_multiplier=1.0, sampling=S)
    entry = led.record(round=1, noise_multiplier=1.0, sampling=S)
    assert computed(entry) and entry.epsilon["prv"] == checked and prv_calls.n == 1
    # a record that differs from the check is not given the check's figure
    led.check(noise_multiplier=1.0, sampling=S)
    other = led.record(round=2, noise_multiplier=0.7, sampling=S)
    assert not computed(other)
    assert other.epsilon["prv"] == pytest.approx(eager((1.0, 0.7), 1e-5, (2,))[2], abs=1e-12, rel=0)
