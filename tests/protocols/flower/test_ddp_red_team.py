"""Red team of distributed DP over Flower against a malicious server (and colluding clients).

Each attack drives the real parties: the workflow (a subclass rewrites what the server sends), the
secure-aggregation mod and the distributed-DP mod on in-process Flower nodes, or the client's own plan
check (``_round_plan``) and encoder where the attack is a parameter the server writes. A hole is asserted
closed (the exact refusal); a question found safe keeps its adversarial test with the exact outcome.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")


from flwr.common import FitIns

from dp.accounting import Sampling
from dp.config import DPConfig
from dp.distributed import DEFAULT_BETA, DistributedDPParams, rounded_l2_bound
from dp.distributed_encoding import DistributedEncoder, IntegerNoise
from dp.rotation import RandomizedHadamard
from privagg.digest import model_digest
from privagg.errors import ConfigurationError, ProtocolAbort
from protocols.flower import SecAggWorkflowConfig, create_identities, make_secagg_mod
from protocols.flower._guard import running
from protocols.flower.apps import client_vector, dropout_mod, vector_client_app, vector_server_app
from protocols.flower.distributed_dp import (
    DDP_KEYS,
    DistributedDPRoundRecord,
    PrivAggDistributedDPWorkflow,
    _round_plan,
    make_distributed_dp_mod,
)
from protocols.flower.inproc import run_inprocess
from protocols.flower.secagg import MIN_SURVIVORS_KEY, ROSTER_KEY
from secagg.params import ThreatModel
from tests.protocols.flower.ddp_plan import ddp_config as _dp
from tests.protocols.flower.node_policy import TEST_POLICY

pytestmark = pytest.mark.filterwarnings("ignore::dp.noise.InsecureNoiseWarning")

N, M, SEED = 6, 30, 11
SAMPLING = Sampling.poisson(rate=1.0, population=N)
COLLUDERS = (4, 5)  # partitions that collude with the server: they add no noise share


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    create_identities(d, range(N))
    return d


class _NoNoise(IntegerNoise):
    """A colluding client's 'noise': none (its vector is its exact rounded update)."""

    def share(self, mechanism: str, sigma: float, n: int, words: Any) -> np.ndarray:
        return np.zeros(n, dtype=np.int64)


def _node_noise(ctxt: Any) -> IntegerNoise:
    pid = int(ctxt.node_config["partition-id"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _NoNoise(seed=1000 + pid) if pid in COLLUDERS else IntegerNoise(seed=1000 + pid)


def _run(
    pki: Path,
    *,
    dp: DPConfig,
    workflow_cls: type[PrivAggDistributedDPWorkflow] = PrivAggDistributedDPWorkflow,
    outer: tuple[Any, ...] = (),
    node_config: dict[str, Any] | None = None,
    rounds: int = 1,
    wrap_inner: tuple[Any, ...] = (),
) -> PrivAggDistributedDPWorkflow:
    wf = workflow_cls(
        SecAggWorkflowConfig.manual(
            degree=5, threshold=4, threat=ThreatModel.ACTIVE, weighting="uniform", pki=str(pki)
        ),
        dp=dp,
        sampling=SAMPLING,
        rounds=rounds,
    )
    ddp = make_distributed_dp_mod(min_noise_multiplier=0.1, max_shares=N, noise=_node_noise)
    capp = vector_client_app(
        dimension=M,
        seed=SEED,
        mods=[*outer, make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY), *wrap_inner, ddp],
    )
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=rounds)
    run_inprocess(sapp, capp, num_nodes=N, node_config=(lambda pid: dict(node_config or {})))
    return wf


# ------------------------------------------------------------------ hole 1: colluders counted as noise shares
def test_clients_refuse_shares_that_count_the_colluders_their_own_policy_assumes(pki: Path) -> None:
    """The server plans as if nobody colluded (``honest_fraction = 1``: t = 4 = the survivor floor), drops an
    honest client at masking, and two colluders (no noise) survive: the released sum holds 3 honest shares of
    sigma / 2 (std sigma sqrt(3/4); with the graph's floor of 4 survivors, 2 shares, sigma / sqrt(2)), charged
    as sigma. Each node assumes (its own config) that a third of its roster colludes: floor(0.34 * 6) = 2 of
    the 4 survivors its graph may release, so it accepts at most 2 shares."""
    wf = _run(
        pki,
        dp=_dp(honest_fraction=1.0),
        outer=(dropout_mod(partitions=[0], stage="mask"),),
        node_config={"privagg-secagg-corruption-rate": 0.34},
    )
    rec = wf.history[0]
    assert isinstance(rec, DistributedDPRoundRecord) and rec.shares == 4
    assert not rec.ok and rec.aggregate is None
    assert rec.node_errors and all(
        "2 may collude" in e and "at most 2 honest" in e for e in rec.node_errors.values()
    ), rec.node_errors
    assert wf.ledger.entries == []  # nothing was sent into a sum: nothing released


def test_the_same_round_runs_when_the_plan_counts_the_colluders(pki: Path) -> None:
    """Positive twin: the server's plan assumes the same colluders (honest_fraction 2/3): t = 4 - 2 = 2, every
    node accepts, and the survivors' honest shares (3 of sigma / sqrt(2)) carry at least the accounted noise."""
    wf = _run(
        pki,
        dp=_dp(honest_fraction=0.66),
        outer=(dropout_mod(partitions=[0], stage="mask"),),
        node_config={"privagg-secagg-corruption-rate": 0.34},
    )
    rec = wf.history[0]
    assert isinstance(rec, DistributedDPRoundRecord) and rec.ok, (rec.abort, rec.node_errors)
    assert rec.shares == 2 and rec.plan is not None
    (entry,) = wf.ledger.entries
    assert entry.mechanism == rec.plan.rdp_mechanism(2, 2)  # charged: 2 honest shares of sigma / sqrt(2)
    # the released sum is the survivors' vectors: honest 1..3 with their shares, the colluders with none
    params = dataclasses.replace(rec.plan, shares=2)
    enc = DistributedEncoder.for_round(params, seed=wf.dp.rotation_seed, round=1)
    vecs = [
        enc.encode(client_vector(SEED, 1, p, M).astype(np.float64), _node_noise(_Ctx(p)), shares=2)
        for p in (1, 2, 3, 4, 5)
    ]
    got = np.asarray(rec.aggregate[0], dtype=np.float64)  # type: ignore[index]
    np.testing.assert_allclose(got, enc.decode(enc.modular_sum(vecs)) / N, rtol=1e-6, atol=1e-6)


@dataclasses.dataclass
class _Ctx:
    pid: int

    @property
    def node_config(self) -> dict[str, int]:
        return {"partition-id": self.pid}


def _plan() -> DistributedDPParams:
    from protocols.distributed_dp import DistributedDPRounds

    class _Floor:
        def min_survivors(self, n: int) -> int:
            return min(n, 4)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DistributedDPRounds(_dp(), population=N, rounds=1, noise=IntegerNoise(seed=1)).plan(
            SAMPLING, M, _Floor()
        )


def _cfg(plan: DistributedDPParams, *, shares: int = 4, **raw: Any) -> dict[str, Any]:
    fields = {**dataclasses.asdict(plan), **raw}
    return {
        DDP_KEYS["params"]: json.dumps(fields),
        DDP_KEYS["shares"]: shares,
        DDP_KEYS["seed"]: bytes(32),
        DDP_KEYS["round"]: 1,
        ROSTER_KEY: N,
        MIN_SURVIVORS_KEY: 4,
    }


def test_the_client_bounds_the_shares_by_its_honest_floor() -> None:
    """The share bound, unit by unit: survivors floor 4 of a roster of 6; ``corruption_rate`` of the roster may
    collude. A share split over more than the honest survivors is refused; the client's own share (t = 1)
    always counts (it is honest and in every sum that holds its data)."""
    from protocols.flower.dp_policy import COLLUDERS_KEY, check_shares

    plan = _plan()
    policy = (0.1, N, True, math.inf)
    with running("secagg"):
        _round_plan(_cfg(plan, shares=4), M, policy)  # no colluders assumed: 4 of 4
        _round_plan(_cfg(plan, shares=2), M, policy, corruption_rate=0.34)  # 4 - 2
        with pytest.raises(ProtocolAbort, match=r"2 may collude.*at most 2 honest"):
            _round_plan(_cfg(plan, shares=3), M, policy, corruption_rate=0.34)
        with pytest.raises(ProtocolAbort, match="at most 1 honest"):
            check_shares(2, {ROSTER_KEY: N, MIN_SURVIVORS_KEY: 4}, corruption_rate=0.5)  # 3 of 4 may collude
        check_shares(1, {ROSTER_KEY: N, MIN_SURVIVORS_KEY: 4}, corruption_rate=0.9)  # its own full noise
        # colluders a secure-aggregation mod publishes count when they are more (a smaller number changes nothing)
        published = {ROSTER_KEY: N, MIN_SURVIVORS_KEY: 4, COLLUDERS_KEY: 2}
        check_shares(2, published)
        with pytest.raises(ProtocolAbort, match="at most 2 honest"):
            check_shares(3, published)
        with pytest.raises(ProtocolAbort, match="at most 1 honest"):
            check_shares(2, {**published, COLLUDERS_KEY: 0}, corruption_rate=0.5)


# ------------------------------------------------------------------ hole 2: beta chosen by the server
def _beta_params(beta: float) -> tuple[DistributedDPParams, RandomizedHadamard]:
    """A one-coordinate model; scale chosen so that the clipped update sits 0.999 of the way to the next
    integer: rounding away from zero (probability 0.999) breaks the bound at beta close to 1."""
    raw = {
        "mechanism": "dgauss",
        "bits": 16,
        "clip": 1.0,
        "dim": 1,
        "padded": 1,
        "scale": 1000.999,
        "beta": beta,
        "sigma": 200.0,
        "shares": 1,
        "cohort": N,
        "l2_sensitivity": 1.0,
        "l1_sensitivity": 1.0,
        "epsilon": 1.0,
        "delta": 1e-5,
        "rounds": 1,
        "sampling_rate": 1.0,
        "noise_inflation": 1.0,
        "clip_probability": 1e-4,
    }
    cfg = {
        DDP_KEYS["params"]: json.dumps(raw),
        DDP_KEYS["shares"]: 1,
        DDP_KEYS["seed"]: bytes(32),
        DDP_KEYS["round"]: 1,
        ROSTER_KEY: N,
        MIN_SURVIVORS_KEY: 4,
    }
    with running("secagg"):
        return _round_plan(cfg, 1, (0.1, N, True, math.inf))


def test_the_client_refuses_a_beta_that_makes_its_abort_depend_on_its_update() -> None:
    """On HEAD the client accepted beta = 1 - 1e-12: on this one-coordinate model conditional rounding then
    gave up (200 failed draws, the node drops out) for 164 of 200 clipped updates and for none of 200 inside the
    clip (seeds 0..199), so whether the node answered told the server whether its update's norm reached a clip
    of the server's choosing: a norm oracle outside the accounting (it fades with more coordinates)."""
    with pytest.raises(ProtocolAbort, match="beta"):
        _beta_params(1.0 - 1e-12)
    params, rotation = _beta_params(DEFAULT_BETA)  # the default stays accepted
    assert params.beta == DEFAULT_BETA
    enc = DistributedEncoder(params=params, rotation=rotation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(30):  # clipped or not, no abort: each try passes with probability >= 1 - beta
            for update in (np.array([5.0]), np.array([-5.0]), np.array([0.99])):
                enc.encode(update, IntegerNoise(seed=k))


def test_the_encoder_itself_refuses_a_beta_above_the_ceiling() -> None:
    """Defence in depth: an encoder given such parameters (whoever built them) refuses before rounding."""
    from dp.distributed import MAX_BETA

    params, rotation = _beta_params(DEFAULT_BETA)
    bad = dataclasses.replace(params, beta=min(0.999999, MAX_BETA * 1.1))
    with pytest.raises(ConfigurationError, match="beta"):
        DistributedEncoder(params=bad, rotation=rotation).encode(np.array([5.0]), IntegerNoise(seed=1))


def _client_noise_run(
    pki: Path, honest_fraction: float, *, rounds: int = 1, corruption: float = 0.34, **mod: Any
) -> tuple[Any, Any]:
    """The client-noise DP mod (:mod:`protocols.flower.dp`) under the strategy told the graph's survivor floor."""
    from protocols.flower import PrivAggSecAggWorkflow
    from protocols.flower.dp import PrivAggDPStrategy, make_dp_mod

    holder: dict[str, PrivAggDPStrategy] = {}
    config = SecAggWorkflowConfig.manual(
        degree=5, threshold=4, threat=ThreatModel.ACTIVE, clipping_range=8.0, weighting="uniform", pki=str(pki)
    )

    def wrap(strategy: Any) -> PrivAggDPStrategy:
        holder["s"] = PrivAggDPStrategy(
            strategy,
            noise_multiplier=1.0,
            clip_norm=1.0,
            honest_fraction=honest_fraction,
            min_survivors=lambda n: config.params_for(n).min_survivors(n),
        )
        return holder["s"]

    wf = PrivAggSecAggWorkflow(config)
    mods = [
        make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY),
        make_dp_mod(min_noise_multiplier=1e-3, max_shares=N, **mod),
    ]
    capp = vector_client_app(dimension=M, seed=SEED, mods=mods)
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=rounds, wrap_strategy=wrap)
    run_inprocess(sapp, capp, num_nodes=N, node_config=lambda pid: {"privagg-secagg-corruption-rate": corruption})
    return wf, holder["s"]


def test_the_client_noise_mod_bounds_its_shares_by_the_honest_floor_too(pki: Path) -> None:
    """The same hole in the client-noise DP mod (:mod:`protocols.flower.dp`): a strategy told the graph's
    survivor floor and ``honest_fraction = 1`` splits the noise 4 ways; nodes that assume a third of the roster
    colludes refuse it, and accept the 2 shares of a strategy that assumes the same (positive twin)."""
    wf, strat = _client_noise_run(pki, 1.0)
    rec = wf.history[0]
    assert not rec.ok and len(rec.node_errors) == N, rec.node_errors
    assert all("4 noise shares" in e and "2 may collude" in e for e in rec.node_errors.values())
    assert strat.ledger.entries == []
    wf, strat = _client_noise_run(pki, 0.66)  # floor(0.34 * 6) = 2 dishonest: t = 4 - 2 = 2
    assert wf.history[0].ok, wf.history[0].abort
    assert len(strat.ledger.entries) == 1


def test_the_client_noise_mod_caps_the_rounds_it_answers(pki: Path) -> None:
    wf, strat = _client_noise_run(pki, 1.0, rounds=2, corruption=0.0, max_rounds=1)
    first, second = wf.history
    assert first.ok and not second.ok and all("its cap" in e for e in second.node_errors.values())
    assert len(strat.ledger.entries) == 1


# ------------------------------------------------------------------ question 4: a round released twice
class _Replays(PrivAggDistributedDPWorkflow):
    """Round 2 is round 1 again: the same round number (and so the same rotation) sent a second time, digest and
    all; with deterministic training the two releases are two noised copies of one round's sum."""

    def _configure(self, grid: Any, context: Any, rec: Any) -> Any:
        fit = super()._configure(grid, context, rec)
        if rec.round != 2:
            return fit
        fitins = {n: FitIns(fi.parameters, {**fi.config, DDP_KEYS["round"]: 1}) for n, fi in fit.fitins.items()}
        cfg = next(iter(fitins.values())).config
        return dataclasses.replace(fit, fitins=fitins, digest=model_digest(fit.arrays, config=cfg))


def _run_rounds(pki: Path, wf_cls: type[PrivAggDistributedDPWorkflow], **mod: Any) -> PrivAggDistributedDPWorkflow:
    wf = wf_cls(
        SecAggWorkflowConfig.manual(
            degree=5, threshold=4, threat=ThreatModel.ACTIVE, weighting="uniform", pki=str(pki)
        ),
        dp=_dp(),
        sampling=SAMPLING,
        rounds=2,
    )
    ddp = make_distributed_dp_mod(min_noise_multiplier=0.1, max_shares=N, noise=_node_noise, **mod)
    mods = [make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY), ddp]
    capp = vector_client_app(dimension=M, seed=SEED, mods=mods)
    run_inprocess(vector_server_app(wf, num_clients=N, dimension=M, rounds=2), capp, num_nodes=N)
    return wf


def test_a_node_answers_a_round_number_once(pki: Path) -> None:
    """On HEAD every node answered the replayed round: two releases of round 1, the ledger charging two rounds
    only because this server is honest about its ledger. Now each node refuses a round it already answered."""
    wf = _run_rounds(pki, _Replays)
    first, second = wf.history
    assert first.ok and not second.ok and second.aggregate is None
    assert len(second.node_errors) == N, second.node_errors
    assert all("round 1 again" in e for e in second.node_errors.values())


def test_a_node_caps_the_rounds_it_answers(pki: Path) -> None:
    """The node's own cap (``max_rounds``): with it and its noise floor, its epsilon against the server is bounded
    whatever the server's ledger says. Positive twin: a cap of 2 answers both rounds."""
    wf = _run_rounds(pki, PrivAggDistributedDPWorkflow, max_rounds=1)
    first, second = wf.history
    assert first.ok and not second.ok and all("its cap" in e for e in second.node_errors.values())
    wf = _run_rounds(pki, PrivAggDistributedDPWorkflow, max_rounds=2)
    assert [r.ok for r in wf.history] == [True, True]
    assert len(wf.ledger.entries) == 2


def test_a_scale_beyond_the_ring_is_refused_before_training() -> None:
    """Hardening: a scale that puts one clipped update beyond the ring (no plan chooses it: the plan's scale is
    at most 2^bits / clip) is refused, typed, before the update is touched; on HEAD it was accepted and the
    encoder failed later with an untyped ValueError of the noise sampler (at 2^58 units)."""
    plan = _plan()
    policy = (0.1, N, True, math.inf)
    edge = float(1 << plan.bits) / plan.clip
    with running("secagg"):
        for scale in (plan.scale, edge):  # the plan's own, and the top of its range
            l2 = rounded_l2_bound(plan.clip * scale, plan.padded, plan.beta)
            _round_plan(_cfg(plan, scale=scale, sigma=l2), M, policy)
        for scale in (edge * 1.01, 2.0**58):
            l2 = rounded_l2_bound(plan.clip * scale, plan.padded, plan.beta)
            with pytest.raises(ProtocolAbort, match="beyond the 16-bit ring"):
                _round_plan(_cfg(plan, scale=scale, sigma=l2), M, policy)


def test_the_plan_refuses_a_beta_above_the_ceiling() -> None:
    from dp.distributed import MAX_BETA, choose_parameters

    kw: dict[str, Any] = dict(
        mechanism="dgauss", bits=16, clip=1.0, dim=M, epsilon=8.0, delta=1e-5, rounds=1, sampling_rate=1.0
    )
    assert choose_parameters(**kw, cohort=N, shares=4, beta=MAX_BETA).beta == MAX_BETA
    assert MAX_BETA > DEFAULT_BETA and MAX_BETA**200 == pytest.approx(2.0**-64)  # giving up: at most 2^-64
    with pytest.raises(ConfigurationError, match="beta"):
        choose_parameters(**kw, cohort=N, shares=4, beta=0.9)


def test_the_colluder_rate_is_the_nodes_own_and_the_larger_counts() -> None:
    from flwr.app import Context, RecordDict

    from protocols.flower.dp_policy import POLICY_KEYS, colluders, own_corruption_rate

    def ctx(node: dict[str, Any], run: dict[str, Any] | None = None) -> Context:
        return Context(run_id=1, node_id=1, node_config=node, state=RecordDict(), run_config=run or {})

    dp_key, sa_key = POLICY_KEYS["corruption_rate"], "privagg-secagg-corruption-rate"
    assert own_corruption_rate(ctx({})) == 0.0
    assert own_corruption_rate(ctx({}, {dp_key: 0.9, sa_key: 0.9})) == 0.0  # never the server's run config
    assert own_corruption_rate(ctx({dp_key: 0.1, sa_key: 0.3})) == 0.3
    assert own_corruption_rate(ctx({sa_key: 0.1}), 0.25) == 0.25
    for bad in ("x", 1.0, -0.1):
        with pytest.raises(ConfigurationError):
            own_corruption_rate(ctx({dp_key: bad}))
    assert [colluders(0.34, 6), colluders(0.5, 6), colluders(0.2, 5), colluders(0.0, 100)] == [2, 3, 1, 0]


def test_a_share_no_plan_draws_is_refused_before_training() -> None:
    """Hardening: a Skellam share beyond the table sampler (on HEAD: an untyped ValueError after training) or a
    share wider than the ring is refused before the update is touched; the plan's own share is accepted."""
    from dp.distributed import SKELLAM_MAX_SHARE_VARIANCE

    plan = _plan()
    policy = (0.1, N, True, math.inf)
    with running("secagg"):
        _round_plan(_cfg(plan, mechanism="skellam"), M, policy)
        too_wide = math.sqrt(SKELLAM_MAX_SHARE_VARIANCE * 4) * 1.01  # over 4 shares: one share just beyond
        with pytest.raises(ProtocolAbort, match="skellam noise share"):
            _round_plan(_cfg(plan, mechanism="skellam", sigma=too_wide), M, policy)
        with pytest.raises(ProtocolAbort, match="dgauss noise share"):
            _round_plan(_cfg(plan, sigma=2.0 * 2.0**16 * 2.0 * 1.01), M, policy)  # a share of 2^16.01 units
    params, rotation = _beta_params(DEFAULT_BETA)
    bad = dataclasses.replace(params, mechanism="skellam", sigma=math.sqrt(SKELLAM_MAX_SHARE_VARIANCE) * 1.01)
    with pytest.raises(ConfigurationError, match="skellam noise share"):
        DistributedEncoder(params=bad, rotation=rotation).encode(np.array([5.0]), IntegerNoise(seed=1))
