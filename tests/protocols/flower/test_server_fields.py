"""Red team of what a node takes from the server besides the protocol messages: the run config.

``run_config`` is written by whoever starts the run (the server side). A node's own mode and identity
must not come from it: a server that writes ``privagg-threat = "semi-honest"`` would otherwise turn
every node that did not pin its mode into a semi-honest client (no protection against that very
server, ``secagg/THREAT_MODEL.md``), and one ``privagg-client-id`` would make every node claim one
identity. The same holds for fit-config keys only the secure-aggregation mod may set (the verified roster
size and survivor floor a DP mod bounds its noise shares by), and for a plain fit the server sends instead
of a secure-aggregation round. Each test runs the real workflow and mods over the in-process grid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Context, Message, RecordDict
from flwr.common import parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from protocols.flower import PrivAggSecAggWorkflow, SecAggWorkflowConfig, create_identities, make_secagg_mod
from protocols.flower._node import policy_from
from protocols.flower.apps import client_vector, vector_client_app, vector_server_app
from protocols.flower.distributed_dp import PrivAggDistributedDPWorkflow, make_distributed_dp_mod
from protocols.flower.inproc import run_inprocess
from protocols.flower.secagg import COLLUDERS_KEY, RECORD, ROSTER_KEY
from secagg.messages import KeyAdvertisement
from secagg.params import ThreatModel
from tests.protocols.flower.adverts import advert_recorder
from tests.protocols.flower.node_policy import TEST_POLICY

logging.getLogger("flwr").setLevel(logging.WARNING)

N, M = 4, 8


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    create_identities(d, range(N))
    return d


def _round(mod: object, wf: PrivAggSecAggWorkflow, **kw: object) -> list[KeyAdvertisement]:
    sent, recorder = advert_recorder()
    capp = vector_client_app(dimension=M, seed=1, mods=[recorder, mod])
    run_inprocess(vector_server_app(wf, num_clients=N, dimension=M), capp, num_nodes=N, **kw)  # type: ignore[arg-type]
    return sent


def test_run_config_cannot_downgrade_a_node_to_semi_honest(pki: Path) -> None:
    """The server runs semi-honest and writes ``privagg-threat = "semi-honest"`` into the run config.
    A node whose mod and node config name no mode requires active mode: it refuses the setup and sends
    no key advertisement, so the round aborts before any input is masked."""
    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=N - 1, threshold=3, threat=ThreatModel.SEMI_HONEST))
    sent = _round(make_secagg_mod(pki=str(pki), policy=TEST_POLICY), wf, run_config={"privagg-threat": "semi-honest"})
    rec = wf.history[0]
    assert not rec.ok and sent == []
    assert len(rec.node_errors) == N
    assert all("this client requires active" in e for e in rec.node_errors.values())


def test_a_node_may_still_choose_semi_honest_itself(pki: Path) -> None:
    """The node's own ``node_config["privagg-threat"]`` is its choice: the semi-honest round runs."""
    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=N - 1, threshold=3, threat=ThreatModel.SEMI_HONEST))
    sent = _round(make_secagg_mod(), wf, node_config=lambda pid: {"privagg-threat": "semi-honest"}, run_config={})
    assert wf.history[0].ok and len(sent) == N


def test_run_config_cannot_name_the_nodes_identity(pki: Path) -> None:
    """The server writes ``privagg-client-id = 0`` into the run config. Every node still signs as its own
    identity (its ``partition-id``): four distinct advertisers and the round completes; with the run
    config's id every node would claim client 0 (one heard, the round refused or isolating)."""
    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=N - 1, threshold=3, pki=str(pki)))
    sent = _round(
        make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY), wf, run_config={"privagg-client-id": 0}
    )
    rec = wf.history[0]
    assert sorted(a.client_id for a in sent) == list(range(N))
    assert rec.ok and sorted(rec.node_of_client) == list(range(N))


def test_policy_keys_node_first() -> None:
    """The node's own policy keys win over the run config's, key by key; an active node's minimum cohort and
    corruption rate come only from its own settings (``test_node_policy.py``: the run config may only raise
    the dropout rate, which only makes the client refuse more)."""
    ctx = Context(
        run_id=1,
        node_id=1,
        node_config={"privagg-secagg-min-clients": 40, "privagg-secagg-corruption-rate": 0.05},
        state=RecordDict(),
        run_config={"privagg-secagg-min-clients": 2, "privagg-secagg-corruption-rate": 0.0},
    )
    policy = policy_from(ctx)
    assert policy is not None and (policy.min_clients, policy.corruption_rate, policy.dropout_rate) == (40, 0.05, 0.0)
    assert policy_from(Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})) is None


def _ddp_workflow(pki: Path, *, epsilon: float) -> PrivAggDistributedDPWorkflow:
    """One round of distributed DP over active secure aggregation (every node, k = N - 1, t = 3) at ``epsilon``."""
    from dp.accounting import Sampling
    from dp.config import DPConfig

    dp = DPConfig(noise="distributed", target_epsilon=epsilon, delta=1e-5, clip_norm=1.0, bits=16, mechanism="dgauss")
    return PrivAggDistributedDPWorkflow(
        SecAggWorkflowConfig.manual(degree=N - 1, threshold=3, weighting="uniform", pki=str(pki)),
        dp=dp,
        sampling=Sampling.poisson(rate=1.0, population=N),
        rounds=1,
    )


@pytest.mark.filterwarnings("ignore::dp.noise.InsecureNoiseWarning")
def test_run_config_cannot_set_a_nodes_dp_policy(pki: Path) -> None:
    """The server asks for little noise (epsilon 1e4) and writes the policy that admits it into the run
    config. A node whose mod and node config hold no DP policy must refuse ("no DP policy"), not adopt the
    server's: the round should abort with nothing released."""
    from dp.distributed_encoding import IntegerNoise

    wf = _ddp_workflow(pki, epsilon=1e4)
    ddp = make_distributed_dp_mod(noise=lambda c: IntegerNoise(seed=int(c.node_config["partition-id"])))
    capp = vector_client_app(
        dimension=M, seed=1, mods=[make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY), ddp]
    )
    run_config = {
        "privagg-dp-min-noise-multiplier": 1e-6,
        "privagg-dp-max-shares": N,
        "privagg-dp-accept-poisson": True,
    }
    run_inprocess(vector_server_app(wf, num_clients=N, dimension=M), capp, num_nodes=N, run_config=run_config)
    rec = wf.history[0]
    assert not rec.ok and rec.aggregate is None
    assert rec.node_errors and all("no DP policy" in e for e in rec.node_errors.values())


def test_a_nodes_own_dp_policy_comes_from_its_node_config() -> None:
    """The node's own ``node_config`` policy is read; the run config's is ignored key by key (a server
    writing a lower floor or more shares changes nothing), and mod arguments win over the node config."""
    from protocols.flower.dp_policy import POLICY_KEYS, _client_policy

    own: dict[str, bool | float | int | str] = {
        POLICY_KEYS["min_noise_multiplier"]: 0.5,
        POLICY_KEYS["max_shares"]: 7,
        POLICY_KEYS["max_clip"]: 2.0,
    }
    server: dict[str, bool | float | int | str] = {
        POLICY_KEYS["min_noise_multiplier"]: 1e-6,
        POLICY_KEYS["max_shares"]: 10**6,
    }
    server |= {POLICY_KEYS["accept_poisson"]: True, POLICY_KEYS["max_clip"]: 1e9}
    ctx = Context(run_id=1, node_id=1, node_config=own, state=RecordDict(), run_config=server)
    assert _client_policy(ctx, None, None, None, None) == (0.5, 7, False, 2.0)
    assert _client_policy(ctx, 0.9, 3, True, None) == (0.9, 3, True, 2.0)


def test_run_config_cannot_choose_a_nodes_pki_folder(pki: Path) -> None:
    """The server writes ``privagg-pki`` (its own directory, or one whose keys it holds) into the run
    config. An active node without its own PKI folder refuses the setup instead of taking the server's
    trust root: no key advertisement, the round aborts."""
    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=N - 1, threshold=3, pki=str(pki)))
    sent = _round(make_secagg_mod(threat="active", policy=TEST_POLICY), wf, run_config={"privagg-pki": str(pki)})
    rec = wf.history[0]
    assert not rec.ok and sent == [] and len(rec.node_errors) == N
    assert all("PKI folder" in e for e in rec.node_errors.values())


def test_a_nodes_own_pki_folder_comes_from_its_node_config(pki: Path, tmp_path: Path) -> None:
    """The node's ``node_config["privagg-pki"]`` is its trust root: the round completes with it, and a run
    config naming another folder (an empty decoy) is ignored."""
    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=N - 1, threshold=3, pki=str(pki)))
    own = {"privagg-pki": str(pki)}
    sent = _round(
        make_secagg_mod(threat="active", policy=TEST_POLICY),
        wf,
        node_config=lambda pid: own,
        run_config={"privagg-pki": str(tmp_path)},
    )
    assert wf.history[0].ok and sorted(a.client_id for a in sent) == list(range(N))


@pytest.mark.filterwarnings("ignore::dp.noise.InsecureNoiseWarning")
@pytest.mark.parametrize("secure_only", [None, False])
def test_forged_roster_floor_on_a_plain_fit_message_releases_nothing(pki: Path, secure_only: bool | None) -> None:
    """The roster size and survivor floor in the fit config (``ROSTER_KEY``, ``MIN_SURVIVORS_KEY``) are for the
    secure-aggregation mod to set, from the roster it verified. The server strips the secure-aggregation record
    from the victim's delivery message and writes the two keys itself: the message is a plain fit, and a
    distributed-DP mod that believed the forged floor would return its noised ring vector unmasked (one noise
    share, ``sigma / sqrt(shares)``). Wanted: the active node refuses the plain fit (wave 7's default); a node
    that opted out of that (``secure_only=False``) still sends nothing: the DP mod trusts the two keys only
    inside a round a privagg mod runs (and the secure-aggregation mod removes them), so it refuses."""
    from dp.distributed_encoding import IntegerNoise
    from protocols.flower.secagg import MIN_SURVIVORS_KEY, RING_RECORD, ROSTER_KEY

    victim = 0
    wf = _ddp_workflow(pki, epsilon=8.0)
    leaked: list[int] = []

    def outer(msg: Message, ctxt: Context, call_next):  # type: ignore[no-untyped-def]
        out = call_next(msg, ctxt)
        if out.has_content() and RING_RECORD in out.content.config_records:
            leaked.append(int(ctxt.node_config["partition-id"]))
        return out

    def intercept(pid: int, msg: Message) -> list[Message]:
        cfg = msg.content.config_records.get(RECORD)
        if pid == victim and cfg is not None and cfg.get("stage") == "delivery":
            msg.content.pop(RECORD)
            fit_cfg = msg.content.config_records["fitins.config"]
            fit_cfg[ROSTER_KEY] = N
            fit_cfg[MIN_SURVIVORS_KEY] = N
        return [msg]

    ddp = make_distributed_dp_mod(
        min_noise_multiplier=0.1, max_shares=N, noise=lambda c: IntegerNoise(seed=int(c.node_config["partition-id"]))
    )
    secagg = make_secagg_mod(threat="active", pki=str(pki), secure_only=secure_only, policy=TEST_POLICY)
    capp = vector_client_app(dimension=M, seed=1, mods=[outer, secagg, ddp])
    run_inprocess(vector_server_app(wf, num_clients=N, dimension=M), capp, num_nodes=N, intercept=intercept)
    assert victim not in leaked
    victim_node = wf.history[0].node_of_client[victim]
    why = "outside secure aggregation" if secure_only is None else "no verified roster"
    assert why in wf.history[0].node_errors[victim_node]


def _plain_fit_to(
    victim: int,
) -> tuple[Callable[[int, Message], list[Message]], Callable[..., Message], dict[int, np.ndarray]]:
    """The server strips the secure-aggregation record from ``victim``'s delivery (a plain fit); ``leaked``
    maps each partition whose reply carries a model in the clear to that model."""
    leaked: dict[int, np.ndarray] = {}

    def intercept(pid: int, msg: Message) -> list[Message]:
        cfg = msg.content.config_records.get(RECORD)
        if pid == victim and cfg is not None and cfg.get("stage") == "delivery":
            msg.content.pop(RECORD)
        return [msg]

    def outer(msg: Message, ctxt: Context, call_next):  # type: ignore[no-untyped-def]
        out = call_next(msg, ctxt)
        arrays = [a for a in out.content.array_records.values() if len(a)] if out.has_content() else []
        if arrays and RECORD not in out.content.config_records:
            fitres = compat.recorddict_to_fitres(out.content, keep_input=True)
            leaked[int(ctxt.node_config["partition-id"])] = parameters_to_ndarrays(fitres.parameters)[0]
        return out

    return intercept, outer, leaked


@pytest.mark.parametrize("where", ["default", "node", "server"])
def test_plain_fit_outside_secure_aggregation(pki: Path, where: str) -> None:
    """The server strips the secure-aggregation record from the victim's delivery (a plain fit). Before wave 7
    the mod passed it on by default and the victim's exact update reached the server. Now an active node
    refuses it unless it opts out itself (``node_config["privagg-secure-only"] = false``: then the update
    leaves in the clear, exactly); the server's run config cannot opt it out (it is the node's protection
    against that server)."""
    victim = 0
    intercept, outer, leaked = _plain_fit_to(victim)
    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=N - 1, threshold=3, pki=str(pki)))
    capp = vector_client_app(
        dimension=M, seed=1, mods=[outer, make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY)]
    )
    run_inprocess(
        vector_server_app(wf, num_clients=N, dimension=M),
        capp,
        num_nodes=N,
        intercept=intercept,
        node_config=(lambda pid: {"privagg-secure-only": False}) if where == "node" else None,
        run_config={"privagg-secure-only": where == "node"},  # the server asks for the opposite: ignored
    )
    rec = wf.history[0]
    if where == "node":
        assert list(leaked) == [victim]
        np.testing.assert_array_equal(leaked[victim], client_vector(1, 1, victim, M))
    else:
        assert leaked == {} and "outside secure aggregation" in rec.node_errors[rec.node_of_client[victim]]


def test_secure_only_nodes_complete_an_honest_round(pki: Path) -> None:
    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=N - 1, threshold=3, pki=str(pki)))
    _round(make_secagg_mod(threat="active", pki=str(pki), secure_only=True, policy=TEST_POLICY), wf)
    assert wf.history[0].ok and len(wf.history[0].survivors) == N


def test_the_colluders_a_dp_mod_counts_come_from_the_nodes_policy_never_the_server(tmp_path: Path) -> None:
    """``COLLUDERS_KEY`` tells a DP mod further in how many of the verified roster its node's own policy assumes
    colluding (their noise shares do not count). The server writes 0 into every fit config; each node's secure-
    aggregation mod replaces it with ``floor(corruption_rate * roster)`` from its own policy (here 1 of 8)."""
    from secagg.params import ClientPolicy

    n = 8
    create_identities(tmp_path, range(n))
    policy = ClientPolicy(min_clients=2, dropout_rate=0.0, corruption_rate=0.2, security_bits=4, failure_bits=4)
    seen: dict[int, tuple[object, object]] = {}

    def inner(msg: Message, ctxt: Context, call_next):  # type: ignore[no-untyped-def]
        fit_cfg = msg.content.config_records.get("fitins.config") if msg.has_content() else None
        if fit_cfg is not None and ROSTER_KEY in fit_cfg:
            seen[int(ctxt.node_config["partition-id"])] = (fit_cfg[ROSTER_KEY], fit_cfg.get(COLLUDERS_KEY))
        return call_next(msg, ctxt)

    def server_writes_zero(fedavg: Any) -> Any:  # the strategy's fit config, as the server sends it
        fedavg.on_fit_config_fn = lambda rnd: {COLLUDERS_KEY: 0}
        return fedavg

    cfg = SecAggWorkflowConfig.manual(degree=6, threshold=6, threat="active", pki=str(tmp_path))
    wf = PrivAggSecAggWorkflow(cfg)
    mod = make_secagg_mod(threat="active", pki=str(tmp_path), policy=policy)
    capp = vector_client_app(dimension=M, seed=1, mods=[mod, inner])
    server = vector_server_app(wf, num_clients=n, dimension=M, wrap_strategy=server_writes_zero)
    run_inprocess(server, capp, num_nodes=n)
    assert wf.history[0].ok, wf.history[0].abort
    assert seen == {pid: (n, 1) for pid in range(n)}
