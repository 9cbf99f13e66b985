"""The same attack classes through the Flower adapter: privagg's workflow and client mod.

Every case that is a pure rewrite of the server's outbox (``RoundAttack.server_rewrite``)
runs here with the very same rewrite, applied in flight by the in-process grid's
``intercept`` between ``PrivAggSecAggWorkflow`` and ``make_secagg_mod`` on each node. The
promise is the same: the round aborts (typed, in the workflow's record) and the replies the
client mods sent reveal no client's input. Every case that rewrites one malicious client's
messages (``RoundAttack.client_rewrite``) runs with that rewrite in a mod wrapped around the
attacker's secagg mod: the round completes with the exact mean of its survivors, the
attacker excluded where its advertisement or its messages are refused.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message

from attacks.protocol.conformance import ROUND_ATTACKS, RoundAttack, round_attack
from attacks.protocol.rewrite import ClientSecrets, TamperedRound
from protocols.flower import PrivAggSecAggWorkflow, SecAggWorkflowConfig, create_identities, make_secagg_mod
from protocols.flower.apps import expected_mean, vector_client_app, vector_server_app
from protocols.flower.inproc import run_inprocess
from protocols.flower.pki import load_identity
from protocols.flower.secagg import RECORD, STATE_RECORD, _load_local
from secagg import (
    Envelope,
    KeyAdvertisement,
    SecAggClient,
    SecAggParams,
    ThreatModel,
    UnmaskResponse,
    crypto,
    decode_message,
)
from tests.protocols.flower.node_policy import TEST_POLICY, policy_for

logging.getLogger("flwr").setLevel(logging.WARNING)

M = 16
REWRITES = [n for n in ROUND_ATTACKS.names() if ROUND_ATTACKS.get(n)().server_rewrite(ThreatModel.ACTIVE) is not None]
CLIENT_REWRITES = [
    n for n in ROUND_ATTACKS.names() if ROUND_ATTACKS.get(n)().client_rewrite(ThreatModel.ACTIVE) is not None
]
#: cases whose promise excludes the attacker from the sum (its advertisement or messages are refused)
EXCLUDED = {"low-order-key", "zero-encryption-key", "huge-round", "inconsistent-dealer"}
#: holes still open on the Flower path (strict xfails, as on the in-memory driver)
OPEN: dict[str, str] = {}


class _Colluder:
    """What a client rewrite may ask of the round: re-sign with the attacker's own identity key, and
    read the attacker's own party (its round secrets, parameters and neighbours' advertisements)."""

    def __init__(self, folder: Path, cid: int) -> None:
        self.key, _ = load_identity(folder, cid)
        self.client: SecAggClient | None = None  # the attacker's party, loaded from its node state

    @property
    def params(self) -> SecAggParams:
        assert self.client is not None and self.client.params is not None
        return self.client.params

    def advertisement(self, cid: int) -> KeyAdvertisement | None:
        assert self.client is not None
        return self.client._peers.get(cid)

    def secrets_of(self, cid: int) -> ClientSecrets:
        c = self.client
        assert c is not None and c._enc_sk is not None and c._mask_sk is not None
        return ClientSecrets(c._enc_sk, c._mask_sk, c._self_seed)

    def resign(self, m: Any) -> Any:
        if not getattr(m, "signature", b""):
            return m  # semi-honest: nothing is signed
        if isinstance(m, KeyAdvertisement):
            return dataclasses.replace(m, signature=crypto.sign(self.key, crypto.advertisement_payload(m)))
        return crypto.sign_message(m, self.key)


def _attacker_mod(case: RoundAttack, threat: ThreatModel, folder: Path) -> Any:
    rewrite = case.client_rewrite(threat)
    assert rewrite is not None
    colluder = cast(TamperedRound, _Colluder(folder, case.attacker))

    def mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        out = call_next(msg, ctxt)
        pid = int(ctxt.node_config["partition-id"])  # type: ignore[arg-type]
        if pid == case.attacker and out.has_content() and RECORD in out.content.config_records:
            if STATE_RECORD in ctxt.state.config_records:
                colluder.client = _load_local(ctxt).client  # type: ignore[attr-defined]
            cfg = out.content.config_records[RECORD]
            (new,) = rewrite(pid, decode_message(cfg["msg"]), colluder)  # type: ignore[arg-type]
            out.content.config_records[RECORD] = ConfigRecord({**dict(cfg), "msg": new.encode()})
        return out

    return mod


def _run(case: RoundAttack, threat: ThreatModel, pki: Path) -> tuple[Any, list[UnmaskResponse]]:
    n = case.clients
    rewrite = case.server_rewrite(threat) or (lambda env, rnd: [env])
    client_of: dict[int, int] = {}  # partition -> protocol client id (announced with the setup)
    revealed: list[UnmaskResponse] = []

    def recorder(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        out = call_next(msg, ctxt)
        if out.has_content() and RECORD in out.content.config_records:
            m = decode_message(out.content.config_records[RECORD]["msg"])  # type: ignore[arg-type]
            if isinstance(m, UnmaskResponse):
                revealed.append(m)
        return out

    def intercept(pid: int, msg: Message) -> list[Message]:
        cfg = msg.content.config_records.get(RECORD)
        if cfg is None:
            return [msg]
        if "client-id" in cfg:
            client_of[pid] = int(cfg["client-id"])  # type: ignore[arg-type]
        m = decode_message(cfg["msg"])  # type: ignore[arg-type]
        out = rewrite(Envelope(client_of[pid], m), cast(TamperedRound, None))  # type: ignore[arg-type]
        if not out:
            return []
        msg.content.config_records[RECORD] = ConfigRecord({**dict(cfg), "msg": out[0].message.encode()})
        return [msg]

    cfg = SecAggWorkflowConfig.manual(degree=n - 1, threshold=n // 2 + 1, threat=threat)
    wf = PrivAggSecAggWorkflow(cfg, screen_senders=False)  # a malicious-server study: the server screens nothing
    mods = [recorder, make_secagg_mod(threat=threat.value, pki=str(pki / str(n)), policy=policy_for(threat))]
    if case.client_rewrite(threat) is not None:
        mods.insert(1, _attacker_mod(case, threat, pki / str(n)))
    capp = vector_client_app(dimension=M, seed=1, mods=mods)
    run_inprocess(vector_server_app(wf, num_clients=n, dimension=M), capp, num_nodes=n, intercept=intercept)
    return wf.history[0], revealed


def _exposed(revealed: list[UnmaskResponse], n: int) -> set[int]:
    """Clients with threshold shares of their self-mask seed and of their key (or of every other key)."""
    t = n // 2 + 1
    self_sh: dict[int, set[int]] = {}
    key_sh: dict[int, set[int]] = {}
    for r in revealed:
        for s in r.self_shares:
            self_sh.setdefault(s.owner, set()).add(r.sender)
        for s in r.key_shares:
            key_sh.setdefault(s.owner, set()).add(r.sender)
    keys = {c for c, h in key_sh.items() if len(h) >= t}
    return {c for c, h in self_sh.items() if len(h) >= t and (c in keys or keys >= set(range(n)) - {c})}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    for n in {8, *(ROUND_ATTACKS.get(name).clients for name in REWRITES + CLIENT_REWRITES)}:
        create_identities(d / str(n), range(n))
    return d


def test_the_rewrite_cases_are_the_servers() -> None:
    assert set(REWRITES) >= {"double-listing", "fake-dropout", "forged-consistency", "selective-unmask"}
    assert all(ROUND_ATTACKS.get(n).who == "server" for n in REWRITES)


@pytest.mark.flower
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            n, marks=[pytest.mark.xfail(strict=True, raises=AssertionError, reason=OPEN[n])] if n in OPEN else []
        )
        for n in REWRITES
    ],
)
def test_promised_outcome_through_flower(name: str, pki: Path) -> None:
    case = round_attack(name)
    rec, revealed = _run(case, ThreatModel.ACTIVE, pki)
    minority = getattr(case, "minority", None)
    if minority is not None and rec.ok:  # a split view may complete for the quorum, never with the minority
        assert len(rec.survivors) <= case.clients - len(minority), rec
        assert not {r.sender for r in revealed} & set(minority), "a client that saw another roster revealed shares"
        assert not _exposed(revealed, case.clients)
        return
    assert not rec.ok and rec.abort is not None, f"the round must abort (typed): {rec}"
    if minority is not None and "collect_reveals" in rec.abort:  # caught before any share is dealt
        assert f"clients {list(minority)} did not reveal" in rec.abort and not revealed
        return
    assert rec.node_errors and all("ProtocolAbort" in e or "InvalidMessage" in e for e in rec.node_errors.values())
    assert not _exposed(revealed, case.clients)


class _Honest(RoundAttack):
    def server_rewrite(self, threat: ThreatModel) -> Any:
        return lambda env, rnd: [env]


@pytest.mark.flower
def test_identity_rewrite_completes_through_flower(pki: Path) -> None:
    """Control: the harness itself does not break the round, and sees every unmask response."""
    rec, revealed = _run(_Honest(), ThreatModel.ACTIVE, pki)
    assert rec.ok and not rec.node_errors and len(revealed) == 8 and not _exposed(revealed, 8)
    assert "reveals" in rec.stage_seconds  # the graph-seed reveal stage ran through Flower (secagg.seeding)


@pytest.mark.flower
def test_substituted_reveal_is_caught_through_flower(pki: Path) -> None:
    """The server swaps one client's graph-seed contribution in the reveal set: every client refuses
    to draw that ring and nobody deals a share (as ``test_graph_seed`` on the in-memory driver)."""
    from secagg.messages import RevealSet

    class _Substitute(RoundAttack):
        def server_rewrite(self, threat: ThreatModel) -> Any:
            def rewrite(env: Envelope, rnd: TamperedRound) -> list[Envelope]:
                m = env.message
                if isinstance(m, RevealSet):
                    r = tuple((c, bytes(32) if i == 0 else v) for i, (c, v) in enumerate(m.reveals))
                    return [Envelope(env.recipient, dataclasses.replace(m, reveals=r))]
                return [env]

            return rewrite

    rec, revealed = _run(_Substitute(), ThreatModel.ACTIVE, pki)
    assert not rec.ok and rec.abort is not None and not revealed
    assert len(rec.node_errors) == 8
    assert all("revealed contribution does not open its signed commitment" in e for e in rec.node_errors.values())


@pytest.mark.flower
@pytest.mark.parametrize("threat", [ThreatModel.SEMI_HONEST, ThreatModel.ACTIVE])
@pytest.mark.parametrize("name", CLIENT_REWRITES)
def test_malicious_client_through_flower(name: str, threat: ThreatModel, pki: Path) -> None:
    case = round_attack(name)
    rec, revealed = _run(case, threat, pki)
    assert rec.ok, f"the round must complete: {rec.abort} {rec.node_errors}"
    assert rec.rejected or rec.node_errors or rec.excluded, "the attacker's message must have been refused"
    pid_of = {nid: c for c, nid in rec.node_of_client.items()}  # client id = partition id
    included = sorted(pid_of[nid] for nid in rec.survivors)
    want = [c for c in range(case.clients) if c != case.attacker or name not in EXCLUDED]
    assert included == want
    assert np.allclose(rec.aggregate[0], expected_mean(1, 1, included, M), atol=1e-3)
    assert not _exposed(revealed, case.clients)


def test_client_rewrite_cases() -> None:
    assert set(CLIENT_REWRITES) >= {"share-out-of-field", "low-order-key", "huge-round", "oversized-message"}
    assert all(ROUND_ATTACKS.get(n).who == "client" for n in CLIENT_REWRITES)


@pytest.mark.flower
def test_advertisement_replay_across_sessions_through_flower(pki: Path) -> None:
    """Session A's signed advertisement of client 0, replayed in session B's roster, must be refused
    by every client at the roster (as on the in-memory driver: ``advertisement-replay``)."""
    from secagg import KeyRoster

    seen: dict[int, KeyAdvertisement] = {}

    class _Keep(RoundAttack):
        def server_rewrite(self, threat: ThreatModel) -> Any:
            def keep(env: Envelope, rnd: Any) -> list[Envelope]:
                if isinstance(env.message, KeyRoster):
                    seen.update({a.client_id: a for a in env.message.advertisements})
                return [env]

            return keep

    class _Replay(RoundAttack):
        def server_rewrite(self, threat: ThreatModel) -> Any:
            def replay(env: Envelope, rnd: Any) -> list[Envelope]:
                m = env.message
                if isinstance(m, KeyRoster):
                    advs = tuple(seen[0] if a.client_id == 0 else a for a in m.advertisements)
                    return [Envelope(env.recipient, dataclasses.replace(m, advertisements=advs))]
                return [env]

            return replay

    rec_a, _ = _run(_Keep(), ThreatModel.ACTIVE, pki)
    assert rec_a.ok and 0 in seen
    rec, revealed = _run(_Replay(), ThreatModel.ACTIVE, pki)
    assert not rec.ok and not _exposed(revealed, 8)
    assert len(rec.node_errors) == 8 and all(e.startswith("roster:") for e in rec.node_errors.values()), rec.node_errors


@pytest.mark.flower
def test_flower_clients_with_a_policy_refuse_server_chosen_weak_parameters(pki: Path) -> None:
    """The Flower mod holds the client's own policy: a server forcing degree 2 / threshold 2 on 8
    clients gets a typed refusal at setup from every client, and nothing is revealed."""
    from secagg import ClientPolicy

    n = 8
    # at 8 clients: 2^-20 against a 5% corrupt roster needs the complete graph, threshold 7
    policy = ClientPolicy(min_clients=n, dropout_rate=0.0, corruption_rate=0.05, security_bits=20, failure_bits=8)
    directory = str(pki / str(n))  # the server screens with the clients' PKI
    weak = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=2, threshold=2, threat="active", pki=directory))
    mods = [make_secagg_mod(threat="active", pki=str(pki / str(n)), policy=policy)]
    capp = vector_client_app(dimension=M, seed=1, mods=mods)
    run_inprocess(vector_server_app(weak, num_clients=n, dimension=M), capp, num_nodes=n)
    rec = weak.history[0]
    assert not rec.ok and len(rec.node_errors) == n, rec
    assert all("weaker than this client derives" in e for e in rec.node_errors.values()), rec.node_errors
    # the same clients accept the parameters they derive themselves
    fair = PrivAggSecAggWorkflow(SecAggWorkflowConfig.manual(degree=n - 1, threshold=7, threat="active", pki=directory))
    run_inprocess(vector_server_app(fair, num_clients=n, dimension=M), capp, num_nodes=n)
    assert fair.history[0].ok, fair.history[0]


@pytest.mark.flower
def test_inner_mods_see_the_roster_and_the_fewest_releasable_survivors(pki: Path) -> None:
    """The secure-aggregation mod tells the inner (DP) mods the roster it verified and the fewest survivors
    its own graph lets a sum be released with (``SecAggParams.min_survivors``)."""
    from protocols.flower.secagg import MIN_SURVIVORS_KEY, ROSTER_KEY

    seen: list[tuple[Any, Any]] = []

    def inner(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        cfg = msg.content.config_records.get("fitins.config")
        if cfg is not None and ROSTER_KEY in cfg:
            seen.append((cfg[ROSTER_KEY], cfg.get(MIN_SURVIVORS_KEY)))
        return call_next(msg, ctxt)

    n = 8
    cfg = SecAggWorkflowConfig.manual(degree=n - 1, threshold=5, threat=ThreatModel.ACTIVE, pki=str(pki / str(n)))
    wf = PrivAggSecAggWorkflow(cfg)
    mods = [make_secagg_mod(threat="active", pki=str(pki / str(n)), policy=TEST_POLICY), inner]
    capp = vector_client_app(dimension=M, seed=1, mods=mods)
    run_inprocess(vector_server_app(wf, num_clients=n, dimension=M), capp, num_nodes=n)
    assert wf.history[0].ok
    want = SecAggParams.manual(num_clients=n, degree=n - 1, threshold=5).min_survivors(n)
    assert want == 5 and seen == [(n, want)] * n  # complete graph: max(t, ceil(8 * 5 / 12)) = 5
