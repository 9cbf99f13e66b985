"""A Poisson cohort below the secure aggregation's minimum: the round is refused, charged, and the run goes on.

A configuration whose cohorts can never (or mostly cannot) reach that minimum is refused before round 1.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from dp.config import DPConfig
from dp.noise import InsecureNoiseWarning
from dp.refusal import refusal_delta
from privagg.errors import ConfigurationError
from privagg.report.dp import dp_warnings, guarantee, guarantee_line
from privagg.report.run import training_section
from protocols.fedavg import AggregationConfig, DataConfig, FedAvgSimulation, FederationConfig, ModelConfig, RunConfig
from protocols.secagg_aggregator import SecAggAggregator
from protocols.training import TrainConfig

SEMI_HONEST = {"threat": "semi-honest", "clip": 8.0}  # derived graph, rates 0: the minimum cohort is 3


def config(
    *,
    clients: int = 30,
    rate: float = 0.1,
    rounds: int = 12,
    dp: DPConfig | None = None,
    options: dict[str, Any] | None = None,
    sampling: str = "poisson",
    per_round: int | None = None,
) -> RunConfig:
    return RunConfig(
        seed=2,
        data=DataConfig(dataset="breast-cancer", num_clients=clients, partition="iid"),
        model=ModelConfig(name="logreg"),
        train=TrainConfig(epochs=1, batch_size=16, lr=0.1),
        federation=FederationConfig(
            rounds=rounds,
            sampling=sampling,  # type: ignore[arg-type]
            sampling_rate=rate if sampling == "poisson" else None,
            clients_per_round=per_round,
        ),
        aggregation=AggregationConfig(name="secagg", options=dict(SEMI_HONEST if options is None else options)),
        dp=dp,
    )


def central_dp(**kw: Any) -> DPConfig:
    base: dict[str, Any] = dict(
        noise_multiplier=1.0, delta=1e-3, clip_norm=1.0, reproducible_cohorts=True, secure_noise=False, seed=5
    )
    base.update(kw)
    return DPConfig(**base)


def run_until_refused(sim: FedAvgSimulation, rounds: int) -> tuple[int, list[np.ndarray]]:
    """Run round by round; return the first refused round and the model before every round (and after the last)."""
    params = [sim.global_params.copy()]
    refused = 0
    for r in range(1, rounds + 1):
        rec = sim.run_round(r)
        params.append(sim.global_params.copy())
        if rec.refused is not None and not refused:
            refused = r
    return refused, params


def test_a_small_cohort_is_refused_charged_and_the_run_goes_on() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        sim = FedAvgSimulation(config(dp=central_dp()))
        r, params = run_until_refused(sim, 12)
    assert r, "seed 2 draws at least one Poisson cohort of 1 or 2 clients (expected 3) in 12 rounds"
    sampled = sim.history[r - 1].sampled
    assert 1 <= len(sampled) < 3
    rec = sim.history[r - 1]
    # refused: nothing released, the model exactly as it was
    assert rec.refused is not None and "minimum of 3 clients" in rec.refused
    assert rec.participants == () and rec.metrics["round_refused"] == rec.refused
    assert np.array_equal(params[r], params[r - 1])
    # charged: one ledger entry per round, the refused one with its roster and the full noise
    ledger = sim.aggregator.ledger  # type: ignore[attr-defined]
    assert [e.round for e in ledger.entries] == list(range(1, 13))
    entry = ledger.entries[r - 1]
    assert entry.info["refused"] == rec.refused and entry.roster == tuple(sorted(sampled))
    assert entry.noise_multiplier == 1.0
    before = ledger.entries[r - 2].epsilon["rdp"] if r > 1 else 0.0
    assert entry.epsilon["rdp"] > before
    # the run went on: every later round ran, and the rounds that ran moved the model
    assert len(sim.history) == 12
    ran = [h.round for h in sim.history if h.refused is None and h.participants]
    assert ran and all(not np.array_equal(params[k], params[k - 1]) for k in ran)
    # the cohort size stays withheld: the reason never states it
    assert str(len(sampled)) + " clients" not in rec.refused


def test_the_report_shows_the_refused_rounds() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        result = FedAvgSimulation(config(dp=central_dp())).run()
    refused = [h.round for h in result.history if h.refused is not None]
    assert refused
    g = guarantee(result)
    assert g["refused_rounds"] == refused and g["rounds"] == 12
    assert f"({len(refused)} refused: nothing released, still charged)" in guarantee_line(g)
    section = training_section(result, per_client=False)
    assert section.data["refused_rounds"] == refused
    rows = dict(section.summary)
    assert rows["refused rounds"].startswith(f"{len(refused)} of 12 (")
    assert any(w.startswith(f"{len(refused)} of 12 rounds refused") for w in dp_warnings(result))
    # whether rounds ran costs observers an extra delta (dp/refusal.py): 30 clients at q = 0.1 against a
    # minimum of 3 leak far more than dp.delta = 1e-3, and the line, the row and a warning say so
    extra = refusal_delta(population=30, rate=0.1, min_cohort=3, rounds=12, empty_released=True)
    assert g["delta_refusal"] == pytest.approx(extra) and extra > 0.1
    assert f"({g['epsilon']:.4g}, {1e-3 + extra:.3g})-DP" in guarantee_line(g)
    assert any(w.startswith("whether rounds ran adds delta") for w in dp_warnings(result))


def test_distributed_dp_refuses_and_charges_the_planned_mechanism() -> None:
    dp = DPConfig(
        target_epsilon=8.0,
        delta=1e-3,
        clip_norm=1.0,
        noise="distributed",
        reproducible_cohorts=True,
        secure_noise=False,
        seed=5,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        sim = FedAvgSimulation(config(dp=dp, rounds=12))
        r, params = run_until_refused(sim, 12)
    assert r and np.array_equal(params[r], params[r - 1])
    ledger = sim.aggregator.ledger  # type: ignore[attr-defined]
    assert len(ledger.entries) == 12
    entry = ledger.entries[r - 1]
    assert entry.info["refused"] and entry.mechanism is not None
    shares = sim.aggregator.distributed.params.shares  # type: ignore[attr-defined]
    assert entry.mechanism == sim.aggregator.distributed.params.rdp_mechanism(shares, shares)  # type: ignore[attr-defined]


def test_without_dp_a_small_cohort_is_skipped_and_the_model_kept() -> None:
    sim = FedAvgSimulation(config(options={**SEMI_HONEST}))
    r, params = run_until_refused(sim, 12)
    assert r and np.array_equal(params[r], params[r - 1]) and len(sim.history) == 12
    assert sim.history[r - 1].to_dict()["refused"] == sim.history[r - 1].refused


def test_the_minimum_cohort_follows_the_clients_policy() -> None:
    agg = SecAggAggregator(threat="active", dropout_rate=0.01, corruption_rate=0.01)
    assert agg.min_cohort() == 24  # the derivation finds no graph for 23 clients at these rates
    assert agg.cohort_fault(23) is not None and agg.cohort_fault(24) is None and agg.cohort_fault(300) is None
    assert "24 clients" in (agg.cohort_fault(5) or "")
    with pytest.raises(ConfigurationError):
        agg.params_for(23)
    assert SecAggAggregator(threat="semi-honest").min_cohort() == 3


@pytest.mark.parametrize(
    "kw,field",
    [
        (dict(clients=2, rate=0.5), "data.num_clients"),  # no cohort can ever reach 3
        (dict(clients=10, sampling="fixed", per_round=2), "federation.clients_per_round"),
        (dict(clients=20, rate=0.1), "federation.sampling_rate"),  # expected cohort 2 < 3: mostly refused
    ],
)
def test_a_misconfiguration_still_raises_before_round_1(kw: dict[str, Any], field: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        with pytest.raises(ConfigurationError) as err:
            FedAvgSimulation(config(dp=central_dp(delta=1e-2), **kw))
    assert err.value.field == field
