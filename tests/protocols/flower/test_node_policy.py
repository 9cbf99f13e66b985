"""Red team of an active Flower node without a secure-aggregation policy of its own.

The parameters protect the client, so they are the client's (``secagg/THREAT_MODEL.md``). Before wave 7 an
active node that set no policy (no ``make_secagg_mod(policy=...)``, no ``node_config`` policy keys) accepted
whatever the server sent: degree 2 / threshold 2, where the server and one colluder rebuild a target's exact
input, or a cohort of three. And a node that set no policy took the one the server wrote into the run config.
Now such a node refuses every setup with a typed error naming the keys to set; its own policy is read from its
own settings, and the run config may only raise the dropout rate it assumes (which only adds refusals: the
property below). Each round runs the real workflow and mods over the in-process grid.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from flwr.app import Context, RecordDict
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.errors import ConfigurationError
from protocols.flower import PrivAggSecAggWorkflow, SecAggWorkflowConfig, create_identities, make_secagg_mod
from protocols.flower._node import (
    CORRUPTION_RATE_KEY,
    DROPOUT_RATE_KEY,
    MIN_CLIENTS_KEY,
    POLICY_BITS_KEYS,
    own_policy,
    policy_from,
)
from protocols.flower.apps import vector_client_app, vector_server_app
from protocols.flower.inproc import run_inprocess
from secagg.messages import KeyAdvertisement
from secagg.params import ClientPolicy, SecAggParams, ThreatModel
from tests.protocols.flower.adverts import advert_recorder

logging.getLogger("flwr").setLevel(logging.WARNING)

N, M = 5, 8
#: what the server writes into the run config to pass as the nodes' policy: anyone, nobody colluding
SERVER_POLICY = {MIN_CLIENTS_KEY: 2, CORRUPTION_RATE_KEY: 0.0}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    create_identities(d, range(N))
    return d


def _weak_round(
    pki: Path,
    nodes: int,
    *,
    node_config: Mapping[str, object] | None = None,
    run_config: Mapping[str, object] | None = None,
    policy: object = None,
) -> tuple[PrivAggSecAggWorkflow, list[KeyAdvertisement]]:
    """The server forces degree 2 / threshold 2 on a cohort of ``nodes`` (the issue's weak graph; with 3
    nodes also a tiny cohort) on nodes whose mod names no policy (or ``policy``)."""
    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=2, threshold=2, pki=str(pki)))
    sent, recorder = advert_recorder()
    mod = make_secagg_mod(threat="active", pki=str(pki), policy=policy)  # type: ignore[arg-type]
    capp = vector_client_app(dimension=M, seed=1, mods=[recorder, mod])
    run_inprocess(
        vector_server_app(wf, num_clients=nodes, dimension=M),
        capp,
        num_nodes=nodes,
        node_config=(lambda pid: node_config) if node_config else None,
        run_config=run_config or {},
    )
    return wf, sent


@pytest.mark.parametrize("nodes", [N, 3], ids=["weak-graph", "tiny-cohort"])
@pytest.mark.parametrize("server_config", [{}, SERVER_POLICY], ids=["no-policy", "server-run-config-policy"])
def test_an_active_node_without_its_own_policy_refuses_the_servers_setup(
    pki: Path, nodes: int, server_config: Mapping[str, object]
) -> None:
    """Before: every node advertised its keys and the degree-2 round completed (``rec.ok``), also with a
    run config holding the server's own "policy". Wanted: no advertisement, every node refuses with an error
    naming its own node-config keys, the round aborts before any input is masked."""
    wf, sent = _weak_round(pki, nodes, run_config=server_config)
    rec = wf.history[0]
    assert sent == [] and not rec.ok and rec.aggregate is None
    assert len(rec.node_errors) == nodes
    for why in rec.node_errors.values():
        assert "needs a secure-aggregation policy of its own" in why
        assert MIN_CLIENTS_KEY in why and CORRUPTION_RATE_KEY in why


def test_a_node_built_with_the_cores_trust_server_opt_out_refuses_the_weak_round(pki: Path) -> None:
    """``make_secagg_mod(policy=ClientPolicy.trust_server())``: the core's opt-out (a client that accepts the
    server's numbers, for attack demonstrations) is not a node's policy. The server's degree-2 round gets no
    advertisement and every node's error says why; the core client with that opt-out would have run it
    (``tests/secagg/adversarial/test_no_policy_red_team.py::test_trust_server_opt_out_leaks_the_exact_input``)."""
    wf, sent = _weak_round(pki, N, policy=ClientPolicy.trust_server())
    rec = wf.history[0]
    assert sent == [] and not rec.ok and rec.aggregate is None and len(rec.node_errors) == N
    assert all("attack demonstrations" in why for why in rec.node_errors.values()), rec.node_errors


def test_a_node_that_sets_only_its_minimum_cohort_is_told_the_corruption_rate(pki: Path) -> None:
    """A minimum cohort alone is no policy: with the corruption rate left at 0 a client accepts degree 2 /
    threshold 2 at every cohort size (nobody colludes). The node must state the rate it assumes (0 included)."""
    wf, sent = _weak_round(pki, N, node_config={MIN_CLIENTS_KEY: N}, run_config={CORRUPTION_RATE_KEY: 0.0})
    rec = wf.history[0]
    assert sent == [] and not rec.ok
    assert all(CORRUPTION_RATE_KEY in e and MIN_CLIENTS_KEY not in e for e in rec.node_errors.values())


@pytest.mark.parametrize("nodes", [N, 3], ids=["weak-graph", "tiny-cohort"])
def test_a_nodes_own_policy_refuses_the_weak_setup(pki: Path, nodes: int) -> None:
    """The node's own keys (min cohort 5, one colluder in a million assumed): it derives degree 4 / threshold 4
    for 5 clients and refuses 2 / 2, and refuses a cohort of 3 outright; the server's run config (minimum 2,
    nobody colluding) changes nothing."""
    own = {MIN_CLIENTS_KEY: N, CORRUPTION_RATE_KEY: 1e-6}
    wf, sent = _weak_round(pki, nodes, node_config=own, run_config=SERVER_POLICY)
    rec = wf.history[0]
    assert not rec.ok and rec.aggregate is None and len(rec.node_errors) == nodes
    why = "weaker than this client derives" if nodes == N else f"claims {nodes} clients, this client's minimum"
    assert all(why in e for e in rec.node_errors.values())
    assert sent == []


def test_a_nodes_own_policy_runs_the_graph_it_derives(pki: Path) -> None:
    """The same nodes take part in the round whose graph their policy derives (4 / 4 for 5 clients)."""
    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=4, threshold=4, pki=str(pki)))
    capp = vector_client_app(dimension=M, seed=1, mods=[make_secagg_mod(threat="active", pki=str(pki))])
    own = {MIN_CLIENTS_KEY: N, CORRUPTION_RATE_KEY: 1e-6}
    run_inprocess(vector_server_app(wf, num_clients=N, dimension=M), capp, num_nodes=N, node_config=lambda pid: own)
    assert wf.history[0].ok and len(wf.history[0].survivors) == N


def _ctx(node: Mapping[str, object], run: Mapping[str, object]) -> Context:
    return Context(run_id=1, node_id=1, node_config=dict(node), state=RecordDict(), run_config=dict(run))  # type: ignore[arg-type]


def test_policy_keys_of_an_active_node_are_its_own() -> None:
    """Active: minimum cohort and corruption rate only from the node; the dropout rate from the node, else the
    run config (larger only: the default is 0). Semi-honest keeps the old reading (node first, then run config)."""
    server = {MIN_CLIENTS_KEY: 2, CORRUPTION_RATE_KEY: 0.0, DROPOUT_RATE_KEY: 0.2}
    assert policy_from(_ctx({}, server)) is None
    assert policy_from(_ctx({MIN_CLIENTS_KEY: 9}, server)) is None  # no corruption rate of its own
    got = policy_from(_ctx({MIN_CLIENTS_KEY: 9, CORRUPTION_RATE_KEY: 0.05}, server))
    assert got == ClientPolicy(min_clients=9, dropout_rate=0.2, corruption_rate=0.05)
    own = {MIN_CLIENTS_KEY: 9, CORRUPTION_RATE_KEY: 0.05, DROPOUT_RATE_KEY: 0.0}
    assert policy_from(_ctx(own, server)) == ClientPolicy(min_clients=9, dropout_rate=0.0, corruption_rate=0.05)
    semi = policy_from(_ctx({}, server), ThreatModel.SEMI_HONEST)
    assert semi == ClientPolicy(min_clients=2, dropout_rate=0.2, corruption_rate=0.0)
    assert policy_from(_ctx({}, {}), ThreatModel.SEMI_HONEST) is None


def test_own_policy_is_typed_and_only_active_nodes_need_one() -> None:
    fixed = ClientPolicy(min_clients=3, dropout_rate=0.0, corruption_rate=0.1)
    with pytest.raises(ConfigurationError) as err:
        own_policy(_ctx({}, SERVER_POLICY), None, ThreatModel.ACTIVE)
    assert err.value.field == MIN_CLIENTS_KEY and "make_secagg_mod(policy=" in str(err.value)
    assert own_policy(_ctx({}, {}), fixed, ThreatModel.ACTIVE) is fixed  # the mod's argument wins
    assert own_policy(_ctx({}, SERVER_POLICY), None, ThreatModel.SEMI_HONEST) is not None  # as before
    assert own_policy(_ctx({}, {}), None, ThreatModel.SEMI_HONEST) is None
    for threat in ThreatModel:  # the core's named opt-out is refused by a node, whatever its mode
        with pytest.raises(ConfigurationError, match="attack demonstrations") as err:
            own_policy(_ctx({}, {}), ClientPolicy.trust_server(), threat)  # type: ignore[arg-type]
        assert err.value.field == "policy"


@st.composite
def _setups(draw: st.DrawFn) -> tuple[SecAggParams, float, float, float]:
    n = draw(st.integers(3, 40))
    k = draw(st.sampled_from([*range(2, n - 1, 2), n - 1]))
    t = draw(st.integers((k + 1) // 2 + 1, k))
    threat = draw(st.sampled_from(list(ThreatModel)))
    gamma = draw(st.sampled_from([0.0, 1e-6, 1e-3, 0.01, 0.05]))
    delta = draw(st.sampled_from([0.0, 0.01, 0.05]))
    raised = delta + draw(st.sampled_from([0.0, 0.01, 0.1, 0.3]))
    return SecAggParams.manual(num_clients=n, degree=k, threshold=t, threat=threat), gamma, delta, raised


@settings(max_examples=150, deadline=None)
@given(_setups())
def test_a_dropout_rate_from_the_run_config_only_adds_refusals(case: tuple[SecAggParams, float, float, float]) -> None:
    """What the run config may fill (the dropout rate, when the node left it out, and only above the node's
    default 0) never makes a node accept a setup its own rate refuses: accepted at a larger dropout rate
    implies accepted at the smaller, for every graph, mode and corruption rate. (Checked through the client's
    own ``ClientPolicy.setup_fault``; ``roster_fault`` and the consistency quorum do not read the rate.)"""
    params, gamma, delta, raised = case
    own = ClientPolicy(min_clients=3, dropout_rate=delta, corruption_rate=gamma, security_bits=20, failure_bits=4)
    server = ClientPolicy(min_clients=3, dropout_rate=raised, corruption_rate=gamma, security_bits=20, failure_bits=4)
    if server.setup_fault(params) is None:
        assert own.setup_fault(params) is None


def test_the_example_nodes_hold_a_policy_of_their_own() -> None:
    """``examples/flower-digits``: every node's defaults carry its own policy (else every active round of the
    example would be refused); the deployment test (slow) runs it."""
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "examples" / "flower-digits" / "flower_digits" / "client_app.py"
    spec = importlib.util.spec_from_file_location("flower_digits_client_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    policy = own_policy(_ctx(module.NODE_DEFAULTS, {}), None, ThreatModel.ACTIVE)
    assert policy == ClientPolicy(min_clients=12, dropout_rate=0.0, corruption_rate=0.0)


def test_policy_bits_of_an_active_node_are_its_own() -> None:
    """Security, failure and grinding bits: from the node's own config (a node asking for more than the defaults
    gets a stricter policy); the server's run config is ignored in active mode, whether it asks for less or more;
    a value that is not an integer is a typed error naming the key."""
    own = {MIN_CLIENTS_KEY: 9, CORRUPTION_RATE_KEY: 0.05}
    keys = POLICY_BITS_KEYS
    weaker = {keys["security_bits"]: 8, keys["failure_bits"]: 2, keys["grinding_bits"]: 0}
    assert policy_from(_ctx(own, weaker)) == ClientPolicy(min_clients=9, dropout_rate=0.0, corruption_rate=0.05)
    stricter = {**own, keys["security_bits"]: 64, keys["grinding_bits"]: 10}
    got = policy_from(_ctx(stricter, weaker))
    assert got is not None and (got.security_bits, got.failure_bits, got.grinding_bits) == (64, 20, 10)
    semi = policy_from(_ctx({}, {**own, keys["security_bits"]: 50}), ThreatModel.SEMI_HONEST)
    assert semi is not None and semi.security_bits == 50  # semi-honest: the server is trusted, as before
    for bad in ("forty", 40.5):
        with pytest.raises(ConfigurationError) as e:
            policy_from(_ctx({**own, keys["security_bits"]: bad}, {}))
        assert e.value.field == keys["security_bits"]
    with pytest.raises(ConfigurationError) as e:
        policy_from(_ctx({MIN_CLIENTS_KEY: "many", CORRUPTION_RATE_KEY: 0.05}, {}))
    assert e.value.field == MIN_CLIENTS_KEY
