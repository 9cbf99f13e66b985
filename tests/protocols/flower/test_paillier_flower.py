"""Packed threshold-Paillier aggregation over Flower messages (decryptors as separate nodes)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

from protocols.flower.apps import expected_mean, vector_client_app, vector_server_app
from protocols.flower.inproc import run_inprocess
from protocols.flower.paillier import PrivAggPaillierWorkflow, make_paillier_mod, provision_paillier
from protocols.paillier import PaillierConfig

logging.getLogger("flwr").setLevel(logging.WARNING)

N, M, SEED, CLIP = 6, 25, 5, 8.0
DECRYPTORS = (0, 1)  # partition ids of the decryptor nodes


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("paillier")
    cfg = PaillierConfig(key_bits=512, allow_insecure=True, value_bits=16, max_clients=8, decryptors=2, threshold=2)
    provision_paillier(d, cfg, range(N), clip=CLIP)
    return d


def _run(material: Path, mods=(), rounds: int = 2):
    wf = PrivAggPaillierWorkflow(material)
    capp = vector_client_app(dimension=M, seed=SEED, mods=[*mods, make_paillier_mod(material=str(material))])
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=rounds)
    run_cfg = {"privagg-paillier-decryptors": ",".join(map(str, DECRYPTORS))}
    grid = run_inprocess(sapp, capp, num_nodes=N, run_config=run_cfg)
    return wf, grid


def test_mean_of_training_clients(material: Path) -> None:
    wf, grid = _run(material)
    step = CLIP / ((1 << 15) - 1)
    for rec in wf.history:
        assert rec.ok, rec.abort
        pids = sorted(grid.partition_of[n] for n in rec.contributors)
        assert pids == [p for p in range(N) if p not in DECRYPTORS]
        assert len(rec.decryptors) == 2
        exp = expected_mean(SEED, rec.round, pids, M)
        assert np.max(np.abs(rec.aggregate[0] - exp)) < step


def test_too_few_contributions_abort_cleanly(material: Path) -> None:
    from protocols.flower.apps import dropout_mod

    drop_all_but_one = dropout_mod(partitions=[3, 4, 5], stage="contribute", record="privagg_paillier")
    wf, _ = _run(material, mods=[drop_all_but_one], rounds=1)
    rec = wf.history[0]
    assert not rec.ok and "at least 2" in (rec.abort or "")


def test_decryptors_refuse_a_single_client_aggregate(material: Path) -> None:
    """A malicious server asks the decryptors to decrypt one client's ciphertexts alone."""
    from flwr.app import ConfigRecord

    from protocols.flower.paillier import PAILLIER_RECORD, load_paillier
    from protocols.paillier import AggregateRequest, decode_message, encode_message

    pk = load_paillier(material).public_key

    def intercept(pid, msg):
        cfg = msg.content.config_records.get(PAILLIER_RECORD)
        if cfg is not None and cfg.get("stage") == "decrypt":
            req = decode_message(cfg["msg"], public_key=pk)
            one = req.contributions[0]
            forged = AggregateRequest(req.key_id, req.session, req.round, req.count, one.ciphertexts, (one,))
            msg.content.config_records[PAILLIER_RECORD] = ConfigRecord(
                {"stage": "decrypt", "msg": encode_message(forged, pk)}
            )
        return [msg]

    wf = PrivAggPaillierWorkflow(material)
    capp = vector_client_app(dimension=M, seed=SEED, mods=[make_paillier_mod(material=str(material))])
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=1)
    run_cfg = {"privagg-paillier-decryptors": ",".join(map(str, DECRYPTORS))}
    run_inprocess(sapp, capp, num_nodes=N, run_config=run_cfg, intercept=intercept)
    rec = wf.history[0]
    assert not rec.ok and rec.decryptors == ()
    errs = [e for e in rec.node_errors.values() if e.startswith("decrypt")]
    assert len(errs) == 2 and all("at least 2" in e for e in errs)
