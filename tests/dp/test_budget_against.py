"""The budget enforces the guarantee it is told to: against observers (amplified) or against the server."""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import pytest

from dp.accounting import Sampling
from dp.config import DPConfig
from dp.ledger import PrivacyBudget, PrivacyLedger
from dp.noise import InsecureNoiseWarning, SeededNoise
from dp.server_view import server_view
from privagg.audit import AuditConfig
from privagg.audit.engine import check_dp
from privagg.errors import ConfigurationError, PrivacyBudgetExceeded
from privagg.report.dp import budget_line
from protocols.aggregation import ClientUpdate, MeanAggregator, RoundContext
from protocols.dp_fedavg import DPFedAvg

S = Sampling.poisson(rate=0.1, population=100)
Z = 3.0  # one unamplified round at z = 3 costs about 1.6 against the server; amplified, far less


def fill(against: str, *, roster: tuple[int, ...] | None = (0, 1, 2)) -> tuple[PrivacyLedger, int]:
    """Check and record rounds (client 0 in every roster) until the budget refuses one; return the rounds run."""
    led = PrivacyLedger(delta=1e-5, budget=PrivacyBudget(epsilon=3.0, delta=1e-5, against=against))
    for r in range(1, 40):
        try:
            led.check(noise_multiplier=Z, sampling=S, roster=roster)
        except PrivacyBudgetExceeded:
            return led, r - 1
        led.record(round=r, noise_multiplier=Z, sampling=S, roster=roster)
    return led, 39


def test_observers_budget_keeps_todays_behaviour() -> None:
    led, done = fill("observers")
    assert done == 39  # the amplified figure stays far below 3 over 39 rounds
    assert led.epsilon("rdp") < 3.0 < server_view(led).epsilon  # the server figure is over: reported, not enforced


@pytest.mark.parametrize("roster", [(0, 1, 2), None])
def test_server_budget_refuses_the_round_that_would_overspend_against_the_server(
    roster: tuple[int, ...] | None,
) -> None:
    led, done = fill("server", roster=roster)
    assert 1 <= done < 39 and len(led.entries) == done  # refused before anything was recorded
    assert server_view(led).epsilon <= 3.0
    over = PrivacyLedger(delta=1e-5)  # the same ledger with the refused round: over the budget
    for r in range(1, done + 2):
        over.record(round=r, noise_multiplier=Z, sampling=S, roster=roster)
    assert server_view(over).epsilon > 3.0
    with pytest.raises(PrivacyBudgetExceeded, match="against the server") as err:
        led.check(noise_multiplier=Z, sampling=S, roster=roster)
    assert err.value.spent == pytest.approx(server_view(led).epsilon)


def test_a_round_without_the_worst_client_is_still_allowed() -> None:
    led, _ = fill("server")
    led.check(noise_multiplier=Z, sampling=S, roster=(7, 8, 9))  # client 0 is not in it: nobody goes over
    with pytest.raises(ConfigurationError):
        PrivacyBudget(epsilon=1.0, delta=1e-5, against="everyone")


def updates(n: int, seed: int) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    return [ClientUpdate(client_id=i, delta=rng.normal(size=6) * 0.1, num_examples=5) for i in range(n)]


def ctx(r: int, n: int) -> RoundContext:
    return RoundContext(
        round=r,
        population=100,
        sampled=tuple(range(n)),
        sampling="poisson",
        sampling_rate=0.1,
        rng=np.random.default_rng(r),
        global_params=np.zeros(6),
    )


def dp_run(against: Literal["observers", "server"]) -> tuple[DPFedAvg, int]:
    cfg = DPConfig(noise_multiplier=Z, budget_epsilon=3.0, noise="client", budget_against=against, delta=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)  # simulation noise: the budget is what is tested
        agg = DPFedAvg(MeanAggregator(), config=cfg, noise_sampler=SeededNoise(1))
    for r in range(1, 25):
        try:
            agg.aggregate(updates(5, r), ctx(r, 5))
        except PrivacyBudgetExceeded:
            return agg, r - 1
    return agg, 24


def test_dp_fedavg_enforces_the_chosen_guarantee() -> None:
    observers, n_obs = dp_run("observers")
    server, n_srv = dp_run("server")
    assert n_obs == 24 and 1 <= n_srv < 24  # the same clients every round: the server figure runs out first
    assert len(server.ledger.entries) == n_srv and server_view(server.ledger).epsilon <= 3.0
    assert server_view(observers.ledger).epsilon > 3.0


def test_central_noise_cannot_enforce_a_budget_against_the_server() -> None:
    with pytest.raises(ConfigurationError) as err:
        DPConfig(noise_multiplier=1.0, noise="central", budget_against="server")
    assert err.value.field == "budget_against"


def _g(**kw: Any) -> dict[str, Any]:
    return {"budget_epsilon": 8.0, "accountant": "rdp", "noise": "client", **kw}


def test_the_report_and_the_audit_say_which_guarantee_is_enforced() -> None:
    assert "enforced against observers" in budget_line(_g(budget_against="observers"))
    assert "against the server is reported, not enforced" in budget_line(_g(budget_against="observers"))
    assert "enforced against the server" in budget_line(_g(budget_against="server"))
    assert budget_line(_g(budget_epsilon=None)) == "none"
    dep = {"num_clients": 1000, "model_params": 650, "threat": "active"}
    for against in ("observers", "server"):
        dp = {"target_epsilon": 8.0, "sampling_rate": 0.1, "rounds": 30, "noise": "client", "budget_against": against}
        cfg = AuditConfig.from_mapping({"protocol_attacks": False, "deployment": dep, "dp": dp})
        by_id = {f.id: f for f in check_dp(cfg)[0]}
        assert by_id["dp.budget"].data["budget_against"] == against == by_id["dp.server"].data["budget_against"]
        assert f'budget_against = "{against}"' in by_id["dp.budget"].detail
        assert math.isfinite(by_id["dp.server"].data["epsilon"])
