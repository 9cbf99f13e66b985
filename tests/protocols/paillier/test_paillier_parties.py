"""Client, server and decryptor state machines: a full round, and every refusal path."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from privagg.randomness import InsecureDeterministicSecrets
from protocols.paillier import (
    AggregateRequest,
    PaillierConfig,
    PaillierDecryptor,
    PaillierSession,
    PaillierSetup,
    RoundSetup,
    decode_message,
    encode_message,
    model_digest,
)
from protocols.paillier.decryptor import DecryptorStage
from protocols.paillier.parties import ClientStage, ServerStage

COUNT = 50
MODEL = model_digest([np.arange(4.0), np.ones((2, 3), dtype=np.float32)])  # the global model of the round
CRAFTED = model_digest([np.arange(4.0) * 1e3, np.ones((2, 3), dtype=np.float32)])  # a malicious server's variant


def _vectors(setup, clients, seed=0):
    q = setup.config.layout.q
    rng = np.random.default_rng(seed)
    return {c: rng.integers(-q, q + 1, COUNT) for c in clients}


def _setup(session, rnd, digest=MODEL):
    """The round setup a server sends (here built directly: the server may be malicious)."""
    return RoundSetup(session.setup.public_key.key_id, session.session, rnd, COUNT, digest)


def _contributions(session, vectors, rnd, digest=MODEL):
    return [
        session.client(c).contribute(setup=_setup(session, rnd, digest), model_digest=digest, values=v)
        for c, v in vectors.items()
    ]


def _endorsed(s, req):
    """The request with every decryptor's endorsement of its set (the server's second message)."""
    return dataclasses.replace(req, endorsements=tuple(d.endorse(req) for d in s.decryptors))


def _resigned(s, partial, index):
    """``partial`` signed with decryptor ``index``'s own key (that decryptor deviates)."""
    from protocols.paillier.decryptor import PARTIAL_SIGNATURE_CONTEXT
    from protocols.paillier.messages import partial_signed_bytes

    sk = s.setup.decryptor_signing_keys[index]
    data = PARTIAL_SIGNATURE_CONTEXT + partial_signed_bytes(partial, s.setup.public_key)
    return dataclasses.replace(partial, signature=sk.sign(data))


def _server_endorsed(s):
    """The server aggregates, every decryptor endorses, the server attaches the endorsements."""
    req = s.server.aggregate()
    return s.server.endorse([d.endorse(req) for d in s.decryptors])


def _partial(s, req, i):
    """Decryptor ``i``'s partial decryption of ``req`` once a quorum endorsed it."""
    return s.decryptors[i].step(req if req.endorsements else _endorsed(s, req))


def _signed_contribution(s, client_id, plaintexts, rnd=0, digest=MODEL):
    """What a *malicious* provisioned client can send: any plaintexts in [0, n) it knows, properly proven."""
    from protocols.paillier import ClientContribution
    from protocols.paillier.knowledge import MODE_FRESH, prove_knowledge
    from protocols.paillier.messages import contribution_signed_bytes
    from protocols.paillier.parties import SIGNATURE_CONTEXT

    pk = s.setup.public_key
    sec = InsecureDeterministicSecrets(b"malicious-%d" % client_id)
    wit = [(MODE_FRESH, pk.random_r(sec)) for _ in plaintexts]
    cts = tuple(pk.encrypt_with(m, pk.obfuscator(w[1])) for m, w in zip(plaintexts, wit))
    c = ClientContribution(pk.key_id, s.session, rnd, client_id, COUNT, digest, cts)
    c = dataclasses.replace(c, proof=prove_knowledge(c, plaintexts, wit, pk, secrets=sec))
    sk = s.setup.client_signing_keys[client_id]
    return dataclasses.replace(c, signature=sk.sign(SIGNATURE_CONTEXT + contribution_signed_bytes(c, pk)))


def test_full_round_threshold(threshold_setup):
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"full"))
    for rnd in range(2):
        vec = _vectors(threshold_setup, [3, 1, 4, 5], seed=rnd)
        out = s.run_round(vec)
        assert np.array_equal(out.sums, sum(vec.values()))
        assert out.participants == (1, 3, 4, 5)
        assert out.bytes_client_to_server > 0 and set(out.seconds) >= {"offline", "encrypt", "decrypt"}
    assert all(d.stage is DecryptorStage.DECRYPTED for d in s.decryptors[:2])
    assert s.server.stage is ServerStage.DONE
    assert s.clients[3].stage is ClientStage.SUBMITTED


@pytest.mark.parametrize("subset", list(itertools.combinations(range(3), 2)))
def test_any_two_of_three_decryptors(threshold_setup, subset):
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"any"))
    vec = _vectors(threshold_setup, [1, 2, 3])
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    for c in _contributions(s, vec, 0):
        s.server.receive(c)
    req = _server_endorsed(s)
    partials = [s.decryptors[i].decrypt(req) for i in subset]
    assert np.array_equal(s.server.finish(partials), sum(vec.values()))


def test_one_decryptor_is_not_enough(threshold_setup):
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"one"))
    vec = _vectors(threshold_setup, [1, 2, 3])
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    for c in _contributions(s, vec, 0):
        s.server.receive(c)
    req = _server_endorsed(s)
    with pytest.raises(ProtocolAbort, match="needs 2"):
        s.server.finish([s.decryptors[0].decrypt(req)])


def test_single_key_holder_round():
    cfg = PaillierConfig(
        key_bits=256,
        value_bits=8,
        max_clients=3,
        decryptors=1,
        threshold=1,
        allow_insecure=True,
        randomness="fixed-base",
    )
    setup = PaillierSetup.generate(cfg, clients=range(10), secrets=InsecureDeterministicSecrets(b"single"))
    s = PaillierSession(setup, secrets=InsecureDeterministicSecrets(b"single-s"))
    vec = _vectors(setup, [7, 8, 9])
    assert np.array_equal(s.run_round(vec).sums, sum(vec.values()))
    with pytest.raises(ConfigurationError, match="max_clients"):
        s.run_round(_vectors(setup, [1, 2, 3, 4]))


@pytest.fixture
def pending(threshold_setup):
    """A session whose clients 1..4 contributed to round 0, plus their contributions."""
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"pending"))
    vec = _vectors(threshold_setup, [1, 2, 3, 4])
    contribs = _contributions(s, vec, 0)
    return s, contribs


def _request(s, contribs, rnd=0, aggregate=None):
    pk = s.setup.public_key
    agg = [1] * len(contribs[0].ciphertexts)
    for c in contribs:
        agg = [a * x % pk.n2 for a, x in zip(agg, c.ciphertexts)]
    digest = contribs[0].model_digest if contribs else MODEL
    return AggregateRequest(pk.key_id, s.session, rnd, COUNT, digest, tuple(aggregate or agg), tuple(contribs))


def test_decryptor_refuses_a_single_clients_ciphertext(pending):
    s, contribs = pending
    with pytest.raises(ProtocolAbort, match="1 authenticated clients; at least 3"):
        s.decryptors[0].step(_request(s, contribs[:1]))


def test_decryptor_refuses_too_few_clients(pending):
    s, contribs = pending
    with pytest.raises(ProtocolAbort, match="2 authenticated clients; at least 3"):
        s.decryptors[0].step(_request(s, contribs[:2]))
    # and the server does not even ask
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    for c in contribs[:2]:
        s.server.receive(c)
    with pytest.raises(ProtocolAbort, match="at least 3 needed"):
        s.server.aggregate()


def test_decryptor_refuses_forged_signature(pending):
    s, contribs = pending
    forged = dataclasses.replace(contribs[1], signature=bytes(64))
    with pytest.raises(ProtocolAbort, match="signature of client 2"):
        s.decryptors[0].step(_request(s, [contribs[0], forged, contribs[2]]))
    # a sybil signing with its own key under a registered id
    evil = Ed25519PrivateKey.generate()
    from protocols.paillier.messages import contribution_signed_bytes
    from protocols.paillier.parties import SIGNATURE_CONTEXT

    sig = evil.sign(SIGNATURE_CONTEXT + contribution_signed_bytes(contribs[1], s.setup.public_key))
    with pytest.raises(ProtocolAbort, match="signature"):
        s.decryptors[0].step(_request(s, [contribs[0], dataclasses.replace(contribs[1], signature=sig), contribs[2]]))


def test_decryptor_refuses_duplicated_or_unregistered_clients(pending):
    s, contribs = pending
    with pytest.raises(ProtocolAbort, match="appears twice"):
        s.decryptors[0].step(_request(s, [contribs[0], contribs[0], contribs[1]]))
    stranger = dataclasses.replace(contribs[2], client_id=99)
    with pytest.raises(ProtocolAbort, match="not in the provisioned client directory"):
        s.decryptors[0].step(_request(s, [contribs[0], contribs[1], stranger]))


def test_decryptor_refuses_an_aggregate_that_is_not_the_product(pending):
    s, contribs = pending
    honest = _request(s, contribs[:3])
    # server swaps in client 1's ciphertexts as "the aggregate" (would reveal client 1 alone)
    with pytest.raises(ProtocolAbort, match="not the product"):
        s.decryptors[0].step(dataclasses.replace(honest, aggregate=contribs[0].ciphertexts))


def test_decryptor_refuses_wrong_key_session_or_round(pending, threshold_setup):
    s, contribs = pending
    req = _request(s, contribs[:3])
    with pytest.raises(InvalidMessage, match="wrong key id"):
        s.decryptors[0].step(dataclasses.replace(req, key_id=bytes(16)))
    with pytest.raises(InvalidMessage, match="wrong session"):
        s.decryptors[0].step(dataclasses.replace(req, session=bytes(16)))
    with pytest.raises(ProtocolAbort, match="another round"):
        s.decryptors[0].step(dataclasses.replace(req, round=5))


def test_decryptor_decrypts_one_aggregate_per_round(pending):
    s, contribs = pending
    d = s.decryptors[0]
    _partial(s, _request(s, contribs[:4]), 0)
    # same round again with a subset (a differencing attack on client 4) is refused
    with pytest.raises(ProtocolAbort, match="already decrypted"):
        d.step(_request(s, contribs[:3]))


def test_decryptor_rejects_other_message_types(pending):
    s, contribs = pending
    with pytest.raises(InvalidMessage):
        s.decryptors[0].step(contribs[0])  # type: ignore[arg-type]


def test_server_refusals(pending):
    s, contribs = pending
    srv = s.server
    with pytest.raises(ProtocolAbort, match="not collecting"):
        srv.receive(contribs[0])
    srv.start_round(round=0, count=COUNT, model_digest=MODEL)
    srv.receive(contribs[0])
    with pytest.raises(InvalidMessage, match="twice"):
        srv.receive(contribs[0])
    with pytest.raises(InvalidMessage, match="round"):
        srv.receive(dataclasses.replace(contribs[1], round=3))
    with pytest.raises(InvalidMessage, match="wrong number"):
        srv.receive(dataclasses.replace(contribs[1], ciphertexts=contribs[1].ciphertexts[:-1]))
    with pytest.raises(InvalidMessage, match="key id"):
        srv.receive(dataclasses.replace(contribs[1], key_id=bytes(16)))
    with pytest.raises(ProtocolAbort, match="no aggregate pending"):
        srv.finish([])
    with pytest.raises(ProtocolAbort, match="not after"):
        srv.start_round(round=0, count=COUNT, model_digest=MODEL)


def test_server_refuses_more_clients_than_the_slots_hold(threshold_setup):
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"many"))
    vec = _vectors(threshold_setup, range(1, 8))  # 7 > max_clients = 6
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    contribs = _contributions(s, vec, 0)
    for c in contribs[:6]:
        s.server.receive(c)
    with pytest.raises(ProtocolAbort, match="overflow"):
        s.server.receive(contribs[6])
    with pytest.raises(ProtocolAbort, match="exceed"):
        s.decryptors[0].step(_request(s, contribs))


def test_client_contributes_once_per_round(pending):
    s, _ = pending
    with pytest.raises(ProtocolAbort, match="already contributed"):
        s.client(1).contribute(setup=_setup(s, 0), model_digest=MODEL, values=np.zeros(COUNT, dtype=np.int64))


def test_messages_survive_the_codec_in_a_round(pending):
    s, contribs = pending
    pk = s.setup.public_key
    req = _request(s, contribs[:3])
    back = decode_message(encode_message(req, pk), public_key=pk)
    assert back == req
    endorsed = _endorsed(s, back)
    assert decode_message(encode_message(endorsed, pk), public_key=pk) == endorsed
    partial = s.decryptors[1].step(endorsed)
    assert decode_message(encode_message(partial, pk), public_key=pk) == partial


def test_decryptor_needs_at_least_two_clients_even_if_configured_lower(threshold_setup, pending):
    s, contribs = pending
    d = PaillierDecryptor(
        key=threshold_setup.decryption_keys[0],
        client_keys=s.directory,
        decryptor_keys=threshold_setup.decryptor_directory,
        signing_key=threshold_setup.decryptor_signing_keys[1],
        layout=s.layout,
        min_clients=1,
        session=s.session,
    )
    assert d.min_clients == 2
    with pytest.raises(ProtocolAbort, match="at least 2"):
        d.step(_request(s, contribs[:1]))


def test_config_refusals():
    with pytest.raises(ConfigurationError, match="min_clients"):
        PaillierConfig(key_bits=256, min_clients=1, allow_insecure=True)
    with pytest.raises(ConfigurationError, match="threshold"):
        PaillierConfig(key_bits=256, decryptors=2, threshold=3, allow_insecure=True)
    with pytest.raises(ConfigurationError, match="randomness"):
        PaillierConfig(key_bits=256, randomness="cheap", allow_insecure=True)
    with pytest.raises(ConfigurationError, match="key_bits"):
        PaillierConfig(key_bits=1024)
    with pytest.raises(ConfigurationError, match="does not fit"):
        PaillierConfig(key_bits=32, value_bits=30, max_clients=4, allow_insecure=True)


def test_server_ignores_plaintext_claims_under_a_threshold_key(threshold_setup):
    from protocols.paillier import PartialDecryption
    from protocols.paillier.messages import PARTIAL_PLAINTEXT

    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"claims"))
    vec = _vectors(threshold_setup, [1, 2, 3])
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    for c in _contributions(s, vec, 0):
        s.server.receive(c)
    req = _server_endorsed(s)
    pk = s.setup.public_key
    fake = PartialDecryption(pk.key_id, s.session, 0, 3, PARTIAL_PLAINTEXT, (0,) * len(req.aggregate))
    with pytest.raises(ProtocolAbort, match="needs 2"):
        s.server.finish([s.decryptors[0].decrypt(req), fake])


def test_server_stage_transitions_exhaustive(threshold_setup):
    """Every (stage, action) pair: the allowed ones move on, the others abort and change nothing."""
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"stages"))
    vec = _vectors(threshold_setup, [1, 2, 3])
    contribs = _contributions(s, vec, 0)
    srv = s.server

    def attempt(action):
        before = srv.stage
        try:
            action()
        except ProtocolAbort:
            assert srv.stage is before
            return False
        return True

    receive = lambda: srv.receive(contribs[0])  # noqa: E731
    aggregate = srv.aggregate
    finish = lambda: srv.finish([])  # noqa: E731
    assert srv.stage is ServerStage.IDLE
    assert not attempt(receive) and not attempt(aggregate) and not attempt(finish)
    srv.start_round(round=0, count=COUNT, model_digest=MODEL)
    assert srv.stage is ServerStage.COLLECTING
    assert not attempt(finish)
    for c in contribs:
        srv.receive(c)
    req = srv.aggregate()
    assert srv.stage is ServerStage.AWAITING_ENDORSEMENTS
    assert not attempt(receive) and not attempt(aggregate) and not attempt(finish)
    assert not attempt(lambda: srv.endorse([]))
    req = srv.endorse([d.endorse(req) for d in s.decryptors])
    assert srv.stage is ServerStage.AWAITING_PARTIALS
    assert not attempt(receive) and not attempt(aggregate) and not attempt(lambda: srv.endorse([]))
    srv.finish([d.decrypt(req) for d in s.decryptors[:2]])
    assert srv.stage is ServerStage.DONE
    assert not attempt(receive) and not attempt(aggregate) and not attempt(finish)
    srv.start_round(round=1, count=COUNT, model_digest=MODEL)
    assert srv.stage is ServerStage.COLLECTING


def test_server_drops_a_cheating_decryptor(threshold_setup):
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"cheat"))
    vec = _vectors(threshold_setup, [1, 2, 3])
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    for c in _contributions(s, vec, 0):
        s.server.receive(c)
    req = _server_endorsed(s)
    honest = [d.decrypt(req) for d in s.decryptors]
    pk = s.setup.public_key
    shifted = list(honest[0].values)
    shifted[0] = shifted[0] * pk.encrypt(0) % pk.n2
    # decryptor 1 itself cheats: it signs its wrong partial, so the blame is its own
    cheat = _resigned(s, dataclasses.replace(honest[0], values=tuple(shifted)), 1)
    assert np.array_equal(s.server.finish([cheat, honest[1], honest[2]]), sum(vec.values()))
    assert s.server.rejected_decryptors == (1,) and s.server.spoofed_partials == 0


def test_cheating_decryptor_with_only_t_answers_aborts(threshold_setup):
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"cheat2"))
    vec = _vectors(threshold_setup, [1, 2, 3])
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    for c in _contributions(s, vec, 0):
        s.server.receive(c)
    req = _server_endorsed(s)
    good = s.decryptors[0].decrypt(req)
    bad = _resigned(s, dataclasses.replace(s.decryptors[1].decrypt(req), proof=b""), 2)
    with pytest.raises(ProtocolAbort, match="needs 2"):
        s.server.finish([good, bad])


def test_threshold_round_without_proofs():
    cfg = PaillierConfig(
        key_bits=256, value_bits=8, max_clients=3, decryptors=3, threshold=2, proofs=False, allow_insecure=True
    )
    setup = PaillierSetup.generate(cfg, clients=range(10), secrets=InsecureDeterministicSecrets(b"noproofs"))
    assert setup.threshold_key is not None and not setup.threshold_key.has_proofs
    s = PaillierSession(setup, secrets=InsecureDeterministicSecrets(b"noproofs-s"))
    vec = _vectors(setup, [1, 2, 3])
    assert np.array_equal(s.run_round(vec).sums, sum(vec.values()))


def test_out_of_range_plaintext_from_a_malicious_client_aborts_cleanly(threshold_setup):
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"junk"))
    vec = _vectors(threshold_setup, [1, 2, 3])
    contribs = _contributions(s, {c: v for c, v in vec.items() if c != 3}, 0)
    pk = s.setup.public_key
    # client 3 encrypts (and proves) a first plaintext with its top bit above the packed slots
    nct = len(contribs[0].ciphertexts)
    evil = _signed_contribution(s, 3, [1 << (pk.plaintext_bits - 1)] + [0] * (nct - 1))
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    for c in (*contribs, evil):
        s.server.receive(c)
    req = _server_endorsed(s)
    with pytest.raises(ProtocolAbort, match="out-of-range"):
        s.server.finish([d.decrypt(req) for d in s.decryptors[:2]])


# ------------------------------------------------------------------ model consistency and replay
def test_round_with_a_model_digest(threshold_setup):
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"digest"))
    vec = _vectors(threshold_setup, [1, 2, 3])
    assert np.array_equal(s.run_round(vec, model_digest=MODEL).sums, sum(vec.values()))
    assert s.server.model_digest == MODEL


def test_model_digest_binds_dtype_shape_and_values():
    a = np.arange(6.0)
    assert len(MODEL) == 32 and model_digest([a]) == model_digest([a.copy()])
    others: list[list[np.ndarray]] = [
        [a.reshape(2, 3)],  # same bytes, another shape
        [a.view(np.int64)],  # same bytes, another dtype
        [a[:3], a[3:]],  # same bytes, split into two arrays
        [a + 1e-9],
        [a, np.zeros(0)],
    ]
    assert len({model_digest([a]), *(model_digest(o) for o in others)}) == len(others) + 1
    with pytest.raises(ConfigurationError, match="dtype"):
        model_digest([np.array([object()], dtype=object)])


def test_model_digest_binds_the_training_config():
    a = [np.arange(3.0)]
    base = model_digest(a)
    assert model_digest(a, config={}) == base
    cfg = {"lr": 0.1, "epochs": 2, "name": "x", "tags": [1, 2], "flag": True, "blob": b"\x00"}
    d = model_digest(a, config=cfg)
    assert d != base and model_digest(a, config=dict(reversed(list(cfg.items())))) == d  # key order is irrelevant
    variants = [{"epochs": v} for v in (1, 1.0, True, "1", b"1", [1], np.int64(2))]
    digests = {model_digest(a, config=v) for v in variants}
    assert len(digests) == len(variants)  # 1, 1.0, True, "1", b"1", [1] differ by type
    assert model_digest(a, config={"epochs": np.int64(2)}) == model_digest(a, config={"epochs": 2})
    with pytest.raises(ConfigurationError, match="config"):
        model_digest(a, config={"f": {1, 2}})


def test_client_refuses_a_setup_announcing_another_model(pending):
    s, _ = pending
    c = s.clients[1]
    zeros = np.zeros(COUNT, dtype=np.int64)
    with pytest.raises(ProtocolAbort, match="not the model the round setup announces"):
        c.contribute(setup=_setup(s, 1, CRAFTED), model_digest=MODEL, values=zeros)
    assert c.last_round == 0  # nothing signed, the client can still take the honest setup
    with pytest.raises(ProtocolAbort, match="50 values, the round setup expects 51"):
        c.contribute(setup=dataclasses.replace(_setup(s, 1), count=COUNT + 1), model_digest=MODEL, values=zeros)
    with pytest.raises(InvalidMessage, match="wrong session"):
        c.contribute(setup=dataclasses.replace(_setup(s, 1), session=bytes(16)), model_digest=MODEL, values=zeros)
    with pytest.raises(InvalidMessage, match="wrong key id"):
        c.contribute(setup=dataclasses.replace(_setup(s, 1), key_id=bytes(16)), model_digest=MODEL, values=zeros)
    with pytest.raises(ConfigurationError, match="digest"):
        c.contribute(setup=_setup(s, 1), model_digest=MODEL[:16], values=zeros)
    out = c.contribute(setup=_setup(s, 1), model_digest=MODEL, values=zeros)
    assert out.round == 1 and out.model_digest == MODEL


def test_decryptor_refuses_contributions_on_different_models(pending):
    """Model inconsistency: the server sends a crafted model to client 1 and the real one to the others."""
    s, honest = pending
    target = _contributions(s, {1: np.zeros(COUNT, dtype=np.int64)}, 1, digest=CRAFTED)[0]
    others = _contributions(s, {c: np.ones(COUNT, dtype=np.int64) for c in (2, 3, 4)}, 1, digest=MODEL)
    mixed = [target, *others]
    for named in (MODEL, CRAFTED):
        req = dataclasses.replace(_request(s, mixed, rnd=1), model_digest=named)
        for d in s.decryptors:
            with pytest.raises(ProtocolAbort, match="2 different model digests") as info:
                d.step(req)
            assert info.value.stage == "verify"
            assert d.last_round == -1 and d.stage is DecryptorStage.READY  # nothing decrypted
    # an honest server does not even accept the odd one out
    s.server.start_round(round=1, count=COUNT, model_digest=MODEL)
    with pytest.raises(InvalidMessage, match="model digest mismatch"):
        s.server.receive(target)
    for c in others:
        s.server.receive(c)
    assert s.server.aggregate().model_digest == MODEL
    # the consistent aggregate decrypts
    assert honest[0].model_digest == MODEL
    _partial(s, _request(s, others, rnd=1), 0)


def test_decryptor_refuses_a_request_naming_another_model(pending):
    s, contribs = pending
    req = dataclasses.replace(_request(s, contribs[:3]), model_digest=CRAFTED)
    with pytest.raises(ProtocolAbort, match="names a model digest that no contribution signed"):
        s.decryptors[0].step(req)


def test_signature_covers_the_model_digest(pending):
    s, contribs = pending
    # a server relabelling every contribution's model digest (to hide a crafted model) breaks the signatures
    relabelled = [dataclasses.replace(c, model_digest=CRAFTED) for c in contribs[:3]]
    with pytest.raises(ProtocolAbort, match="signature of client 1"):
        s.decryptors[0].step(_request(s, relabelled))


def test_decryptor_refuses_a_contribution_replayed_from_another_round(pending):
    s, round0 = pending
    round1 = _contributions(s, _vectors(s.setup, [1, 2, 3], seed=1), 1)
    old = round0[3]  # client 4's round-0 contribution, replayed into round 1
    with pytest.raises(ProtocolAbort, match="client 4 was made for another round") as info:
        s.decryptors[0].step(_request(s, [*round1, old], rnd=1))
    assert "replayed" in info.value.reason
    # relabelling its round breaks its signature
    with pytest.raises(ProtocolAbort, match="signature of client 4"):
        s.decryptors[0].step(_request(s, [*round1, dataclasses.replace(old, round=1)], rnd=1))
    # a whole round replayed after it was decrypted is refused too
    _partial(s, _request(s, round0), 1)
    with pytest.raises(ProtocolAbort, match="already decrypted"):
        s.decryptors[1].step(_request(s, round0[:3]))
    assert s.decryptors[0].last_round == -1
    s.decryptors[0].step(_request(s, round1, rnd=1))


def test_decryptor_refuses_a_contribution_replayed_from_another_session(pending):
    """Client 4 (same signing key) also takes part in another session; its contribution there is replayed."""
    from protocols.paillier import PaillierClient, make_randomness

    s, contribs = pending
    pk = s.setup.public_key
    elsewhere = PaillierClient(
        client_id=4,
        public_key=pk,
        layout=s.layout,
        signing_key=s.clients[4]._signing_key,
        randomness=make_randomness("fresh", pk, secrets=InsecureDeterministicSecrets(b"other")),
        session=b"another-session!",
    )
    setup = RoundSetup(pk.key_id, b"another-session!", 0, COUNT, MODEL)
    foreign = elsewhere.contribute(setup=setup, model_digest=MODEL, values=np.zeros(COUNT, dtype=np.int64))
    with pytest.raises(ProtocolAbort, match="client 4 was made for another session"):
        s.decryptors[0].step(_request(s, [*contribs[:3], foreign]))
    with pytest.raises(ProtocolAbort, match="signature of client 4"):
        s.decryptors[0].step(_request(s, [*contribs[:3], dataclasses.replace(foreign, session=s.session)]))
    with pytest.raises(ProtocolAbort, match="client 4 was made for another key"):
        s.decryptors[0].step(_request(s, [*contribs[:3], dataclasses.replace(foreign, key_id=bytes(16))]))
    assert s.decryptors[0].last_round == -1
