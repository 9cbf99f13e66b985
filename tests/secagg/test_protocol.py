"""Full rounds through the state machines: correctness under dropouts, and every abort path."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from privagg.randomness import InsecureDeterministicSecrets
from secagg import (
    ClientPolicy,
    ClientStage,
    ConsistencyRequest,
    DropStage,
    Envelope,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    MaskRequest,
    RoundSetup,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    ServerStage,
    ShareDelivery,
    UnmaskRequest,
    UnmaskResponse,
    crypto,
    make_identities,
    run_round,
)
from secagg.limbs import reconstruct_secret
from secagg.messages import RevealedShare, RevealSet

#: these tests exercise the protocol's mechanics with the server's numbers (unsafe opt-out, on purpose)
TRUST = ClientPolicy.trust_server()

M = 16


def _inputs(n: int, bits: int = 10, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 2**bits, M, dtype=np.uint64) for c in range(n)}


def _run(n=8, k=4, t=3, threat="active", drops=None, **kw):
    """A round whose server has no identity directory (unless ``server=`` is given): what the
    clients catch on their own, and client hooks that edit messages need not re-sign them."""
    p = SecAggParams.manual(num_clients=n, degree=k, threshold=t, threat=threat)
    inputs = kw.pop("inputs", None) or _inputs(n)
    unscreened = p.threat.value == "active"  # an active server without the PKI: explicitly unscreened
    srv = SecAggServer(p, clients=list(range(n)), dimension=M, round=kw.get("round", 0), screen_senders=not unscreened)
    kw.setdefault("server", srv)
    kw.setdefault("client_policy", TRUST)
    rep = run_round(p, client_ids=list(range(n)), inputs=inputs, dimension=M, dropouts=drops or {}, **kw)
    return rep, inputs, p


def _expected(rep, inputs, p):
    return sum(inputs[c] for c in rep.survivors) % (1 << p.modulus_bits)


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
@pytest.mark.parametrize(
    "drops",
    [
        {},
        {"advertise": [0]},
        {"share_keys": [1]},
        {"masked_input": [2]},
        {"consistency": [3]},
        {"unmask": [4]},
        {"advertise": [5], "masked_input": [6]},
    ],
)
def test_round_is_exact_under_dropouts(threat, drops):
    rep, inputs, p = _run(n=10, k=6, t=4, threat=threat, drops=drops)
    assert rep.ok, rep.abort
    assert np.array_equal(rep.sum, _expected(rep, inputs, p))
    gone_before_input = (
        set(drops.get("advertise", [])) | set(drops.get("share_keys", [])) | set(drops.get("masked_input", []))
    )
    assert set(rep.survivors) == set(range(10)) - gone_before_input
    assert rep.server.rejected == [] and rep.server.corrupt_shares == []


def _complete_graph_ok(n: int, t: int, fate: list[int | None], active: bool) -> bool:
    order = list(DropStage)
    alive = [set(c for c in range(n) if fate[c] is None or fate[c] > i) for i in range(len(order))]
    u1, u2, checked, u3 = alive[0], alive[2], alive[3], alive[4]
    u4, u5 = alive[5] if active else alive[4], alive[6]
    if not active:
        u5 = u5 & u3
    elif len(u1) > t and alive[1] != u1:  # active: a roster client that never reveals aborts the session
        return False
    return all(len(u) > t for u in (u1, u2, checked, u3, u4)) and len(u5 & u4) >= t


@settings(max_examples=30, deadline=None)
@given(
    threat=st.sampled_from(["semi-honest", "active"]),
    fate=st.lists(st.one_of(st.none(), st.integers(0, 6)), min_size=7, max_size=7),
)
def test_every_dropout_pattern_complete_graph(threat, fate):
    """n=7, complete graph (k=6), t=4: correct iff every stage keeps enough clients, else a clean abort."""
    n, t = 7, 4
    active = threat == "active"
    if not active:
        fate = [None if f == 5 else f for f in fate]  # no consistency stage in semi-honest mode
    order = list(DropStage)
    drops: dict[DropStage, list[int]] = {}
    for c, f in enumerate(fate):
        if f is not None:
            drops.setdefault(order[f], []).append(c)
    rep, inputs, p = _run(n=n, k=6, t=t, threat=threat, drops=drops)
    want_ok = _complete_graph_ok(n, t, fate, active)
    assert rep.ok == want_ok, (fate, rep.abort)
    if rep.ok:
        assert np.array_equal(rep.sum, _expected(rep, inputs, p))
    else:
        assert isinstance(rep.abort, ProtocolAbort) and rep.sum is None


@settings(max_examples=15, deadline=None)
@given(
    threat=st.sampled_from(["semi-honest", "active"]),
    fate=st.lists(st.one_of(st.none(), st.none(), st.none(), st.integers(0, 4)), min_size=12, max_size=12),
)
def test_sparse_graph_correct_or_clean_abort(threat, fate):
    order = list(DropStage)
    drops: dict[DropStage, list[int]] = {}
    for c, f in enumerate(fate):
        if f is not None:
            drops.setdefault(order[f], []).append(c)
    rep, inputs, p = _run(n=12, k=6, t=5, threat=threat, drops=drops)
    if rep.ok:
        assert np.array_equal(rep.sum, _expected(rep, inputs, p))
    else:
        assert isinstance(rep.abort, ProtocolAbort)
        assert rep.server.result is None


def test_too_few_survivors_abort():
    rep, _, _ = _run(n=8, k=4, t=3, drops={"masked_input": [0, 1, 2, 3, 4]})
    assert not rep.ok and "masked inputs" in rep.abort.reason


def test_too_few_shares_abort_names_the_client():
    rep, _, _ = _run(n=10, k=4, t=4, drops={"unmask": [0, 1, 2, 3, 4, 5]})
    assert not rep.ok and "shares of client" in rep.abort.reason


# ---------------------------------------------------------------------------- malicious server
def _edit(kind, recipients, fn):
    """A server hook editing messages of ``kind`` sent to ``recipients`` (None = everyone)."""

    def hook(env: Envelope) -> list[Envelope]:
        if isinstance(env.message, kind) and (recipients is None or env.recipient in recipients):
            return [Envelope(env.recipient, fn(env))]
        return [env]

    return hook


def _neighbour_of(rep, c):
    return rep.server.graph.neighbours(c)[0]


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
def test_overlapping_unmask_lists_abort(threat):
    def both(env):
        m = env.message
        # the survivor "1" also listed as dropped: asks for its key share too
        return dataclasses.replace(m, dropped=(*m.dropped, *m.survivors))

    rep, _, _ = _run(threat=threat, server_hook=_edit(UnmaskRequest, None, both))
    assert not rep.ok
    assert rep.client_aborts and all("both as survivor and as dropped" in e.reason for e in rep.client_aborts.values())
    assert rep.server.revealed_key_shares == {}


def test_repeated_ids_abort():
    def rep_ids(env):
        m = env.message
        return dataclasses.replace(m, survivors=m.survivors[:-1] + m.survivors[:1])

    rep, _, _ = _run(threat="semi-honest", server_hook=_edit(UnmaskRequest, None, rep_ids))
    assert rep.client_aborts and all("repeats" in e.reason for e in rep.client_aborts.values())

    # a list longer than the cohort is refused by the decoder, before anything is allocated
    rep, _, _ = _run(
        threat="semi-honest",
        server_hook=_edit(
            UnmaskRequest,
            None,
            lambda e: dataclasses.replace(e.message, survivors=e.message.survivors + e.message.survivors[:1]),
        ),
    )
    assert rep.client_aborts and all("does not fit" in e.reason for e in rep.client_aborts.values())


def test_omitted_neighbour_aborts():
    def omit(env):
        m = env.message
        return dataclasses.replace(m, survivors=tuple(c for c in m.survivors if c in (env.recipient,)))

    rep, _, _ = _run(threat="semi-honest", server_hook=_edit(UnmaskRequest, None, omit))
    assert len(rep.client_aborts) == 8 and rep.server.revealed_self_shares == {}
    assert all(
        "missing" in e.reason or "survived" in e.reason or "omit" in e.reason for e in rep.client_aborts.values()
    )


def test_unhardened_semi_honest_client_reveals_both_shares():
    """The attack a hardened client refuses: the textbook client hands over both shares of a survivor."""

    def both(env):
        m = env.message
        return dataclasses.replace(m, dropped=(*m.dropped, 0))

    rep, _, _ = _run(threat="semi-honest", hardened=False, server_hook=_edit(UnmaskRequest, None, both))
    assert not rep.client_aborts
    assert 0 in rep.server.revealed_self_shares and len(rep.server.revealed_key_shares.get(0, {})) == 0
    # the honest server ignores the unrequested key shares, but they did arrive:
    assert any("unrequested key share of client 0" in r for _, r in rep.server.rejected)


def test_both_shares_attack_recovers_an_input_only_when_unhardened():
    """Attack (c) end to end: with both shares of client 0 the server strips its masks."""
    seen: dict[str, list] = {"resp": [], "masked": []}

    def grab(cid, msg):
        if isinstance(msg, UnmaskResponse):
            seen["resp"].append(msg)
        if isinstance(msg, MaskedInput) and cid == 0:
            seen["masked"].append(msg)
        return [msg]

    def both(env):
        m = env.message
        return dataclasses.replace(m, dropped=(*m.dropped, 0))

    rep, inputs, p = _run(
        threat="semi-honest", hardened=False, server_hook=_edit(UnmaskRequest, None, both), client_hook=grab
    )
    srv = rep.server
    self_sh = {r.sender: s.share for r in seen["resp"] for s in r.self_shares if s.owner == 0}
    key_sh = {r.sender: s.share for r in seen["resp"] for s in r.key_shares if s.owner == 0}
    seed = reconstruct_secret(self_sh, threshold=p.threshold)
    key = reconstruct_secret(key_sh, threshold=p.threshold)
    peers = {v: srv.advertisements[v].mask_public_key for v in srv.delivered_to[0]}
    x0 = crypto.strip_masks(
        seen["masked"][0].values(),
        owner=0,
        self_seed=seed,
        mask_key=key,
        peers=peers,
        session=srv.session_id,
        round=0,
        modulus_bits=p.modulus_bits,
    )
    assert np.array_equal(x0, inputs[0])
    # hardened clients (the default) refuse the same request: no key share of a survivor leaves
    seen["resp"].clear()
    rep, _, _ = _run(threat="semi-honest", server_hook=_edit(UnmaskRequest, None, both), client_hook=grab)
    assert not any(s.owner == 0 for r in seen["resp"] for s in r.key_shares)
    assert rep.client_aborts


def test_forged_consistency_signatures_abort():
    """Key shares of a dropped client are only revealed against t valid signatures of its neighbours."""

    def forge(env):
        m = env.message
        return dataclasses.replace(m, signatures=tuple((c, _flip(sig)) for c, sig in m.signatures))

    rep, _, _ = _run(threat="active", drops={"masked_input": [5]}, server_hook=_edit(UnmaskRequest, None, forge))
    assert not rep.ok
    holders = set(rep.server.graph.neighbours(5))
    assert holders <= set(rep.client_aborts)
    assert all("signed the survivor set" in rep.client_aborts[c].reason for c in holders)
    assert 5 not in rep.server.revealed_key_shares


def test_missing_consistency_signatures_abort():
    def drop_sigs(env):
        return dataclasses.replace(env.message, signatures=())

    rep, _, _ = _run(threat="active", drops={"masked_input": [5]}, server_hook=_edit(UnmaskRequest, None, drop_sigs))
    assert not rep.ok and set(rep.server.graph.neighbours(5)) <= set(rep.client_aborts)
    assert 5 not in rep.server.revealed_key_shares


def test_hardened_is_mandatory_in_active_mode():
    from privagg.errors import ConfigurationError

    keys, directory = make_identities([0, 1])
    with pytest.raises(ConfigurationError):
        SecAggClient(0, threat="active", identity_key=keys[0], directory=directory, hardened=False, policy=TRUST)
    with pytest.raises(ConfigurationError):
        SecAggClient(0, threat="active", policy=TRUST)


def _flip(b: bytes) -> bytes:
    return bytes([b[0] ^ 1]) + b[1:]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda a: dataclasses.replace(a, signature=_flip(a.signature)),  # forged
        lambda a: dataclasses.replace(a, signature=b""),  # missing
        lambda a: dataclasses.replace(a, mask_public_key=_flip(a.mask_public_key)),  # substituted key
        lambda a: dataclasses.replace(a, enc_public_key=_flip(a.enc_public_key)),  # substituted key
    ],
    ids=["forged", "missing", "mask-key", "enc-key"],
)
def test_tampered_advertisement_aborts_neighbours(tamper):
    def edit(env):
        m = env.message
        return dataclasses.replace(
            m, advertisements=tuple(tamper(a) if a.client_id == 3 else a for a in m.advertisements)
        )

    rep, _, _ = _run(n=8, k=4, t=3, server_hook=_edit(KeyRoster, None, edit))
    assert not rep.ok
    # client 3 sees its own advertisement altered; its neighbours (in the graph of the tampered
    # roster's session) find no valid signature
    assert "own advertisement" in rep.client_aborts[3].reason
    others = [e.reason for c, e in rep.client_aborts.items() if c != 3]
    assert len(others) >= 4 and all("signature" in r for r in others)


def test_different_model_digests():
    """Attack (a): a different model for client 0. Active clients abort; semi-honest ones carry on."""

    def other_model(env):
        return dataclasses.replace(env.message, model_digest=b"\x01" * 32)

    rep, _, _ = _run(threat="active", server_hook=_edit(RoundSetup, {0}, other_model))
    assert not rep.ok and len(rep.client_aborts) == 8
    assert all("different configuration or model" in e.reason for e in rep.client_aborts.values())
    rep, inputs, p = _run(threat="semi-honest", server_hook=_edit(RoundSetup, {0}, other_model))
    assert rep.ok and np.array_equal(rep.sum, _expected(rep, inputs, p))


def test_different_config_to_one_client_aborts_active():
    def lower_threshold(env):
        m = env.message
        return dataclasses.replace(m, params=SecAggParams.manual(num_clients=8, degree=4, threshold=4))

    rep, _, _ = _run(threat="active", server_hook=_edit(RoundSetup, {2}, lower_threshold))
    assert not rep.ok and rep.client_aborts


def test_downgrade_to_semi_honest_aborts():
    def downgrade(env):
        m = env.message
        return dataclasses.replace(m, params=dataclasses.replace(m.params, threat="semi-honest"))

    rep, _, _ = _run(threat="active", server_hook=_edit(RoundSetup, None, downgrade))
    assert not rep.ok and len(rep.client_aborts) == 8
    assert all("requires active" in e.reason for e in rep.client_aborts.values())


class _SybilServer(SecAggServer):
    """Attack (b): the server slips a client of its own (id 99) into the roster."""

    sybil_adv: KeyAdvertisement

    def build_roster(self, advertisements):
        roster = super().build_roster(advertisements)
        return dataclasses.replace(roster, advertisements=(*roster.advertisements, self.sybil_adv))


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
def test_sybil_in_roster(threat):
    n = 8
    p = SecAggParams.manual(num_clients=n + 1, degree=4, threshold=3, threat=threat)
    sybil = SecAggClient(99, threat="semi-honest", secrets=InsecureDeterministicSecrets(9))
    (adv,) = sybil.step(RoundSetup(0, dataclasses.replace(p, threat="semi-honest"), M, bytes(32)))
    srv = _SybilServer(p, clients=list(range(n)), dimension=M, screen_senders=threat != "active")
    srv.sybil_adv = dataclasses.replace(adv, config_hash=crypto.config_hash(srv.setup))
    inputs = _inputs(n)
    rep = run_round(p, client_ids=list(range(n)), inputs=inputs, dimension=M, server=srv, client_policy=TRUST)
    if threat == "semi-honest":
        assert 99 in srv.graph
        # accepted: the sybil is somebody's neighbour and receives its shares (it then stays silent here)
        assert rep.ok and not rep.client_aborts
        assert any(99 in srv.graph.neighbours(c) for c in range(n))
        assert np.array_equal(rep.sum, _expected(rep, inputs, p))
    else:
        assert not rep.ok and len(rep.client_aborts) == n
        assert all("identity directory" in e.reason for e in rep.client_aborts.values())


def test_inconsistent_survivor_sets_abort():
    """Attack (b) on the consistency round: client 0 is 'dropped' for some, 'survived' for others."""

    def split(env):
        m = env.message
        if env.recipient % 2:
            return dataclasses.replace(m, survivors=tuple(c for c in m.survivors if c != 0))
        return m

    rep, _, _ = _run(threat="active", server_hook=_edit(ConsistencyRequest, None, split))
    assert not rep.ok
    assert rep.client_aborts  # odd clients: not all of their views agree, even ones: too few signatures
    assert rep.server.revealed_key_shares == {}


def test_fake_dropout_in_unmask_request_active():
    def fake(env):
        m = env.message
        if env.recipient in (1, 3, 5, 7):
            return dataclasses.replace(m, survivors=tuple(c for c in m.survivors if c != 0), dropped=(*m.dropped, 0))
        return m

    rep, _, _ = _run(threat="active", server_hook=_edit(UnmaskRequest, None, fake))
    assert not rep.ok
    assert {1, 3, 5, 7} <= set(rep.client_aborts)
    assert all("differs from the one this client signed" in rep.client_aborts[c].reason for c in (1, 3, 5, 7))
    assert 0 not in rep.server.revealed_key_shares


def test_corrupted_share_is_detected_and_attributed():
    def corrupt(cid, msg):
        if isinstance(msg, UnmaskResponse) and cid == 2 and msg.self_shares:
            s = msg.self_shares[0]
            bad = RevealedShare(s.owner, _flip(s.share))
            return [dataclasses.replace(msg, self_shares=(bad, *msg.self_shares[1:]))]
        return [msg]

    rep, inputs, p = _run(n=10, k=6, t=4, client_hook=corrupt)
    assert rep.ok and np.array_equal(rep.sum, _expected(rep, inputs, p))
    assert len(rep.server.corrupt_shares) == 1 and rep.server.corrupt_shares[0][0] == 2


def test_tampered_ciphertext_aborts_recipient():
    def tamper(env):
        m = env.message
        sh = m.shares[0]
        return dataclasses.replace(m, shares=(dataclasses.replace(sh, ciphertext=_flip(sh.ciphertext)), *m.shares[1:]))

    rep, _, _ = _run(n=10, k=6, t=4, server_hook=_edit(ShareDelivery, {1}, tamper))
    assert 1 in rep.client_aborts and "check failed" in rep.client_aborts[1].reason
    assert rep.ok  # client 1 became a dropout; its masks were removed


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
def test_inconsistent_dealer_is_excluded_before_masking(monkeypatch, threat):
    """Client 0 deals its first holder a self share off the polynomial (committed, so the commitment
    alone cannot tell): that holder's verifiable-sharing check fails on receipt, its complaint proves
    it, and client 0 is excluded before masking. The round completes with the others' sum."""
    import secagg.vss as vss_mod

    real = vss_mod.deal

    def cheat(self_seed, mask_key, *, xs, threshold, source):
        sh, co = real(self_seed, mask_key, xs=xs, threshold=threshold, source=source)
        if int(xs[-1]) == 1:
            sh[0, 0] = (sh[0, 0] + 12345) % ((1 << 31) - 1)  # the lowest holder's first self-share limb
        return sh, co

    monkeypatch.setattr(vss_mod, "deal", cheat)
    keys, directory = make_identities(range(8))
    p = SecAggParams.manual(num_clients=8, degree=4, threshold=3, threat=threat)
    active = threat == "active"
    srv = SecAggServer(p, clients=range(8), dimension=M, directory=directory if active else None)
    inputs = _inputs(8)
    rep = run_round(
        p,
        client_ids=list(range(8)),
        inputs=inputs,
        dimension=M,
        server=srv,
        identities=(keys, directory),
        client_policy=TRUST,
    )
    victim = min(srv.graph.neighbours(0))  # envelopes go in ascending holder order
    assert rep.ok and rep.client_aborts == {}
    assert srv.excluded == {
        0: f"client 0 dealt client {victim} shares off its polynomials (the verifiable-sharing check fails)"
    }
    assert 0 not in rep.survivors + rep.dropped
    _expected(rep, inputs, p)


def test_an_unfounded_complaint_is_refused_and_changes_nothing():
    """A holder that complains about an honest dealer (revealing its true pair key) proves nothing:
    the complaint is recorded against it and the round completes with everybody."""
    import dataclasses as dc

    from secagg.messages import Complaint, ShareCheck

    def complain(sender, msg):
        if sender == 3 and isinstance(msg, ShareCheck):
            return [dc.replace(msg, complaints=(Complaint(5, bytes(32)),))]
        return [msg]

    rep, inputs, p = _run(n=8, k=7, t=5, threat="semi-honest", client_hook=complain)
    assert (3, "unfounded complaint about client 5") in rep.server.rejected
    _expected(rep, inputs, p)
    assert set(rep.survivors) == set(range(8)) and rep.server.excluded == {}


# ---------------------------------------------------------------------------- advertisement screening
def _other_model(env):
    return dataclasses.replace(env.message, model_digest=b"\x01" * 32)


def _advert_hook(victim, fn):
    def hook(cid, msg):
        return [fn(msg)] if isinstance(msg, KeyAdvertisement) and cid == victim else [msg]

    return hook


_OUTSIDE_PKI = "outside-pki"
BAD_ADVERTISEMENTS = {
    # a client whose key is not in the server's PKI (e.g. a node claiming an id with a self-made key)
    _OUTSIDE_PKI: (5, {}, "client 5 is not in the identity directory"),
    "forged-signature": (
        3,
        {"client_hook": _advert_hook(3, lambda a: dataclasses.replace(a, signature=_flip(a.signature)))},
        "advertisement of client 3 has no valid signature",
    ),
    "unsigned": (
        3,
        {"client_hook": _advert_hook(3, lambda a: dataclasses.replace(a, signature=b""))},
        "advertisement of client 3 has no valid signature",
    ),
    "substituted-mask-key": (  # a network attacker's key in place of client 3's
        3,
        {"client_hook": _advert_hook(3, lambda a: dataclasses.replace(a, mask_public_key=_flip(a.mask_public_key)))},
        "advertisement of client 3 has no valid signature",
    ),
    "other-model": (  # client 0 was sent a setup for another model (model inconsistency)
        0,
        {"server_hook": _edit(RoundSetup, {0}, _other_model)},
        "client 0 joined a different configuration or model",
    ),
    "other-parameters": (
        2,
        {
            "server_hook": _edit(
                RoundSetup,
                {2},
                lambda env: dataclasses.replace(
                    env.message, params=SecAggParams.manual(num_clients=8, degree=4, threshold=4)
                ),
            )
        },
        "client 2 joined a different configuration or model",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ADVERTISEMENTS))
def test_server_screens_bad_advertisements_with_the_directory(case):
    """What the Flower workflow screened itself, the server core screens for every driver: a bad
    advertisement is rejected at the key stage, the round completes exactly without its client,
    and no honest client aborts. Without the directory, the same advertisement reaches the
    roster and every honest client aborts (nothing is revealed either way)."""
    victim, hooks, reason = BAD_ADVERTISEMENTS[case]
    n = 8
    p = SecAggParams.manual(num_clients=n, degree=4, threshold=3)
    keys, directory = make_identities(range(n))
    pki = {c: k for c, k in directory.items() if not (case == _OUTSIDE_PKI and c == victim)}
    srv = SecAggServer(p, clients=list(range(n)), dimension=M, directory=pki)
    inputs = _inputs(n)
    rep = run_round(
        p,
        client_ids=list(range(n)),
        inputs=inputs,
        dimension=M,
        identities=(keys, directory),
        server=srv,
        client_policy=TRUST,
        **hooks,
    )
    assert rep.ok, rep.abort
    assert srv.rejected == [(victim, reason)]
    assert victim not in srv.advertisements and victim not in {a.client_id for a in srv.roster.advertisements}
    assert rep.survivors == tuple(c for c in range(n) if c != victim) and rep.dropped == ()
    assert rep.client_aborts == {} and srv.corrupt_shares == []
    assert np.array_equal(rep.sum, _expected(rep, inputs, p))
    if case != _OUTSIDE_PKI:
        rep, _, _ = _run(n=n, k=4, t=3, **hooks)  # no directory: the clients catch it, the round aborts
        assert not rep.ok and rep.server.rejected == []
        assert rep.client_aborts and set(rep.client_aborts) <= set(range(n))
        # the driver's own server holds the clients' directory in active mode: screened as above
        rep = run_round(
            p,
            client_ids=list(range(n)),
            inputs=inputs,
            dimension=M,
            identities=(keys, directory),
            client_policy=TRUST,
            **hooks,
        )
        assert rep.ok and rep.server.rejected == [(victim, reason)] and rep.client_aborts == {}


def test_screened_advertisement_does_not_lock_out_its_client():
    """A forged advertisement under client 1's id is rejected without counting as client 1's
    answer: the genuine one, arriving later, is accepted and the stage closes on its own."""
    n = 4
    p = SecAggParams.manual(num_clients=n, degree=3, threshold=3)
    keys, directory = make_identities(range(n))
    srv = SecAggServer(p, clients=list(range(n)), dimension=M, directory=directory)
    adverts = []
    for c in range(n):
        client = SecAggClient(c, identity_key=keys[c], directory=directory, policy=TRUST)
        (adv,) = client.step(srv.setup)
        adverts.append(adv)
    forged = dataclasses.replace(adverts[1], enc_public_key=_flip(adverts[1].enc_public_key))
    assert srv.step([adverts[0], forged.encode()]) == []
    assert srv.rejected == [(1, "advertisement of client 1 has no valid signature")]
    assert srv.stage is ServerStage.COLLECT_KEYS and srv.waiting_for == {1, 2, 3}
    envs = srv.step(adverts[1:])
    assert srv.stage is ServerStage.COLLECT_REVEALS and srv.advertisements[1] == adverts[1]
    assert sorted(e.recipient for e in envs) == [0, 1, 2, 3] and len(srv.rejected) == 1


def test_directory_is_for_the_active_mode_only():
    p = SecAggParams.manual(num_clients=4, degree=3, threshold=3, threat="semi-honest")
    _, directory = make_identities(range(4))
    with pytest.raises(ConfigurationError, match="directory"):
        SecAggServer(p, clients=range(4), dimension=M, directory=directory)


# ---------------------------------------------------------------------------- the model an input came from
def test_client_refuses_an_input_from_another_model():
    """The digest of the model a client trained on must be the one its setup announces
    (model inconsistency through the training instructions, Pasquini et al. 2022)."""
    p = SecAggParams.manual(num_clients=4, degree=3, threshold=3, threat="semi-honest")
    setup = RoundSetup(0, p, M, b"\x07" * 32)
    c = SecAggClient(0, threat="semi-honest")
    with pytest.raises(ConfigurationError, match="setup first"):  # nothing to check against yet
        c.set_input(_inputs(1)[0], model_digest=setup.model_digest)
    c.step(setup)
    c.set_input(_inputs(1)[0], model_digest=setup.model_digest)
    assert c.stage is ClientStage.AWAIT_ROSTER and c.model_digest == setup.model_digest
    c = SecAggClient(0, threat="semi-honest")
    c.step(setup)
    with pytest.raises(ProtocolAbort, match="not the model of this round") as info:
        c.set_input(_inputs(1)[0], model_digest=b"\x08" * 32)
    assert info.value.stage == "await_roster" and info.value.party == 0
    assert c.stage is ClientStage.ABORTED and c._input is None and c._self_seed is None


# ---------------------------------------------------------------------------- replays
def test_replay_from_another_round_and_session():
    captured: dict[str, list] = {"masked": [], "server": []}

    def grab(cid, msg):
        if isinstance(msg, MaskedInput):
            captured["masked"].append(msg)
        return [msg]

    def grab_server(env):
        captured["server"].append(env)
        return [env]

    rep0, _inputs0, _p = _run(round=0, client_hook=grab, server_hook=grab_server)
    assert rep0.ok
    old = captured["masked"][0]

    def inject(cid, msg):
        if isinstance(msg, MaskedInput) and cid == old.sender:
            # replay of round 0 (and a same-round replay from another session)
            return [old, dataclasses.replace(old, round=msg.round), msg]
        return [msg]

    rep1, inputs1, p1 = _run(round=1, client_hook=inject)
    assert rep1.ok and np.array_equal(rep1.sum, _expected(rep1, inputs1, p1))
    reasons = [r for _, r in rep1.server.rejected]
    assert any("round 0" in r for r in reasons) and any("another session" in r for r in reasons)
    # a client refuses server messages of another round
    keys, directory = make_identities([0])
    c = SecAggClient(0, threat="active", identity_key=keys[0], directory=directory, round=1, policy=TRUST)
    setup0 = next(e.message for e in captured["server"] if isinstance(e.message, RoundSetup))
    with pytest.raises(InvalidMessage):
        c.step(setup0)
    assert c.stage is ClientStage.ABORTED


def test_fresh_masks_and_sessions_every_round():
    seen: dict[int, list] = {0: [], 1: []}
    for r in (0, 1):

        def grab(cid, msg, r=r):
            if isinstance(msg, MaskedInput):
                seen[r].append(msg)
            return [msg]

        rep, _, _ = _run(round=r, client_hook=grab, inputs=_inputs(8, seed=5))
        assert rep.ok
    assert seen[0][0].session_id != seen[1][0].session_id
    assert seen[0][0].data != seen[1][0].data  # same input, fresh masks


# ---------------------------------------------------------------------------- transition table
def _scripted(threat: str):
    """An honest round recorded with deterministic test secrets, to replay to a fresh client 0."""
    n = 6
    p = SecAggParams.manual(num_clients=n, degree=4, threshold=3, threat=threat)
    idents = make_identities(range(n), secrets=InsecureDeterministicSecrets(b"ids"))
    log: list = []

    def grab(env):
        if env.recipient == 0:
            log.append(env.message)
        return [env]

    def make_secrets():
        return InsecureDeterministicSecrets(b"round")

    rep = run_round(
        p,
        client_ids=list(range(n)),
        inputs=_inputs(n),
        dimension=M,
        identities=idents if threat == "active" else None,
        server_hook=grab,
        secrets=make_secrets(),
        client_policy=TRUST,
    )
    assert rep.ok
    return p, idents, log


ALL_TYPES = [RoundSetup, KeyRoster, RevealSet, ShareDelivery, MaskRequest, ConsistencyRequest, UnmaskRequest]


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
def test_exhaustive_stage_transitions(threat):
    """Every (stage, message type) pair outside the table aborts; the ones inside advance."""
    p, idents, log = _scripted(threat)
    by_type = {type(m): m for m in log}
    samples = {
        RoundSetup: RoundSetup(0, p, M, bytes(32)),
        KeyRoster: by_type[KeyRoster],
        RevealSet: by_type.get(RevealSet, RevealSet(0, by_type[ShareDelivery].session_id, ())),
        ShareDelivery: by_type[ShareDelivery],
        MaskRequest: by_type[MaskRequest],
        ConsistencyRequest: ConsistencyRequest(0, by_type[ShareDelivery].session_id, (0, 1, 2)),
        UnmaskRequest: by_type[UnmaskRequest],
    }
    stages_seen = []
    for depth in range(len(log) + 1):
        for wrong in ALL_TYPES:
            if depth < len(log) and isinstance(log[depth], wrong):
                continue
            c = _fresh_client(threat, idents)
            _feed(c, log[:depth])
            stage = c.stage
            with pytest.raises(ProtocolAbort):
                c.step(samples[wrong])
            # a finished client stays finished (its secrets are already gone)
            assert c.stage is (ClientStage.DONE if stage is ClientStage.DONE else ClientStage.ABORTED), (stage, wrong)
        c = _fresh_client(threat, idents)
        _feed(c, log[:depth])
        stages_seen.append(c.stage)
    expected = [ClientStage.AWAIT_SETUP, ClientStage.AWAIT_ROSTER]
    expected += [ClientStage.AWAIT_REVEALS] if threat == "active" else []
    expected += [ClientStage.AWAIT_SHARES, ClientStage.AWAIT_MASK]
    expected += [ClientStage.AWAIT_CONSISTENCY] if threat == "active" else []
    expected += [ClientStage.AWAIT_UNMASK, ClientStage.DONE]
    assert stages_seen == expected


def _fresh_client(threat, idents):
    keys, directory = idents
    # the same deterministic stream the driver used: client 0 draws its secrets first
    c = SecAggClient(
        0,
        threat=threat,
        identity_key=keys[0] if threat == "active" else None,
        directory=directory if threat == "active" else None,
        secrets=InsecureDeterministicSecrets(b"round"),
        policy=TRUST,
    )
    c.set_input(_inputs(6)[0])
    return c


def _feed(c, msgs):
    for m in msgs:
        c.step(m)


def test_message_after_done_is_refused():
    _p, idents, log = _scripted("semi-honest")
    c = _fresh_client("semi-honest", idents)
    _feed(c, log)
    assert c.stage is ClientStage.DONE
    with pytest.raises(ProtocolAbort):
        c.step(log[-1])


def test_setup_advertisement_roundtrip_types():
    p = SecAggParams.manual(num_clients=4, degree=2, threshold=2, threat="semi-honest")
    c = SecAggClient(1, threat="semi-honest")
    (adv,) = c.step(RoundSetup(0, p, M, bytes(32)).encode())
    assert isinstance(adv, KeyAdvertisement) and adv.signature == b""
    assert repr(c) == "SecAggClient(id=1, threat=semi-honest, stage=await_roster)"  # no secrets in reprs
