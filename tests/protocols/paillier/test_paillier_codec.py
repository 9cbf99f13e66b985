"""The binary codec: round trips, and untrusted bytes -> a message or InvalidMessage, nothing else."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.errors import InvalidMessage
from privagg.randomness import InsecureDeterministicSecrets
from protocols.paillier import (
    CODEC_VERSION,
    DIGEST_BYTES,
    ClientContribution,
    PaillierConfig,
    PaillierSession,
    PaillierSetup,
    PartialDecryption,
    RoundSetup,
    decode_message,
    encode_message,
    model_digest,
)
from protocols.paillier.messages import PARTIAL_PLAINTEXT, PARTIAL_THRESHOLD, PaillierMessage


@pytest.fixture(scope="module")
def wires():
    cfg = PaillierConfig(key_bits=128, value_bits=8, max_clients=3, decryptors=2, threshold=2, allow_insecure=True)
    setup = PaillierSetup.generate(cfg, secrets=InsecureDeterministicSecrets(b"codec"))
    s = PaillierSession(setup, secrets=InsecureDeterministicSecrets(b"codec-s"))
    pk = setup.public_key
    rs = s.server.start_round(round=0, count=10, model_digest=model_digest([np.arange(3.0)]))
    contribs = [
        s.client(c).contribute(setup=rs, model_digest=rs.model_digest, values=np.arange(10) - c) for c in (1, 2)
    ]
    for c in contribs:
        s.server.receive(c)
    req = s.server.aggregate()
    endorsements = [d.endorse(req) for d in s.decryptors]
    endorsed = s.server.endorse(endorsements)
    part = s.decryptors[0].decrypt(endorsed)
    plain = PartialDecryption(
        pk.key_id, s.session, 0, 1, PARTIAL_PLAINTEXT, (0, 5, pk.n - 1), b"", bytes(range(32)), bytes(64)
    )
    msgs: list[PaillierMessage] = [contribs[0], req, part, plain, rs, endorsements[0], endorsed]
    return pk, msgs, [encode_message(m, pk) for m in msgs]


def test_setup_and_contribution_carry_the_model_digest(wires):
    pk, msgs, encoded = wires
    contribution, request, setup = msgs[0], msgs[1], msgs[4]
    assert isinstance(setup, RoundSetup) and len(setup.model_digest) == DIGEST_BYTES
    assert contribution.model_digest == request.model_digest == setup.model_digest
    assert setup.model_digest in encoded[0] and setup.model_digest in encoded[4]
    with pytest.raises(ValueError, match="digest"):
        encode_message(dataclasses.replace(setup, model_digest=b"short"), pk)
    # a setup cannot be smuggled inside an aggregate request as a contribution
    header = 4 + 1 + 1 + 16 + 16 + 8
    req = encoded[1]
    at = header + 4 + DIGEST_BYTES
    nct = struct.unpack(">I", req[at : at + 4])[0]
    pos = at + 4 + nct * pk.ciphertext_bytes
    smuggled = req[:pos] + struct.pack(">II", 1, len(encoded[4])) + encoded[4]
    with pytest.raises(InvalidMessage):
        decode_message(smuggled, public_key=pk)


def test_round_trip(wires):
    pk, msgs, encoded = wires
    for m, w in zip(msgs, encoded):
        assert decode_message(w, public_key=pk) == m
        assert w[:4] == b"PGPA" and w[4] == CODEC_VERSION


def _decode_or_invalid(data, pk):
    try:
        decode_message(data, public_key=pk)
    except InvalidMessage:
        pass


def test_every_truncation_is_invalid(wires):
    pk, _, encoded = wires
    for w in encoded:
        for cut in range(len(w)):
            with pytest.raises(InvalidMessage):
                decode_message(w[:cut], public_key=pk)


def test_trailing_bytes_version_type_and_key_id(wires):
    pk, _, encoded = wires
    w = encoded[0]
    with pytest.raises(InvalidMessage, match="trailing"):
        decode_message(w + b"\x00", public_key=pk)
    with pytest.raises(InvalidMessage, match="version"):
        decode_message(w[:4] + bytes([CODEC_VERSION + 1]) + w[5:], public_key=pk)
    assert CODEC_VERSION == 3
    with pytest.raises(InvalidMessage, match="unsupported codec version 1"):  # before the model digest
        decode_message(w[:4] + b"\x01" + w[5:], public_key=pk)
    with pytest.raises(InvalidMessage, match="unsupported codec version 2"):  # before proofs and endorsements
        decode_message(w[:4] + b"\x02" + w[5:], public_key=pk)
    with pytest.raises(InvalidMessage, match="type"):
        decode_message(w[:5] + b"\x09" + w[6:], public_key=pk)
    with pytest.raises(InvalidMessage, match="magic"):
        decode_message(b"XXXX" + w[4:], public_key=pk)
    with pytest.raises(InvalidMessage, match="key id"):
        decode_message(w[:6] + bytes(16) + w[22:], public_key=pk)
    with pytest.raises(InvalidMessage):
        decode_message("text", public_key=pk)  # type: ignore[arg-type]


def test_ciphertexts_outside_z_star_n2_are_refused(wires):
    pk, msgs, _ = wires
    c0 = msgs[0]
    n = pk.n
    for bad in (0, n, 2 * n, pk.n2 - n, (1 << (8 * pk.ciphertext_bytes)) - 1):
        raw = ClientContribution(
            c0.key_id, c0.session, 0, 1, c0.count, c0.model_digest, (bad, *c0.ciphertexts[1:]), c0.signature
        )
        w = _raw_encode_contribution(raw, pk)
        with pytest.raises(InvalidMessage, match="Z\\*"):
            decode_message(w, public_key=pk)
    sig = {"set_hash": bytes(32), "signature": bytes(64)}
    bad_part = PartialDecryption(pk.key_id, c0.session, 0, 1, PARTIAL_THRESHOLD, (n,), **sig)
    with pytest.raises(InvalidMessage, match="Z\\*"):
        decode_message(encode_message(bad_part, pk), public_key=pk)
    bad_plain = PartialDecryption(pk.key_id, c0.session, 0, 1, PARTIAL_PLAINTEXT, (n,), **sig)
    with pytest.raises(InvalidMessage, match="Z_n"):
        decode_message(encode_message(bad_plain, pk), public_key=pk)
    bad_kind = PartialDecryption(pk.key_id, c0.session, 0, 1, 7, (), **sig)
    with pytest.raises(InvalidMessage, match="kind"):
        decode_message(encode_message(bad_kind, pk), public_key=pk)


def _raw_encode_contribution(msg, pk):
    from protocols.paillier.messages import contribution_signed_bytes

    return contribution_signed_bytes(msg, pk) + msg.signature


def test_huge_declared_lengths_do_not_allocate(wires):
    pk, _, encoded = wires
    w = encoded[0]
    header = 4 + 1 + 1 + 16 + 16 + 8
    # contribution: client_id u32, count u32, digest 32 B, nct u32 after the header; claim 2^32-1 ciphertexts
    at = header + 8 + DIGEST_BYTES
    huge = w[:at] + struct.pack(">I", 0xFFFFFFFF) + w[at + 4 :]
    with pytest.raises(InvalidMessage, match="declares"):
        decode_message(huge, public_key=pk)
    agg = encoded[1]
    # aggregate: count u32, digest 32 B, nct u32 after the header; claim 2^32-1 contributions
    at = header + 4 + DIGEST_BYTES
    nct = struct.unpack(">I", agg[at : at + 4])[0]
    pos = at + 4 + nct * pk.ciphertext_bytes
    bad = agg[:pos] + struct.pack(">I", 0xFFFFFFFF) + agg[pos + 4 :]
    with pytest.raises(InvalidMessage, match="declares"):
        decode_message(bad, public_key=pk)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_fuzz_random_bytes(wires, data):
    pk, _, encoded = wires
    _decode_or_invalid(data, pk)
    _decode_or_invalid(encoded[0][:46] + data, pk)  # valid header, random body


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, 6), pos=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_fuzz_mutations(wires, which, pos, byte):
    pk, _, encoded = wires
    w = bytearray(encoded[which])
    w[pos % len(w)] = byte
    _decode_or_invalid(bytes(w), pk)


def test_huge_proof_and_endorsement_counts_do_not_allocate(wires):
    pk, msgs, encoded = wires
    contribution, endorsed = msgs[0], msgs[6]
    w = encoded[0]
    # the proof length sits right before the proof and the 64-byte signature
    at = len(w) - 64 - len(contribution.proof) - 4
    assert struct.unpack(">I", w[at : at + 4])[0] == len(contribution.proof)
    with pytest.raises(InvalidMessage, match="truncated"):
        decode_message(w[:at] + struct.pack(">I", 0xFFFFFFFF) + w[at + 4 :], public_key=pk)
    e = encoded[6]
    ends = len(endorsed.endorsements) * (4 + 1 + 1 + 16 + 16 + 8 + 2 + 32 + 64)
    at = len(e) - ends - 2
    assert struct.unpack(">H", e[at : at + 2])[0] == len(endorsed.endorsements) >= 2
    with pytest.raises(InvalidMessage, match="declares 65535 endorsements"):
        decode_message(e[:at] + struct.pack(">H", 0xFFFF) + e[at + 2 :], public_key=pk)
    # an endorsement cannot stand in for a contribution, nor a contribution for an endorsement
    with pytest.raises(InvalidMessage):
        decode_message(e[:at] + struct.pack(">H", 1) + encoded[0], public_key=pk)


@settings(max_examples=25, deadline=None)
@given(pos=st.integers(min_value=0, max_value=7), which=st.sampled_from(["p", "q"]), k=st.integers(1, 1000))
def test_a_ciphertext_sharing_one_prime_with_n_is_refused_wherever_it_sits(toy_keypair, pos, which, k):
    """The decoder checks all ciphertexts with one gcd of their product mod n: a single multiple of ``p``
    (or ``q``) among units, at any position, is still refused."""
    pk, sk = toy_keypair
    prime = int(sk._p if which == "p" else sk._q)
    cts = [pk.encrypt(m, secrets=InsecureDeterministicSecrets(bytes([m]))) for m in range(8)]
    cts[pos] = prime * k % pk.n2 or prime
    msg = ClientContribution(pk.key_id, bytes(16), 0, 1, 8, bytes(DIGEST_BYTES), tuple(cts), bytes(64))
    with pytest.raises(InvalidMessage, match="Z\\*"):
        decode_message(_raw_encode_contribution(msg, pk), public_key=pk)
    cts[pos] = pk.encrypt(3, secrets=InsecureDeterministicSecrets(b"unit"))
    ok = ClientContribution(pk.key_id, bytes(16), 0, 1, 8, bytes(DIGEST_BYTES), tuple(cts), bytes(64))
    decoded = decode_message(_raw_encode_contribution(ok, pk), public_key=pk)
    assert isinstance(decoded, ClientContribution) and decoded.ciphertexts == tuple(cts)
