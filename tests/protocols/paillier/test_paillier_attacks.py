"""Attacks on the real Paillier parties (issue 13): each one refused with a typed error, honest rounds still decrypt.

Every attack rewrites the messages between real state machines (clients, server, decryptors)
the way a malicious server — possibly holding some provisioned clients' keys and fewer than
``t`` decryptors — could.
"""

from __future__ import annotations

import dataclasses

import gmpy2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.errors import ConfigurationError, ProtocolAbort
from privagg.randomness import InsecureDeterministicSecrets
from protocols.paillier import (
    AggregateRequest,
    ClientContribution,
    FileStore,
    PaillierClient,
    PaillierConfig,
    PaillierDecryptor,
    PaillierServer,
    PaillierSession,
    PaillierSetup,
    PartialDecryption,
    RoundSetup,
    SetEndorsement,
    endorsement_quorum,
    make_randomness,
    model_digest,
)
from protocols.paillier.decryptor import ENDORSEMENT_CONTEXT, PARTIAL_SIGNATURE_CONTEXT
from protocols.paillier.messages import contribution_signed_bytes, endorsement_signed_bytes, partial_signed_bytes
from protocols.paillier.packing import PackingLayout
from protocols.paillier.parties import SIGNATURE_CONTEXT

COUNT = 40
MODEL = model_digest([np.arange(3.0)])


@pytest.fixture(scope="module")
def setup_2of4():
    cfg = PaillierConfig(
        key_bits=256, value_bits=10, max_clients=6, decryptors=4, threshold=2, min_clients=3, allow_insecure=True
    )
    return PaillierSetup.generate(cfg, clients=range(8), secrets=InsecureDeterministicSecrets(b"attacks-2of4"))


def _vectors(setup, clients, seed=0):
    q = setup.config.layout.q
    rng = np.random.default_rng(seed)
    return {c: rng.integers(-q, q + 1, COUNT) for c in clients}


def _contribute(s, vectors, rnd):
    rs = RoundSetup(s.setup.public_key.key_id, s.session, rnd, COUNT, MODEL)
    return [s.client(c).contribute(setup=rs, model_digest=MODEL, values=v) for c, v in vectors.items()]


def _request(s, contribs, rnd=0):
    pk = s.setup.public_key
    agg = [1] * len(contribs[0].ciphertexts)
    for c in contribs:
        agg = [a * x % pk.n2 for a, x in zip(agg, c.ciphertexts)]
    return AggregateRequest(pk.key_id, s.session, rnd, COUNT, MODEL, tuple(agg), tuple(contribs))


def _resign(s, contribution, client_id):
    """``contribution`` relabelled as ``client_id``'s and signed with that (colluding, provisioned) client's key."""
    pk = s.setup.public_key
    c = dataclasses.replace(contribution, client_id=client_id, signature=b"")
    sk = s.setup.client_signing_keys[client_id]
    return dataclasses.replace(c, signature=sk.sign(SIGNATURE_CONTEXT + contribution_signed_bytes(c, pk)))


def _decrypt_all(s, req, decryptors=None):
    """Endorse by every decryptor, then decrypt by ``decryptors`` (indices into ``s.decryptors``)."""
    endorsed = dataclasses.replace(req, endorsements=tuple(d.endorse(req) for d in s.decryptors))
    return [s.decryptors[i].decrypt(endorsed) for i in (decryptors or range(s.config.threshold))]


def _honest_round_still_decrypts(s, rnd, clients=(1, 2, 3)):
    vec = _vectors(s.setup, clients, seed=rnd + 100)
    assert np.array_equal(s.run_round(vec, round=rnd, model_digest=MODEL).sums, sum(vec.values()))


# ------------------------------------------------------------------ 1. the directory is the dealer's
def test_the_session_cannot_create_sybil_clients(setup_2of4):
    """Old code: ``session.client(1000)`` registered a Sybil in the decryptors' directory."""
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"sybil"))
    with pytest.raises(ConfigurationError, match="client 1000 was not provisioned"):
        s.client(1000)
    with pytest.raises(TypeError):
        s.directory[1000] = Ed25519PrivateKey.generate().public_key()  # type: ignore[index]
    assert 1000 not in s.directory and all(1000 not in d.client_keys for d in s.decryptors)
    _honest_round_still_decrypts(s, 0)


def test_sybil_enc0_next_to_a_victim_is_refused(setup_2of4):
    """Victim + two Sybil ``Enc(0)`` signed by server-made keys: the decryptors refuse, nothing is decrypted."""
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"sybil2"))
    pk = s.setup.public_key
    victim = _contribute(s, _vectors(s.setup, [1]), 0)[0]
    sybils = []
    for cid in (1000, 1001):
        sk = Ed25519PrivateKey.from_private_bytes(bytes([cid % 256]) * 32)
        client = PaillierClient(
            client_id=cid,
            public_key=pk,
            layout=s.layout,
            signing_key=sk,
            randomness=make_randomness("fresh", pk, secrets=InsecureDeterministicSecrets(b"s%d" % cid)),
            session=s.session,
        )
        rs = RoundSetup(pk.key_id, s.session, 0, COUNT, MODEL)
        sybils.append(client.contribute(setup=rs, model_digest=MODEL, values=np.zeros(COUNT, dtype=np.int64)))
    for d in s.decryptors:
        with pytest.raises(ProtocolAbort, match="client 1000 is not in the provisioned client directory"):
            d.step(_request(s, [victim, *sybils]))
        assert d.last_round == -1
    _honest_round_still_decrypts(s, 1)


def test_a_decryptor_copies_its_directory(setup_2of4):
    """Mutating the mapping a decryptor was built from (the old shared dict) does not reach it."""
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"copy"))
    shared = dict(setup_2of4.client_directory)
    d = PaillierDecryptor(
        key=setup_2of4.decryption_keys[0],
        client_keys=shared,
        decryptor_keys=setup_2of4.decryptor_directory,
        signing_key=setup_2of4.decryptor_signing_keys[1],
        layout=s.layout,
        min_clients=3,
        session=s.session,
    )
    sk = Ed25519PrivateKey.generate()
    shared[7777] = sk.public_key()
    assert 7777 not in d.client_keys
    with pytest.raises(ConfigurationError, match="signing key"):
        PaillierDecryptor(
            key=setup_2of4.decryption_keys[0],
            client_keys=shared,
            decryptor_keys=setup_2of4.decryptor_directory,
            signing_key=setup_2of4.decryptor_signing_keys[2],
            layout=s.layout,
            min_clients=3,
            session=s.session,
        )


# ------------------------------------------------------------------ 5. derived ciphertexts (proofs of knowledge)
def test_victims_ciphertexts_resigned_under_a_colluding_id_are_refused(setup_2of4):
    """Old code decrypted 2 x victim + 0: the victim's ciphertexts re-signed by a colluding provisioned client."""
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"resign"))
    vec = _vectors(s.setup, [1, 2])
    victim, other = _contribute(s, vec, 0)
    stolen = _resign(s, victim, 5)  # proof bound to client 1: does not verify for client 5
    with pytest.raises(ProtocolAbort, match=r"plaintext knowledge of client\(s\) 5 does not verify"):
        s.decryptors[0].step(_request(s, [victim, other, stolen]))
    # the proof stripped or swapped for the colluder's own is refused as well
    own = _contribute(s, {5: np.zeros(COUNT, dtype=np.int64)}, 0)[0]
    swapped = _resign(s, dataclasses.replace(stolen, proof=own.proof), 5)
    stripped = _resign(s, dataclasses.replace(stolen, proof=b""), 5)
    for bad in (swapped, stripped):
        with pytest.raises(ProtocolAbort, match="plaintext knowledge"):
            s.decryptors[1].step(_request(s, [victim, other, bad]))
    _honest_round_still_decrypts(s, 1)


def test_previous_round_ciphertexts_resigned_for_the_next_round_are_refused(setup_2of4):
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"prev"))
    round0 = _contribute(s, _vectors(s.setup, [1, 2, 3]), 0)
    assert np.array_equal(
        s.server.finish(_decrypt_all_via_server(s, round0, 0)),
        sum(_vectors(s.setup, [1, 2, 3]).values()),
    )
    round1 = _contribute(s, _vectors(s.setup, [2, 3], seed=1), 1)
    old = _resign(s, dataclasses.replace(round0[0], round=1), 6)  # client 1's round-0 vector as client 6, round 1
    with pytest.raises(ProtocolAbort, match=r"client\(s\) 6"):
        s.decryptors[0].step(_request(s, [*round1, old], rnd=1))


def _decrypt_all_via_server(s, contribs, rnd):
    s.server.start_round(round=rnd, count=COUNT, model_digest=MODEL)
    for c in contribs:
        s.server.receive(c)
    req = s.server.aggregate()
    endorsed = s.server.endorse([d.endorse(req) for d in s.decryptors])
    return [d.decrypt(endorsed) for d in s.decryptors[:2]]


def test_enc_pad_over_two_honest_ciphertexts_is_refused(setup_2of4):
    """3 honest + 1 colluding client sending ``Enc(3 pad) c_1^-1 c_2^-1``: the sum would be client 3's vector."""
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"derived"))
    pk = s.setup.public_key
    honest = _contribute(s, _vectors(s.setup, [1, 2, 3]), 0)
    pad = s.layout.pack(np.zeros(COUNT, dtype=np.int64))  # the packing of a zero vector (offsets only)
    own = _contribute(s, {4: np.zeros(COUNT, dtype=np.int64)}, 0)[0]
    derived = tuple(
        pk.encrypt(3 * p % pk.n) * gmpy2.invert(a, pk.n2) * gmpy2.invert(b, pk.n2) % pk.n2
        for p, a, b in zip(pad, honest[0].ciphertexts, honest[1].ciphertexts)
    )
    # its best effort: its own valid proof (for Enc(0)) attached to the derived ciphertexts
    evil = _resign(s, dataclasses.replace(own, ciphertexts=derived), 4)
    with pytest.raises(ProtocolAbort, match=r"client\(s\) 4 does not verify"):
        s.decryptors[0].step(_request(s, [*honest, evil]))
    _honest_round_still_decrypts(s, 1)


# ------------------------------------------------------------------ 2. one contribution set per round
def test_two_sets_for_one_round_cannot_both_be_decrypted(setup_2of4):
    """2-of-4: {A, B, C, D} to decryptors 1-2, {B, C, D} to 3-4 — old code decrypted both (the difference is A)."""
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"equivocate"))
    assert s.quorum == endorsement_quorum(4, 2) == 3
    a, b, c, dd = _contribute(s, _vectors(s.setup, [1, 2, 3, 4]), 0)
    big, small = _request(s, [a, b, c, dd]), _request(s, [b, c, dd])
    e_big = [d.endorse(big) for d in s.decryptors[:2]]
    e_small = [d.endorse(small) for d in s.decryptors[2:]]
    for req, ends in ((big, e_big), (small, e_small)):
        # t = 2 endorsements are not a quorum: no decryptor releases a partial
        for d in s.decryptors:
            with pytest.raises(ProtocolAbort):
                d.step(dataclasses.replace(req, endorsements=tuple(ends)))
    # each decryptor shown the other set refuses and keeps the evidence
    with pytest.raises(ProtocolAbort, match="two different contribution sets for round 0"):
        s.decryptors[0].step(small)
    with pytest.raises(ProtocolAbort, match="two different contribution sets for round 0"):
        s.decryptors[3].step(big)
    for d in s.decryptors:
        assert d.equivocations and all(rnd == 0 and seen != other for rnd, seen, other in d.equivocations)
    assert all(d.last_round == -1 for d in s.decryptors)  # nothing decrypted
    # the server's own check: two endorsements of its set are not enough either
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    for x in (a, b, c, dd):
        s.server.receive(x)
    s.server.aggregate()
    with pytest.raises(ProtocolAbort, match="2 valid endorsements, 3 decryptors must endorse"):
        s.server.endorse(e_big)
    _honest_round_still_decrypts(s, 1)


def test_forged_or_misdirected_endorsements_do_not_count(setup_2of4):
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"forged-end"))
    pk = s.setup.public_key
    req = _request(s, _contribute(s, _vectors(s.setup, [1, 2, 3]), 0))
    real = s.decryptors[0].endorse(req)
    assert isinstance(real, SetEndorsement)
    stranger = Ed25519PrivateKey.generate()
    fakes = []
    for i in (2, 3):  # the server forges decryptors 2 and 3's endorsements
        e = SetEndorsement(pk.key_id, s.session, 0, i, real.set_hash)
        fakes.append(dataclasses.replace(e, signature=stranger.sign(ENDORSEMENT_CONTEXT + endorsement_signed_bytes(e))))
    dup = [real, real, real]  # one decryptor counted three times
    other_round = dataclasses.replace(real, round=1)
    for ends in ([*fakes, real], dup, [real, other_round]):
        with pytest.raises(ProtocolAbort, match="must endorse it"):
            s.decryptors[0].step(dataclasses.replace(req, endorsements=tuple(ends)))
    assert s.decryptors[0].last_round == -1


def test_decided_rounds_survive_a_decryptor_restart(setup_2of4, tmp_path):
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"restart"))
    a, b, c = _contribute(s, _vectors(s.setup, [1, 2, 3]), 0)
    big, small = _request(s, [a, b, c]), _request(s, [b, c])
    path = tmp_path / "decryptor-1.log"

    def fresh_decryptor():
        return PaillierDecryptor(
            key=setup_2of4.decryption_keys[0],
            client_keys=setup_2of4.client_directory,
            decryptor_keys=setup_2of4.decryptor_directory,
            signing_key=setup_2of4.decryptor_signing_keys[1],
            layout=s.layout,
            min_clients=3,
            session=s.session,
            store=FileStore(path),
        )

    d = fresh_decryptor()
    endorsements = [d.endorse(big), *(x.endorse(big) for x in s.decryptors[1:])]
    d = fresh_decryptor()  # restart after endorsing: still bound to {A, B, C}
    with pytest.raises(ProtocolAbort, match="two different contribution sets"):
        d.step(small)
    partial = d.decrypt(dataclasses.replace(big, endorsements=tuple(endorsements)))
    assert isinstance(partial, PartialDecryption)
    d = fresh_decryptor()  # restart after decrypting: the round is done
    assert d.last_round == 0
    with pytest.raises(ProtocolAbort, match="already decrypted"):
        d.step(dataclasses.replace(big, endorsements=tuple(endorsements)))
    # another session's records do not bind this one; a torn last line is ignored, a damaged one refused
    with path.open("ab") as f:
        f.write(b"endorse 00")
    assert fresh_decryptor().last_round == 0
    path.write_text(path.read_text().replace("decrypt", "dekrypt", 1) + "\n")
    with pytest.raises(ConfigurationError, match="damaged"):
        fresh_decryptor()


def test_file_store_appends_after_a_torn_line(tmp_path):
    from protocols.paillier.directory import StoreRecord

    store = FileStore(tmp_path / "log")
    rec = StoreRecord("endorse", bytes(16), 3, bytes(32))
    store.append(rec)
    with (tmp_path / "log").open("ab") as f:
        f.write(b"decrypt 0000")  # crash mid-write
    store.append(dataclasses.replace(rec, kind="decrypt"))
    assert store.records() == [rec, dataclasses.replace(rec, kind="decrypt")]


# ------------------------------------------------------------------ 3. signed partials, blame on the signer only
def test_a_spoofed_partial_neither_aborts_nor_blames_the_honest_decryptor(setup_2of4):
    """Old code: the first partial per index won; a spoofed one aborted the round and blamed the honest decryptor."""
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"spoof"))
    vec = _vectors(s.setup, [1, 2, 3])
    partials = _decrypt_all_via_server(s, _contribute(s, vec, 0), 0)
    pk = s.setup.public_key
    junk = tuple(pk.encrypt(0) for _ in partials[1].values)
    spoofed = dataclasses.replace(partials[1], values=junk)  # decryptor 2's name, not its signature
    stranger = Ed25519PrivateKey.generate()
    forged = dataclasses.replace(
        spoofed, signature=stranger.sign(PARTIAL_SIGNATURE_CONTEXT + partial_signed_bytes(spoofed, pk))
    )
    sums = s.server.finish([spoofed, forged, partials[0], partials[1]])
    assert np.array_equal(sums, sum(vec.values()))
    assert s.server.rejected_decryptors == () and s.server.spoofed_partials == 2


def test_a_signed_bad_partial_blames_its_signer(setup_2of4):
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"signer"))
    vec = _vectors(s.setup, [1, 2, 3])
    contribs = _contribute(s, vec, 0)
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    for c in contribs:
        s.server.receive(c)
    req = s.server.aggregate()
    endorsed = s.server.endorse([d.endorse(req) for d in s.decryptors])
    honest = [d.decrypt(endorsed) for d in s.decryptors]
    pk = s.setup.public_key
    sk2 = s.setup.decryptor_signing_keys[2]
    bad = dataclasses.replace(honest[1], values=tuple(v * v % pk.n2 for v in honest[1].values))
    bad = dataclasses.replace(bad, signature=sk2.sign(PARTIAL_SIGNATURE_CONTEXT + partial_signed_bytes(bad, pk)))
    sums = s.server.finish([bad, honest[0], honest[2]])
    assert np.array_equal(sums, sum(vec.values()))
    assert s.server.rejected_decryptors == (2,) and s.server.spoofed_partials == 0


def test_a_partial_for_another_set_does_not_count(setup_2of4):
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"otherset"))
    vec = _vectors(s.setup, [1, 2, 3])
    partials = _decrypt_all_via_server(s, _contribute(s, vec, 0), 0)
    moved = dataclasses.replace(partials[1], set_hash=bytes(32))
    with pytest.raises(ProtocolAbort, match="needs 2"):
        s.server.finish([partials[0], moved])
    assert s.server.spoofed_partials == 1


# ------------------------------------------------------------------ 4. ranges, layouts, exponents
def test_layout_for_another_key_is_refused(setup_2of4):
    pk = setup_2of4.public_key
    wrong = PackingLayout.derive(key_bits=1024, value_bits=10, max_clients=6)
    with pytest.raises(ConfigurationError, match="layout"):
        PaillierClient(
            client_id=1,
            public_key=pk,
            layout=wrong,
            signing_key=setup_2of4.client_signing_keys[1],
            randomness=make_randomness("fresh", pk),
            session=bytes(16),
        )
    with pytest.raises(ConfigurationError, match="layout"):
        PaillierServer(
            public_key=pk, layout=wrong, session=bytes(16), min_clients=3, decryptor_keys=setup_2of4.decryptor_directory
        )
    with pytest.raises(ConfigurationError, match="layout"):
        PaillierDecryptor(
            key=setup_2of4.decryption_keys[0],
            client_keys=setup_2of4.client_directory,
            decryptor_keys=setup_2of4.decryptor_directory,
            signing_key=setup_2of4.decryptor_signing_keys[1],
            layout=wrong,
            min_clients=3,
            session=bytes(16),
        )


def test_contribute_checks_every_plaintext_is_below_n(setup_2of4):
    pk = setup_2of4.public_key

    @dataclasses.dataclass(frozen=True, slots=True)
    class Overfull(PackingLayout):
        def pack(self, values):  # a broken packer: the client must not encrypt m >= n
            return [pk.n] * self.num_plaintexts(np.size(values))

    layout = setup_2of4.config.layout
    bad = Overfull(layout.key_bits, layout.value_bits, layout.max_clients, layout.slot_bits, layout.slots)
    client = PaillierClient(
        client_id=1,
        public_key=pk,
        layout=bad,
        signing_key=setup_2of4.client_signing_keys[1],
        randomness=make_randomness("fresh", pk),
        session=bytes(16),
    )
    rs = RoundSetup(pk.key_id, bytes(16), 0, COUNT, MODEL)
    with pytest.raises(ConfigurationError, match=r"outside \[0, n\)"):
        client.contribute(setup=rs, model_digest=MODEL, values=np.zeros(COUNT, dtype=np.int64))


def test_short_fixed_base_exponents_need_allow_insecure():
    from protocols.paillier.obfuscators import check_exponent_bits

    with pytest.raises(ConfigurationError, match="exponent_bits"):
        check_exponent_bits(256, 2048)
    with pytest.raises(ConfigurationError, match="exponent_bits"):
        PaillierConfig(randomness="fixed-base", exponent_bits=256)
    check_exponent_bits(1024, 2048)
    check_exponent_bits(256, 2048, allow_insecure=True)


def test_unsigned_contribution_type_is_still_refused(setup_2of4):
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"types"))
    c = _contribute(s, _vectors(s.setup, [1]), 0)[0]
    assert isinstance(c, ClientContribution) and c.proof


@settings(max_examples=200, deadline=None)
@given(k=st.integers(1, 255), data=st.data())
def test_two_quorums_always_share_an_honest_decryptor(k, data):
    t = data.draw(st.integers(1, k))
    q = endorsement_quorum(k, t)
    assert t <= q <= k  # live with all decryptors up; never below the threshold
    assert 2 * q - k >= t  # two quorums share >= t decryptors: at least one honest with t - 1 corrupt
    assert q == t or 2 * (q - 1) - k < t  # and it is the smallest such quorum


def test_directory_is_immutable_and_typed():
    from protocols.paillier import Directory

    key = Ed25519PrivateKey.generate().public_key()
    d = Directory({1: key})
    assert d[1] is key and list(d) == [1] and len(d) == 1 and "1 keys" in repr(d)
    with pytest.raises(TypeError):
        d[2] = key  # type: ignore[index]
    for bad in ({"1": key}, {True: key}, {1: b"raw"}):
        with pytest.raises(ConfigurationError, match="directory"):
            Directory(bad)  # type: ignore[arg-type]


def test_an_honest_server_drops_an_unproven_contribution_and_the_round_goes_on(setup_2of4):
    """One malicious client cannot make the decryptors refuse the round: the server screens its contribution."""
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"screen"), screen_proofs=True)
    vec = _vectors(s.setup, [1, 2, 3, 4])
    contribs = _contribute(s, vec, 0)
    stolen = _resign(s, contribs[0], 5)
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    for c in [*contribs[1:], stolen]:
        s.server.receive(c)
    req = s.server.aggregate()
    assert s.server.rejected_clients == (5,)
    endorsed = s.server.endorse([d.endorse(req) for d in s.decryptors])
    sums = s.server.finish([d.decrypt(endorsed) for d in s.decryptors[:2]])
    assert np.array_equal(sums, vec[2] + vec[3] + vec[4]) and s.server.participants == (2, 3, 4)


def test_a_server_screening_on_refusal_drops_the_unproven_contribution_and_the_round_goes_on(setup_2of4):
    """Default session server: no screening up front; the decryptors refuse (recording nothing), the
    server screens then, and the rebuilt set of the same round is endorsed and decrypted."""
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"screen-late"))
    assert not s.server.screen_proofs
    vec = _vectors(s.setup, [1, 2, 3, 4])
    contribs = _contribute(s, vec, 0)
    stolen = _resign(s, contribs[0], 5)
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    for c in [*contribs[1:], stolen]:
        s.server.receive(c)
    req = s.server.aggregate()
    assert s.server.rejected_clients == () and len(req.contributions) == 4
    for d in s.decryptors[:2]:
        with pytest.raises(ProtocolAbort, match=r"client\(s\) 5 does not verify"):
            d.endorse(req)
    req = s.server.screen()
    assert s.server.rejected_clients == (5,) and [c.client_id for c in req.contributions] == [2, 3, 4]
    with pytest.raises(ProtocolAbort, match="every proof of plaintext knowledge verifies"):
        s.server.screen()  # nothing left to drop: the refusal had another cause
    endorsed = s.server.endorse([d.endorse(req) for d in s.decryptors])
    sums = s.server.finish([d.decrypt(endorsed) for d in s.decryptors[:2]])
    assert np.array_equal(sums, vec[2] + vec[3] + vec[4]) and s.server.participants == (2, 3, 4)


def test_decryptor_stage_transitions(setup_2of4):
    """READY -> ENDORSED -> DECRYPTED -> (next round) ENDORSED; a refused message changes nothing."""
    from protocols.paillier.decryptor import DecryptorStage

    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"stages-d"))
    d = s.decryptors[0]
    req0 = _request(s, _contribute(s, _vectors(s.setup, [1, 2, 3]), 0))
    assert d.stage is DecryptorStage.READY
    with pytest.raises(ProtocolAbort, match="0 valid endorsements"):
        d.decrypt(req0)  # no endorsements: nothing released (its own check and record happened)
    assert d.stage is DecryptorStage.READY and d.last_round == -1
    ends = [x.endorse(req0) for x in s.decryptors]
    assert d.stage is DecryptorStage.ENDORSED
    assert isinstance(d.step(dataclasses.replace(req0, endorsements=tuple(ends))), PartialDecryption)
    assert d.stage is DecryptorStage.DECRYPTED and d.last_round == 0
    for bad in (req0, dataclasses.replace(req0, endorsements=tuple(ends))):
        with pytest.raises(ProtocolAbort, match="already decrypted"):
            d.step(bad)
        assert d.stage is DecryptorStage.DECRYPTED
    req1 = _request(s, _contribute(s, _vectors(s.setup, [1, 2, 3], seed=1), 1), rnd=1)
    assert isinstance(d.step(req1), SetEndorsement) and d.stage is DecryptorStage.ENDORSED


def test_an_honest_server_drops_unsigned_or_unknown_contributions_on_receipt(setup_2of4):
    from privagg.errors import InvalidMessage

    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"screen-sig"))
    contribs = _contribute(s, _vectors(s.setup, [1, 2, 3]), 0)
    s.server.start_round(round=0, count=COUNT, model_digest=MODEL)
    for bad in (dataclasses.replace(contribs[0], signature=bytes(64)), dataclasses.replace(contribs[0], client_id=99)):
        with pytest.raises(InvalidMessage, match="not provisioned or its signature does not verify"):
            s.server.receive(bad)
    for c in contribs:
        s.server.receive(c)
    assert s.server.participants == (1, 2, 3)


# ------------------------------------------------------------------ second-wave endorsements (no repeated proof checks)
def _signed_endorsement(s, index, req):
    from protocols.paillier.messages import set_hash

    pk = s.setup.public_key
    e = SetEndorsement(pk.key_id, s.session, req.round, index, set_hash(req, pk))
    sk = s.setup.decryptor_signing_keys[index]
    return dataclasses.replace(e, signature=sk.sign(ENDORSEMENT_CONTEXT + endorsement_signed_bytes(e)))


def test_a_second_wave_endorser_skips_the_proofs_but_checks_them_before_any_partial(setup_2of4):
    """``t`` endorsements of a set with a stolen ciphertext (decryptors 2 and 3 corrupt: one beyond the
    threat model, to reach the last line of defence): decryptor 4 endorses it without checking the
    proofs, but refuses to decrypt it; with fewer than ``t`` other endorsements it checks them at once."""
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"second-wave"))
    contribs = _contribute(s, _vectors(s.setup, [1, 2, 3]), 0)
    bad = _request(s, [contribs[1], contribs[2], _resign(s, contribs[0], 5)])
    with pytest.raises(ProtocolAbort, match=r"client\(s\) 5 does not verify"):
        s.decryptors[0].endorse(bad)  # a first-wave endorser checks everything
    e2, e3 = _signed_endorsement(s, 2, bad), _signed_endorsement(s, 3, bad)
    d4 = s.decryptors[3]
    forged = dataclasses.replace(e3, signature=Ed25519PrivateKey.generate().sign(b"x"))
    for ends in ((e2,), (e2, forged), (e2, e2)):  # fewer than t valid endorsements by others: it checks
        with pytest.raises(ProtocolAbort, match=r"client\(s\) 5 does not verify"):
            d4.endorse(dataclasses.replace(bad, endorsements=ends))
    e4 = d4.endorse(dataclasses.replace(bad, endorsements=(e2, e3)))  # vouched for by t others: not checked
    assert isinstance(e4, SetEndorsement) and e4.decryptor == 4
    with pytest.raises(ProtocolAbort, match=r"client\(s\) 5 does not verify"):
        d4.decrypt(dataclasses.replace(bad, endorsements=(e2, e3, e4)))  # quorum, yet nothing released
    assert d4.last_round == -1


def test_an_honest_round_checks_the_proofs_once_per_decrypting_decryptor(setup_2of4, monkeypatch):
    """The default session: the t decrypting decryptors check the proofs, the other endorser and the
    server do not (old code: the server and all three endorsers, four checks)."""
    import protocols.paillier.decryptor as dec_mod
    import protocols.paillier.parties as par_mod

    calls: list[str] = []
    real = dec_mod.verify_contributions

    def counted(who):
        def run(*args, **kwargs):
            calls.append(who)
            return real(*args, **kwargs)

        return run

    monkeypatch.setattr(dec_mod, "verify_contributions", counted("decryptor"))
    monkeypatch.setattr(par_mod, "verify_contributions", counted("server"))
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"once"))
    _honest_round_still_decrypts(s, 0)
    assert calls == ["decryptor"] * s.config.threshold
    calls.clear()
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"once-screen"), screen_proofs=True)
    _honest_round_still_decrypts(s, 0)
    assert calls == ["server"] + ["decryptor"] * s.config.threshold


def test_a_restarted_decryptor_checks_the_proofs_again_before_decrypting(setup_2of4, tmp_path):
    """Only sets whose proofs it verified itself are recorded ``proven``: after a restart a lazily
    endorsed bad set is still refused at decryption, and a good one still decrypts."""
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"restart-proofs"))
    contribs = _contribute(s, _vectors(s.setup, [1, 2, 3]), 0)
    bad = _request(s, [contribs[1], contribs[2], _resign(s, contribs[0], 5)])
    path = tmp_path / "decryptor-4.log"

    def fresh():
        return PaillierDecryptor(
            key=setup_2of4.decryption_keys[3],
            client_keys=setup_2of4.client_directory,
            decryptor_keys=setup_2of4.decryptor_directory,
            signing_key=setup_2of4.decryptor_signing_keys[4],
            layout=s.layout,
            min_clients=3,
            session=s.session,
            store=FileStore(path),
        )

    e2, e3 = _signed_endorsement(s, 2, bad), _signed_endorsement(s, 3, bad)
    e4 = fresh().endorse(dataclasses.replace(bad, endorsements=(e2, e3)))
    with pytest.raises(ProtocolAbort, match=r"client\(s\) 5 does not verify"):
        fresh().decrypt(dataclasses.replace(bad, endorsements=(e2, e3, e4)))
    good = _request(s, _contribute(s, _vectors(s.setup, [1, 2, 3], seed=3), 1), rnd=1)
    e1, e2 = s.decryptors[0].endorse(good), s.decryptors[1].endorse(good)
    e4 = fresh().step(dataclasses.replace(good, endorsements=(e1, e2)))  # step routes fewer than a quorum here
    assert isinstance(e4, SetEndorsement)
    partial = fresh().step(dataclasses.replace(good, endorsements=(e1, e2, e4)))
    assert isinstance(partial, PartialDecryption) and partial.decryptor == 4


def test_run_round_screens_on_refusal_and_still_decrypts_the_honest_clients(setup_2of4):
    """A malicious client 5 re-signs client 1's ciphertexts in the session's own round: the first-wave
    decryptors refuse, the server screens then, and the honest clients' sum is decrypted."""
    s = PaillierSession(setup_2of4, secrets=InsecureDeterministicSecrets(b"run-refusal"))
    honest = s.client(1)

    class Thief:  # client 5 sends client 1's contribution, relabelled and signed with its own key
        client_id = 5

        def precompute(self, count):
            pass

        def contribute(self, *, setup, model_digest, values):
            return _resign(s, honest.contribute(setup=setup, model_digest=model_digest, values=values), 5)

    s.clients[5] = Thief()  # type: ignore[assignment]
    vec = _vectors(s.setup, [2, 3, 4, 5])
    out = s.run_round(vec, round=0, model_digest=MODEL)
    assert s.server.rejected_clients == (5,) and out.participants == (2, 3, 4)
    assert np.array_equal(out.sums, vec[2] + vec[3] + vec[4])
