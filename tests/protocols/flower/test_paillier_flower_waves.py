"""The Flower Paillier workflow endorses in two waves and decrypts with the first, as the in-memory driver.

2-of-3 (quorum 3) and 2-of-4 (quorum 3) keys, decryptors as separate nodes (partition ids
``0 .. k-1``); what each decryptor did is read from its durable store (``endorse`` / ``proven``
/ ``decrypt`` records) and from the messages the workflow sent (stage, endorsements attached).
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

from protocols.flower import PaillierWorkflowConfig
from protocols.flower.apps import expected_mean, vector_client_app, vector_server_app
from protocols.flower.inproc import run_inprocess
from protocols.flower.paillier import PAILLIER_RECORD, PrivAggPaillierWorkflow, make_paillier_mod
from protocols.flower.paillier_material import load_paillier, provision_paillier
from protocols.paillier import AggregateRequest, PaillierConfig, PartialDecryption, decode_message, encode_message
from protocols.paillier.directory import FileStore

logging.getLogger("flwr").setLevel(logging.WARNING)

CLIENTS, M, SEED, CLIP = 4, 20, 11, 8.0


def _material(root: Path, k: int, t: int) -> Path:
    d = root / f"paillier-{t}of{k}"
    cfg = PaillierConfig(key_bits=512, allow_insecure=True, max_clients=8, decryptors=k, threshold=t)
    provision_paillier(d, cfg, range(k + CLIENTS), clip=CLIP)
    return d


@pytest.fixture(scope="module")
def two_of_three(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _material(tmp_path_factory.mktemp("waves"), 3, 2)


@pytest.fixture(scope="module")
def two_of_four(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _material(tmp_path_factory.mktemp("waves"), 4, 2)


def _run(
    material: Path,
    k: int,
    tmp: Path,
    *,
    down: tuple[int, ...] = (),
    mods: tuple[Any, ...] = (),
) -> tuple[Any, Any, list[tuple[int, str, int]]]:
    """One round; ``down``: decryptor partitions that answer the role query, then nothing.

    Returns the round's record, the grid and what was sent to decryptors."""
    pk = load_paillier(material).public_key
    sent: list[tuple[int, str, int]] = []  # (partition, stage, endorsements attached)

    def intercept(pid: int, msg: Any) -> list[Any]:
        cfg = msg.content.config_records.get(PAILLIER_RECORD)
        if cfg is not None and cfg.get("stage") in ("endorse", "decrypt"):
            req = decode_message(cfg["msg"], public_key=pk)
            assert isinstance(req, AggregateRequest)
            sent.append((pid, str(cfg["stage"]), len(req.endorsements)))
        return [msg]

    def node_config(pid: int) -> dict[str, Any]:
        # the node's own list of decryptor partitions (never the run config's, which the server writes)
        return {"privagg-paillier-store": str(tmp / f"store-{pid}.log"), "privagg-paillier-decryptors": decryptors}

    decryptors = ",".join(map(str, range(k)))

    wf = PrivAggPaillierWorkflow(PaillierWorkflowConfig.from_folder(material))
    capp = vector_client_app(dimension=M, seed=SEED, mods=[*mods, make_paillier_mod(material=str(material))])
    sapp = vector_server_app(wf, num_clients=k + CLIENTS, dimension=M, rounds=1)
    grid = run_inprocess(
        sapp,
        capp,
        num_nodes=k + CLIENTS,
        node_config=node_config,
        drop=lambda pid, msg: pid in down and _stage(msg) in ("endorse", "decrypt"),
        intercept=intercept,
    )
    return wf.history[0], grid, sent


def _stage(msg: Any) -> str | None:
    cfg = msg.content.config_records.get(PAILLIER_RECORD)
    return None if cfg is None else str(cfg.get("stage"))


def _kinds(tmp: Path, pid: int) -> list[str]:
    return [r.kind for r in FileStore(tmp / f"store-{pid}.log").records()]


def _check_mean(rec: Any, grid: Any, k: int) -> None:
    assert rec.ok, rec.abort
    pids = sorted(grid.partition_of[n] for n in rec.contributors)
    assert pids == list(range(k, k + CLIENTS))
    step = CLIP / ((1 << 15) - 1)
    assert np.max(np.abs(rec.aggregate[0] - expected_mean(SEED, rec.round, pids, M))) < step


def test_two_of_three_endorses_in_two_waves_and_decrypts_with_the_first(two_of_three: Path, tmp_path: Path) -> None:
    rec, grid, sent = _run(two_of_three, 3, tmp_path)
    _check_mean(rec, grid, 3)
    # wave 1: decryptors 1 and 2, nothing attached; wave 2: decryptor 3, shown their 2 endorsements
    assert sorted(s for s in sent if s[1] == "endorse") == [(0, "endorse", 0), (1, "endorse", 0), (2, "endorse", 2)]
    # only the first wave decrypts, shown the quorum of 3
    assert sorted(s for s in sent if s[1] == "decrypt") == [(0, "decrypt", 3), (1, "decrypt", 3)]
    assert sorted(grid.partition_of[n] for n in rec.decryptors) == [0, 1]
    # the first wave verified the proofs once (durably: not again at decryption); the third never did
    assert _kinds(tmp_path, 0) == _kinds(tmp_path, 1) == ["proven", "endorse", "decrypt"]
    assert _kinds(tmp_path, 2) == ["endorse"]


def test_two_of_three_with_one_decryptor_down_releases_nothing(two_of_three: Path, tmp_path: Path) -> None:
    """The liveness cost of the quorum max(t, floor((k+t-1)/2)+1) = 3 of 3: one decryptor down, no round."""
    for down in (0, 2):
        store = tmp_path / f"down-{down}"
        store.mkdir()
        rec, _, sent = _run(two_of_three, 3, store, down=(down,))
        assert not rec.ok and "3 needed" in (rec.abort or "")
        assert f"decryptor {down + 1}: no answer" in (rec.abort or "")  # the typed abort names who failed
        assert (down, "endorse", 0 if down < 2 else 2) in sent  # asked in its wave, never answered
        assert rec.decryptors == () and not [s for s in sent if s[1] == "decrypt"]
        assert all("decrypt" not in _kinds(store, pid) for pid in range(3) if pid != down)


def test_two_of_four_survives_a_first_wave_decryptor_down(two_of_four: Path, tmp_path: Path) -> None:
    rec, grid, sent = _run(two_of_four, 4, tmp_path, down=(0,))
    _check_mean(rec, grid, 4)
    endorse = sorted(s for s in sent if s[1] == "endorse")
    # decryptor 1 does not answer: decryptor 3 takes its place in the first wave; 4 endorses shown 2 and 3's
    assert endorse == [(0, "endorse", 0), (1, "endorse", 0), (2, "endorse", 0), (3, "endorse", 2)]
    assert sorted(grid.partition_of[n] for n in rec.decryptors) == [1, 2]
    assert _kinds(tmp_path, 3) == ["endorse"]
    assert not [s for s in sent if s[0] == 0 and s[1] == "decrypt"] and not (tmp_path / "store-0.log").exists()


def _bad_partial_mod(material: Path, victim_pid: int) -> Callable[[Any, Any, Callable[[Any, Any], Any]], Any]:
    """Decryptor ``victim_pid`` answers with a wrong partial that it signs (its proof then fails)."""
    from flwr.app import ConfigRecord

    from protocols.paillier.decryptor import PARTIAL_SIGNATURE_CONTEXT
    from protocols.paillier.messages import partial_signed_bytes

    mat = load_paillier(material)
    pk = mat.public_key

    def mod(msg: Any, ctxt: Any, call_next: Callable[[Any, Any], Any]) -> Any:
        out = call_next(msg, ctxt)
        cfg = out.content.config_records.get(PAILLIER_RECORD) if out.has_content() else None
        if int(ctxt.node_config.get("partition-id", -1)) != victim_pid or cfg is None or "msg" not in cfg:
            return out
        p = decode_message(cfg["msg"], public_key=pk)
        if not isinstance(p, PartialDecryption):
            return out
        wrong = dataclasses.replace(p, values=(p.values[0] * (1 + pk.n) % pk.n2, *p.values[1:]), signature=b"")
        sig = mat.decryptor_signing_key(p.decryptor).sign(PARTIAL_SIGNATURE_CONTEXT + partial_signed_bytes(wrong, pk))
        out.content.config_records[PAILLIER_RECORD] = ConfigRecord(
            {"msg": encode_message(dataclasses.replace(wrong, signature=sig), pk)}
        )
        return out

    return mod


def test_a_refused_partial_brings_in_the_second_wave_endorser(two_of_three: Path, tmp_path: Path) -> None:
    rec, grid, sent = _run(two_of_three, 3, tmp_path, mods=(_bad_partial_mod(two_of_three, 0),))
    _check_mean(rec, grid, 3)
    assert sorted(s for s in sent if s[1] == "decrypt") == [(0, "decrypt", 3), (1, "decrypt", 3), (2, "decrypt", 3)]
    assert sorted(grid.partition_of[n] for n in rec.decryptors) == [1, 2]  # decryptor 1's partial was refused
    # decryptor 3 endorsed without the proofs, so it verified them itself before its partial left
    assert _kinds(tmp_path, 2) == ["endorse", "proven", "decrypt"]
