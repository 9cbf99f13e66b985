"""No client input crashes or stalls the server (issue 12, item 5).

Every malformed or hostile client message ends in the typed, screened path: rejected and
attributed, or a :class:`ProtocolAbort` naming the party at fault, and the round completes
whenever the threshold still allows it. The parties are the real state machines; the
attacks rewrite their messages.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from privagg.errors import ConfigurationError, InvalidMessage
from secagg import (
    ClientPolicy,
    ClientStage,
    ConsistencyRequest,
    KeyAdvertisement,
    RoundSetup,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    UnmaskResponse,
    crypto,
    decode_message,
    make_identities,
    run_round,
)
from secagg.messages import SHARE_BYTES, RevealedShare

#: these tests exercise the protocol's mechanics with the server's numbers (unsafe opt-out, on purpose)
TRUST = ClientPolicy.trust_server()

MAX_ROUND = (1 << 63) - 1  # rounds enter signed 64-bit labels

M = 16
LOW_ORDER = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")  # order 8
NON_CANONICAL = ((1 << 255) - 19 + 1).to_bytes(32, "little")  # u = 1 written as p + 1


def _inputs(n: int, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 2**10, M, dtype=np.uint64) for c in range(n)}


def _expected(rep, inputs, p):
    return sum(inputs[c] for c in rep.survivors) % (1 << p.modulus_bits)


# ---------------------------------------------------------------------------- share limbs >= p
def test_own_share_outside_the_field_is_screened_and_the_round_completes():
    n, inputs = 10, _inputs(10)
    p = SecAggParams.manual(num_clients=n, degree=6, threshold=4)
    keys, directory = make_identities(range(n))

    def bad_own_share(cid, msg):
        if isinstance(msg, UnmaskResponse) and cid == 3:  # client 3 itself: it signs what it sends
            shares = tuple(
                RevealedShare(s.owner, b"\xff" * SHARE_BYTES) if s.owner == 3 else s for s in msg.self_shares
            )
            return [crypto.sign_message(dataclasses.replace(msg, self_shares=shares), keys[3])]
        return [msg]

    rep = run_round(
        p,
        client_ids=list(range(n)),
        inputs=inputs,
        dimension=M,
        identities=(keys, directory),
        client_hook=bad_own_share,
        client_policy=TRUST,
    )
    assert rep.ok, rep.abort
    assert np.array_equal(rep.sum, _expected(rep, inputs, p))
    assert (3, "its own self-mask share is not made of field elements") in rep.server.rejected


def test_committed_share_outside_the_field_excludes_its_dealer_before_masking(monkeypatch):
    """A dealer that commits to shares outside GF(p): every holder's check fails on receipt, the
    complaint proves it, and the dealer is excluded before anyone masks; the round completes."""
    import secagg.vss as vss_mod

    real = vss_mod.deal

    def cheat(self_seed, mask_key, *, xs, threshold, source):
        sh, co = real(self_seed, mask_key, xs=xs, threshold=threshold, source=source)
        if int(xs[-1]) == 1:  # client 0 (its own point is last)
            sh[:-1, 0] = (1 << 32) - 1  # every neighbour's self-seed share: a limb >= p
        return sh, co

    monkeypatch.setattr(vss_mod, "deal", cheat)
    p = SecAggParams.manual(num_clients=8, degree=4, threshold=3)
    inputs = _inputs(8)
    rep = run_round(p, client_ids=list(range(8)), inputs=inputs, dimension=M, client_policy=TRUST)
    assert rep.ok, rep.abort
    assert set(rep.server.excluded) == {0}
    assert re.fullmatch(r"client 0 dealt client \d+ shares that are not field elements", rep.server.excluded[0])
    assert 0 not in rep.survivors and 0 not in rep.dropped and rep.client_aborts == {}
    assert np.array_equal(rep.sum, _expected(rep, inputs, p))


# ---------------------------------------------------------------------------- invalid X25519 keys
def _resign(keys, cid, **fields):
    """A malicious client advertising keys of its choice, signed with its own identity key."""

    def hook(sender, msg):
        if isinstance(msg, KeyAdvertisement) and sender == cid:
            m = dataclasses.replace(msg, signature=b"", **fields)
            sig = crypto.sign(keys[cid], crypto.advertisement_payload(m)) if msg.signature else b""
            return [dataclasses.replace(m, signature=sig)]
        return [msg]

    return hook


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
@pytest.mark.parametrize(
    "field,key",
    [
        ("mask_public_key", bytes(32)),
        ("mask_public_key", LOW_ORDER),
        ("enc_public_key", bytes(32)),
        ("enc_public_key", NON_CANONICAL),
    ],
    ids=["zero-mask", "low-order-mask", "zero-enc", "non-canonical-enc"],
)
def test_invalid_keys_are_refused_at_advertisement(threat, field, key):
    n, inputs = 10, _inputs(10)
    p = SecAggParams.manual(num_clients=n, degree=6, threshold=4, threat=threat)
    keys, directory = make_identities(range(n))
    server = SecAggServer(p, clients=range(n), dimension=M, directory=directory if threat == "active" else None)
    rep = run_round(
        p,
        client_ids=list(range(n)),
        inputs=inputs,
        dimension=M,
        identities=(keys, directory),
        server=server,
        client_hook=_resign(keys, 5, **{field: key}),
        dropouts={"masked_input": [2]},  # a dropout: the server rebuilds mask keys
        client_policy=TRUST,
    )
    assert rep.ok, rep.abort
    assert 5 not in rep.survivors and 5 not in server.advertisements
    assert np.array_equal(rep.sum, _expected(rep, inputs, p))
    assert any(c == 5 and f"invalid {field}" in why for c, why in server.rejected)
    assert rep.client_aborts == {}


def test_client_refuses_a_roster_with_an_invalid_key_anywhere():
    """A malicious server slipping a low-order key into the roster: every active client refuses."""
    n = 8
    p = SecAggParams.manual(num_clients=n, degree=2, threshold=2)
    keys, directory = make_identities(range(n))

    class Slip(SecAggServer):
        def build_roster(self, advertisements):
            roster = super().build_roster(advertisements)
            a = advertisements[7]
            bad = dataclasses.replace(a, mask_public_key=LOW_ORDER, signature=b"")
            bad = dataclasses.replace(bad, signature=crypto.sign(keys[7], crypto.advertisement_payload(bad)))
            return dataclasses.replace(roster, advertisements=(*roster.advertisements[:-1], bad))

    server = Slip(p, clients=range(n), dimension=M, screen_senders=False)
    rep = run_round(
        p,
        client_ids=list(range(n)),
        inputs=_inputs(n),
        dimension=M,
        identities=(keys, directory),
        server=server,
        client_policy=TRUST,
    )
    assert not rep.ok
    assert set(rep.client_aborts) == set(range(n))  # non-neighbours of 7 included
    assert "own advertisement" in rep.client_aborts[7].reason
    assert all("invalid mask_public_key" in rep.client_aborts[c].reason for c in range(7))


# ---------------------------------------------------------------------------- integer ranges, sizes
def test_round_numbers_beyond_the_wire_format():
    p = SecAggParams.manual(num_clients=4, degree=2, threshold=2, threat="semi-honest")
    with pytest.raises(ConfigurationError):
        SecAggServer(p, clients=range(4), dimension=M, round=MAX_ROUND + 1)
    setup = RoundSetup(MAX_ROUND + 1, p, M, bytes(32))
    c = SecAggClient(0, threat="semi-honest")
    with pytest.raises(InvalidMessage, match="out of range"):
        c.step(setup)  # an object: no codec in the way
    assert c.stage is ClientStage.ABORTED
    ok = RoundSetup(MAX_ROUND, p, M, bytes(32)).encode()
    assert decode_message(ok).round == MAX_ROUND
    for msg in (ok, KeyAdvertisement(MAX_ROUND, 1, bytes(32), bytes(32), bytes(32)).encode()):
        bumped = msg[:4] + (MAX_ROUND + 1).to_bytes(8, "big") + msg[12:]
        with pytest.raises(InvalidMessage, match="out of range"):
            decode_message(bumped)


def test_lists_longer_than_the_cohort_are_refused_before_allocation():
    from secagg.wire import Limits

    n = 64 * (1 << 20) // 4 - 16  # the 64 MiB ConsistencyRequest of the issue
    big = ConsistencyRequest(0, bytes(32), ()).encode()[:-4] + n.to_bytes(4, "big") + bytes(4 * n)
    with pytest.raises(InvalidMessage, match="does not fit"):
        decode_message(big, Limits(clients=100))
    # a client past the setup decodes with its round's limits
    p = SecAggParams.manual(num_clients=4, degree=2, threshold=2, threat="semi-honest")
    c = SecAggClient(0, threat="semi-honest")
    c.step(RoundSetup(0, p, M, bytes(32)))
    with pytest.raises(InvalidMessage, match="does not fit"):
        c.step(big)
    # and a server: a vector longer than the round's dimension is refused at decode
    server = SecAggServer(p, clients=range(4), dimension=M)
    from secagg import MaskedInput

    long_vec = MaskedInput.from_values(
        round=0, session_id=bytes(32), sender=1, modulus_bits=p.modulus_bits, values=np.zeros(M + 8, np.uint64)
    )
    assert server.step([long_vec.encode()]) == []
    assert server.rejected and "count out of range" in server.rejected[-1][1]


def test_ids_decode_vectorised_and_checked():
    ids = tuple(range(0, 3000, 3))
    m = ConsistencyRequest(7, bytes(32), ids)
    assert decode_message(m.encode()) == m
    bad = m.encode()[:-4] + (1 << 31).to_bytes(4, "big")
    with pytest.raises(InvalidMessage, match="out of range"):
        decode_message(bad)


def test_low_order_list_matches_the_x25519_ground_truth():
    """Each listed u makes X25519 output all-zero (OpenSSL refuses it); fresh keys are all valid."""
    from cryptography.hazmat.primitives.asymmetric import x25519

    me = x25519.X25519PrivateKey.generate()
    assert len(crypto.LOW_ORDER_U) == 5
    for u in crypto.LOW_ORDER_U:
        pk = u.to_bytes(32, "little")
        assert not crypto.valid_x25519_public(pk)
        with pytest.raises(ValueError):
            me.exchange(x25519.X25519PublicKey.from_public_bytes(pk))
        assert not crypto.valid_x25519_public((u + (1 << 255) - 19).to_bytes(32, "little"))  # non-canonical twin
    for _ in range(200):
        assert crypto.valid_x25519_public(crypto.x25519_public(x25519.X25519PrivateKey.generate()))
    for bad in (b"", bytes(31), "x" * 32, (1 << 255).to_bytes(32, "little")):
        assert not crypto.valid_x25519_public(bad)


def test_encoding_out_of_range_integers_is_typed():
    """Hand-built messages (a malicious party's objects) with integers the wire cannot carry."""
    from secagg import ConsistencySignature

    for bad in (
        ConsistencySignature(1 << 64, bytes(32), 1, bytes(64)),
        ConsistencySignature(0, bytes(32), -1, bytes(64)),
    ):
        with pytest.raises(InvalidMessage, match="does not fit the wire format"):
            bad.encode()
