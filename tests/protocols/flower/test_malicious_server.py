"""A malicious server (or network) between privagg's workflow and privagg's client mod.

Each attack rewrites protocol messages in flight (the in-process grid's ``intercept``) and
records every reply the client mods send. The four protocol attacks of ``attacks/protocol.py``
(model-inconsistency, sybil-isolation, fake-dropout, both-shares; there they drive the state
machines directly, here they go through Flower against privagg's mod), plus a split survivor
set and a forged key, all try to make one victim's masked input unmask alone. They must
fail: the mods abort, and the victim's shares are never revealed in a combination that
unmasks it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message

from protocols.flower import PrivAggSecAggWorkflow, SecAggWorkflowConfig, create_identities, make_secagg_mod
from protocols.flower.apps import vector_client_app, vector_server_app
from protocols.flower.inproc import run_inprocess
from protocols.flower.secagg import RECORD
from secagg.messages import (
    ConsistencyRequest,
    KeyAdvertisement,
    KeyRoster,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
)
from tests.protocols.flower.adverts import reply_recorder
from tests.protocols.flower.node_policy import TEST_POLICY, policy_for

logging.getLogger("flwr").setLevel(logging.WARNING)

N, M, VICTIM = 8, 16, 0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    create_identities(d, range(N))
    return d


def _attack(threat: str, pki: Path, rewrite: Callable[[int, object], object | None]):
    """Run one round; ``rewrite(dst_partition, message)`` returns a replacement message (or None)."""
    revealed, recorder = reply_recorder(UnmaskResponse)

    def intercept(pid: int, msg: Message) -> list[Message]:
        cfg = msg.content.config_records.get(RECORD)
        if cfg is not None:
            new = rewrite(pid, decode_message(cfg["msg"]))
            if new is not None:
                msg.content.config_records[RECORD] = ConfigRecord({**dict(cfg), "msg": new.encode()})
        return [msg]

    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=7, threshold=5, threat=threat), screen_senders=False)
    capp = vector_client_app(
        dimension=M, seed=1, mods=[recorder, make_secagg_mod(threat=threat, pki=str(pki), policy=policy_for(threat))]
    )
    run_inprocess(vector_server_app(wf, num_clients=N, dimension=M), capp, num_nodes=N, intercept=intercept)
    return wf.history[0], revealed


def _victim_exposed(revealed: list[UnmaskResponse]) -> bool:
    """True if the server got both kinds of shares of the victim (its input would unmask alone)."""
    self_sh = sum(1 for r in revealed for s in r.self_shares if s.owner == VICTIM)
    key_sh = sum(1 for r in revealed for s in r.key_shares if s.owner == VICTIM)
    return self_sh > 0 and key_sh > 0


def _exposed(revealed: list[UnmaskResponse], t: int = 5) -> bool:
    """Could the server unmask the victim alone: t self shares plus t key shares of it, or of all others."""
    self_sh = sum(1 for r in revealed for s in r.self_shares if s.owner == VICTIM)
    key = {}
    for r in revealed:
        for s in r.key_shares:
            key[s.owner] = key.get(s.owner, 0) + 1
    others = [c for c in range(N) if c != VICTIM]
    return self_sh >= t and (key.get(VICTIM, 0) >= t or all(key.get(c, 0) >= t for c in others))


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
def test_fake_dropout(threat: str, pki: Path) -> None:
    """Everybody is told that all clients but the victim dropped."""

    def rewrite(dst: int, m: object) -> object | None:
        others = tuple(c for c in range(N) if c != VICTIM)
        if isinstance(m, ConsistencyRequest):
            return ConsistencyRequest(m.round, m.session_id, (VICTIM,))
        if isinstance(m, UnmaskRequest):
            return UnmaskRequest(m.round, m.session_id, (VICTIM,), others, m.signatures)
        return None

    rec, revealed = _attack(threat, pki, rewrite)
    assert not rec.ok and revealed == [] and not _exposed(revealed)


def test_both_shares_active(pki: Path) -> None:
    def rewrite(dst: int, m: object) -> object | None:
        if isinstance(m, UnmaskRequest):
            return UnmaskRequest(m.round, m.session_id, m.survivors, (*m.dropped, VICTIM), m.signatures)
        return None

    rec, revealed = _attack("active", pki, rewrite)
    assert not rec.ok and revealed == []


def test_model_inconsistency_active(pki: Path) -> None:
    """The victim is sent a setup for another model than everybody else (Pasquini et al. 2022)."""
    from secagg.messages import RoundSetup

    def rewrite(dst: int, m: object) -> object | None:
        if isinstance(m, RoundSetup) and dst == VICTIM:
            return RoundSetup(m.round, m.params, m.dimension, bytes(32))
        return None

    rec, revealed = _attack("active", pki, rewrite)
    assert not rec.ok and revealed == []
    assert any("different configuration or model" in e for e in rec.node_errors.values())


def test_sybil_isolation_active(pki: Path) -> None:
    """The victim's roster holds only itself and server-made Sybils (not in the PKI)."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from secagg import crypto

    def rewrite(dst: int, m: object) -> object | None:
        if isinstance(m, KeyRoster) and dst == VICTIM:
            own = next(a for a in m.advertisements if a.client_id == VICTIM)
            advs = [own]
            for i in range(N - 1):
                k = ed25519.Ed25519PrivateKey.generate()
                a = KeyAdvertisement(m.round, 100 + i, own.config_hash, bytes(range(32)), bytes(range(1, 33)))
                advs.append(
                    KeyAdvertisement(
                        a.round,
                        a.client_id,
                        a.config_hash,
                        a.enc_public_key,
                        a.mask_public_key,
                        crypto.sign(k, crypto.advertisement_payload(a)),
                    )
                )
            return KeyRoster(m.round, tuple(advs))
        return None

    rec, revealed = _attack("active", pki, rewrite)
    # the victim refuses the roster and leaves; the others may finish the round without it
    victim_node = rec.node_of_client[VICTIM]
    assert "not in the identity directory" in rec.node_errors[victim_node]
    assert victim_node not in rec.survivors and not _exposed(revealed)


def test_both_shares_request_semi_honest(pki: Path) -> None:
    """The victim is listed as survivor and as dropped: hardened clients refuse to reveal."""

    def rewrite(dst: int, m: object) -> object | None:
        if isinstance(m, UnmaskRequest):
            return UnmaskRequest(m.round, m.session_id, m.survivors, (*m.dropped, VICTIM), m.signatures)
        return None

    rec, revealed = _attack("semi-honest", pki, rewrite)
    assert not rec.ok
    assert revealed == [] and not _victim_exposed(revealed)
    assert all("both as survivor and as dropped" in e for e in rec.node_errors.values())


def test_split_survivor_sets_active(pki: Path) -> None:
    """Half the clients are told the victim survived, half that it dropped; each half gets the
    unmask request matching what it signed. No side has threshold signatures: all abort."""
    half = set(range(1, N // 2 + 1))

    def rewrite(dst: int, m: object) -> object | None:
        if dst in half and isinstance(m, ConsistencyRequest):
            return ConsistencyRequest(m.round, m.session_id, tuple(c for c in m.survivors if c != VICTIM))
        if dst in half and isinstance(m, UnmaskRequest):
            surv = tuple(c for c in m.survivors if c != VICTIM)
            return UnmaskRequest(m.round, m.session_id, surv, (*m.dropped, VICTIM), m.signatures)
        return None

    rec, revealed = _attack("active", pki, rewrite)
    assert not rec.ok
    assert not _victim_exposed(revealed)
    assert not any(s.owner == VICTIM for r in revealed for s in r.key_shares)


def test_forged_roster_key_active(pki: Path) -> None:
    """The server swaps the victim's mask key for its own: the signature check fails everywhere."""

    def rewrite(dst: int, m: object) -> object | None:
        if isinstance(m, KeyRoster):
            advs = tuple(
                KeyAdvertisement(a.round, a.client_id, a.config_hash, a.enc_public_key, bytes(32), a.signature)
                if a.client_id == VICTIM and dst != VICTIM
                else a
                for a in m.advertisements
            )
            return KeyRoster(m.round, advs)
        return None

    rec, revealed = _attack("active", pki, rewrite)
    assert not rec.ok and revealed == []
    assert any("signature" in e for e in rec.node_errors.values())


@pytest.mark.parametrize("screen", [True, False])
def test_server_screens_a_client_outside_the_pki(screen: bool, pki: Path, tmp_path: Path) -> None:
    """One node advertises an id that is not in the PKI (its own self-made identity). With the
    public directory the server drops it and the round goes on; without, every honest
    client refuses the roster (a clean abort: nothing is revealed either way)."""
    rogue_pki = tmp_path / "rogue"
    create_identities(rogue_pki, [99])
    rogue = make_secagg_mod(threat="active", pki=str(rogue_pki), client_id=99, policy=TEST_POLICY)

    def squat(msg: Message, ctxt: Context, call_next):
        if int(ctxt.node_config["partition-id"]) == N - 1:
            return rogue(msg, ctxt, call_next)
        return call_next(msg, ctxt)

    cfg = SecAggWorkflowConfig.manual(degree=6, threshold=4, threat="active", pki=str(pki) if screen else None)
    wf = PrivAggSecAggWorkflow(cfg, screen_senders=screen)
    capp = vector_client_app(
        dimension=M, seed=1, mods=[squat, make_secagg_mod(threat="active", pki=str(pki), policy=TEST_POLICY)]
    )
    run_inprocess(vector_server_app(wf, num_clients=N, dimension=M), capp, num_nodes=N)
    rec = wf.history[0]
    if screen:  # the SecAggServer core screens the advertisement (the workflow only moves bytes)
        assert rec.ok, rec.abort
        assert len(rec.survivors) == N - 1 and 99 not in rec.node_of_client
        assert rec.rejected == [(99, "client 99 is not in the identity directory")]
        assert list(rec.node_errors.values()) == ["setup: client 99 is not in the identity directory"]
    else:
        assert not rec.ok
        assert any("not in the identity directory" in e for e in rec.node_errors.values())


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
def test_model_inconsistency_through_fit_instructions(threat: str, pki: Path) -> None:
    """Everybody gets the honest setup, but all clients except the victim are sent a crafted
    model to train (Pasquini et al. 2022 through the FitIns): they refuse to mask."""
    import numpy as np
    from flwr.common import ndarrays_to_parameters
    from flwr.compat.common import recorddict_compat as compat

    def intercept(pid: int, msg: Message) -> list[Message]:
        cfg = msg.content.config_records.get(RECORD)
        if cfg is not None and cfg.get("stage") == "delivery" and pid != VICTIM:
            crafted = ndarrays_to_parameters([np.full(M, -1.0, dtype=np.float32)])
            msg.content.array_records["fitins.parameters"] = compat.parameters_to_arrayrecord(crafted, True)
        return [msg]

    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=7, threshold=5, threat=threat), screen_senders=False)
    capp = vector_client_app(
        dimension=M, seed=1, mods=[make_secagg_mod(threat=threat, pki=str(pki), policy=policy_for(threat))]
    )
    run_inprocess(vector_server_app(wf, num_clients=N, dimension=M), capp, num_nodes=N, intercept=intercept)
    rec = wf.history[0]
    assert not rec.ok
    errs = list(rec.node_errors.values())
    assert len(errs) == N - 1 and all("not the model of this round" in e for e in errs)


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
def test_config_inconsistency_through_fit_instructions(threat: str, pki: Path) -> None:
    """Same model for everybody, but all clients except the victim are told to train with a
    different fit config (e.g. zero epochs): the digest covers the config, so they refuse."""
    from flwr.app import ConfigRecord as _ConfigRecord
    from flwr.compat.common import recorddict_compat as compat

    def intercept(pid: int, msg: Message) -> list[Message]:
        cfg = msg.content.config_records.get(RECORD)
        if cfg is not None and cfg.get("stage") == "delivery" and pid != VICTIM:
            fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
            crafted = {**dict(fitins.config), "local-epochs": 0}
            msg.content.config_records["fitins.config"] = _ConfigRecord(crafted)
        return [msg]

    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=7, threshold=5, threat=threat), screen_senders=False)
    capp = vector_client_app(
        dimension=M, seed=1, mods=[make_secagg_mod(threat=threat, pki=str(pki), policy=policy_for(threat))]
    )
    run_inprocess(vector_server_app(wf, num_clients=N, dimension=M), capp, num_nodes=N, intercept=intercept)
    rec = wf.history[0]
    assert not rec.ok
    errs = list(rec.node_errors.values())
    assert len(errs) == N - 1 and all("not the model of this round" in e for e in errs)


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
@pytest.mark.parametrize("field,value", [("max-weight", 1e300), ("clip", 1e-300)])
def test_server_cannot_weigh_or_clip_every_client_but_one_away(threat: str, field: str, value: float, pki: Path):
    """The weighting and the clip travel in the setup record beside the protocol message. A server that
    tells every client but the victim ``max-weight = 1e300`` (factor ~0) or ``clip = 1e-300`` (update
    clipped to ~0) would receive the victim's vector as the "sum" of a full round. Each node binds what
    it was told into the digest the core checks against the setup (``_fit_round.round_digest``), so the
    others refuse to mask. Old code: the round succeeded and its mean was the victim's update."""

    def intercept(pid: int, msg: Message) -> list[Message]:
        cfg = msg.content.config_records.get(RECORD)
        if cfg is not None and cfg.get("stage") == "setup" and pid != VICTIM:
            msg.content.config_records[RECORD] = ConfigRecord({**dict(cfg), field: value})
        return [msg]

    wf = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=7, threshold=5, threat=threat), screen_senders=False)
    capp = vector_client_app(
        dimension=M, seed=1, mods=[make_secagg_mod(threat=threat, pki=str(pki), policy=policy_for(threat))]
    )
    grid = run_inprocess(vector_server_app(wf, num_clients=N, dimension=M), capp, num_nodes=N, intercept=intercept)
    rec = wf.history[0]
    assert not rec.ok and rec.aggregate is None, "the sum was one client's vector"
    victim = next(n for n, p in grid.partition_of.items() if p == VICTIM)
    others = [n for n, p in grid.partition_of.items() if p != VICTIM]
    assert all("not the model of this round" in rec.node_errors[n] for n in others), rec.node_errors
    assert victim not in rec.node_errors


def test_round_digest_binds_weighting_clip_and_protocol() -> None:
    """Every field of the round digest changes it (a node told anything else holds another digest)."""
    from protocols.flower._fit_round import round_digest
    from protocols.weighting import WeightingCodec

    base: dict = dict(clip=8.0, protocol="secagg")
    codec = WeightingCodec(weighting="examples", max_weight=100.0, slot_scale=8.0)
    ref = round_digest(b"d" * 32, codec, **base)
    same = WeightingCodec(weighting="examples", max_weight=100.0, slot_scale=8.0)
    assert ref == round_digest(b"d" * 32, same, **base)
    variants = [
        round_digest(b"e" * 32, codec, **base),
        round_digest(b"d" * 32, WeightingCodec(weighting="uniform", max_weight=100.0, slot_scale=8.0), **base),
        round_digest(b"d" * 32, WeightingCodec(weighting="examples", max_weight=1e300, slot_scale=8.0), **base),
        round_digest(b"d" * 32, codec, clip=1e-300, protocol="secagg"),
        round_digest(b"d" * 32, codec, clip=8.0, protocol="paillier"),
    ]
    assert len({ref, *variants}) == 6
