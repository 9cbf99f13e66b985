"""Distributed DP inside privagg SecAgg over Flower: the client mod, the workflow, the ledger."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.common import FitIns

from dp.accounting import Sampling
from dp.config import DPConfig
from dp.distributed_encoding import DistributedEncoder, IntegerNoise
from dp.noise import InsecureNoiseWarning
from privagg.digest import model_digest
from privagg.errors import ProtocolAbort
from protocols.distributed_dp import DistributedDPRounds
from protocols.flower import SecAggWorkflowConfig, create_identities, make_secagg_mod
from protocols.flower._guard import running
from protocols.flower.apps import client_vector, dropout_mod, vector_client_app, vector_server_app
from protocols.flower.distributed_dp import (
    DDP_KEYS,
    DistributedDPRoundRecord,
    PrivAggDistributedDPWorkflow,
    make_distributed_dp_mod,
)
from protocols.flower.inproc import run_inprocess
from protocols.flower.secagg import MIN_SURVIVORS_KEY, ROSTER_KEY
from secagg.params import ThreatModel
from tests.protocols.flower.ddp_plan import ddp_config as _dp
from tests.protocols.flower.node_policy import TEST_POLICY

logging.getLogger("flwr").setLevel(logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::dp.noise.InsecureNoiseWarning")

N, M, SEED, CLIP = 6, 30, 11, 1.0  # CLIP: ddp_config's clip_norm
SAMPLING = Sampling.poisson(rate=1.0, population=N)  # FedAvg selects every client: Poisson at rate 1


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    create_identities(d, range(N))
    return d


def _node_noise(ctxt: Any) -> IntegerNoise:
    """Each node's reproducible (insecure) noise and rounding: the test recomputes every vector."""
    return IntegerNoise(seed=1000 + int(ctxt.node_config["partition-id"]))


def _ddp_mod(**kw: Any) -> Any:
    return make_distributed_dp_mod(**{"min_noise_multiplier": 0.1, "max_shares": N, "noise": _node_noise, **kw})


def _run(
    pki: Path,
    *,
    dp: DPConfig | None = None,
    ddp_mod: Any = "default",
    outer: tuple[Any, ...] = (),
    workflow_cls: type[PrivAggDistributedDPWorkflow] = PrivAggDistributedDPWorkflow,
    rounds: int = 1,
    calibrated_rounds: int | None = None,
) -> PrivAggDistributedDPWorkflow:
    wf = workflow_cls(
        SecAggWorkflowConfig.manual(
            degree=5, threshold=4, threat=ThreatModel.ACTIVE, weighting="uniform", pki=str(pki)
        ),
        dp=dp or _dp(),
        sampling=SAMPLING,
        rounds=calibrated_rounds or rounds,
    )
    inner = [] if ddp_mod is None else [_ddp_mod() if ddp_mod == "default" else ddp_mod]
    capp = vector_client_app(
        dimension=M,
        seed=SEED,
        mods=[*outer, make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY), *inner],
    )
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=rounds)
    run_inprocess(sapp, capp, num_nodes=N)
    return wf


def _in_memory(wf: PrivAggDistributedDPWorkflow, rec: DistributedDPRoundRecord, pids: list[int]) -> np.ndarray:
    """The in-memory path's mean update for the same seeds: encode each survivor, sum mod 2^b, decode."""
    assert rec.plan is not None
    params = dataclasses.replace(rec.plan, shares=rec.shares)
    enc = DistributedEncoder.for_round(params, seed=wf.dp.rotation_seed, round=rec.round)
    vectors = [
        enc.encode(client_vector(SEED, rec.round, p, M).astype(np.float64), IntegerNoise(seed=1000 + p)) for p in pids
    ]
    return enc.decode(enc.modular_sum(vectors)) / (SAMPLING.rate * N)  # fixed denominator q W


@pytest.mark.parametrize("mechanism", ["dgauss", "skellam"])
def test_flower_round_equals_the_in_memory_path(pki: Path, mechanism: str) -> None:
    wf = _run(pki, dp=_dp(mechanism=mechanism))
    rec = wf.history[0]
    assert isinstance(rec, DistributedDPRoundRecord) and rec.ok, (rec.abort, rec.node_errors)
    assert rec.params is not None and rec.params.modular and rec.params.modulus_bits == 16
    # the plan is the in-memory path's: the same choose_parameters for the same run
    twin = DistributedDPRounds(_dp(mechanism=mechanism), population=N, rounds=1)
    assert rec.plan == twin.plan(SAMPLING, M, wf)
    assert rec.shares == wf.min_survivors(N) == 4  # complete graph of 6, threshold 4
    got = np.asarray(rec.aggregate[0], dtype=np.float64)  # type: ignore[index]
    expected = _in_memory(wf, rec, list(range(N)))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)  # float32 model
    # and within the noise of the clipped mean (global model = 0)
    clipped = [client_vector(SEED, 1, p, M).astype(np.float64) for p in range(N)]
    mean = np.sum([v * min(1.0, CLIP / np.linalg.norm(v)) for v in clipped], axis=0) / N
    std = wf.dp.stats[0].noise_std / N  # the noise all 6 shares carry, on the mean
    assert np.max(np.abs(got - mean)) < 6 * std
    assert rec.dp_metrics["dp_noise"] == "distributed" and "dp_participants" not in rec.dp_metrics
    (entry,) = wf.ledger.entries
    assert entry.mechanism == rec.plan.rdp_mechanism(4, 4)
    assert entry.roster is not None and len(set(entry.roster)) == N  # kept for the server-view guarantee
    assert 0 < entry.epsilon["rdp"] <= 8.0 * 1.001


def test_a_dropout_round_is_accounted_with_the_survivors_shares(pki: Path) -> None:
    wf = _run(pki, dp=_dp(honest_fraction=0.8), outer=(dropout_mod(partitions=[0], stage="mask"),))
    rec = wf.history[0]
    assert rec.ok, (rec.abort, rec.node_errors)
    survivors = list(range(1, N))  # partition 0 dropped before masking
    assert len(rec.survivors) == 5 and len(rec.dropped) == 1
    # floor(0.2 * 6) = 1 client may be dishonest: t = 4 - 1 = 3 shares of sigma / sqrt(3)
    assert rec.shares == 3
    assert rec.plan is not None
    (entry,) = wf.ledger.entries
    # 5 survivors, 4 of them surely honest: accounted at t = 3 shares (more would reveal the cohort)
    assert entry.mechanism == rec.plan.rdp_mechanism(3, 3)
    # the sum carries the 5 survivors' shares exactly, nothing of the dropped client
    got = np.asarray(rec.aggregate[0], dtype=np.float64)  # type: ignore[index]
    np.testing.assert_allclose(got, _in_memory(wf, rec, survivors), rtol=1e-6, atol=1e-6)
    assert wf.dp.stats[0].noise_std == pytest.approx(rec.plan.effective_noise_std(5, 3))


class _Optimist(PrivAggDistributedDPWorkflow):
    """A malicious server: it splits the noise over the whole roster (6 shares), then drops a client at the
    masking stage; the secure sum may release 4 survivors, which would carry sigma sqrt(5/6) or less."""

    def min_survivors(self, n: int) -> int:
        return n


def test_clients_refuse_noise_split_over_more_than_the_survivor_floor(pki: Path) -> None:
    wf = _run(pki, workflow_cls=_Optimist, outer=(dropout_mod(partitions=[0], stage="mask"),))
    rec = wf.history[0]
    assert rec.shares == N  # what the server asked
    assert not rec.ok and rec.aggregate is None and rec.survivors == ()
    assert rec.node_errors and all("release a sum of 4 survivors" in e for e in rec.node_errors.values())
    assert wf.ledger.entries == []  # no client sent anything: nothing was summed nor released


class _Skips(PrivAggDistributedDPWorkflow):
    """Its strategy's Poisson draw selects nobody in round 1 (then every client)."""

    def _configure(self, grid: Any, context: Any, rec: Any) -> Any:
        if rec.round == 1:
            real = context.strategy.configure_fit
            context.strategy.configure_fit = lambda *a, **k: []
            try:
                return super()._configure(grid, context, rec)
            finally:
                context.strategy.configure_fit = real
        return super()._configure(grid, context, rec)


def test_an_empty_poisson_cohort_is_released_and_accounted(pki: Path) -> None:
    """No client sampled: the server's t noise shares alone are released on the model and charged."""
    wf = _run(pki, workflow_cls=_Skips, rounds=2, calibrated_rounds=2)
    empty, full = wf.history
    assert empty.ok, empty.abort
    assert empty.node_errors == {} and empty.survivors == () and empty.bytes_up == 0  # no node was contacted
    assert empty.plan is not None and empty.shares == empty.plan.shares
    noise = np.asarray(empty.aggregate[0], dtype=np.float64)  # type: ignore[index]
    assert np.all(np.isfinite(noise)) and np.any(noise != 0)  # the global model (zeros) plus the server's noise
    assert noise.std() < 10 * empty.plan.noise_std_value / (SAMPLING.rate * N)  # of the accounted size
    assert full.ok, full.abort
    first, second = wf.ledger.entries
    assert first.round == 1 and first.mechanism == empty.plan.rdp_mechanism(empty.shares, empty.shares)
    assert second.round == 2 and second.epsilon["rdp"] > first.epsilon["rdp"]
    assert first.roster == () and second.roster is not None and len(second.roster) > 0


def test_a_round_the_budget_cannot_pay_for_is_not_started(pki: Path) -> None:
    wf = _run(pki, calibrated_rounds=1, rounds=2)  # calibrated for 1 round at epsilon 8 (the budget): 2 run
    first, second = wf.history
    assert first.ok and not second.ok and second.abort is not None and "budget" in second.abort
    assert second.node_errors == {} and second.stage_seconds == {}  # no node was sent anything
    assert len(wf.ledger.entries) == 1


def test_the_workflow_refuses_what_the_mod_cannot_do() -> None:
    from privagg.errors import ConfigurationError

    cfg = SecAggWorkflowConfig.manual(degree=5, threshold=4, threat=ThreatModel.SEMI_HONEST, weighting="uniform")
    with pytest.raises(ConfigurationError, match="weighting"):
        PrivAggDistributedDPWorkflow(cfg, dp=_dp(weighting="capped", weight_cap=10.0), sampling=SAMPLING, rounds=1)
    with pytest.raises(ConfigurationError, match="Poisson"):
        PrivAggDistributedDPWorkflow(cfg, dp=_dp(), sampling=Sampling.fixed(sample_size=3, population=N), rounds=1)


def test_client_refuses_less_noise_than_its_policy(pki: Path) -> None:
    wf = _run(pki, ddp_mod=_ddp_mod(min_noise_multiplier=50.0))
    rec = wf.history[0]
    assert not rec.ok and rec.node_errors
    assert all("policy" in e for e in rec.node_errors.values())
    assert wf.ledger.entries == []  # nothing was released: nothing recorded


class _GreedyServer(PrivAggDistributedDPWorkflow):
    """A server that asks for more shares than it planned (each client's share shrinks), digest and all."""

    shares = 60

    def _configure(self, grid: Any, context: Any, rec: Any) -> Any:
        fit = super()._configure(grid, context, rec)
        fitins = {
            n: FitIns(fi.parameters, {**fi.config, DDP_KEYS["shares"]: self.shares}) for n, fi in fit.fitins.items()
        }
        cfg = next(iter(fitins.values())).config
        return dataclasses.replace(fit, fitins=fitins, digest=model_digest(fit.arrays, config=cfg))


class _JustAboveRoster(_GreedyServer):
    shares = N + 1


class _JustAboveFloor(_GreedyServer):
    shares = 5  # within the roster of 6, above the 4 survivors the secure sum may release


@pytest.mark.parametrize("server", [_GreedyServer, _JustAboveRoster, _JustAboveFloor])
def test_client_refuses_more_shares_than_the_survivor_floor(pki: Path, server: type[_GreedyServer]) -> None:
    wf = _run(pki, workflow_cls=server, ddp_mod=_ddp_mod(max_shares=100))  # the floor of 4 still bounds it
    rec = wf.history[0]
    assert not rec.ok
    assert rec.node_errors and all("release a sum of 4 survivors" in e for e in rec.node_errors.values())
    assert wf.ledger.entries == []


def test_a_client_without_the_mod_sends_nothing_into_a_modular_round(pki: Path) -> None:
    wf = _run(pki, ddp_mod=None)  # the user's float model must never enter a ring made for noised integers
    rec = wf.history[0]
    assert not rec.ok and all("modular round" in e for e in rec.node_errors.values())
    assert wf.ledger.entries == []


def _cfg(wf_plan: Any, **over: Any) -> dict[str, Any]:
    raw = dataclasses.asdict(wf_plan)
    raw.update(over.pop("raw", {}))
    cfg = {
        DDP_KEYS["params"]: json.dumps(raw),
        DDP_KEYS["shares"]: 4,
        DDP_KEYS["seed"]: bytes(32),
        DDP_KEYS["round"]: 1,
        ROSTER_KEY: N,
        MIN_SURVIVORS_KEY: 4,
        **over,
    }
    return {k: v for k, v in cfg.items() if v is not None}


def test_the_client_checks_the_plan_with_its_own_sensitivity() -> None:
    from protocols.flower.distributed_dp import _round_plan

    with pytest.warns(InsecureNoiseWarning):
        plan = DistributedDPRounds(_dp(), population=N, rounds=1, noise=IntegerNoise(seed=1)).plan(
            SAMPLING, M, _Floor()
        )
    policy = (0.5, N, True, math.inf)
    with pytest.raises(ProtocolAbort, match="roster"):  # the roster fields count only inside a secure round
        _round_plan(_cfg(plan), M, policy)
    with running("secagg"):  # as the secure-aggregation mod outside the DP mod marks its round
        _check_plans(plan, policy)


def _check_plans(plan: Any, policy: tuple[float, int, bool, float]) -> None:
    from protocols.flower.distributed_dp import _round_plan

    params, rotation = _round_plan(_cfg(plan), M, policy)
    assert params.l2_sensitivity == pytest.approx(plan.l2_sensitivity) and params.shares == 4
    assert rotation.round == 1
    z = plan.sigma / plan.l2_sensitivity
    # a server claiming a small sensitivity changes nothing: the client computes its own
    params, _ = _round_plan(_cfg(plan, raw={"l2_sensitivity": 1.0}), M, policy)
    assert params.l2_sensitivity == pytest.approx(plan.l2_sensitivity)
    bad: list[tuple[dict[str, Any], tuple[float, int, bool, float], str]] = [
        (_cfg(plan, raw={"scale": plan.scale * 10}), (z * 0.5, N, True, math.inf), "policy"),  # 10x less noise
        (_cfg(plan), (z * 0.6, N, False, math.inf), "policy"),  # replace-one: twice the sensitivity
        (_cfg(plan), (0.5, N, True, 0.5), "clip"),
        (_cfg(plan), (0.5, 3, True, math.inf), "policy"),  # more shares than this client's max_shares
        (_cfg(plan, **{MIN_SURVIVORS_KEY: 3}), policy, "release a sum of 3 survivors"),  # above the floor
        (_cfg(plan, **{ROSTER_KEY: 3}), policy, "roster"),  # a floor above the roster: not a secure-aggregation mod
        (_cfg(plan, **{ROSTER_KEY: None, MIN_SURVIVORS_KEY: None}), policy, "roster"),  # no secure aggregation
        (_cfg(plan, **{MIN_SURVIVORS_KEY: None}), policy, "roster"),  # a roster without its floor
        (_cfg(plan, **{MIN_SURVIVORS_KEY: True}), policy, "roster"),  # not a count
        (_cfg(plan, raw={"dim": M + 1}), policy, "dimension"),
        (_cfg(plan, raw={"bits": 40}), policy, "range"),
        (_cfg(plan, **{DDP_KEYS["seed"]: b"short"}), policy, "range"),
        (_cfg(plan, **{DDP_KEYS["params"]: "{"}), policy, "malformed"),
        # shares of parameter 0.8 (sigma 1.6 over t = 4): under dp.noise.MIN_SHARE_SIGMA, whatever the policy
        (_cfg(plan, raw={"sigma": 1.6}), (1e-9, N, True, math.inf), "0.8 < 1 grid units"),
    ]
    for cfg, pol, why in bad:
        with pytest.raises(ProtocolAbort, match=why):
            _round_plan(cfg, M, pol)


class _Floor:
    def min_survivors(self, n: int) -> int:
        return min(n, 4)
