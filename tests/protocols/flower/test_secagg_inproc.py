"""privagg secure aggregation over Flower messages, on the in-process grid (no Ray).

Correctness: the aggregate equals the plain mean of the clients that survived, within the
quantisation bound (one step ``clip / q`` of the mean, since every client has weight 1),
with clients dropping mid-round (after key sharing, before masking; at unmasking; silent
nodes). Safety: below the threshold the round aborts cleanly and the model is unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType

from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from protocols.flower import (
    PrivAggSecAggWorkflow,
    SecAggWorkflowConfig,
    create_identities,
    load_identity,
    make_secagg_mod,
)
from protocols.flower.apps import dropout_mod, expected_mean, vector_client_app, vector_server_app
from protocols.flower.inproc import run_inprocess
from protocols.flower.secagg import RECORD
from tests.protocols.flower.clear_metadata import OPT_INS, check_clear_metadata, opt_in_configs, record_replies
from tests.protocols.flower.node_policy import TEST_POLICY, policy_for

logging.getLogger("flwr").setLevel(logging.WARNING)

N, M, SEED = 8, 40, 7
CLIP = 8.0


def _run(threat: str, pki: Path | None, *, mods=(), drop=None, rounds=1, degree=7, threshold=5, timeout=None):
    screening = str(pki) if pki is not None and threat == "active" else None  # the server's directory
    cfg = SecAggWorkflowConfig.manual(
        degree=degree, threshold=threshold, threat=threat, clipping_range=CLIP, timeout=timeout, pki=screening
    )
    wf = PrivAggSecAggWorkflow(cfg)
    capp = vector_client_app(
        dimension=M,
        seed=SEED,
        mods=[*mods, make_secagg_mod(threat=threat, pki=str(pki) if pki else None, policy=policy_for(threat))],
    )
    grid = run_inprocess(vector_server_app(wf, num_clients=N, dimension=M, rounds=rounds), capp, num_nodes=N, drop=drop)
    return wf, grid


def _check_mean(wf, grid):
    for rec in wf.history:
        assert rec.ok, rec.abort
        pids = sorted(grid.partition_of[n] for n in rec.survivors)
        exp = expected_mean(SEED, rec.round, pids, M)
        step = CLIP / ((1 << (rec.params.value_bits - 1)) - 1)
        assert np.max(np.abs(rec.aggregate[0] - exp)) < step  # quantisation bound of the mean (unit weights)
        assert rec.total_weight == pytest.approx(len(pids), abs=len(pids) * step)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    create_identities(d, range(N))
    return d


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
def test_mean_of_survivors_with_mid_round_dropouts(threat: str, pki: Path) -> None:
    mods = [dropout_mod(partitions=[1], stage="delivery"), dropout_mod(partitions=[4], stage="unmask")]
    wf, grid = _run(threat, pki, mods=mods, rounds=2)
    _check_mean(wf, grid)
    for rec in wf.history:
        surv = {grid.partition_of[n] for n in rec.survivors}
        assert surv == set(range(N)) - {1}  # 4 sent its masked input: it is in the sum
        assert {grid.partition_of[n] for n in rec.dropped} == {1}


def test_silent_node_is_dropped(pki: Path) -> None:
    """Partition 0 dies after key sharing: its messages are lost, no reply at all."""

    def drop(pid: int, msg: Message) -> bool:
        cfg = msg.content.config_records.get(RECORD)
        return pid == 0 and cfg is not None and cfg.get("stage") in ("delivery", "consistency", "unmask")

    wf, grid = _run("active", pki, drop=drop)
    _check_mean(wf, grid)
    assert {grid.partition_of[n] for n in wf.history[0].dropped} == {0}


def test_below_threshold_aborts_cleanly(pki: Path) -> None:
    wf, _grid = _run("active", pki, mods=[dropout_mod(partitions=[0, 1, 2], stage="delivery")])
    rec = wf.history[0]
    assert not rec.ok and rec.aggregate is None
    assert "threshold" in (rec.abort or "")


def test_client_refuses_downgrade(pki: Path) -> None:
    """An active client never joins a semi-honest round (no signatures, no checks)."""
    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=7, threshold=5, threat="semi-honest"))
    capp = vector_client_app(
        dimension=M, seed=SEED, mods=[make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY)]
    )
    run_inprocess(vector_server_app(wf, num_clients=N, dimension=M), capp, num_nodes=N)
    rec = wf.history[0]
    assert not rec.ok
    assert len(rec.node_errors) == N and all("requires active" in e for e in rec.node_errors.values())


def test_mod_passes_other_messages_through() -> None:
    mod = make_secagg_mod(threat="semi-honest")
    msg = Message(RecordDict({"x": ConfigRecord({"a": 1})}), 5, MessageType.EVALUATE, group_id="1")
    ctx = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    sentinel = Message(RecordDict(), reply_to=_as_received(msg))
    assert mod(_as_received(msg), ctx, lambda m, c: sentinel) is sentinel


def _as_received(msg: Message) -> Message:
    msg.metadata.__dict__["_message_id"] = "m1"
    return msg


def test_mod_rejects_malformed_records() -> None:
    mod = make_secagg_mod(threat="semi-honest")
    ctx = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    for cfg in ({"stage": "setup", "msg": b"\x00"}, {"stage": "nope", "msg": b"PS\x01\x01"}, {"stage": "setup"}):
        msg = _as_received(Message(RecordDict({RECORD: ConfigRecord(cfg)}), 5, MessageType.TRAIN, group_id="1"))
        with pytest.raises(InvalidMessage):
            mod(msg, ctx, lambda m, c: pytest.fail("fit must not run"))
    # a later stage without a round in progress
    msg = _as_received(
        Message(RecordDict({RECORD: ConfigRecord({"stage": "unmask", "msg": b"PS\x01\x09"})}), 5, "train", group_id="1")
    )
    with pytest.raises(ProtocolAbort):
        mod(msg, ctx, lambda m, c: pytest.fail("fit must not run"))


def test_pki_roundtrip_and_errors(tmp_path: Path) -> None:
    directory = create_identities(tmp_path, [3, 9])
    key, d = load_identity(tmp_path, 9)
    assert d == directory and key.public_key().public_bytes_raw() == directory[9]
    with pytest.raises(ConfigurationError):
        load_identity(tmp_path, 4)
    (tmp_path / "client-3.key").write_bytes(b"\x01" * 32)  # key no longer matches the directory
    with pytest.raises(ConfigurationError):
        load_identity(tmp_path, 3)
    (tmp_path / "directory.json").write_text("{not json")
    with pytest.raises(ConfigurationError):
        load_identity(tmp_path, 9)


@pytest.mark.parametrize(
    "settings",
    [
        {"degree": 4},  # without a threshold
        {"clipping_range": 0.0},
        {"weighting": "median"},
        {"max_weight": 0.0},
        {"timeout": 0.0},
        {"dropout_rate": 1.0},
        {"value_bits": 1},
        {"modulus_bits": 63},
        {"threat": "semi-honest", "pki": "/keys"},  # semi-honest clients do not sign: nothing to screen
        {"threat": "byzantine"},
    ],
)
def test_workflow_config_validates_settings(settings) -> None:
    with pytest.raises(ConfigurationError):
        SecAggWorkflowConfig(**settings)


def test_workflow_config_named_constructors(pki: Path) -> None:
    manual = SecAggWorkflowConfig.manual(degree=7, threshold=5, threat="semi-honest", weighting="uniform")
    assert (manual.degree, manual.threshold, manual.threat.value, manual.weighting) == (7, 5, "semi-honest", "uniform")
    p = manual.params_for(8)
    assert (p.num_clients, p.degree, p.threshold, p.value_bits) == (8, 7, 5, 23)
    with pytest.raises(ConfigurationError):  # 4 neighbours at most: a threshold of 5 is out of reach
        manual.params_for(5)
    derived = SecAggWorkflowConfig.derive(dropout_rate=0.05, failure_bits=8)
    assert derived == SecAggWorkflowConfig(dropout_rate=0.05, failure_bits=8)
    assert derived.degree is None and derived.params_for(12).num_clients == 12
    assert SecAggWorkflowConfig.manual(degree=6, threshold=4, modulus_bits=32).params_for(10).modulus_bits == 32
    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig(pki=str(pki)))  # the defaults: active, derived graph
    assert wf.config.degree is None and wf.codec.slot_scale == wf.config.clipping_range


def test_active_workflow_without_a_pki_is_refused_unless_unscreened_on_purpose(tmp_path: Path) -> None:
    """Issue 12: an active server with no directory screens nothing (one client claiming an id it has no
    key for aborts every honest client): refused, with the fix named; allowed only explicitly."""
    with pytest.raises(ConfigurationError, match="pki") as e:
        PrivAggSecAggWorkflow()  # the defaults are active
    assert e.value.field == "pki" and "screen_senders=False" in str(e.value.accepted)
    wf = PrivAggSecAggWorkflow(screen_senders=False)  # an explicit study of an unscreened server
    assert wf.directory is None
    with pytest.raises(ConfigurationError, match="screen_senders"):
        PrivAggSecAggWorkflow(SecAggWorkflowConfig(pki=str(tmp_path)), screen_senders=False)
    semi = PrivAggSecAggWorkflow(SecAggWorkflowConfig(threat="semi-honest"))  # nothing to screen with
    assert semi.directory is None


@pytest.mark.parametrize("opt_in", OPT_INS)
def test_a_training_node_sends_no_weight_or_metric_in_the_clear(opt_in: str) -> None:
    """Beside its masked vector, a node's training reply carries its ``FitRes`` status and ``num_examples = 1``
    (its weight travels inside the secure sum) and no metrics, unless the node itself opts in
    (``node_config["privagg-send-metrics"]``); the server's run config cannot turn it on. Old code:
    ``num_examples = 1000`` and ``{"pid": ...}`` in the clear. The mean is unchanged."""
    seen, inspect = record_replies(RECORD, "delivery")
    cfg = SecAggWorkflowConfig.manual(degree=7, threshold=5, threat="semi-honest", clipping_range=CLIP)
    wf = PrivAggSecAggWorkflow(cfg)
    capp = vector_client_app(dimension=M, seed=SEED, mods=[inspect, make_secagg_mod(threat="semi-honest")])
    grid = run_inprocess(vector_server_app(wf, num_clients=N, dimension=M), capp, num_nodes=N, **opt_in_configs(opt_in))
    _check_mean(wf, grid)
    check_clear_metadata(
        seen, count=N, opt_in=opt_in, fit_metrics=wf.history[0].fit_metrics, partition_of=grid.partition_of
    )
