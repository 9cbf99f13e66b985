"""A round the DP budget refuses ends the in-memory run before it: the model and history so far, nothing charged."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator
from typing import Literal

import numpy as np
import pytest

from dp.accounting import Sampling
from dp.config import DPConfig
from dp.ledger import BudgetRefusal, PrivacyBudget, PrivacyLedger
from dp.noise import InsecureNoiseWarning
from dp.server_view import server_view
from privagg.errors import ConfigurationError, PrivacyBudgetExceeded
from privagg.report.dp import budget_stop_line, dp_warnings, guarantee
from privagg.report.run import run_report
from privagg.run import execute_run
from protocols.dp_fedavg import DPFedAvg
from protocols.fedavg import DataConfig, FedAvgSimulation, FederationConfig, ModelConfig, RunConfig, RunResult

RATE, CLIENTS = 0.5, 10


@pytest.fixture(autouse=True)
def _seeded_noise_is_intended() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)  # seeded noise: the runs must be comparable
        yield


def config(against: Literal["observers", "server"], budget: float, rounds: int = 12) -> RunConfig:
    """Client noise z = 2, Poisson q = 0.5 over 10 clients, cohorts and noise from the seed (comparable runs)."""
    dp = DPConfig(
        noise_multiplier=2.0,
        clip_norm=0.5,
        noise="client",
        budget_epsilon=budget,
        budget_against=against,
        secure_noise=False,
        seed=3,
        reproducible_cohorts=True,
    )
    return RunConfig(
        data=DataConfig(num_clients=CLIENTS),
        model=ModelConfig(name="logreg"),
        federation=FederationConfig(rounds=rounds, sampling="poisson", sampling_rate=RATE),
        dp=dp,
    )


def ledger_of(sim: FedAvgSimulation) -> PrivacyLedger:
    assert isinstance(sim.aggregator, DPFedAvg)
    return sim.aggregator.ledger


def run(cfg: RunConfig) -> tuple[FedAvgSimulation, RunResult, list[np.ndarray]]:
    """The run, and the global model after every round it released (an observer's copies)."""
    seen: list[np.ndarray] = []
    sim = FedAvgSimulation(cfg, observers=[lambda rec, ups, res, s: seen.append(s.global_params.copy())])
    return sim, sim.run(), seen


@pytest.mark.parametrize(
    ("against", "budget", "stop_round"),
    [("server", 6.0, 9), ("observers", 3.0, 5)],  # known answers of this configuration (seed 0)
)
def test_the_run_stops_before_the_refused_round_and_keeps_what_it_released(
    against: Literal["observers", "server"], budget: float, stop_round: int
) -> None:
    sim, res, seen = run(config(against, budget))
    stop = res.budget_stop
    assert stop is not None and stop.round == stop_round and stop.against == against
    assert stop.epsilon > budget >= stop.spent and stop.budget == budget
    ledger = ledger_of(sim)
    assert len(res.history) == len(ledger.entries) == stop_round - 1  # nothing charged for the refused round
    assert [h.round for h in res.history] == [e.round for e in ledger.entries] == list(range(1, stop_round))
    np.testing.assert_array_equal(res.global_params, seen[-1])  # the model after the last released round
    figure = server_view(ledger).epsilon if against == "server" else ledger.epsilon()
    assert figure == pytest.approx(stop.spent) and figure <= budget
    # the refused round again, from the ledger as left: the same refusal, the same figure
    roster = sim.sample_clients(stop_round)[0]
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.check(noise_multiplier=2.0, sampling=Sampling.poisson(rate=RATE, population=CLIENTS), roster=roster)
    assert ledger.refusal is not None and ledger.refusal.epsilon == pytest.approx(stop.epsilon)
    # the same run asked for exactly the rounds it released ends with the same model and history
    _, short, _ = run(config(against, budget, rounds=stop_round - 1))
    assert short.budget_stop is None
    np.testing.assert_array_equal(short.global_params, res.global_params)
    assert [h.accuracy for h in short.history] == [h.accuracy for h in res.history]


def test_a_budget_against_observers_does_not_stop_on_the_server_figure() -> None:
    sim, res, _ = run(config("observers", 6.0))
    assert res.budget_stop is None and len(res.history) == len(ledger_of(sim).entries) == 12
    assert server_view(ledger_of(sim)).epsilon > 6.0  # reported, not enforced


def test_a_budget_that_refuses_round_1_leaves_the_initial_model_and_no_baseline() -> None:
    cfg = config("server", 1.0)
    outcome = execute_run(cfg, progress=False, baseline=True, leakage=False)
    res = outcome.result
    assert res.budget_stop is not None and res.budget_stop.round == 1 and res.history == []
    assert isinstance(res.aggregator, DPFedAvg) and res.aggregator.ledger.entries == []
    assert outcome.baseline is None
    np.testing.assert_array_equal(res.global_params, FedAvgSimulation(cfg).global_params)
    assert math.isnan(res.final_accuracy)
    line = budget_stop_line(guarantee(res)["budget_stop"])
    assert line is not None and line.startswith("training stopped before round 1: the budget (against the server)")


def test_the_engine_and_report_say_where_the_budget_stopped_training() -> None:
    outcome = execute_run(config("server", 6.0), progress=False, baseline=True, leakage=False)
    assert outcome.result.budget_stop is not None and len(outcome.result.history) == 8
    assert outcome.baseline is not None and len(outcome.baseline.history) == 8  # the same rounds, without privacy
    first = dp_warnings(outcome.result, outcome.baseline)[0]
    assert first.startswith(
        "training stopped before round 9: the budget (against the server) would be exceeded: the worst client's "
        "unamplified epsilon would reach "
        f"{outcome.result.budget_stop.epsilon:.4g} > budget 6 (delta 1e-05)"
    )
    d = run_report(outcome, command="test", timestamp="now").to_dict()
    privacy = d["sections"]["privacy"]
    assert privacy["budget_stop"]["round"] == 9 and privacy["budget_stop"]["against"] == "server"
    assert d["sections"]["training"]["stopped_before_round"] == 9 and d["rounds"] == 8


def test_the_ledger_keeps_the_last_refusal_and_clears_it_on_a_passing_check() -> None:
    s = Sampling.poisson(rate=0.1, population=100)
    led = PrivacyLedger(delta=1e-5, budget=PrivacyBudget(epsilon=1.0, delta=1e-5, against="observers"))
    with pytest.raises(PrivacyBudgetExceeded) as err:
        led.check(noise_multiplier=0.3, sampling=s)
    assert led.refusal is not None and led.refusal.round == 1 and led.refusal.against == "observers"
    assert led.refusal.message == str(err.value) and led.refusal.epsilon > 1.0 and led.entries == []
    kept = BudgetRefusal.of(err.value, round=7, ledger=led)
    assert kept.round == 7 and kept.epsilon == led.refusal.epsilon
    led.check(noise_multiplier=50.0, sampling=s)
    assert led.refusal is None


def test_a_refusal_without_a_ledger_record_keeps_only_the_errors_figures() -> None:
    err = PrivacyBudgetExceeded("over", spent=1.5, budget=2.0)
    stop = BudgetRefusal.of(err, round=3)
    assert (stop.round, stop.against, stop.spent, stop.budget, stop.message) == (3, "unknown", 1.5, 2.0, "over")
    assert math.isnan(stop.epsilon)
    line = budget_stop_line(dataclasses.asdict(stop))
    assert line is not None and "would be exceeded: over;" in line and "not recorded" in line
    assert budget_stop_line(None) is None


def test_a_run_that_needs_every_round_refuses_at_the_round_the_budget_refuses() -> None:
    cfg = config("observers", 3.0)
    refusing = dataclasses.replace(cfg, federation=dataclasses.replace(cfg.federation, budget_exhausted="refuse"))
    sim = FedAvgSimulation(refusing)
    with pytest.raises(PrivacyBudgetExceeded, match=r"needs all 12 rounds; the DP budget refused round 5") as e:
        sim.run()
    assert e.value.budget == 3.0 and e.value.spent is not None and e.value.spent <= 3.0
    assert len(sim.history) == len(ledger_of(sim).entries) == 4  # as the stopping run: nothing of round 5
    with pytest.raises(ConfigurationError, match="budget_exhausted"):
        FederationConfig(budget_exhausted="never")  # type: ignore[arg-type]
