"""Packed threshold-Paillier aggregation over Flower messages (decryptors as separate nodes)."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("flwr")

from protocols.flower import PaillierWorkflowConfig
from protocols.flower.apps import expected_mean, vector_client_app, vector_server_app
from protocols.flower.inproc import run_inprocess
from protocols.flower.paillier import PrivAggPaillierWorkflow, make_paillier_mod
from protocols.flower.paillier_material import provision_paillier
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


def _run(material: Path, mods: tuple[Any, ...] | list[Any] = (), rounds: int = 2) -> tuple[Any, Any]:
    wf = PrivAggPaillierWorkflow(PaillierWorkflowConfig.from_folder(material))
    capp = vector_client_app(
        dimension=M, seed=SEED, mods=[*mods, make_paillier_mod(material=str(material), decryptors=DECRYPTORS)]
    )
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=rounds)
    grid = run_inprocess(sapp, capp, num_nodes=N)
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

    from protocols.flower.paillier import PAILLIER_RECORD
    from protocols.flower.paillier_material import load_paillier
    from protocols.paillier import AggregateRequest, decode_message, encode_message

    mat = load_paillier(material)
    pk = mat.public_key

    def intercept(pid: int, msg: Any) -> list[Any]:
        cfg = msg.content.config_records.get(PAILLIER_RECORD)
        if cfg is not None and cfg.get("stage") == "endorse":
            req = decode_message(cfg["msg"], public_key=pk)
            assert isinstance(req, AggregateRequest)
            one = req.contributions[0]
            forged = dataclasses.replace(req, aggregate=one.ciphertexts, contributions=(one,))
            msg.content.config_records[PAILLIER_RECORD] = ConfigRecord(
                {"stage": "endorse", "msg": encode_message(forged, pk)}
            )
        return [msg]

    wf = PrivAggPaillierWorkflow(PaillierWorkflowConfig.from_folder(material))
    capp = vector_client_app(
        dimension=M, seed=SEED, mods=[make_paillier_mod(material=str(material), decryptors=DECRYPTORS)]
    )
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=1)
    run_inprocess(sapp, capp, num_nodes=N, intercept=intercept)
    rec = wf.history[0]
    assert not rec.ok and rec.decryptors == () and "0 valid endorsements" in (rec.abort or "")
    errs = [e for e in rec.node_errors.values() if e.startswith("endorse")]
    assert len(errs) == 2 and all("at least 2" in e for e in errs)


# ------------------------------------------------------------------ model inconsistency (a malicious server)
TARGET = 4  # partition id of the client the server singles out


def _craft_for_target(material: Path, *, announce: bool, what: str = "model") -> Callable[[int, Any], list[Any]]:
    """An intercept: the target gets a crafted model or fit config (and, if ``announce``, a setup naming it)."""
    from flwr.app import ConfigRecord
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    from protocols.flower._fit_round import received_codec, round_digest
    from protocols.flower.paillier import PAILLIER_RECORD
    from protocols.flower.paillier_material import load_paillier
    from protocols.paillier import RoundSetup, decode_message, encode_message, model_digest

    mat = load_paillier(material)
    pk = mat.public_key

    def intercept(pid: int, msg: Any) -> list[Any]:
        cfg = msg.content.config_records.get(PAILLIER_RECORD)
        if pid != TARGET or cfg is None or cfg.get("stage") != "contribute":
            return [msg]
        fi = compat.recorddict_to_fitins(msg.content, keep_input=True)
        crafted = parameters_to_ndarrays(fi.parameters)
        config = dict(fi.config)
        if what == "model":
            crafted = [a + np.float32(1000.0) for a in crafted]
        else:  # e.g. zero local epochs for everybody but the target: the sum is then the target's model
            config["local-epochs"] = 0
        new = compat.fitins_to_recorddict(FitIns(ndarrays_to_parameters(crafted), config), keep_input=True)
        for key, arr in new.array_records.items():
            msg.content.array_records[key] = arr
        for key, rec in new.config_records.items():
            msg.content.config_records[key] = rec
        if announce:
            setup = decode_message(cfg["setup"], public_key=pk)
            assert isinstance(setup, RoundSetup)
            # the digest the target computes: the crafted instructions and the weighting it was told
            codec = received_codec(cfg, slot_scale=CLIP, stage="contribute")
            digest = round_digest(model_digest(crafted, config=config), codec, clip=mat.clip, protocol="paillier")
            forged = dataclasses.replace(setup, model_digest=digest)
            msg.content.config_records[PAILLIER_RECORD] = ConfigRecord({**cfg, "setup": encode_message(forged, pk)})
        return [msg]

    return intercept


def _run_attacked(material: Path, intercept: Callable[[int, Any], list[Any]]) -> tuple[Any, Any]:
    wf = PrivAggPaillierWorkflow(PaillierWorkflowConfig.from_folder(material))
    capp = vector_client_app(
        dimension=M, seed=SEED, mods=[make_paillier_mod(material=str(material), decryptors=DECRYPTORS)]
    )
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=1)
    grid = run_inprocess(sapp, capp, num_nodes=N, intercept=intercept)
    return wf.history[0], grid


@pytest.mark.parametrize("what", ["model", "config"])
def test_client_refuses_a_model_its_setup_does_not_announce(material: Path, what: str) -> None:
    rec, grid = _run_attacked(material, _craft_for_target(material, announce=False, what=what))
    target = next(n for n, p in grid.partition_of.items() if p == TARGET)
    assert "is not the model the round setup announces" in rec.node_errors[target]
    assert rec.ok and target not in rec.contributors and len(rec.contributors) == 3


@pytest.mark.parametrize("what", ["model", "config"])
def test_honest_server_drops_a_contribution_on_another_model(material: Path, what: str) -> None:
    rec, grid = _run_attacked(material, _craft_for_target(material, announce=True, what=what))
    target = next(n for n, p in grid.partition_of.items() if p == TARGET)
    assert "model digest mismatch" in rec.node_errors[target]
    assert rec.ok and target not in rec.contributors


def test_decryptors_refuse_an_aggregate_over_different_models(material: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The full attack: the server also aggregates the target's contribution on the crafted model."""
    import protocols.flower.paillier as fp
    from protocols.paillier import PaillierServer

    class LaxServer(PaillierServer):
        def receive(self, msg: Any) -> None:  # accepts a contribution on any model
            honest = self.model_digest
            self.model_digest = msg.model_digest
            try:
                super().receive(msg)
            finally:
                self.model_digest = honest

    monkeypatch.setattr(fp, "PaillierServer", LaxServer)
    rec, _ = _run_attacked(material, _craft_for_target(material, announce=True))
    assert not rec.ok and rec.decryptors == () and len(rec.contributors) == 0
    errs = [e for e in rec.node_errors.values() if e.startswith("endorse")]
    assert len(errs) == 2 and all("different model digests" in e for e in errs)


# ------------------------------------------------------------------ key share files
def test_key_share_files(material: Path, tmp_path: Path) -> None:
    import os

    from privagg.errors import ConfigurationError
    from protocols.flower.paillier_material import load_paillier

    mat = load_paillier(material)
    assert mat.threshold_key.has_proofs
    for i in (1, 2):
        f = material / f"paillier-decryptor-{i}.key"
        assert os.stat(f).st_mode & 0o077 == 0
        assert f.read_bytes()[:4] == b"PGKS"
        assert mat.key_share(i).index == i
    copy = tmp_path / "m"
    shutil.copytree(material, copy)
    share2 = (copy / "paillier-decryptor-2.key").read_bytes()
    (copy / "paillier-decryptor-1.key").write_bytes(share2)
    with pytest.raises(ConfigurationError, match="holds decryptor 2's share"):
        load_paillier(copy).key_share(1)
    (copy / "paillier-decryptor-2.key").write_bytes(share2[:-1])
    with pytest.raises(ConfigurationError, match="not valid") as info:
        load_paillier(copy).key_share(2)
    secret = int.from_bytes(share2[24:], "big")
    assert str(secret) not in str(info.value) and f"{secret:x}" not in str(info.value)
    with pytest.raises(ConfigurationError, match="no key share"):
        load_paillier(copy).key_share(3)


def test_workflow_refuses_a_strategy_that_sends_different_models(material: Path) -> None:
    from flwr.common import FitIns, ndarrays_to_parameters, parameters_to_ndarrays

    def wrap(strategy: Any) -> Any:
        configure = strategy.configure_fit

        def configure_fit(server_round: int, parameters: Any, client_manager: Any) -> list[Any]:
            out = []
            for i, (proxy, fi) in enumerate(configure(server_round, parameters, client_manager)):
                shifted = [a + np.float32(i) for a in parameters_to_ndarrays(fi.parameters)]
                out.append((proxy, FitIns(ndarrays_to_parameters(shifted), fi.config)))
            return out

        strategy.configure_fit = configure_fit
        return strategy

    wf = PrivAggPaillierWorkflow(PaillierWorkflowConfig.from_folder(material))
    capp = vector_client_app(
        dimension=M, seed=SEED, mods=[make_paillier_mod(material=str(material), decryptors=DECRYPTORS)]
    )
    sapp = vector_server_app(wf, num_clients=N, dimension=M, rounds=1, wrap_strategy=wrap)
    run_inprocess(sapp, capp, num_nodes=N)
    rec = wf.history[0]
    assert not rec.ok and "different models or fit configs for different clients" in (rec.abort or "")
    assert not any(e.startswith("contribute") for e in rec.node_errors.values())  # nothing was sent


def test_contributions_replayed_from_an_earlier_run_are_refused(material: Path) -> None:
    """Run B's server replays run A's round-1 contributions minus one (a differencing attack)."""
    from flwr.app import ConfigRecord

    from protocols.flower.paillier import PAILLIER_RECORD
    from protocols.flower.paillier_material import load_paillier
    from protocols.paillier import AggregateRequest, decode_message, encode_message

    mat = load_paillier(material)
    pk = mat.public_key
    captured: list[bytes] = []

    def capture(pid: int, msg: Any) -> list[Any]:
        cfg = msg.content.config_records.get(PAILLIER_RECORD)
        if cfg is not None and cfg.get("stage") == "endorse" and not captured:
            captured.append(cfg["msg"])
        return [msg]

    rec_a, _ = _run_attacked(material, capture)
    assert rec_a.ok and captured
    old = decode_message(captured[0], public_key=pk)
    assert isinstance(old, AggregateRequest)
    subset = old.contributions[:-1]
    agg = [1] * len(old.aggregate)
    for c in subset:
        agg = [a * x % pk.n2 for a, x in zip(agg, c.ciphertexts)]
    replay = encode_message(dataclasses.replace(old, aggregate=tuple(agg), contributions=subset), pk)

    def inject(pid: int, msg: Any) -> list[Any]:
        cfg = msg.content.config_records.get(PAILLIER_RECORD)
        if cfg is not None and cfg.get("stage") == "endorse":
            msg.content.config_records[PAILLIER_RECORD] = ConfigRecord({"stage": "endorse", "msg": replay})
        return [msg]

    rec_b, grid_b = _run_attacked(material, inject)
    assert mat.run_session(next(iter(grid_b.contexts.values())).run_id) != old.session
    assert not rec_b.ok and rec_b.decryptors == ()
    errs = [e for e in rec_b.node_errors.values() if e.startswith("endorse")]
    assert len(errs) == 2 and all("wrong session" in e for e in errs)


def test_run_sessions_differ_per_run(material: Path) -> None:
    from privagg.errors import ConfigurationError
    from protocols.flower.paillier_material import load_paillier

    mat = load_paillier(material)
    sessions = {mat.run_session(r) for r in (0, 1, 2, (1 << 64) - 1)}
    assert len(sessions) == 4 and all(len(s) == 16 for s in sessions) and mat.session not in sessions
    with pytest.raises(ConfigurationError, match="run_id"):
        mat.run_session(1 << 64)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [("setup", "bad magic"), ("no-setup", "truncated"), ("no-model", "no valid fit instructions")],
)
def test_client_refuses_a_malformed_contribute_request(material: Path, tamper: str, reason: str) -> None:
    from flwr.app import ConfigRecord

    from protocols.flower.paillier import PAILLIER_RECORD

    def intercept(pid: int, msg: Any) -> list[Any]:
        cfg = msg.content.config_records.get(PAILLIER_RECORD)
        if pid != TARGET or cfg is None or cfg.get("stage") != "contribute":
            return [msg]
        if tamper == "setup":
            msg.content.config_records[PAILLIER_RECORD] = ConfigRecord({**cfg, "setup": b"XXXX" + cfg["setup"][4:]})
        elif tamper == "no-setup":
            msg.content.config_records[PAILLIER_RECORD] = ConfigRecord({k: v for k, v in cfg.items() if k != "setup"})
        else:
            for key in list(msg.content.array_records):
                del msg.content.array_records[key]
        return [msg]

    rec, grid = _run_attacked(material, intercept)
    target = next(n for n, p in grid.partition_of.items() if p == TARGET)
    assert reason in rec.node_errors[target]
    assert rec.ok and target not in rec.contributors


# ------------------------------------------------------------------ proofs of plaintext knowledge over Flower
def test_a_client_without_a_valid_knowledge_proof_is_dropped(material: Path) -> None:
    """Client partition 5 swaps in partition 4's ciphertexts (re-signed with its own key): dropped, round decrypts."""
    from flwr.app import ConfigRecord

    from protocols.flower.paillier import PAILLIER_RECORD
    from protocols.flower.paillier_material import load_paillier
    from protocols.paillier import ClientContribution, decode_message, encode_message
    from protocols.paillier.messages import contribution_signed_bytes
    from protocols.paillier.parties import SIGNATURE_CONTEXT

    mat = load_paillier(material)
    pk = mat.public_key
    stolen: dict[str, Any] = {}

    def thief(msg: Any, ctxt: Any, call_next: Callable[[Any, Any], Any]) -> Any:
        out = call_next(msg, ctxt)
        pid = int(ctxt.node_config.get("partition-id", -1))
        cfg = out.content.config_records.get(PAILLIER_RECORD) if out.has_content() else None
        if cfg is None or not isinstance(cfg.get("msg"), bytes) or pid not in (4, 5):
            return out
        c = decode_message(cfg["msg"], public_key=pk)
        assert isinstance(c, ClientContribution)
        if pid == 4:
            stolen["c"] = c
            return out
        victim = stolen["c"]  # partitions run in order in-process: 4 before 5
        fake = dataclasses.replace(c, ciphertexts=victim.ciphertexts, proof=victim.proof, signature=b"")
        sig = mat.signing_key(5).sign(SIGNATURE_CONTEXT + contribution_signed_bytes(fake, pk))
        out.content.config_records[PAILLIER_RECORD] = ConfigRecord(
            {"msg": encode_message(dataclasses.replace(fake, signature=sig), pk)}
        )
        return out

    wf, grid = _run(material, mods=[thief], rounds=1)
    rec = wf.history[0]
    five = next(n for n, p in grid.partition_of.items() if p == 5)
    assert rec.ok, rec.abort
    assert "proof of plaintext knowledge" in rec.node_errors[five]
    assert sorted(grid.partition_of[n] for n in rec.contributors) == [2, 3, 4]
