"""Fault injection around DP rounds: dropouts at every stage with client noise, empty rounds,
budget exhaustion mid-run, secret cohorts, delta against the population.

The inner aggregation here is the real secure aggregation (``SecAggAggregator`` driving real
SecAgg+ parties with dropouts injected at each stage), and the loop is the real FedAvg loop.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dp.accounting import Sampling, epsilon_for
from dp.config import DPConfig
from dp.noise import InsecureNoiseWarning, SecureNoise
from dp.rounds import REPRODUCIBLE_COHORTS, SECRET_COHORTS, WITHHELD
from privagg.config import load_config
from privagg.errors import ConfigurationError, PrivacyBudgetExceeded
from privagg.randomness import InsecureDeterministicSecrets, simulation_rng
from protocols.aggregation import ClientUpdate, RoundContext
from protocols.dp_fedavg import DPFedAvg
from protocols.fedavg import FedAvgSimulation, RunConfig
from protocols.secagg_aggregator import SecAggAggregator

N, POP, DIM, Z = 10, 100, 12, 1.0
POISSON = Sampling.poisson(rate=N / POP, population=POP)


def _noise(seed: int = 0) -> SecureNoise:
    return SecureNoise(secrets=InsecureDeterministicSecrets(seed))


def _ctx(r: int = 1, ids: range = range(N)) -> RoundContext:
    return RoundContext(
        round=r,
        population=POP,
        sampled=tuple(ids),
        sampling="poisson",
        sampling_rate=N / POP,
        rng=np.random.default_rng(r),
        global_params=np.zeros(DIM),
    )


def _updates(seed: int = 0) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    return [ClientUpdate(i, rng.normal(size=DIM) * 0.05, 1) for i in range(N)]


def _secagg(stage: str, *, dropout_rate: float = 0.3, threshold: int = 6) -> SecAggAggregator:
    return SecAggAggregator(
        clip=4.0, degree=N - 1, threshold=threshold, dropout_rate=dropout_rate, drop_stage=stage, threat="active"
    )


def _dp(inner: SecAggAggregator, **cfg: object) -> DPFedAvg:
    config = DPConfig(noise_multiplier=Z, clip_norm=0.1, noise="client", **cfg)  # type: ignore[arg-type]
    return DPFedAvg(inner, config=config, population=POP, noise_sampler=_noise())


def test_the_noise_is_split_over_the_fewest_survivors_and_the_budget_checked_before_the_secure_sum() -> None:
    # the case: the budget fits one round at the full noise. The secure sum the protocol could release
    # (threshold 6: the conservative bound used) holds at least 6 shares, so the noise is split into 6
    # shares, not 10: every sum it may release carries the full noise, and the round runs. The next round
    # is over budget: refused before any client is asked.
    eps_full = epsilon_for(noise_multiplier=Z, sampling=POISSON, rounds=1, delta=1e-5)
    inner = _secagg("masked_input")
    agg = _dp(inner, budget_epsilon=eps_full * 1.01)
    res = agg.aggregate(_updates(), _ctx())
    (entry,) = agg.ledger.entries
    survivors = len(res.participants)
    assert entry.noise_multiplier == Z and res.metrics["dp_noise_multiplier_worst_case"] == Z
    planned = res.metrics["dp_noise_std_planned"]
    assert planned > 0 and survivors >= 6
    assert res.metrics["dp_noise_std_survivors"] == WITHHELD  # under Poisson it would reveal the survivor count
    with pytest.raises(PrivacyBudgetExceeded):
        agg.aggregate(_updates(1), _ctx(2))
    assert len(inner.rounds) == 1 and len(agg.ledger.entries) == 1  # no second secure sum ran


@pytest.mark.parametrize("stage", ["advertise", "share_keys", "masked_input", "consistency", "unmask"])
def test_dropouts_at_every_stage_with_client_noise_are_accounted(stage: str) -> None:
    inner = _secagg(stage)
    eps_full = epsilon_for(noise_multiplier=Z, sampling=POISSON, rounds=1, delta=1e-5)
    agg = _dp(inner, budget_epsilon=eps_full * 1.001)
    res = agg.aggregate(_updates(), _ctx())
    (stats,) = inner.rounds
    (entry,) = agg.ledger.entries
    survivors = len(res.participants)
    assert survivors == stats.survivors >= 7
    # the noise was split over the 6 shares any released sum holds: the ledger's z is the calibrated one
    assert entry.noise_multiplier == Z
    assert res.metrics["dp_noise_multiplier_worst_case"] == Z
    assert res.metrics["dp_noise_std"] == res.metrics["dp_noise_std_planned"]
    assert res.metrics["dp_noise_std_survivors"] == WITHHELD  # under Poisson it would reveal the survivor count
    assert entry.epsilon["rdp"] <= eps_full * 1.001
    # Poisson: the inner aggregator's counts (survivors, bytes) are not in the DP outputs
    assert not [k for k in res.metrics if k.startswith("secagg_")]
    assert agg.ledger.rows()[0]["participants"] == WITHHELD


def test_an_empty_round_releases_noise_only_and_is_accounted() -> None:
    agg = DPFedAvg(
        SecAggAggregator(clip=4.0), config=DPConfig(noise_multiplier=Z, noise="client"), noise_sampler=_noise()
    )
    res = agg.aggregate([], _ctx(ids=range(0)))
    assert res.participants == () and res.delta.shape == (DIM,)
    assert np.count_nonzero(res.delta) > 0  # the noise, not the unchanged model
    (entry,) = agg.ledger.entries
    assert entry.noise_multiplier == Z and res.metrics["dp_noise_std"] == res.metrics["dp_noise_std_planned"]


def _sim_config(**dp: object) -> RunConfig:
    table = {
        "data": {"num_clients": 20},
        "model": {"name": "logreg"},
        "train": {"epochs": 1},
        "federation": {"rounds": 12, "sampling": "poisson", "sampling_rate": 0.05, "patience": None},
        "dp": {"noise_multiplier": 1.0, "clip_norm": 0.5, **dp},
    }
    return load_config(RunConfig, table)


def test_empty_poisson_rounds_in_the_loop_release_noise_and_are_accounted() -> None:
    # q = 0.05, N = 20: about a third of the rounds are empty (the issue measured 5 of 12)
    sim = FedAvgSimulation(_sim_config(), cohort_secrets=InsecureDeterministicSecrets(4))
    before = [sim.global_params.copy()]
    for r in range(1, 13):
        sim.run_round(r)
        before.append(sim.global_params.copy())
    empty = [h.round for h in sim.history if not h.sampled]
    assert empty, "this secret stream gives no empty round: pick another test seed"
    ledger = sim.aggregator.ledger  # type: ignore[attr-defined]
    assert [e.round for e in ledger.entries] == list(range(1, 13))  # every round, empty ones included
    for r in empty:
        assert not np.array_equal(before[r], before[r - 1])  # noise was released
    # the cohort sizes reveal presence under Poisson sampling: withheld from the run's records
    assert {h.to_dict()["num_sampled"] for h in sim.history} == {"withheld"}
    assert ledger.epsilon("rdp") == pytest.approx(
        epsilon_for(noise_multiplier=1.0, sampling=Sampling.poisson(rate=0.05, population=20), rounds=12, delta=1e-5)
    )


def test_dp_cohorts_come_from_the_secret_source_unless_asked() -> None:
    cfg = _sim_config()
    a = FedAvgSimulation(cfg, cohort_secrets=InsecureDeterministicSecrets(1))
    b = FedAvgSimulation(cfg, cohort_secrets=InsecureDeterministicSecrets(2))
    same = FedAvgSimulation(cfg, cohort_secrets=InsecureDeterministicSecrets(1))
    ca = [a.sample_clients(r)[0] for r in range(1, 30)]
    assert ca != [b.sample_clients(r)[0] for r in range(1, 30)]  # the public seed does not fix them
    assert ca == [same.sample_clients(r)[0] for r in range(1, 30)]  # the secret source does
    assert a.aggregator.dp_rounds.cohorts == SECRET_COHORTS  # type: ignore[attr-defined]
    # the explicit simulation seam: cohorts from the seed, labelled as not private
    rep = FedAvgSimulation(_sim_config(reproducible_cohorts=True))
    seeded = tuple(np.flatnonzero(simulation_rng(cfg.seed, "sampling", 3).random(20) < 0.05).tolist())
    assert rep.sample_clients(3)[0] == seeded
    assert rep.aggregator.dp_rounds.cohorts == REPRODUCIBLE_COHORTS  # type: ignore[attr-defined]
    rec = rep.run_round(1)
    assert rec.metrics["dp_cohorts"] == "cohorts reproducible from the seed: not private"


def test_budget_exhaustion_mid_run_stops_before_the_round_and_keeps_the_released_model() -> None:
    sampling = Sampling.poisson(rate=0.05, population=20)
    budget = epsilon_for(noise_multiplier=1.0, sampling=sampling, rounds=3, delta=1e-5) * 1.0001
    sim = FedAvgSimulation(_sim_config(budget_epsilon=budget), cohort_secrets=InsecureDeterministicSecrets(7))
    for r in range(1, 4):
        sim.run_round(r)
    released = sim.global_params.copy()
    with pytest.raises(PrivacyBudgetExceeded):
        sim.run_round(4)
    assert len(sim.aggregator.ledger.entries) == 3 and len(sim.history) == 3  # type: ignore[attr-defined]
    np.testing.assert_array_equal(sim.global_params, released)


def test_delta_above_one_over_population_is_refused_unless_overridden() -> None:
    with pytest.raises(ConfigurationError) as info:
        FedAvgSimulation(_sim_config(delta=0.1))
    assert info.value.field == "dp.delta" and "allow_large_delta" in str(info.value) and "1/20" in str(info.value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        sim = FedAvgSimulation(
            _sim_config(delta=0.1, allow_large_delta=True), cohort_secrets=InsecureDeterministicSecrets(1)
        )
    rec = sim.run_round(1)
    assert rec.metrics["dp_delta_times_population"] == pytest.approx(2.0)
    # a bare DPFedAvg checks the round's population when it was not configured
    agg = DPFedAvg(SecAggAggregator(clip=4.0), config=DPConfig(noise_multiplier=1.0, delta=0.05))
    with pytest.raises(ConfigurationError, match="1/100"):
        agg.aggregate(_updates(), _ctx())


def test_a_restart_mid_run_resumes_the_ledger_and_its_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    eps3 = epsilon_for(noise_multiplier=Z, sampling=POISSON, rounds=3, delta=1e-5)
    config = DPConfig(noise_multiplier=Z, clip_norm=0.1, budget_epsilon=eps3 * 1.0001)
    path = tmp_path / "ledger.json"

    def server() -> DPFedAvg:
        return DPFedAvg(SecAggAggregator(clip=4.0), config=config, population=POP, noise_sampler=_noise())

    first = server()
    for r in (1, 2):
        first.aggregate(_updates(r), _ctx(r))
        first.ledger.save(path)
    # the server restarts: a fresh aggregator resumes from the file, and only one more round fits
    second = server()
    second.ledger.load(path)
    assert [e.round for e in second.ledger.entries] == [1, 2]
    assert second.ledger.epsilon("rdp") == pytest.approx(first.ledger.epsilon("rdp"))
    second.aggregate(_updates(3), _ctx(3))
    with pytest.raises(PrivacyBudgetExceeded):
        second.aggregate(_updates(4), _ctx(4))
    # a corrupt or truncated file is refused, typed
    path.write_text(path.read_text()[:40])
    with pytest.raises(ConfigurationError, match="ledger"):
        server().ledger.load(path)


def test_a_restarted_simulation_resumes_from_the_ledger_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "ledger.json")
    budget = epsilon_for(
        noise_multiplier=1.0, sampling=Sampling.poisson(rate=0.05, population=20), rounds=3, delta=1e-5
    )
    cfg = _sim_config(ledger_path=path, budget_epsilon=budget * 1.0001)
    first = FedAvgSimulation(cfg, cohort_secrets=InsecureDeterministicSecrets(3))
    first.run_round(1)
    first.run_round(2)
    # a new process with the same configuration: the two released rounds are still spent
    again = FedAvgSimulation(cfg, cohort_secrets=InsecureDeterministicSecrets(5))
    assert [e.round for e in again.aggregator.ledger.entries] == [1, 2]  # type: ignore[attr-defined]
    again.run_round(3)
    with pytest.raises(PrivacyBudgetExceeded):
        again.run_round(4)


def test_a_restarted_simulation_resumes_the_adaptive_clip_exactly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "ledger.json")
    cfg = _sim_config(ledger_path=path, adaptive_clipping=True, count_noise_std=2.0, clip_learning_rate=0.5)
    first = FedAvgSimulation(cfg, cohort_secrets=InsecureDeterministicSecrets(3))
    for r in (1, 2, 3):
        first.run_round(r)
    live = first.aggregator.dp_rounds  # type: ignore[attr-defined]
    assert live.clip != 0.5  # the clip moved
    again = FedAvgSimulation(cfg, cohort_secrets=InsecureDeterministicSecrets(5))  # a new process, same settings
    resumed = again.aggregator.dp_rounds  # type: ignore[attr-defined]
    assert resumed.clip == live.clip and resumed.clipper.history == live.clipper.history
    assert [e.info["clip_norm"] for e in resumed.ledger.entries] == [e.info["clip_norm"] for e in live.ledger.entries]
    again.run_round(4)
    assert resumed.ledger.entries[-1].info["clip_norm"] == live.clip  # round 4 ran with the resumed clip
