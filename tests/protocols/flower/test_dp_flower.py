"""Client-level DP over Flower with privagg SecAgg: clipping and noise on the client, ledger on the server."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

pytest.importorskip("flwr")

from dp.noise import InsecureNoiseWarning, SeededNoise
from protocols.flower import PrivAggSecAggWorkflow, SecAggWorkflowConfig, create_identities, make_secagg_mod
from protocols.flower.apps import client_vector, vector_client_app, vector_server_app
from protocols.flower.dp import DP_KEYS, PrivAggDPStrategy, make_dp_mod
from protocols.flower.inproc import run_inprocess
from secagg.params import ThreatModel
from tests.protocols.flower.node_policy import TEST_POLICY

logging.getLogger("flwr").setLevel(logging.WARNING)

N, M, SEED = 6, 30, 11


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    create_identities(d, range(N))
    return d


def _policy(**kw: Any) -> Any:
    """A client mod with a policy: noise floor 1e-3 and at most the N clients of the roster as shares."""
    return make_dp_mod(**{"min_noise_multiplier": 1e-3, "max_shares": N, **kw})


def _run(
    pki: Path, *, rounds: int = 1, dp_mod: Any = None, strategy_cls: Any = PrivAggDPStrategy, **dp: Any
) -> tuple[Any, PrivAggDPStrategy, Any]:
    holder: dict[str, PrivAggDPStrategy] = {}
    config = SecAggWorkflowConfig.manual(
        degree=5, threshold=4, threat=ThreatModel.ACTIVE, clipping_range=8.0, weighting="uniform", pki=str(pki)
    )
    # the noise is split over the fewest survivors the secure sum releases (4 of 6): the clients check it
    dp = {"min_survivors": lambda n: config.params_for(n).min_survivors(n), **dp}

    def wrap(strategy: Any) -> PrivAggDPStrategy:
        holder["s"] = strategy_cls(strategy, **dp)
        return holder["s"]

    wf = PrivAggSecAggWorkflow(config)
    capp = vector_client_app(
        dimension=M,
        seed=SEED,
        mods=[make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY), dp_mod or _policy()],
    )
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=rounds, wrap_strategy=wrap)
    grid = run_inprocess(sapp, capp, num_nodes=N)
    return wf, holder["s"], grid


def test_fixed_clipping_mean_and_ledger(pki: Path) -> None:
    """Low noise: the new model is the fixed-denominator mean of the clipped updates (global = 0)."""
    clip = 1.0  # every N(0, 1) vector of 30 entries has norm ~5.5: all are clipped
    wf, strat, _grid = _run(pki, noise_multiplier=1e-3, clip_norm=clip)
    rec = wf.history[0]
    assert rec.ok, rec.abort
    clipped = []
    for p in range(N):
        v = client_vector(SEED, 1, p, M).astype(np.float64)
        clipped.append(v * min(1.0, clip / float(np.linalg.norm(v))))
    expected = np.sum(clipped, axis=0) / N  # fixed denominator q * W = N (all clients, no dropout)
    # the secure sum carries noise of std z * 2C (fixed sampling: replace-one) = 2e-3, plus quantisation
    assert strat.last_parameters is not None
    got = np.asarray(strat.last_parameters[0], dtype=np.float64)
    assert np.max(np.abs(got - expected)) < 6 * 2e-3 / N + 1e-5  # 6 sigma of the noise on the mean
    assert len(strat.ledger.entries) == 1
    eps = strat.ledger.entries[0].epsilon["rdp"]
    assert eps > 0 and math.isfinite(eps)
    # the cohort the round was sent to is kept for the server-view guarantee: N distinct clients, once each
    roster = strat.ledger.entries[0].roster
    assert roster is not None and len(set(roster)) == N
    assert sorted(strat.ledger.participation_counts().values()) == [1] * N


def test_adaptive_clip_moves_up_when_everything_is_clipped(pki: Path) -> None:
    with pytest.warns(InsecureNoiseWarning):
        seeded = _policy(noise_sampler=SeededNoise(5))  # reproducible: the test cannot flake
    wf, strat, _ = _run(
        pki, rounds=2, dp_mod=seeded, noise_multiplier=0.5, clip_norm=0.5, adaptive=True, count_noise_std=1.0
    )
    assert all(r.ok for r in wf.history)
    assert strat.clipper is not None and len(strat.clipper.history) == 3
    assert strat.clipper.history[1] > strat.clipper.history[0]  # unclipped fraction ~0 < target 0.5: clip grows
    assert len(strat.ledger.entries) == 2


def test_budget_stops_rounds_before_they_start(pki: Path) -> None:
    wf, strat, _ = _run(pki, rounds=3, noise_multiplier=0.8, clip_norm=1.0, budget_epsilon=1e-3)
    assert strat.ledger.entries == []
    assert all(not r.ok for r in wf.history)


def test_client_refuses_too_little_noise(pki: Path) -> None:
    wf, strat, _ = _run(pki, noise_multiplier=0.1, clip_norm=1.0, dp_mod=_policy(min_noise_multiplier=0.5))
    rec = wf.history[0]
    assert not rec.ok
    assert all("policy" in e for e in rec.node_errors.values())
    assert strat.ledger.entries == []


class _Cohort:
    """A stand-in legacy strategy: every round, the same ``k`` clients with the global model."""

    def __init__(self, k: int) -> None:
        self.k = k

    def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        from flwr.common import FitIns

        return [(i, FitIns(parameters, {})) for i in range(self.k)]


class _Available:
    def num_available(self) -> int:
        return 10


def test_strategy_finishes_rounds_with_the_shared_dp_finisher() -> None:
    """Survivors, effective noise, fixed denominator and ledger: the DP-FedAvg round logic (dp.rounds)."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    from privagg.errors import ProtocolAbort

    strat = PrivAggDPStrategy(
        _Cohort(8),  # type: ignore[arg-type]
        noise_multiplier=1.0,
        clip_norm=0.5,
        honest_fraction=0.7,
        population=20,
        min_survivors=3,  # the workflow completes with 3 of 8
    )
    global_model: list[np.ndarray] = [np.ones((2, 3), dtype=np.float32), np.zeros(4)]
    pairs = strat.configure_fit(1, ndarrays_to_parameters(global_model), _Available())
    cfg = pairs[0][1].config
    # ceil(0.7 * 8) = 6 honest clients expected, but the workflow may complete with 3 of which 2 dishonest: the
    # noise is split into the 1 honest share any released sum holds; replace-one sampling
    assert cfg["privagg-dp-shares"] == 1 and cfg["privagg-dp-sensitivity-factor"] == 2.0
    mean = [np.full((2, 3), 0.1), np.full(4, -0.2)]
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(mean), 1, {})
    # 3 survivors, up to floor(0.3 * 8) = 2 dishonest: the 1 honest share carries the full noise
    params, metrics = strat.aggregate_fit(1, [(i, res) for i in range(3)], [])
    assert params is not None
    assert metrics["dp_noise_multiplier_effective"] == 1.0
    assert metrics["dp_denominator"] == pytest.approx(8 / 20 * 20) and metrics["dp_participants"] == 3
    assert metrics["dp_noise"] == "client" and "dp_secure_noise" not in metrics  # the clients draw the noise
    new = parameters_to_ndarrays(params)
    np.testing.assert_allclose(new[0], 1.0 + 0.1 * 3 / 8, rtol=1e-6)
    assert new[0].dtype == np.float32
    (row,) = strat.ledger.rows()
    assert row["noise_shares"] == 1 and row["participants"] == 3 and row["cohort"] == 8
    strat.configure_fit(2, params, _Available())
    # 2 survivors, fewer than the workflow allows, maybe none honest: recorded (no guarantee), then withheld
    with pytest.raises(ProtocolAbort, match="withheld"):
        strat.aggregate_fit(2, [(i, res) for i in range(2)], [])
    assert len(strat.ledger.entries) == 2 and strat.ledger.entries[1].noise_multiplier == 0.0


def test_strategy_checks_the_budget_for_the_fewest_survivors_before_the_round() -> None:
    from flwr.common import ndarrays_to_parameters

    from dp.accounting import Sampling, epsilon_for

    s = Sampling.fixed(sample_size=8, population=20)
    budget = epsilon_for(noise_multiplier=1.0, sampling=s, rounds=1, delta=1e-5) * 1.01
    model = ndarrays_to_parameters([np.zeros(4)])
    kw: dict[str, Any] = {"noise_multiplier": 1.0, "clip_norm": 0.5, "population": 20, "budget_epsilon": budget}
    # 6 of 8 may survive: the noise is split into 6 shares, so any released sum carries z and the round fits
    worst = PrivAggDPStrategy(_Cohort(8), min_survivors=lambda n: n - 2, **kw)  # type: ignore[arg-type]
    pairs = worst.configure_fit(1, model, _Available())
    assert len(pairs) == 8 and pairs[0][1].config[DP_KEYS["shares"]] == 6
    strict = PrivAggDPStrategy(_Cohort(8), **kw)  # type: ignore[arg-type]
    pairs = strict.configure_fit(1, model, _Available())
    assert len(pairs) == 8 and pairs[0][1].config[DP_KEYS["shares"]] == 8
    # a round the budget cannot pay for is not started (no client selected), nothing recorded
    spent = PrivAggDPStrategy(_Cohort(8), **{**kw, "budget_epsilon": budget * 0.5})  # type: ignore[arg-type]
    assert spent.configure_fit(1, model, _Available()) == [] and spent.ledger.entries == []


def test_an_empty_poisson_round_releases_noise_and_is_accounted() -> None:
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

    from dp.accounting import Sampling

    cohort = _Cohort(0)
    strat = PrivAggDPStrategy(
        cohort,  # type: ignore[arg-type]
        noise_multiplier=1.0,
        clip_norm=0.5,
        population=20,
        sampling=Sampling.poisson(rate=0.05, population=20),
    )
    model = [np.zeros((2, 3), dtype=np.float32)]
    assert strat.configure_fit(1, ndarrays_to_parameters(model), _Available()) == []
    (entry,) = strat.ledger.entries  # accounted like any round
    assert entry.roster == ()  # nobody took part: the server-view guarantee counts nobody
    assert entry.noise_multiplier == 1.0 and entry.round == 1
    assert strat.last_parameters is not None and np.count_nonzero(strat.last_parameters[0]) > 0
    assert strat.last_parameters[0].dtype == np.float32
    cohort.k = 3  # the next round starts from the released (noised) model, not the server's stale copy
    pairs = strat.configure_fit(2, ndarrays_to_parameters(model), _Available())
    np.testing.assert_array_equal(parameters_to_ndarrays(pairs[0][1].parameters)[0], strat.last_parameters[0])


class _Rewriting(PrivAggDPStrategy):
    """A malicious server: the real strategy, whose fit instructions are rewritten on the way out."""

    rewrite: ClassVar[dict[str, Any]] = {}

    def configure_fit(self, server_round, parameters, client_manager):  # type: ignore[no-untyped-def]
        from flwr.common import FitIns

        pairs = super().configure_fit(server_round, parameters, client_manager)
        return [(p, FitIns(fi.parameters, {**fi.config, **self.rewrite})) for p, fi in pairs]


@pytest.mark.parametrize(
    ("rewrite", "dp"),
    [
        ({DP_KEYS["shares"]: 10**6}, {}),  # a million shares: each client adds ~nothing
        ({DP_KEYS["factor"]: 1.0}, {}),  # claims Poisson sampling: half the noise of replace-one
        ({DP_KEYS["z_count"]: 1e-9}, {"adaptive": True, "count_noise_std": 4.0}),  # clip bit in the clear
    ],
    ids=["shares", "poisson-factor", "count-noise"],
)
def test_client_policy_refuses_a_malicious_servers_noise_settings(pki: Path, rewrite: dict, dp: dict) -> None:
    cls = type("Malicious", (_Rewriting,), {"rewrite": rewrite})
    wf, strat, _ = _run(pki, strategy_cls=cls, noise_multiplier=1.0, clip_norm=1.0, **dp)
    rec = wf.history[0]
    assert not rec.ok and rec.node_errors
    assert all("policy" in e for e in rec.node_errors.values())
    assert strat.ledger.entries == []  # nothing was summed


def test_a_client_without_a_policy_refuses(pki: Path) -> None:
    wf, _, _ = _run(pki, noise_multiplier=1.0, clip_norm=1.0, dp_mod=make_dp_mod())
    rec = wf.history[0]
    assert not rec.ok and all("no DP policy" in e for e in rec.node_errors.values())
    # the Poisson factor is accepted when the client's policy says so
    wf, _, _ = _run(
        pki,
        dp_mod=_policy(accept_poisson=True),
        strategy_cls=type("Claims", (_Rewriting,), {"rewrite": {DP_KEYS["factor"]: 1.0}}),
        noise_multiplier=1.0,
        clip_norm=1.0,
    )
    assert wf.history[0].ok


@pytest.mark.parametrize("shares", [N + 4, 5])
def test_noise_shares_are_bounded_by_the_survivor_floor(pki: Path, shares: int) -> None:
    """A server that asks for more noise shares than the fewest survivors the secure sum may release (4 of
    the 6 the client verified; 5 is within the roster) is refused, even when the client's ceiling is larger:
    it could split the noise 5 ways and then force dropouts down to 4."""
    more = type("MoreShares", (_Rewriting,), {"rewrite": {DP_KEYS["shares"]: shares}})
    wf, strat, _ = _run(pki, dp_mod=_policy(max_shares=100), strategy_cls=more, noise_multiplier=1.0, clip_norm=1.0)
    rec = wf.history[0]
    assert not rec.ok and len(rec.node_errors) == N
    assert all("may release a sum of 4 survivors (roster 6)" in e for e in rec.node_errors.values())
    assert strat.ledger.entries == []


def test_a_strategy_planning_for_the_whole_roster_is_refused(pki: Path) -> None:
    """The malicious-server hole: noise split over every client of the roster, then dropouts at the masking
    stage down to the floor. The clients refuse before anything is masked; nothing is summed."""
    wf, strat, _ = _run(pki, noise_multiplier=1.0, clip_norm=1.0, min_survivors=None)  # the whole cohort
    rec = wf.history[0]
    assert not rec.ok and len(rec.node_errors) == N and strat.ledger.entries == []
    assert all("release a sum of 4 survivors" in e for e in rec.node_errors.values())


def test_noise_shares_need_the_secure_aggregation_mod() -> None:
    """Without privagg's secure aggregation around it the server would see each update with a fraction of
    the noise: the DP mod refuses noise shares (> 1) when no verified roster comes with the instruction."""
    from flwr.app import Context, Message, RecordDict
    from flwr.common import FitIns, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    from privagg.errors import ProtocolAbort

    fitins = compat.fitins_to_recorddict(
        FitIns(
            ndarrays_to_parameters([np.zeros(M, dtype=np.float32)]),
            {
                DP_KEYS["clip"]: 1.0,
                DP_KEYS["z"]: 1.0,
                DP_KEYS["z_count"]: 0.0,
                DP_KEYS["shares"]: 4,
                DP_KEYS["factor"]: 2.0,
                DP_KEYS["resolution"]: 1000.0,
                DP_KEYS["adaptive"]: False,
            },
        ),
        keep_input=True,
    )
    msg = Message(content=RecordDict(dict(fitins.items())), dst_node_id=1, message_type="train")
    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(ProtocolAbort, match="need privagg's secure aggregation mod"):
        _policy()(msg, ctx, lambda m, c: m)


def _fit_res(arrays: list[np.ndarray]) -> Any:
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), 1, {})


def test_a_failed_aggregate_is_recorded_withheld_and_the_next_round_is_unaffected() -> None:
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

    from privagg.errors import ProtocolAbort

    strat = PrivAggDPStrategy(
        _Cohort(8),  # type: ignore[arg-type]
        noise_multiplier=1.0,
        clip_norm=0.5,
        population=20,
        adaptive=True,
        count_noise_std=4.0,
    )
    model = [np.ones((2, 3), dtype=np.float32)]
    strat.configure_fit(1, ndarrays_to_parameters(model), _Available())
    # the secure sum reached the server but has the wrong shapes (a malformed or tampered aggregate): the
    # release is recorded, the aggregate withheld with a typed abort, the clip and the model do not move
    bad = _fit_res([np.zeros(5)])
    with pytest.raises(ProtocolAbort, match="withheld"):
        strat.aggregate_fit(1, [(i, bad) for i in range(8)], [])
    (entry,) = strat.ledger.entries
    assert entry.round == 1 and entry.noise_multiplier == 1.0
    assert strat.clip == 0.5 and strat.last_parameters is None and strat._round == {}
    with pytest.raises(ProtocolAbort, match="withheld"):  # NaN in the aggregate: the same
        strat.configure_fit(2, ndarrays_to_parameters(model), _Available())
        strat.aggregate_fit(2, [(i, _fit_res([np.full((2, 3), np.nan), np.zeros(1)])) for i in range(8)], [])
    assert strat.clip == 0.5 and len(strat.ledger.entries) == 2
    # the next round runs on its own plan and the model it was given
    model3 = [np.full((2, 3), 2.0, dtype=np.float32)]
    strat.configure_fit(3, ndarrays_to_parameters(model3), _Available())
    good = _fit_res([np.full((2, 3), 0.1), np.array([-4.0 / 8])])  # every update clipped: the clip moves up
    params, metrics = strat.aggregate_fit(3, [(i, good) for i in range(8)], [])
    assert params is not None and metrics["dp_clip_norm"] == 0.5 and strat.clip > 0.5
    denominator = float(metrics["dp_denominator"])  # type: ignore[arg-type]
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], 2.0 + 0.1 * 8 / denominator)
    assert [e.round for e in strat.ledger.entries] == [1, 2, 3]


def test_a_plan_whose_secure_sum_aborted_is_never_finished_later() -> None:
    from flwr.common import ndarrays_to_parameters

    cohort = _Cohort(8)
    strat = PrivAggDPStrategy(cohort, noise_multiplier=1.0, clip_norm=0.5, population=20)  # type: ignore[arg-type]
    model = ndarrays_to_parameters([np.zeros(4)])
    strat.configure_fit(1, model, _Available())  # the secure sum aborts: aggregate_fit is never called
    cohort.k = 0
    assert strat.configure_fit(2, model, _Available()) == []  # no clients: nothing planned
    res = _fit_res([np.full(4, 0.1)])
    assert strat.aggregate_fit(2, [(i, res) for i in range(8)], []) == (None, {})  # round 1's plan is gone
    cohort.k = 8
    strat.configure_fit(3, model, _Available())
    assert strat.aggregate_fit(2, [(i, res) for i in range(8)], []) == (None, {})  # another round's results
    assert strat.ledger.entries == []


def test_a_restarted_server_app_resumes_the_ledger_and_the_adaptive_clip(tmp_path: Path) -> None:
    from flwr.common import ndarrays_to_parameters

    def strategy() -> PrivAggDPStrategy:
        return PrivAggDPStrategy(
            _Cohort(8),  # type: ignore[arg-type]
            noise_multiplier=1.0,
            clip_norm=0.5,
            population=20,
            adaptive=True,
            count_noise_std=4.0,
            ledger_path=str(tmp_path / "ledger.json"),
        )

    first = strategy()
    model = ndarrays_to_parameters([np.zeros(3)])
    for r, bit in ((1, -0.5), (2, 0.3)):
        first.configure_fit(r, model, _Available())
        first.aggregate_fit(r, [(i, _fit_res([np.full(3, 0.1), np.array([bit])])) for i in range(8)], [])
    again = strategy()  # the server app starts again: same file, same settings
    assert again.clip == first.clip != 0.5 and len(again.ledger.entries) == 2
    assert again.clipper is not None and first.clipper is not None
    assert again.clipper.history == first.clipper.history
    pairs = again.configure_fit(3, model, _Available())
    assert pairs[0][1].config[DP_KEYS["clip"]] == first.clip  # the clients are sent the resumed clip


def test_a_trained_model_of_another_shape_aborts_the_client() -> None:
    """Both client DP mods read the user's fit through ``trained_delta``: the update against the global
    model, or a typed abort when the trained model does not have the global model's shapes."""
    from types import SimpleNamespace
    from typing import cast

    from flwr.app import Message
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    from privagg.errors import ProtocolAbort
    from protocols.flower.dp_policy import trained_delta

    def reply(arrays: list[np.ndarray]) -> Message:
        res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), num_examples=3, metrics={})
        return cast(Message, SimpleNamespace(content=compat.fitres_to_recorddict(res, keep_input=True)))

    global_arrays = [np.zeros((2, 3), np.float32), np.ones(4, np.float32)]
    _, delta = trained_delta(reply([np.full((2, 3), 0.5, np.float32), np.ones(4, np.float32)]), global_arrays)
    np.testing.assert_array_equal(delta, [0.5] * 6 + [0.0] * 4)
    with pytest.raises(ProtocolAbort, match="another shape"):
        trained_delta(reply([np.zeros((3, 2), np.float32), np.ones(4, np.float32)]), global_arrays)


def test_the_client_refuses_noise_shares_below_the_floor_before_training() -> None:
    """The mod checks every share against dp.noise.MIN_SHARE_SIGMA before the user's fit runs (a resolution and a
    share count a server picked could otherwise split the noise into shares whose sum is not the accounted one)."""
    from dp.noise import GaussianGridMechanism
    from privagg.errors import ProtocolAbort
    from protocols.flower.dp_policy import check_noise_shares

    weak = GaussianGridMechanism.create(sensitivity=1.0, noise_multiplier=0.01, dim=1)  # 10.25 grid units in all
    check_noise_shares((weak, None), 105)  # 1.0003 grid units per share: just above the floor
    with pytest.raises(ProtocolAbort, match="grid units"):
        check_noise_shares((None, weak), 106)  # 0.996
