"""A Poisson cohort the secure sum cannot run (one client) over Flower: refused, charged, and the run goes on.

The strategy's draw selects one client in round 1 and every client in round 2. Round 1 is
refused before anything is sent (typed, in the round's record: no secure aggregation over one
input), nothing is released and the model stays; when a DP mechanism accounts the rounds, the
refused round is still charged (the sample was drawn, and the accountant composes every Poisson
round whoever was sampled, as it charges an empty cohort) with ``refused`` in its ledger entry.
Round 2 runs as usual.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

pytest.importorskip("flwr")

from dp.accounting import Sampling
from dp.config import DPConfig
from dp.distributed_encoding import IntegerNoise
from dp.refusal import refusal_delta
from dp.server_view import server_view
from protocols.flower import PrivAggSecAggWorkflow, SecAggWorkflowConfig, create_identities, make_secagg_mod
from protocols.flower.apps import vector_client_app, vector_server_app
from protocols.flower.distributed_dp import (
    DistributedDPRoundRecord,
    PrivAggDistributedDPWorkflow,
    make_distributed_dp_mod,
)
from protocols.flower.dp import PrivAggDPStrategy, make_dp_mod
from protocols.flower.inproc import run_inprocess
from secagg.params import ThreatModel
from tests.protocols.flower.node_policy import TEST_POLICY

logging.getLogger("flwr").setLevel(logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::dp.noise.InsecureNoiseWarning")

N, M, SEED = 6, 30, 11
REASON = "secure aggregation needs at least 2 clients"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    create_identities(d, range(N))
    return d


class _OneFirst:
    """The strategy, whose draw selects a single client in round 1 (then every client)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.first: int | None = None

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
        pairs = self._inner.configure_fit(server_round, parameters, client_manager)
        if server_round == 1:
            pairs = pairs[:1]
            self.first = pairs[0][0].node_id
        return pairs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _config(pki: Path, **kw: Any) -> SecAggWorkflowConfig:
    return SecAggWorkflowConfig.manual(degree=5, threshold=4, threat=ThreatModel.ACTIVE, pki=str(pki), **kw)


def _assert_refused_untouched(rec: Any) -> None:
    assert rec.refused == REASON and not rec.ok and rec.aggregate is None
    assert rec.abort is not None and "refused" in rec.abort
    assert rec.stage_seconds == {} and rec.node_errors == {} and rec.bytes_down == 0  # no node was sent anything


def test_secure_aggregation_refuses_a_cohort_of_one_and_the_run_goes_on(pki: Path) -> None:
    wf = PrivAggSecAggWorkflow(_config(pki, clipping_range=8.0))
    capp = vector_client_app(
        dimension=M, seed=SEED, mods=[make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY)]
    )
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=2, wrap_strategy=_OneFirst)
    run_inprocess(sapp, capp, num_nodes=N)
    refused, ran = wf.history
    _assert_refused_untouched(refused)
    assert ran.ok and ran.refused is None and len(ran.survivors) == N


def test_a_dp_strategy_charges_a_refused_poisson_round(pki: Path) -> None:
    config = _config(pki, clipping_range=8.0, weighting="uniform")
    holder: dict[str, Any] = {}

    def wrap(fedavg: Any) -> Any:
        holder["draw"] = _OneFirst(fedavg)
        holder["dp"] = PrivAggDPStrategy(
            holder["draw"],
            noise_multiplier=1.0,
            clip_norm=1.0,
            sampling=Sampling.poisson(rate=1.0, population=N),
            min_survivors=lambda n: config.params_for(n).min_survivors(n),  # raises for n = 1: no secure graph
        )
        return holder["dp"]

    wf = PrivAggSecAggWorkflow(config)
    mods = [
        make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY),
        make_dp_mod(min_noise_multiplier=0.5, max_shares=N, accept_poisson=True),
    ]
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=2, wrap_strategy=wrap)
    run_inprocess(sapp, vector_client_app(dimension=M, seed=SEED, mods=mods), num_nodes=N)
    refused, ran = wf.history
    _assert_refused_untouched(refused)
    assert ran.ok, ran.abort
    strat = holder["dp"]
    first, second = strat.ledger.entries
    assert first.round == 1 and first.info["refused"] == REASON
    assert first.noise_multiplier == 1.0  # charged at the full noise, as an empty cohort's release
    assert first.roster == (holder["draw"].first,)  # the sampled client, for the server-view guarantee
    assert second.round == 2 and second.epsilon["rdp"] > first.epsilon["rdp"] > 0
    assert math.isfinite(second.epsilon["rdp"])


def test_distributed_dp_charges_a_refused_poisson_round_and_releases_nothing(pki: Path) -> None:
    dp = DPConfig(noise="distributed", target_epsilon=8.0, delta=1e-5, clip_norm=1.0, bits=16, mechanism="dgauss")
    wf = PrivAggDistributedDPWorkflow(
        _config(pki, weighting="uniform"), dp=dp, sampling=Sampling.poisson(rate=1.0, population=N), rounds=2
    )
    holder: dict[str, _OneFirst] = {}

    def wrap(fedavg: Any) -> Any:
        holder["draw"] = _OneFirst(fedavg)
        return holder["draw"]

    ddp = make_distributed_dp_mod(
        min_noise_multiplier=0.1,
        max_shares=N,
        noise=lambda c: IntegerNoise(seed=1000 + int(c.node_config["partition-id"])),
    )
    mods = [make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY), ddp]
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=2, wrap_strategy=wrap)
    run_inprocess(sapp, vector_client_app(dimension=M, seed=SEED, mods=mods), num_nodes=N)
    refused, ran = cast(list[DistributedDPRoundRecord], wf.history)
    _assert_refused_untouched(refused)
    assert refused.dp_metrics and math.isfinite(refused.dp_metrics["dp_epsilon_rdp"])
    assert ran.ok, ran.abort
    first, second = wf.ledger.entries
    plan = ran.plan
    assert plan is not None
    assert first.round == 1 and first.info["refused"] == REASON
    assert first.mechanism == plan.rdp_mechanism(plan.shares, plan.shares)  # as an empty cohort is charged
    assert first.roster == (holder["draw"].first,)
    assert second.round == 2 and second.epsilon["rdp"] > first.epsilon["rdp"] > 0
    assert np.all(np.isfinite(np.asarray(ran.aggregate[0])))  # type: ignore[index]


# ------------------------------------------------------------------ the guarantee each Flower DP path states
def _in_memory_line(
    ledger: Any, *, config: DPConfig, min_cohort: int, cohorts: str | None = None
) -> tuple[str, list[str]]:
    """The in-memory run's report line and warnings for ``ledger``: a real DP-FedAvg over a secure sum whose
    minimum is ``min_cohort``, holding the Flower run's ledger (the report reads only the aggregator)."""
    from privagg.report.dp import dp_warnings, guarantee, guarantee_line
    from protocols.dp_fedavg import DPFedAvg
    from protocols.fedavg import RunConfig, RunResult
    from protocols.secagg_aggregator import SecAggAggregator

    inner = SecAggAggregator()
    inner._min_cohort = min_cohort  # the Flower workflow's minimum (the refusal delta depends on nothing else)
    agg = DPFedAvg(inner, config=config, population=N, cohorts=cohorts)
    agg.dp_rounds.ledger = ledger
    run = RunResult(RunConfig(), [], 0.0, np.zeros(1), 1, agg, "flower", [], np.zeros((0, 0)))
    return guarantee_line(guarantee(run)), dp_warnings(run)


def _keeping_history(wf: Any, holder: dict[str, Any]) -> Any:
    def fit(grid: Any, ctx: Any) -> None:
        wf(grid, ctx)
        holder["history"] = ctx.history  # Flower's History: the strategy's round metrics

    return fit


def _brute_min_cohort(fault: Any) -> int:
    return next((n for n in range(2, N + 1) if fault(n) is None), N + 1)


def test_the_flower_dp_strategy_states_the_in_memory_guarantee_and_warns(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(pki, clipping_range=8.0, weighting="uniform")
    holder: dict[str, Any] = {}
    rate = 0.3  # stated for the accountant: cohorts near the minimum of 5, whether a round ran leaks

    def wrap(fedavg: Any) -> Any:
        holder["dp"] = PrivAggDPStrategy(
            cast(Any, _OneFirst(fedavg)),
            noise_multiplier=1.0,
            clip_norm=1.0,
            sampling=Sampling.poisson(rate=rate, population=N),
            min_survivors=lambda n: config.params_for(n).min_survivors(n),
        )
        return holder["dp"]

    wf = PrivAggSecAggWorkflow(config)
    mods = [
        make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY),
        make_dp_mod(min_noise_multiplier=0.5, max_shares=N, accept_poisson=True),
    ]
    sapp = vector_server_app(_keeping_history(wf, holder), num_clients=N, dimension=M, rounds=2, wrap_strategy=wrap)
    with caplog.at_level(logging.INFO, logger="privagg.flower"):
        run_inprocess(sapp, vector_client_app(dimension=M, seed=SEED, mods=mods), num_nodes=N)
    strat = holder["dp"]
    g = strat.guarantee()
    m = _brute_min_cohort(wf._cohort_fault)
    assert strat.min_cohort() == m
    expected = refusal_delta(population=N, rate=rate, min_cohort=m, rounds=2, empty_released=True)
    assert g.delta_refusal == pytest.approx(expected, rel=1e-12) and g.delta_refusal > 1e-3 > g.delta
    assert g.epsilon_server == server_view(strat.ledger).epsilon and g.refused_rounds == (1,)
    line, warnings = _in_memory_line(strat.ledger, config=strat.config, min_cohort=m)
    assert g.line() == line  # the same sentence as the in-memory report, from the same ledger
    assert f"{g.delta + g.delta_refusal:.3g})-DP" in line
    refusal = [w for w in warnings if w.startswith("whether rounds ran")]
    assert g.warnings() == refusal and len(refusal) == 1
    logged = [r for r in caplog.records if r.name == "privagg.flower"]
    assert any(r.levelno == logging.WARNING and refusal[0] in r.getMessage() for r in logged)
    assert any(r.levelno == logging.INFO and line in r.getMessage() for r in logged)  # the last round's statement
    assert holder["history"].metrics_distributed_fit["dp_guarantee"] == [(2, line)]  # round 1 sent nothing


def test_the_distributed_dp_workflow_states_the_in_memory_guarantee(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dp = DPConfig(noise="distributed", target_epsilon=8.0, delta=1e-5, clip_norm=1.0, bits=16, mechanism="dgauss")
    rate = 1.0  # every client: whether a round ran reveals nothing (no refusal delta, no warning)
    wf = PrivAggDistributedDPWorkflow(
        _config(pki, weighting="uniform"), dp=dp, sampling=Sampling.poisson(rate=rate, population=N), rounds=2
    )
    ddp = make_distributed_dp_mod(
        min_noise_multiplier=0.1,
        max_shares=N,
        noise=lambda c: IntegerNoise(seed=1000 + int(c.node_config["partition-id"])),
    )
    mods = [make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY), ddp]
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=2, wrap_strategy=_OneFirst)
    with caplog.at_level(logging.INFO, logger="privagg.flower"):
        run_inprocess(sapp, vector_client_app(dimension=M, seed=SEED, mods=mods), num_nodes=N)
    refused, ran = cast(list[DistributedDPRoundRecord], wf.history)
    g = wf.guarantee()
    assert wf.min_cohort() == _brute_min_cohort(wf._cohort_fault)
    assert g.delta_refusal == 0.0 and g.warnings() == [] and g.refused_rounds == (1,)
    assert g.epsilon_server == server_view(wf.ledger).epsilon and math.isfinite(g.epsilon_server)
    line, warnings = _in_memory_line(wf.ledger, config=dp, min_cohort=wf.min_cohort(), cohorts=g.cohorts)
    assert g.line() == line and not [w for w in warnings if w.startswith("whether rounds ran")]
    assert ran.dp_metrics["dp_guarantee"] == line  # the statement after the last round, in its metrics
    assert refused.dp_metrics["dp_guarantee_delta"] == dp.delta  # after round 1 (refused): delta + 0
    assert ran.dp_metrics["dp_epsilon_server"] == g.epsilon_server
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "whether rounds ran" in r.getMessage()]
