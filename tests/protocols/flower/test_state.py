"""A party kept in a node's ``Context.state`` between messages (``protocols.flower._state``).

The state is the truth: the process-local cache of live parties is used only when the version in
the node's state is the one it was saved under, a message that fails half-way leaves no cache
entry, and a round survives a process change before every message (the cache emptied, the
state serialised and restored) with the same result. The party is read back only from the
node's own state, never from a message.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from privagg.errors import ProtocolAbort
from protocols.flower import PrivAggSecAggWorkflow, SecAggWorkflowConfig, _state, create_identities, make_secagg_mod
from protocols.flower._state import PartyStore, _rebuild, dump_party, load_party
from protocols.flower.apps import expected_mean, vector_client_app, vector_server_app
from protocols.flower.inproc import run_inprocess
from protocols.flower.secagg import _STORE, RECORD, STATE_RECORD
from secagg.messages import KeyAdvertisement, KeyRoster
from secagg.params import SecAggParams, ThreatModel
from tests.protocols.flower.node_policy import policy_for

logging.getLogger("flwr").setLevel(logging.WARNING)

N, M, SEED, CLIP = 8, 40, 11, 8.0


@dataclasses.dataclass
class Party:
    """A stand-in party (the store keeps any picklable type it is told)."""

    value: int
    keys: list[Any] = dataclasses.field(default_factory=list)


class _Short:
    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (KeyAdvertisement, (1, 2))


def _ctx(run_id: int = 1, node_id: int = 7) -> Context:
    return Context(run_id=run_id, node_id=node_id, node_config={}, state=RecordDict(), run_config={})


def test_keys_and_slotted_dataclasses_survive_the_blob() -> None:
    x, e = x25519.X25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    keys = {"enc_public_key": b"e" * 32, "mask_public_key": b"m" * 32}
    adv = KeyAdvertisement(round=3, client_id=5, config_hash=b"h" * 32, **keys)
    params = SecAggParams.manual(num_clients=10, degree=6, threshold=5, threat=ThreatModel.SEMI_HONEST)
    back = load_party(dump_party({"x": x, "e": e, "adv": adv, "params": params, "v": np.arange(5, dtype=np.uint32)}))
    assert back["x"].private_bytes_raw() == x.private_bytes_raw()
    assert back["e"].private_bytes_raw() == e.private_bytes_raw()
    assert back["adv"] == adv and type(back["adv"]) is KeyAdvertisement
    assert back["params"] == params
    assert back["v"].dtype == np.uint32 and back["v"].tolist() == [0, 1, 2, 3, 4]


def test_a_rebuilt_dataclass_must_match_its_fields() -> None:
    blob = dump_party(KeyAdvertisement(round=1, client_id=1, config_hash=b"", enc_public_key=b"", mask_public_key=b""))
    assert isinstance(load_party(blob), KeyAdvertisement)
    short = pickle.dumps(_Short(), protocol=5)  # a KeyAdvertisement state with two of its fields
    with pytest.raises(pickle.UnpicklingError, match="does not match its fields"):
        load_party(short)
    store, ctx = PartyStore("s", Party), _ctx()
    ctx.state["s"] = ConfigRecord({"party": short, "version": b"v" * 16})
    with pytest.raises(ProtocolAbort, match="corrupt node state"):
        store.take(ctx)
    ctx.state["s"] = ConfigRecord({"party": dump_party(("not", "a", "party")), "version": b"v" * 16})
    with pytest.raises(ProtocolAbort, match="corrupt node state"):
        store.take(ctx)
    ctx.state["s"] = ConfigRecord({"party": b"\x80\x05garbage", "version": b"v" * 16})
    with pytest.raises(ProtocolAbort, match="corrupt node state"):
        store.take(ctx)


def test_the_cache_is_used_only_for_the_version_in_the_state() -> None:
    store, ctx = PartyStore("s", Party), _ctx()
    a = Party(1)
    store.save(ctx, a)
    assert store.take(ctx) is a and store.hits == 1  # same version: the live party
    a.value = 2
    store.save(ctx, a)
    older = ctx.state["s"]
    store.take(ctx)
    a.value = 3
    store.save(ctx, a)  # version 3 in the cache and the state
    ctx.state["s"] = older  # the state rolled back (e.g. another process's older copy)
    got = store.take(ctx)
    assert got is not a and got.value == 2 and store.restores == 1  # restored from the state, not the cache


def test_a_foreign_state_of_the_same_node_never_gets_the_cached_party() -> None:
    store = PartyStore("s", Party)
    mine, theirs = _ctx(), _ctx()  # same run and node ids, different states
    store.save(theirs, Party(9))
    store.save(mine, Party(1))  # the cache now holds mine's version
    got = store.take(theirs)
    assert got.value == 9 and store.hits == 0
    assert store.take(mine).value == 1  # mine's entry was evicted by the take of theirs: restored
    assert store.restores == 2


def test_a_message_that_fails_half_way_restores_the_state_as_it_was() -> None:
    store, ctx = PartyStore("s", Party), _ctx()
    store.save(ctx, Party(1))
    live = store.take(ctx)
    live.value = 99  # mutated by a message that then fails: never saved
    again = store.take(ctx)
    assert again is not live and again.value == 1


def test_cache_bounds_evict_to_the_state() -> None:
    store = PartyStore("s", Party, max_entries=2)
    ctxs = [_ctx(node_id=i) for i in range(3)]
    for i, c in enumerate(ctxs):
        store.save(c, Party(i))
    assert [store.take(c).value for c in ctxs] == [0, 1, 2]
    assert store.hits == 2 and store.restores == 1  # the oldest was evicted
    big = PartyStore("s", Party, max_bytes=10)
    big.save(ctxs[0], Party(5, keys=list(range(100))))
    assert big.take(ctxs[0]).value == 5 and big.hits == 0


def test_drop_forgets_state_and_cache() -> None:
    store, ctx = PartyStore("s", Party), _ctx()
    store.save(ctx, Party(1))
    store.drop(ctx)
    assert "s" not in ctx.state
    with pytest.raises(ProtocolAbort, match="no protocol round in progress"):
        store.take(ctx)


def test_the_party_is_never_read_from_a_message(tmp_path: Path) -> None:
    """A message carrying a party blob (under the state record's name) is not a node state."""
    node = _ctx()
    store = PartyStore(STATE_RECORD, Party)
    donor = _ctx(node_id=8)
    store.save(donor, Party(1))
    mod = make_secagg_mod(threat="semi-honest")
    content = RecordDict(
        {
            RECORD: ConfigRecord({"stage": "roster", "msg": bytes([0, 0, 0, KeyRoster.TYPE]) + bytes(8)}),
            STATE_RECORD: donor.state[STATE_RECORD],
        }
    )
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID  # as the engines do
    msg = Message(content, dst_node_id=7, message_type=MessageType.TRAIN, group_id="1")
    msg.metadata.__dict__["_message_id"] = "m1"  # as received
    with pytest.raises(ProtocolAbort, match="no protocol round in progress"):
        mod(msg, node, lambda m, c: m)
    assert STATE_RECORD not in node.state


def _process_change(msg: Message, ctxt: Context, call_next: Any) -> Message:
    """Before every message: a new process (no cached party) and a state that went through bytes."""
    _STORE.clear_cache()
    ctxt.state = pickle.loads(pickle.dumps(ctxt.state))
    return call_next(msg, ctxt)


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
def test_a_round_survives_a_process_change_before_every_message(threat: str, tmp_path: Path) -> None:
    create_identities(tmp_path, range(N))
    pki = str(tmp_path) if threat == "active" else None
    results = {}
    for change in (False, True):
        wf = PrivAggSecAggWorkflow(
            SecAggWorkflowConfig.manual(
                degree=7, threshold=5, threat=ThreatModel.parse(threat), clipping_range=CLIP, pki=pki
            )
        )
        mods = [_process_change] if change else []
        capp = vector_client_app(
            dimension=M, seed=SEED, mods=[*mods, make_secagg_mod(threat=threat, pki=pki, policy=policy_for(threat))]
        )
        hits, restores = _STORE.hits, _STORE.restores
        grid = run_inprocess(vector_server_app(wf, num_clients=N, dimension=M, rounds=2), capp, num_nodes=N)
        results[change] = (_STORE.hits - hits, _STORE.restores - restores)
        for rec in wf.history:
            assert rec.ok and rec.params is not None and rec.aggregate is not None, rec.abort
            pids = sorted(grid.partition_of[n] for n in rec.survivors)
            assert len(pids) == N
            step = CLIP / ((1 << (rec.params.value_bits - 1)) - 1)
            assert np.max(np.abs(rec.aggregate[0] - expected_mean(SEED, rec.round, pids, M))) < step
        assert all(STATE_RECORD not in c.state for c in grid.contexts.values())  # finished rounds leave nothing
    stages = 4 if threat == "semi-honest" else 6  # messages after the setup, per node and round
    assert results[False] == (2 * N * stages, 0)  # one process: every party from the cache
    assert results[True] == (0, 2 * N * stages)  # a process change before every message: every one restored


def test_a_shipped_store_is_the_receiving_process_own() -> None:
    """Ray pickles the ClientApp and its mods: the store arrives as that process's store, without this
    process's cache (nor its lock)."""
    assert pickle.loads(pickle.dumps(_STORE)) is _STORE
    fresh, ctx = PartyStore("test-state-shipped", Party), _ctx()
    fresh.save(ctx, Party(1))
    blob = pickle.dumps(fresh)
    assert pickle.loads(blob) is fresh  # the first store of a record is the process's
    del _state._STORES["test-state-shipped"]  # as in another process
    shipped = pickle.loads(blob)
    assert shipped is not fresh and shipped.take(ctx).value == 1
    assert (shipped.hits, shipped.restores) == (0, 1)  # no cache came with it: restored from the state
