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
    capp = vector_client_app(dimension=M, seed=SEED, mods=[make_secagg_mod(threat="active", pki=str(pki))])
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
        make_secagg_mod(threat="active", pki=str(pki)),
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
    mods = [make_secagg_mod(threat="active", pki=str(pki)), ddp]
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
