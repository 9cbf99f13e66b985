"""Red team of the Flower Paillier workflow (wave 6): the attacks of
``tests/protocols/paillier/test_paillier_red_team.py`` through the Flower driver, and what only Flower has
(decryptors rebuilt from their durable store for every message, a server that writes the run config).

2-of-3 key (quorum 3), decryptors are partitions 0..2, clients 3..6.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType

from privagg.randomness import InsecureDeterministicSecrets
from protocols.flower import PaillierWorkflowConfig
from protocols.flower.apps import expected_mean, vector_client_app, vector_server_app
from protocols.flower.inproc import run_inprocess
from protocols.flower.paillier import PAILLIER_RECORD, PrivAggPaillierWorkflow, make_paillier_mod
from protocols.flower.paillier_material import load_paillier, provision_paillier
from protocols.paillier import AggregateRequest, ClientContribution, PaillierConfig, decode_message, encode_message
from protocols.paillier.knowledge import MODE_FRESH, prove_knowledge
from protocols.paillier.messages import contribution_signed_bytes
from protocols.paillier.parties import SIGNATURE_CONTEXT
from tests.protocols.flower.clear_metadata import OPT_INS, check_clear_metadata, opt_in_configs, record_replies

logging.getLogger("flwr").setLevel(logging.WARNING)

K, CLIENTS, M, SEED, CLIP = 3, 4, 12, 21, 8.0
EVIL_PID = 4


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("paillier-red") / "material"
    cfg = PaillierConfig(key_bits=512, allow_insecure=True, max_clients=8, decryptors=K, threshold=2)
    provision_paillier(d, cfg, range(K + CLIENTS), clip=CLIP)
    return d


def _run(
    material: Path | None,
    tmp: Path,
    *,
    mods: tuple[Any, ...] = (),
    rounds: int = 1,
    run_config: dict[str, Any] | None = None,
    node_config: Callable[[int], dict[str, Any]] | None = None,
    intercept: Callable[[int, Any], list[Any]] | None = None,
    server_material: Path | None = None,
    decryptors: range | None = range(K),
) -> tuple[PrivAggPaillierWorkflow, Any, Any]:
    """``rounds`` rounds; returns the workflow, the grid and the client app (to message nodes afterwards)."""
    folder = server_material or material
    assert folder is not None
    wf = PrivAggPaillierWorkflow(PaillierWorkflowConfig.from_folder(folder))
    paillier = make_paillier_mod(material=str(material) if material is not None else None, decryptors=decryptors)
    capp = vector_client_app(dimension=M, seed=SEED, mods=[*mods, paillier])
    sapp = vector_server_app(wf, num_clients=K + CLIENTS, dimension=M, rounds=rounds)

    def nodes(pid: int) -> dict[str, Any]:
        return {"privagg-paillier-store": str(tmp / f"store-{pid}.log"), **(node_config(pid) if node_config else {})}

    grid = run_inprocess(
        sapp,
        capp,
        num_nodes=K + CLIENTS,
        run_config=run_config,
        node_config=nodes,
        intercept=intercept,
    )
    return wf, grid, capp


def _check_mean(rec: Any, grid: Any, pids: list[int]) -> None:
    assert rec.ok, rec.abort
    assert sorted(grid.partition_of[n] for n in rec.contributors) == pids
    step = CLIP / ((1 << 15) - 1)
    assert np.max(np.abs(rec.aggregate[0] - expected_mean(SEED, rec.round, pids, M))) < step


# ------------------------------------------------------------ a malicious client through Flower
def _overflowing_client_mod(material: Path, how: str, rounds: tuple[int, ...] = (1,)) -> Callable[..., Any]:
    """Client ``EVIL_PID`` replaces its contribution by one it proves and signs, whose plaintexts are
    out of range: ``top`` (the sum cannot fit the packing) or ``range`` (coordinate 0 moved by 8q)."""
    mat = load_paillier(material)
    pk, lay = mat.public_key, mat.config.layout

    def mod(msg: Any, ctxt: Any, call_next: Callable[[Any, Any], Any]) -> Any:
        out = call_next(msg, ctxt)
        cfg = out.content.config_records.get(PAILLIER_RECORD) if out.has_content() else None
        if int(ctxt.node_config["partition-id"]) != EVIL_PID or cfg is None or "msg" not in cfg:
            return out
        honest = decode_message(cfg["msg"], public_key=pk)
        if not isinstance(honest, ClientContribution) or honest.round not in rounds:
            return out
        pts = lay.pack(np.zeros(honest.count, dtype=np.int64))
        if how == "top":
            pts[0] = 1 << (pk.plaintext_bits - 1)
        else:
            pts[0] += 8 * lay.q
        sec = InsecureDeterministicSecrets(b"flower-evil")
        wit = [(MODE_FRESH, pk.random_r(sec)) for _ in pts]
        cts = tuple(pk.encrypt_with(m, pk.obfuscator(w[1])) for m, w in zip(pts, wit))
        c = dataclasses.replace(honest, ciphertexts=cts, signature=b"", proof=b"")
        c = dataclasses.replace(c, proof=prove_knowledge(c, pts, wit, pk, secrets=sec))
        sig = mat.signing_key(c.client_id).sign(SIGNATURE_CONTEXT + contribution_signed_bytes(c, pk))
        out.content.config_records[PAILLIER_RECORD] = ConfigRecord(
            {"msg": encode_message(dataclasses.replace(c, signature=sig), pk)}
        )
        return out

    return mod


@pytest.mark.parametrize("how", ["top", "range"])
def test_an_overflowing_client_loses_the_round_through_flower_too(material: Path, tmp_path: Path, how: str) -> None:
    """As in memory: the round aborts typed with no aggregate, the model stays; the next round is correct.
    Old code (``range``): the round "succeeded" with coordinate 0 of the mean moved by 8q / N."""
    wf, grid, _ = _run(material, tmp_path, mods=(_overflowing_client_mod(material, how),), rounds=2)
    first, second = wf.history
    assert not first.ok and first.aggregate is None
    assert "does not fit the packing" in (first.abort or "") and "a client encrypted" in (first.abort or "")
    assert len(first.decryptors) == 0  # the sum was never accepted
    _check_mean(second, grid, list(range(K, K + CLIENTS)))


# ------------------------------------------------------------ one set per round, decryptors rebuilt per message
def _query(capp: Any, grid: Any, pid: int, stage: str, req: AggregateRequest, pk: Any, *, fresh: bool) -> str:
    """Send ``req`` to decryptor ``pid`` (``fresh``: a restarted node, empty Context state); its error or ``ok``."""
    nid = next(n for n, p in grid.partition_of.items() if p == pid)
    ctx = grid.contexts[nid]
    if fresh:
        ctx = Context(
            run_id=ctx.run_id, node_id=nid, node_config=ctx.node_config, state=RecordDict(), run_config=ctx.run_config
        )
    content = RecordDict({PAILLIER_RECORD: ConfigRecord({"stage": stage, "msg": encode_message(req, pk)})})
    msg = Message(content, nid, MessageType.QUERY, group_id="attack")
    try:
        out = capp(msg, ctx)
    except Exception as e:  # the engines turn a raised exception into an error reply
        return repr(e)
    return out.error.reason if out.has_error() else "ok"


def test_a_second_set_for_a_decided_round_is_refused_by_every_decryptor_node(material: Path, tmp_path: Path) -> None:
    """THREAT_MODEL "One set per round" through Flower, where each message rebuilds the decryptor from its
    ``FileStore``: after round 1 decrypted, the server shows each decryptor (running, or restarted) round 1
    again without one client (whose vector the difference would reveal), first to endorse, then to decrypt
    with the honest round's endorsements attached. Every one refuses; no store records a second set."""
    pk = load_paillier(material).public_key
    seen: list[bytes] = []

    def capture(pid: int, msg: Any) -> list[Any]:
        cfg = msg.content.config_records.get(PAILLIER_RECORD)
        if cfg is not None and cfg.get("stage") == "decrypt" and not seen:
            seen.append(cfg["msg"])
        return [msg]

    wf, grid, capp = _run(material, tmp_path, intercept=capture)
    _check_mean(wf.history[0], grid, list(range(K, K + CLIENTS)))
    decided = decode_message(seen[0], public_key=pk)
    assert isinstance(decided, AggregateRequest) and len(decided.endorsements) == K
    subset = decided.contributions[:-1]
    agg = [1] * len(decided.aggregate)
    for c in subset:
        agg = [a * x % pk.n2 for a, x in zip(agg, c.ciphertexts)]
    other = dataclasses.replace(decided, aggregate=tuple(agg), contributions=subset, endorsements=())
    from protocols.paillier.directory import FileStore

    before = {pid: FileStore(tmp_path / f"store-{pid}.log").records() for pid in range(K)}
    for pid in range(K):
        for fresh in (False, True):
            # the first wave decrypted round 1; the second-wave endorser (pid 2) only endorsed its set
            refusal = "already decrypted" if pid < 2 else "two different contribution sets"
            why = _query(capp, grid, pid, "endorse", other, pk, fresh=fresh)
            assert refusal in why, why
            shown = dataclasses.replace(other, endorsements=decided.endorsements)
            assert refusal in _query(capp, grid, pid, "decrypt", shown, pk, fresh=fresh)
    assert {pid: FileStore(tmp_path / f"store-{pid}.log").records() for pid in range(K)} == before


def test_an_undecided_round_cannot_be_endorsed_for_two_sets_across_restarts(material: Path, tmp_path: Path) -> None:
    """The same, for a round endorsed but not decrypted (the server stopped after the endorsements): a
    restarted decryptor node still refuses a second set for it, by its durable record."""
    pk = load_paillier(material).public_key
    seen: list[bytes] = []

    def stop_before_decrypt(pid: int, msg: Any) -> list[Any]:
        cfg = msg.content.config_records.get(PAILLIER_RECORD)
        if cfg is not None and cfg.get("stage") == "decrypt":
            seen.append(cfg["msg"])
            return []  # the server never sends the decrypt requests
        return [msg]

    wf, grid, capp = _run(material, tmp_path, intercept=stop_before_decrypt)
    assert not wf.history[0].ok
    endorsed = decode_message(seen[0], public_key=pk)
    assert isinstance(endorsed, AggregateRequest)
    subset = endorsed.contributions[1:]
    agg = [1] * len(endorsed.aggregate)
    for c in subset:
        agg = [a * x % pk.n2 for a, x in zip(agg, c.ciphertexts)]
    other = dataclasses.replace(endorsed, aggregate=tuple(agg), contributions=subset, endorsements=())
    for pid in range(K):
        why = _query(capp, grid, pid, "endorse", other, pk, fresh=True)
        assert "two different contribution sets" in why, why
    # the endorsed set itself can still be decrypted (the round is not lost to a crash between the stages)
    assert _query(capp, grid, 0, "decrypt", endorsed, pk, fresh=True) == "ok"


# ------------------------------------------------------------ the run config is the server's
def test_a_node_takes_its_material_folder_from_its_own_config_before_the_servers(
    material: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``run_config`` is written by whoever starts the run (the server side); a node that has its own
    ``node_config["privagg-paillier"]`` must use it (its keys, directories and default store live there).
    Old code: the run config's folder won, so the server chose which trust anchors a node loaded."""
    decoy = tmp_path_factory.mktemp("decoy") / "material"
    cfg = PaillierConfig(key_bits=512, allow_insecure=True, max_clients=8, decryptors=K, threshold=2)
    provision_paillier(decoy, cfg, range(K + CLIENTS), clip=CLIP)
    wf, grid, _ = _run(
        None,
        tmp_path,
        run_config={"privagg-paillier": str(decoy)},
        node_config=lambda pid: {"privagg-paillier": str(material)},
        server_material=material,
    )
    _check_mean(wf.history[0], grid, list(range(K, K + CLIENTS)))


def test_a_node_without_its_own_material_folder_refuses_the_servers(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The server provisions material of its own (it holds every key share of that public key) and names its
    folder in the run config. A node that took it would sign with the server's keys, trust the server's
    directories and encrypt its update under a key the server decrypts alone: its contribution in the clear.
    Wanted (wave 7): a node without a folder of its own (mod argument or ``node_config["privagg-paillier"]``)
    refuses every message; nobody trains, nothing is encrypted. Old code: the round ran under the server's key."""
    decoy = tmp_path_factory.mktemp("server-material") / "material"
    cfg = PaillierConfig(key_bits=512, allow_insecure=True, max_clients=8, decryptors=K, threshold=2)
    provision_paillier(decoy, cfg, range(K + CLIENTS), clip=CLIP)
    wf, _grid, _ = _run(None, tmp_path, run_config={"privagg-paillier": str(decoy)}, server_material=decoy)
    rec = wf.history[0]
    assert not rec.ok and rec.aggregate is None and rec.contributors == ()
    assert len(rec.node_errors) == K + CLIENTS
    assert all("no Paillier material folder" in e for e in rec.node_errors.values())


def test_the_run_config_cannot_name_the_decryptors(material: Path, tmp_path: Path) -> None:
    """Decryptors 1 and 2 are partitions 0 and 1 by their own node config (as deployed SuperNodes). The server
    lists partitions 3 and 4 as decryptors in the run config. Old code: those clients took decryptor roles
    (signing with the key shares of the simulation's shared folder, one of them claiming a role a real
    decryptor holds) and left the training cohort: the server chose who trains and who decrypts. Wanted: roles
    come from the nodes' own settings only; the run config's list changes nothing."""
    wf, grid, _ = _run(
        material,
        tmp_path,
        run_config={"privagg-paillier-decryptors": "3,4"},
        node_config=lambda pid: {"privagg-paillier-decryptor": pid + 1} if pid < K else {},
        decryptors=None,
    )
    rec = wf.history[0]
    _check_mean(rec, grid, list(range(K, K + CLIENTS)))
    assert sorted(grid.partition_of[n] for n in rec.decryptors) == [0, 1]


# ------------------------------------------------------------ the weighting is part of what a client signs
TARGET = 5  # the client the server singles out


def _scale_the_others_away(pid: int, msg: Any) -> list[Any]:
    """A malicious server: every training client but ``TARGET`` is told ``max-weight = 1e300``, so its factor
    ``f = num_examples / max_weight`` is ~0 and its update vanishes from the sum, which is then the target's."""
    cfg = msg.content.config_records.get(PAILLIER_RECORD)
    if cfg is not None and cfg.get("stage") == "contribute" and pid != TARGET:
        fields = dict(cfg)
        fields["max-weight"] = 1e300
        msg.content.config_records[PAILLIER_RECORD] = ConfigRecord(fields)
    return [msg]


def test_a_server_cannot_weigh_every_client_but_one_out_of_the_sum(material: Path, tmp_path: Path) -> None:
    """THREAT_MODEL "What each party learns": the sum of at least ``min_clients`` contributions, not one client's
    vector in disguise. The weighting (``weighting``, ``max-weight``) travels beside the fit instructions; each
    client now binds the weighting it received into the digest it checks against the round setup and signs,
    so clients told different weightings cannot be summed. Old code: the round "succeeded" and its mean was
    the target's vector."""
    wf, grid, _ = _run(material, tmp_path, intercept=_scale_the_others_away)
    rec = wf.history[0]
    target = next(n for n, p in grid.partition_of.items() if p == TARGET)
    assert not rec.ok and rec.aggregate is None, "the sum was one client's vector"
    others = [n for n, p in grid.partition_of.items() if p >= K and p != TARGET]
    assert all("not the model the round setup announces" in rec.node_errors[n] for n in others)
    assert target not in rec.node_errors


# ------------------------------------------------------------ a client claiming a decryptor's role
IMPOSTOR = 3  # a training client's partition


def _claims_decryptor(index: int) -> Callable[..., Any]:
    """Client ``IMPOSTOR`` answers the role query as decryptor ``index`` (it has no key share)."""

    def mod(msg: Any, ctxt: Any, call_next: Callable[[Any, Any], Any]) -> Any:
        cfg = msg.content.config_records.get(PAILLIER_RECORD) if msg.has_content() else None
        if int(ctxt.node_config["partition-id"]) == IMPOSTOR and cfg is not None and cfg.get("stage") == "roles":
            out = call_next(msg, ctxt)
            fields = dict(out.content.config_records[PAILLIER_RECORD])
            fields.update({"role": "decryptor", "id": index})
            out.content.config_records[PAILLIER_RECORD] = ConfigRecord(fields)
            return out
        return call_next(msg, ctxt)

    return mod


@pytest.mark.parametrize("index", [1, 3])
def test_a_client_claiming_a_decryptors_role_is_not_believed(material: Path, tmp_path: Path, index: int) -> None:
    """A node's role answer is signed with the key the dealer gave that role (client or decryptor directory),
    over the run's session, a fresh nonce and the node id. Old code believed any node: a client claiming to
    be decryptor ``index`` displaced the real one, and a 2-of-3 key (quorum 3) then lost every round."""
    wf, grid, _ = _run(material, tmp_path, mods=(_claims_decryptor(index),))
    rec = wf.history[0]
    impostor = next(n for n, p in grid.partition_of.items() if p == IMPOSTOR)
    assert "roles" in rec.node_errors[impostor] and "does not verify" in rec.node_errors[impostor]
    # the impostor neither trains nor decrypts; the real decryptors and the other clients do
    _check_mean(rec, grid, [p for p in range(K, K + CLIENTS) if p != IMPOSTOR])
    assert sorted(grid.partition_of[n] for n in rec.decryptors) == [0, 1]


# ------------------------------------------------------------ what leaves a training node
@pytest.mark.parametrize("opt_in", OPT_INS)
def test_a_training_node_sends_ciphertexts_and_no_weight_or_metric_in_the_clear(
    material: Path, tmp_path: Path, opt_in: str
) -> None:
    """THREAT_MODEL "What each party learns": beside the ciphertexts, a client's contribute reply carries its
    ``FitRes`` status and ``num_examples = 1`` (its weight travels inside the encrypted sum), and no metrics
    unless the node itself opts in (``node_config["privagg-send-metrics"]``); the server's run config cannot
    turn it on. No array of its update leaves the node. Old code: ``num_examples = 1000`` and ``{"pid": ...}``
    in the clear. The round's mean is unchanged (weights inside the sum)."""
    seen, inspect = record_replies(PAILLIER_RECORD, "contribute")
    wf, grid, _ = _run(material, tmp_path, mods=(inspect,), **opt_in_configs(opt_in))
    _check_mean(wf.history[0], grid, list(range(K, K + CLIENTS)))
    assert all(isinstance(c.config_records[PAILLIER_RECORD]["msg"], bytes) for c in seen)  # the contributions
    check_clear_metadata(
        seen, count=CLIENTS, opt_in=opt_in, fit_metrics=wf.history[0].fit_metrics, partition_of=grid.partition_of
    )
