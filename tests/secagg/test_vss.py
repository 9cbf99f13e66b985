"""Verifiable dealing (``secagg.vss``): honest dealings pass, any share off the polynomial is caught
and proven, proofs cannot be forged against an honest dealer, and exclusions need their proof."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.errors import VerificationError
from privagg.randomness import InsecureDeterministicSecrets
from secagg import (
    ClientPolicy,
    EncryptedShares,
    Exclusion,
    MaskRequest,
    SecAggParams,
    SecAggServer,
    ShareDelivery,
    crypto,
    make_identities,
    run_round,
    vss,
)
from secagg.limbs import from_limbs
from secagg.messages import PART_BYTES, SECRET_LIMBS
from secagg.shamir import PRIME, evaluate, interpolate, lagrange_at_zero

#: these tests exercise the protocol's mechanics with the server's numbers (unsafe opt-out, on purpose)
TRUST = ClientPolicy.trust_server()

SESSION, ROUND, DEALER, T = bytes(range(32)), 7, 0, 4
HOLDERS = [1, 2, 3, 4, 5, 6]


def _dealing(seed: int = 0, tamper=None):
    src = InsecureDeterministicSecrets(seed)
    keys = {v: src.token_bytes(32) for v in HOLDERS}
    self_seed, mask_key = src.token_bytes(32), src.token_bytes(32)
    real = vss.deal

    def deal(*a, **kw):
        sh, co = real(*a, **kw)
        if tamper is not None:
            tamper(sh)
        return sh, co

    vss.deal = deal
    try:
        msg, own = vss.seal_dealing(
            session=SESSION,
            round=ROUND,
            dealer=DEALER,
            self_seed=self_seed,
            mask_key=mask_key,
            keys=keys,
            threshold=T,
            source=src,
        )
    finally:
        vss.deal = real
    return msg, keys, (self_seed, mask_key), own


def _delivered(msg: EncryptedShares):
    """What the server forwards to each holder: ``{holder: DeliveredShare}``."""
    return {v: lst[0] for v, lst in vss.deliveries({DEALER: msg}, frozenset(HOLDERS)).items()}


def _open(msg, keys, holder):
    by_holder = _delivered(msg)
    ((pt, why, _),) = vss.open_shares(
        [by_holder[holder]], keys=[keys[holder]], session=SESSION, round=ROUND, holder=holder, threshold=T
    )
    return pt, why


def test_an_honest_dealing_passes_every_holder_and_reconstructs_both_secrets():
    msg, keys, (seed, key), own = _dealing()
    parts = {}
    for v in HOLDERS:
        pt, why = _open(msg, keys, v)
        assert why is None
        parts[v] = np.frombuffer(pt, dtype="<u4").astype(np.uint64)
        assert vss.dealing_fault(msg, holder=v, key=keys[v], threshold=T) is None  # no proof against it
    xs = np.array([v + 1 for v in HOLDERS[:T]], dtype=np.uint64)
    lam = lagrange_at_zero(xs)
    limbs = sum((parts[v][: 2 * SECRET_LIMBS] * li) % PRIME for v, li in zip(HOLDERS[:T], lam)) % PRIME
    assert from_limbs(limbs[:SECRET_LIMBS]) == seed and from_limbs(limbs[SECRET_LIMBS:]) == key
    assert len(own) == PART_BYTES and len(msg.check) == vss.check_bytes(T)


@settings(max_examples=25, deadline=None)
@given(
    holder=st.integers(0, len(HOLDERS) - 1),
    limb=st.integers(0, 2 * SECRET_LIMBS + 2),
    delta=st.integers(1, PRIME - 1),
)
def test_any_single_share_off_the_polynomial_is_caught_and_proven(holder, limb, delta):
    """One field element of one holder's plaintext moved (a limb of either secret, or a check limb),
    leaves and check polynomials recomputed by the dealer: that holder's check fails and its key
    proves it."""

    def tamper(sh):
        sh[holder, limb] = (sh[holder, limb] + delta) % PRIME

    msg, keys, _, _ = _dealing(seed=3, tamper=tamper)
    v = HOLDERS[holder]
    _, why = _open(msg, keys, v)
    assert why is not None and "off its polynomials" in why
    assert vss.dealing_fault(msg, holder=v, key=keys[v], threshold=T) == why
    others = [u for u in HOLDERS if u != v]
    assert all(_open(msg, keys, u)[1] is None for u in others)


def test_a_proof_needs_the_committed_key_and_the_dealers_own_message():
    def tamper(sh):
        sh[0, 0] = (sh[0, 0] + 1) % PRIME

    msg, keys, _, _ = _dealing(tamper=tamper)
    assert vss.dealing_fault(msg, holder=1, key=keys[1], threshold=T) is not None
    assert vss.dealing_fault(msg, holder=1, key=bytes(32), threshold=T) is None  # not the committed key
    assert vss.dealing_fault(msg, holder=2, key=keys[1], threshold=T) is None  # another holder's envelope
    assert vss.dealing_fault(msg, holder=99, key=keys[1], threshold=T) is None  # no envelope at all
    honest, hkeys, _, _ = _dealing()
    # the honest dealing under every holder's true key proves nothing
    assert all(vss.dealing_fault(honest, holder=v, key=hkeys[v], threshold=T) is None for v in HOLDERS)


def test_a_garbled_delivery_raises_and_reveals_no_key():
    """What does not open under the pairwise key cannot be blamed on the dealer (the server may have
    garbled it): the holder gets a VerificationError, never a complaint."""
    msg, keys, _, _ = _dealing()
    d = _delivered(msg)[1]
    for bad in (
        dataclasses.replace(d, ciphertext=bytes(len(d.ciphertext))),
        dataclasses.replace(d, check=bytes(len(d.check))),
        dataclasses.replace(d, dealing_digest=bytes(32)),
        dataclasses.replace(d, leaf=bytes(32)),
    ):
        with pytest.raises(VerificationError):
            vss.open_shares([bad], keys=[keys[1]], session=SESSION, round=ROUND, holder=1, threshold=T)


def test_check_polynomials_are_the_combination_of_the_dealt_polynomials():
    """Known relation: Q_i(x) = m_i(x) + sum_j r_ij a_j(x) at every point, from the coefficients."""
    src = InsecureDeterministicSecrets(11)
    xs = np.arange(1, 8, dtype=np.uint64)
    sh, co = vss.deal(src.token_bytes(32), src.token_bytes(32), xs=xs, threshold=T, source=src)
    assert np.array_equal(interpolate(xs[:T], sh[:T]), co)
    digest = bytes(32)
    q = np.frombuffer(vss.check_polynomials(co, digest), dtype="<u4").astype(np.uint64).reshape(3, T)
    r = vss.challenge(digest)  # (3, 2 SECRET_LIMBS)
    at = evaluate(q.T, xs)  # (7, 3)
    s2 = 2 * SECRET_LIMBS
    want = (sh[:, s2:] + ((r[None] * sh[:, None, :s2]) % PRIME).sum(-1)) % PRIME
    assert np.array_equal(at, want)


def _exclusion_round(forge):
    """An active round whose server sends a MaskRequest of its choosing (``forge(request, srv)``)."""
    n = 6
    p = SecAggParams.manual(num_clients=n, degree=5, threshold=4)
    keys, directory = make_identities(range(n))
    srv = SecAggServer(p, clients=range(n), dimension=8, directory=directory)
    store = {}

    def hook(env):
        if isinstance(env.message, ShareDelivery):
            store.setdefault("dealing", srv.shares[2].message().encode())
        if isinstance(env.message, MaskRequest):
            return [dataclasses.replace(env, message=forge(env.message, store))]
        return [env]

    inputs = {c: np.full(8, c, dtype=np.uint64) for c in range(n)}
    return run_round(
        p,
        client_ids=list(range(n)),
        inputs=inputs,
        dimension=8,
        server=srv,
        server_hook=hook,
        identities=(keys, directory),
        client_policy=TRUST,
    )


def test_active_clients_refuse_an_exclusion_without_a_proof():
    """A malicious server excluding honest client 2 (its real signed dealing, but a key that proves
    nothing): every neighbour of 2 refuses to mask rather than drop it."""

    def forge(req, store):
        return dataclasses.replace(req, excluded=(Exclusion(2, 3, bytes(32), store["dealing"]),))

    rep = _exclusion_round(forge)
    assert not rep.ok
    reasons = {c: e.reason for c, e in rep.client_aborts.items()}
    assert set(reasons) == {0, 1, 3, 4, 5}
    assert set(reasons.values()) == {"the server excludes client 2 without a proof"}


def test_active_clients_accept_the_same_round_without_forgery():
    rep = _exclusion_round(lambda req, store: req)
    assert rep.ok and rep.client_aborts == {} and rep.server.excluded == {}
    assert crypto.DOMAIN  # the round above ran the real codecs end to end
