"""Red team of the messages a malicious server sends a node outside a secure round (wave 7).

The server writes every message. A plain fit (no secure-aggregation or Paillier record) makes the
user's ``fit`` return the node's update in the clear; an evaluate message returns its loss on a model
the server chose (``M + 1`` squared distances give the vector); a get-parameters message returns its
model. A node whose own mode is active refuses all three by default (``protocols/flower/_guard.py``);
it may opt out itself (``node_config``), the run config cannot. Stacked mods (``[secagg, paillier, dp]``)
still run each other's rounds. Every test drives the real ClientApp mods through the in-process grid.

5 nodes: Paillier decryptors are partitions 0 and 1 (2-of-2), clients 2..4; everyone has a PKI identity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import EvaluateIns, FitIns, GetParametersIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID, MessageTypeLegacy
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.task_identity import TaskIdentity

from privagg.errors import ConfigurationError
from protocols.flower import PaillierWorkflowConfig, PrivAggSecAggWorkflow, SecAggWorkflowConfig, create_identities
from protocols.flower.apps import client_vector, expected_mean, vector_client_app, vector_server_app
from protocols.flower.dp import PrivAggDPStrategy, make_dp_mod
from protocols.flower.dp_policy import DP_KEYS
from protocols.flower.inproc import InProcessGrid, run_inprocess
from protocols.flower.paillier import PAILLIER_RECORD, PrivAggPaillierWorkflow, make_paillier_mod
from protocols.flower.paillier_material import provision_paillier
from protocols.flower.secagg import MIN_SURVIVORS_KEY, RECORD, ROSTER_KEY, make_secagg_mod
from protocols.paillier import PaillierConfig
from tests.protocols.flower.node_policy import TEST_POLICY

logging.getLogger("flwr").setLevel(logging.WARNING)

N, K, M, SEED, CLIP = 5, 2, 8, 3, 8.0
VICTIM = 2  # a Paillier client


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    create_identities(d, range(N))
    return d


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("paillier")
    cfg = PaillierConfig(key_bits=512, allow_insecure=True, max_clients=8, decryptors=K, threshold=2, min_clients=2)
    provision_paillier(d, cfg, range(N), clip=CLIP)
    return d


def _mods(stack: str, pki: Path, material: Path) -> list[Any]:
    secagg = make_secagg_mod(
        pki=str(pki), policy=TEST_POLICY
    )  # the node's mode: its own (default active), never the run config's
    paillier = make_paillier_mod(material=str(material), decryptors=range(K))
    dp = make_dp_mod(min_noise_multiplier=1e-3, max_shares=N)
    return {
        "secagg": [secagg],
        "paillier": [paillier],
        "secagg+paillier": [secagg, paillier],
        "secagg+paillier+dp": [secagg, paillier, dp],
        "paillier+secagg": [paillier, secagg],
    }[stack]


def _grid(mods: list[Any], *, node: dict[str, Any] | None = None, run: dict[str, Any] | None = None) -> InProcessGrid:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 7, SUPERLINK_NODE_ID  # as run_inprocess
    capp = vector_client_app(dimension=M, seed=SEED, mods=mods)
    return InProcessGrid(capp, num_nodes=N, run_id=7, node_config=lambda pid: node or {}, run_config=run)


def _ask(grid: InProcessGrid, kind: str, content: RecordDict, pid: int = VICTIM) -> Message:
    """The server sends one message of type ``kind`` to partition ``pid``; the node's reply."""
    nid = next(n for n, p in grid.partition_of.items() if p == pid)
    (reply,) = grid.send_and_receive([grid.create_message(content, kind, nid, "1")])
    return reply


def _plain_fit(config: dict[str, Any] | None = None) -> RecordDict:
    params = ndarrays_to_parameters([np.zeros(M, dtype=np.float32)])
    return compat.fitins_to_recorddict(FitIns(params, {"round": 1, **(config or {})}), keep_input=True)


def _update(reply: Message) -> np.ndarray:
    """The model a reply carries in the clear."""
    return parameters_to_ndarrays(compat.recorddict_to_fitres(reply.content, keep_input=True).parameters)[0]


STACKS = ("secagg", "paillier", "secagg+paillier", "secagg+paillier+dp", "paillier+secagg")


@pytest.mark.parametrize("stack", STACKS)
def test_a_plain_fit_is_refused_by_a_node_in_active_mode(pki: Path, material: Path, stack: str) -> None:
    """The server sends a training message without any secure record: the node must not train into the clear.
    Before wave 7 the mods passed it on and the server received the node's exact update."""
    reply = _ask(_grid(_mods(stack, pki, material)), MessageType.TRAIN, _plain_fit())
    assert reply.has_error() and "outside secure aggregation" in reply.error.reason


@pytest.mark.parametrize("stack", ["secagg", "paillier"])
@pytest.mark.parametrize("who", ["node", "server", "semi-honest node"])
def test_only_the_node_itself_opts_out(pki: Path, material: Path, stack: str, who: str) -> None:
    """A node that opts out itself (``node_config["privagg-secure-only"] = false``, or a semi-honest node)
    answers a plain fit with its exact update: that is what the default refuses. The server's run config
    asking the same is ignored."""
    node = {"node": {"privagg-secure-only": "false"}, "semi-honest node": {"privagg-threat": "semi-honest"}}
    grid = _grid(_mods(stack, pki, material), node=node.get(who), run={"privagg-secure-only": False})
    reply = _ask(grid, MessageType.TRAIN, _plain_fit())
    if who == "server":
        assert reply.has_error() and "outside secure aggregation" in reply.error.reason
    else:
        assert not reply.has_error()
        np.testing.assert_array_equal(_update(reply), client_vector(SEED, 1, VICTIM, M))


def test_a_malformed_opt_out_is_refused(pki: Path, material: Path) -> None:
    """A typo must not flip the protection: an opt-out that is not yes/no is a configuration error."""
    reply = _ask(_grid(_mods("secagg", pki, material), node={"privagg-secure-only": "nope"}), "train", _plain_fit())
    assert reply.has_error() and "not a yes/no setting" in reply.error.reason


@pytest.mark.parametrize(
    ("value", "threat", "want"),
    [
        (None, "active", True),
        (None, "semi-honest", False),
        (False, "active", False),
        ("No", "active", False),
        ("0", "active", False),
        (0, "active", False),
        (True, "semi-honest", True),
        (" yes ", "semi-honest", True),
        (1, "semi-honest", True),
        ("off", "active", ConfigurationError),
        ("", "active", ConfigurationError),
        (2, "active", ConfigurationError),
    ],
)
def test_secure_only_is_read_from_the_node_alone(value: object, threat: str, want: object) -> None:
    """The node's own yes/no value, else on exactly in active mode; the run config's is never read."""
    from protocols.flower._node import secure_only_from
    from secagg.params import ThreatModel

    own = {} if value is None else {"privagg-secure-only": value}
    ctx = Context(run_id=1, node_id=1, node_config=own, state=RecordDict(), run_config={"privagg-secure-only": 0})
    mode = ThreatModel.parse(threat)
    if want is ConfigurationError:
        with pytest.raises(ConfigurationError, match="yes/no"):
            secure_only_from(ctx, None, mode)
    else:
        assert secure_only_from(ctx, None, mode) is want
    assert secure_only_from(ctx, True, mode) is True and secure_only_from(ctx, False, mode) is False  # the mod's


@pytest.mark.parametrize("stack", ["secagg", "paillier"])
@pytest.mark.parametrize("opt_in", ["none", "node", "server"])
def test_evaluate_losses_rebuild_a_vector_unless_the_node_refuses(
    pki: Path, material: Path, stack: str, opt_in: str
) -> None:
    """The server evaluates ``M + 1`` models of its choice at the victim: ``loss(0) - loss(e_i) + 1 = 2 x_i``
    gives the victim's vector exactly. Only a node that opts in to metrics in the clear
    (``node_config["privagg-send-metrics"]``, as for its fit metrics) answers; the run config cannot opt it in."""
    flag = {"privagg-send-metrics": True}
    grid = _grid(_mods(stack, pki, material), node=flag if opt_in == "node" else None, run=flag)
    losses = []
    for i in range(-1, M):
        w = np.zeros(M, dtype=np.float32)
        if i >= 0:
            w[i] = 1.0
        ins = EvaluateIns(ndarrays_to_parameters([w]), {"round": 1})
        reply = _ask(grid, MessageType.EVALUATE, compat.evaluateins_to_recorddict(ins, keep_input=True))
        if opt_in != "node":
            assert reply.has_error() and "evaluate message" in reply.error.reason
            return
        losses.append(compat.recorddict_to_evaluateres(reply.content).loss)
    rebuilt = (losses[0] - np.array(losses[1:]) + 1.0) / 2.0
    np.testing.assert_allclose(rebuilt, client_vector(SEED, 1, VICTIM, M), atol=1e-9)


@pytest.mark.parametrize("opt_in", [False, True])
def test_federated_evaluation_after_a_secure_round_reaches_only_nodes_that_opt_in(pki: Path, opt_in: bool) -> None:
    """Flower's own evaluate workflow after a secure-aggregation round: by default every active node refuses
    (the strategy sees failures, no per-node loss, and the run goes on); nodes that opt in to metrics in the
    clear answer with their losses and eval-set sizes."""
    seen: list[tuple[list[Any], list[Any]]] = []

    def wrap(strategy: Any) -> Any:
        inner = strategy.aggregate_evaluate

        def aggregate_evaluate(rnd: int, results: list[Any], failures: list[Any]) -> Any:
            seen.append((results, failures))
            return inner(rnd, results, failures)

        strategy.aggregate_evaluate = aggregate_evaluate
        return strategy

    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=N - 1, threshold=3, pki=str(pki)))
    sapp = vector_server_app(wf, num_clients=N, dimension=M, evaluate=True, wrap_strategy=wrap)
    node = (lambda pid: {"privagg-send-metrics": True}) if opt_in else None
    capp = vector_client_app(dimension=M, seed=SEED, mods=[make_secagg_mod(pki=str(pki), policy=TEST_POLICY)])
    run_inprocess(sapp, capp, num_nodes=N, node_config=node, run_config={"privagg-send-metrics": True})
    assert wf.history[0].ok
    ((results, failures),) = seen
    if opt_in:
        assert len(results) == N and not failures
        assert sorted(r.metrics["pid"] for _, r in results) == list(range(N))
    else:
        assert results == [] and len(failures) == N


@pytest.mark.parametrize("opt_out", [False, True])
def test_get_parameters_is_refused(pki: Path, material: Path, opt_out: bool) -> None:
    """A get-parameters message returns the model the client holds (here its vector)."""
    grid = _grid(_mods("secagg+paillier", pki, material), node={"privagg-secure-only": False} if opt_out else None)
    content = compat.getparametersins_to_recorddict(GetParametersIns({"round": 1}))
    reply = _ask(grid, MessageTypeLegacy.GET_PARAMETERS, content)
    if not opt_out:
        assert reply.has_error() and "get-parameters" in reply.error.reason
    else:
        got = parameters_to_ndarrays(compat.recorddict_to_getparametersres(reply.content, keep_input=True).parameters)
        np.testing.assert_array_equal(got[0], client_vector(SEED, 1, VICTIM, M))


@pytest.mark.parametrize(
    ("stack", "forged"),
    [
        ("secagg", (PAILLIER_RECORD, {"stage": "contribute", "setup": b"\x00" * 8})),
        ("paillier", (RECORD, {"stage": "delivery", "msg": b"\x00" * 8})),
    ],
)
def test_a_forged_record_of_a_protocol_the_node_does_not_run_releases_nothing(
    pki: Path, material: Path, stack: str, forged: tuple[str, dict[str, Any]]
) -> None:
    """A plain fit dressed as the other protocol's round: the mod passes it on (a mod further in may run that
    protocol), but none does, so the user's fit runs and the mod refuses its reply: nothing leaves the node."""
    content = _plain_fit()
    content[forged[0]] = ConfigRecord(forged[1])
    reply = _ask(_grid(_mods(stack, pki, material)), MessageType.TRAIN, content)
    assert reply.has_error() and "no privagg mod on this node ran" in reply.error.reason


def test_the_dp_mod_alone_ignores_a_roster_floor_the_server_wrote(pki: Path, material: Path) -> None:
    """A node running only the DP mod (no secure sum: its noise must be whole) gets a fit asking for 5 noise
    shares with a forged roster and floor of 5: it would add a fifth of the noise variance and answer in the
    clear. The fields count only inside a round a privagg mod runs: refused."""
    dp = {DP_KEYS["clip"]: 1.0, DP_KEYS["z"]: 1.0, DP_KEYS["z_count"]: 0.0, DP_KEYS["shares"]: N}
    dp |= {DP_KEYS["factor"]: 2.0, DP_KEYS["resolution"]: 1000.0, DP_KEYS["adaptive"]: False}
    reply = _ask(
        _grid([make_dp_mod(min_noise_multiplier=0.5, max_shares=N)]),
        MessageType.TRAIN,
        _plain_fit({**dp, ROSTER_KEY: N, MIN_SURVIVORS_KEY: N}),
    )
    assert reply.has_error() and "without a verified roster" in reply.error.reason


@pytest.mark.parametrize("kind", ["train.default", "train.local", "evaluate.default"])
def test_a_message_type_with_an_action_is_judged_by_its_category(pki: Path, kind: str) -> None:
    """Flower's message API routes ``"train.<action>"`` to the app's ``@app.train(action)`` function (``"default"``:
    plain ``@app.train()``), through the same mods. A server that spells its plain fit ``"train.default"`` must
    not get around the refusal (old code compared the type with ``"train"`` and passed it on: the update left)."""
    from flwr.app import ArrayRecord, MetricRecord
    from flwr.clientapp import ClientApp

    app = ClientApp(mods=[make_secagg_mod(pki=str(pki), policy=TEST_POLICY)])

    def answer(msg: Message, ctxt: Any) -> Message:
        x = client_vector(SEED, 1, int(ctxt.node_config["partition-id"]), M)
        return Message(RecordDict({"arrays": ArrayRecord([x]), "metrics": MetricRecord({"n": 1000})}), reply_to=msg)

    app.train()(answer)
    app.train("local")(answer)
    app.evaluate()(answer)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 7, SUPERLINK_NODE_ID
    grid = InProcessGrid(app, num_nodes=N, run_id=7)
    reply = _ask(grid, kind, RecordDict({"arrays": ArrayRecord([np.zeros(M, dtype=np.float32)])}))
    assert reply.has_error()
    assert ("outside secure aggregation" if kind.startswith("train") else "evaluate message") in reply.error.reason


# ------------------------------------------------------------------ stacked mods still run real rounds
@pytest.mark.parametrize("stack", ["secagg+paillier+dp", "paillier+secagg"])
def test_stacked_mods_run_a_secure_aggregation_round(pki: Path, material: Path, stack: str) -> None:
    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=N - 1, threshold=3, pki=str(pki)))
    run_inprocess(
        vector_server_app(wf, num_clients=N, dimension=M),
        vector_client_app(dimension=M, seed=SEED, mods=_mods(stack, pki, material)),
        num_nodes=N,
    )
    rec = wf.history[0]
    assert rec.ok and len(rec.survivors) == N, (rec.abort, rec.node_errors)
    np.testing.assert_allclose(rec.aggregate[0], expected_mean(SEED, 1, range(N), M), atol=1e-3)


def test_the_example_stack_runs_a_client_dp_round_inside_secure_aggregation(pki: Path, material: Path) -> None:
    """``[secagg, paillier, dp]`` (the example's mod list) with DP on: the Paillier mod passes the secure round
    on, the DP mod sees the roster the secure-aggregation mod verified and adds its share."""
    config = SecAggWorkflowConfig.manual(degree=N - 1, threshold=3, weighting="uniform", pki=str(pki))

    def wrap(strategy: Any) -> Any:
        floor = lambda n: config.params_for(n).min_survivors(n)  # noqa: E731
        return PrivAggDPStrategy(strategy, noise_multiplier=1e-3, clip_norm=CLIP, min_survivors=floor)

    wf = PrivAggSecAggWorkflow(config)
    sapp = vector_server_app(wf, num_clients=N, dimension=M, wrap_strategy=wrap)
    capp = vector_client_app(dimension=M, seed=SEED, mods=_mods("secagg+paillier+dp", pki, material))
    run_inprocess(sapp, capp, num_nodes=N)
    rec = wf.history[0]
    assert rec.ok and len(rec.survivors) == N, (rec.abort, rec.node_errors)


@pytest.mark.parametrize("stack", ["secagg+paillier+dp", "paillier+secagg"])
def test_stacked_mods_run_a_paillier_round(pki: Path, material: Path, stack: str) -> None:
    wf = PrivAggPaillierWorkflow(PaillierWorkflowConfig.from_folder(material))
    capp = vector_client_app(dimension=M, seed=SEED, mods=_mods(stack, pki, material))
    grid = run_inprocess(vector_server_app(wf, num_clients=N, dimension=M), capp, num_nodes=N)
    rec = wf.history[0]
    assert rec.ok, (rec.abort, rec.node_errors)
    assert sorted(grid.partition_of[n] for n in rec.contributors) == list(range(K, N))
    np.testing.assert_allclose(rec.aggregate[0], expected_mean(SEED, 1, range(K, N), M), atol=1e-3)


def test_a_paillier_contribute_message_stripped_of_its_record_leaks_nothing(material: Path) -> None:
    """In a live Paillier round the server strips the record from the victim's contribute message (a plain fit):
    the victim refuses, the others' round completes without it."""
    leaked: list[int] = []

    def intercept(pid: int, msg: Message) -> list[Message]:
        cfg = msg.content.config_records.get(PAILLIER_RECORD)
        if pid == VICTIM and cfg is not None and cfg.get("stage") == "contribute":
            msg.content.pop(PAILLIER_RECORD)
        return [msg]

    def outer(msg: Message, ctxt: Any, call_next: Callable[..., Message]) -> Message:
        out = call_next(msg, ctxt)
        if out.has_content() and any(len(a) for a in out.content.array_records.values()):
            leaked.append(int(ctxt.node_config["partition-id"]))
        return out

    wf = PrivAggPaillierWorkflow(PaillierWorkflowConfig.from_folder(material))
    capp = vector_client_app(
        dimension=M, seed=SEED, mods=[outer, make_paillier_mod(material=str(material), decryptors=range(K))]
    )
    grid = run_inprocess(vector_server_app(wf, num_clients=N, dimension=M), capp, num_nodes=N, intercept=intercept)
    rec = wf.history[0]
    assert leaked == []
    victim = next(n for n, p in grid.partition_of.items() if p == VICTIM)
    assert "outside secure aggregation" in rec.node_errors[victim]
    assert rec.ok and sorted(grid.partition_of[n] for n in rec.contributors) == [p for p in range(K, N) if p != VICTIM]


# ------------------------------------------------------------------ DP inside Paillier: the decryptors' floor
def _paillier_dp_round(material: Path, forge: bool) -> PrivAggPaillierWorkflow:
    def wrap(strategy: Any) -> Any:
        dp = PrivAggDPStrategy(strategy, noise_multiplier=1e-3, clip_norm=CLIP, min_survivors=2)
        if forge:  # a malicious strategy: more shares than the decryptors' floor, and a forged floor to match
            plan = dp.configure_fit

            def configure_fit(rnd: int, parameters: Any, manager: Any) -> list[tuple[Any, FitIns]]:
                extra = {DP_KEYS["shares"]: 3, ROSTER_KEY: 3, MIN_SURVIVORS_KEY: 3}
                return [(p, FitIns(fi.parameters, {**fi.config, **extra})) for p, fi in plan(rnd, parameters, manager)]

            dp.configure_fit = configure_fit  # type: ignore[method-assign]
        return dp

    wf = PrivAggPaillierWorkflow(PaillierWorkflowConfig.from_folder(material, weighting="uniform"))
    mods = [
        make_paillier_mod(material=str(material), decryptors=range(K)),
        make_dp_mod(min_noise_multiplier=1e-3, max_shares=N),
    ]
    sapp = vector_server_app(wf, num_clients=N, dimension=M, wrap_strategy=wrap)
    run_inprocess(sapp, vector_client_app(dimension=M, seed=SEED, mods=mods), num_nodes=N)
    return wf


def test_client_dp_inside_paillier_splits_its_noise_over_the_decryptors_floor_only(material: Path) -> None:
    """A DP mod inside the Paillier mod bounds its noise shares by the fewest contributions the decryptors
    decrypt (the provisioned ``min_clients``, set by the Paillier mod from the node's own material). Honest:
    the round runs with 2 shares. A server asking for 3 shares, with a roster and floor of 3 written into the
    fit config, is refused: it could decrypt a sum of 2 carrying sqrt(2/3) of the noise."""
    honest = _paillier_dp_round(material, forge=False).history[0]
    assert honest.ok, (honest.abort, honest.node_errors)
    forged = _paillier_dp_round(material, forge=True).history[0]
    assert not forged.ok and forged.aggregate is None
    errors = [e for e in forged.node_errors.values() if e.startswith("contribute")]
    assert len(errors) == N - K and all("release a sum of 2 survivors" in e for e in errors)
