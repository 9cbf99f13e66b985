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
    decode_message,
    encode_message,
)
from protocols.paillier.parties import ClientStage, DecryptorStage, ServerStage

COUNT = 50


def _vectors(setup, clients, seed=0):
    q = setup.config.layout.q
    rng = np.random.default_rng(seed)
    return {c: rng.integers(-q, q + 1, COUNT) for c in clients}


def _contributions(session, vectors, rnd):
    return [session.client(c).contribute(round=rnd, values=v) for c, v in vectors.items()]


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
    s.server.start_round(round=0, count=COUNT)
    for c in _contributions(s, vec, 0):
        s.server.receive(c)
    req = s.server.aggregate()
    partials = [s.decryptors[i].step(req) for i in subset]
    assert np.array_equal(s.server.finish(partials), sum(vec.values()))


def test_one_decryptor_is_not_enough(threshold_setup):
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"one"))
    vec = _vectors(threshold_setup, [1, 2, 3])
    s.server.start_round(round=0, count=COUNT)
    for c in _contributions(s, vec, 0):
        s.server.receive(c)
    req = s.server.aggregate()
    with pytest.raises(ProtocolAbort, match="needs 2"):
        s.server.finish([s.decryptors[0].step(req)])


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
    setup = PaillierSetup.generate(cfg, secrets=InsecureDeterministicSecrets(b"single"))
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
    return AggregateRequest(pk.key_id, s.session, rnd, COUNT, tuple(aggregate or agg), tuple(contribs))


def test_decryptor_refuses_a_single_clients_ciphertext(pending):
    s, contribs = pending
    with pytest.raises(ProtocolAbort, match="1 authenticated clients; at least 3"):
        s.decryptors[0].step(_request(s, contribs[:1]))


def test_decryptor_refuses_too_few_clients(pending):
    s, contribs = pending
    with pytest.raises(ProtocolAbort, match="2 authenticated clients; at least 3"):
        s.decryptors[0].step(_request(s, contribs[:2]))
    # and the server does not even ask
    s.server.start_round(round=0, count=COUNT)
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
    with pytest.raises(ProtocolAbort, match="not registered"):
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
    with pytest.raises(ProtocolAbort, match="another key, session or round"):
        s.decryptors[0].step(dataclasses.replace(req, round=5))


def test_decryptor_decrypts_one_aggregate_per_round(pending):
    s, contribs = pending
    d = s.decryptors[0]
    d.step(_request(s, contribs[:4]))
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
    srv.start_round(round=0, count=COUNT)
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
        srv.start_round(round=0, count=COUNT)


def test_server_refuses_more_clients_than_the_slots_hold(threshold_setup):
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"many"))
    vec = _vectors(threshold_setup, range(1, 8))  # 7 > max_clients = 6
    s.server.start_round(round=0, count=COUNT)
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
        s.client(1).contribute(round=0, values=np.zeros(COUNT, dtype=np.int64))


def test_messages_survive_the_codec_in_a_round(pending):
    s, contribs = pending
    pk = s.setup.public_key
    req = _request(s, contribs[:3])
    back = decode_message(encode_message(req, pk), public_key=pk)
    assert back == req
    partial = s.decryptors[1].step(back)
    assert decode_message(encode_message(partial, pk), public_key=pk) == partial


def test_decryptor_needs_at_least_two_clients_even_if_configured_lower(threshold_setup, pending):
    s, contribs = pending
    d = PaillierDecryptor(
        key=threshold_setup.decryption_keys[0],
        client_keys=s.directory,
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
    s.server.start_round(round=0, count=COUNT)
    for c in _contributions(s, vec, 0):
        s.server.receive(c)
    req = s.server.aggregate()
    pk = s.setup.public_key
    fake = PartialDecryption(pk.key_id, s.session, 0, 3, PARTIAL_PLAINTEXT, (0,) * len(req.aggregate))
    with pytest.raises(ProtocolAbort, match="needs 2"):
        s.server.finish([s.decryptors[0].step(req), fake])


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
    srv.start_round(round=0, count=COUNT)
    assert srv.stage is ServerStage.COLLECTING
    assert not attempt(finish)
    for c in contribs:
        srv.receive(c)
    req = srv.aggregate()
    assert srv.stage is ServerStage.AWAITING_PARTIALS
    assert not attempt(receive) and not attempt(aggregate)
    srv.finish([d.step(req) for d in s.decryptors[:2]])
    assert srv.stage is ServerStage.DONE
    assert not attempt(receive) and not attempt(aggregate) and not attempt(finish)
    srv.start_round(round=1, count=COUNT)
    assert srv.stage is ServerStage.COLLECTING


def test_server_drops_a_cheating_decryptor(threshold_setup):
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"cheat"))
    vec = _vectors(threshold_setup, [1, 2, 3])
    s.server.start_round(round=0, count=COUNT)
    for c in _contributions(s, vec, 0):
        s.server.receive(c)
    req = s.server.aggregate()
    honest = [d.step(req) for d in s.decryptors]
    pk = s.setup.public_key
    shifted = list(honest[0].values)
    shifted[0] = shifted[0] * pk.encrypt(0) % pk.n2
    cheat = dataclasses.replace(honest[0], values=tuple(shifted))
    assert np.array_equal(s.server.finish([cheat, honest[1], honest[2]]), sum(vec.values()))
    assert s.server.rejected_decryptors == (1,)


def test_cheating_decryptor_with_only_t_answers_aborts(threshold_setup):
    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"cheat2"))
    vec = _vectors(threshold_setup, [1, 2, 3])
    s.server.start_round(round=0, count=COUNT)
    for c in _contributions(s, vec, 0):
        s.server.receive(c)
    req = s.server.aggregate()
    good = s.decryptors[0].step(req)
    bad = dataclasses.replace(s.decryptors[1].step(req), proof=b"")
    with pytest.raises(ProtocolAbort, match="needs 2"):
        s.server.finish([good, bad])


def test_threshold_round_without_proofs():
    cfg = PaillierConfig(
        key_bits=256, value_bits=8, max_clients=3, decryptors=3, threshold=2, proofs=False, allow_insecure=True
    )
    setup = PaillierSetup.generate(cfg, secrets=InsecureDeterministicSecrets(b"noproofs"))
    assert setup.threshold_key is not None and not setup.threshold_key.has_proofs
    s = PaillierSession(setup, secrets=InsecureDeterministicSecrets(b"noproofs-s"))
    vec = _vectors(setup, [1, 2, 3])
    assert np.array_equal(s.run_round(vec).sums, sum(vec.values()))


def test_out_of_range_plaintext_from_a_malicious_client_aborts_cleanly(threshold_setup):
    from protocols.paillier.messages import contribution_signed_bytes
    from protocols.paillier.parties import SIGNATURE_CONTEXT

    s = PaillierSession(threshold_setup, secrets=InsecureDeterministicSecrets(b"junk"))
    vec = _vectors(threshold_setup, [1, 2, 3])
    contribs = _contributions(s, vec, 0)
    pk = s.setup.public_key
    # client 3 signs a contribution whose first plaintext has its top bit above the packed slots
    junk = pk.encrypt(1 << (pk.plaintext_bits - 1))
    evil = dataclasses.replace(contribs[2], ciphertexts=(junk, *contribs[2].ciphertexts[1:]), signature=b"")
    sk = s.clients[3]._signing_key
    evil = dataclasses.replace(evil, signature=sk.sign(SIGNATURE_CONTEXT + contribution_signed_bytes(evil, pk)))
    s.server.start_round(round=0, count=COUNT)
    for c in (*contribs[:2], evil):
        s.server.receive(c)
    req = s.server.aggregate()
    with pytest.raises(ProtocolAbort, match="out-of-range"):
        s.server.finish([d.step(req) for d in s.decryptors[:2]])
