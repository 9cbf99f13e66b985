"""The fast paths of issue 12's speed work against their scalar / field-by-field references.

Each vectorised or precompiled primitive must give exactly what the straightforward code gives:
Shamir over many sharings at once (Lagrange, reconstruction, polynomial evaluation through an exact
float64 product), the labels that signatures and commitments cover, the roster decoder, the shared
signature memo.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.errors import InvalidMessage
from privagg.randomness import label
from secagg import crypto, seeding
from secagg.messages import KeyAdvertisement, KeyRoster, Limits
from secagg.shamir import (
    PRIME,
    _evaluate_horner,
    evaluate,
    lagrange_at_zero,
    lagrange_at_zero_batch,
    matmul_mod,
    reconstruct,
    reconstruct_batch,
    vandermonde,
)
from secagg.wire import MAX_ROUND, Reader

_FIELD = st.integers(0, PRIME - 1)


# ---------------------------------------------------------------------------- Shamir, batched
def _point_sets(draw: Callable[..., Any], batch: int, t: int) -> np.ndarray:
    rows = [draw(st.lists(st.integers(1, PRIME - 1), min_size=t, max_size=t, unique=True)) for _ in range(batch)]
    return np.array(rows, dtype=np.uint64)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), batch=st.integers(1, 5), t=st.integers(1, 12))
def test_batched_lagrange_equals_the_scalar_one(data: st.DataObject, batch: int, t: int) -> None:
    xs = _point_sets(data.draw, batch, t)
    got = lagrange_at_zero_batch(xs)
    for row, lam in zip(xs, got):
        assert lam.tolist() == lagrange_at_zero(row).tolist()


@settings(max_examples=30, deadline=None)
@given(data=st.data(), batch=st.integers(1, 4), t=st.integers(1, 9), limbs=st.integers(1, 5))
def test_batched_reconstruction_equals_the_scalar_one(data: st.DataObject, batch: int, t: int, limbs: int) -> None:
    xs = _point_sets(data.draw, batch, t)
    flat = data.draw(st.lists(_FIELD, min_size=batch * t * limbs, max_size=batch * t * limbs))
    shares = np.array(flat, dtype=np.uint64).reshape(batch, t, limbs)
    got = reconstruct_batch(shares, xs=xs)
    for b in range(batch):
        assert got[b].tolist() == reconstruct(shares[b], xs=xs[b]).tolist()


def test_batched_reconstruction_rebuilds_real_sharings_and_refuses_bad_input() -> None:
    rng = np.random.default_rng(3)
    t, batch = 7, 6
    coeffs = rng.integers(0, PRIME, (t, batch, 16)).astype(np.uint64)
    holders = np.arange(1, 20, dtype=np.uint64)
    shares = evaluate(coeffs, holders)  # (19, batch, 16)
    pick = np.stack([rng.choice(19, t, replace=False) for _ in range(batch)])  # each sharing its own holders
    sub = np.stack([shares[pick[b], b] for b in range(batch)])
    assert np.array_equal(reconstruct_batch(sub, xs=holders[pick]), coeffs[0])
    with pytest.raises(ValueError, match="distinct"):
        lagrange_at_zero_batch(np.array([[1, 1]], dtype=np.uint64))
    with pytest.raises(ValueError, match="distinct"):
        lagrange_at_zero_batch(np.array([[0, 2]], dtype=np.uint64))
    with pytest.raises(ValueError, match="field elements"):
        reconstruct_batch(np.full((1, 2, 1), PRIME, dtype=np.uint64), xs=np.array([[1, 2]], dtype=np.uint64))


@pytest.mark.parametrize("t", [1, 2, 16, 17, 40, 107, 2048, 2049])
def test_evaluation_equals_horner_and_python_integers(t: int) -> None:
    rng = np.random.default_rng(t)
    coeffs = rng.integers(0, PRIME, (t, 2, 3)).astype(np.uint64)
    coeffs[-1] = PRIME - 1  # the largest values: any overflow of the exact product would show
    xs = np.array([1, 2, PRIME - 1, int(rng.integers(1, PRIME))], dtype=np.uint64)
    got = evaluate(coeffs, xs)
    assert np.array_equal(got, _evaluate_horner(coeffs, xs))
    for i, x in enumerate(xs.tolist()):
        want = sum(int(coeffs[j, 1, 2]) * pow(x, j, PRIME) for j in range(t)) % PRIME
        assert int(got[i, 1, 2]) == want


@settings(max_examples=30, deadline=None)
@given(data=st.data(), m=st.integers(1, 4), t=st.integers(1, 30), k=st.integers(1, 4))
def test_exact_matrix_product_mod_p(data: st.DataObject, m: int, t: int, k: int) -> None:
    a = [data.draw(st.lists(_FIELD, min_size=t, max_size=t)) for _ in range(m)]
    b = [data.draw(st.lists(_FIELD, min_size=k, max_size=k)) for _ in range(t)]
    got = matmul_mod(np.array(a, dtype=np.uint64), np.array(b, dtype=np.uint64))
    want = [[sum(a[i][j] * b[j][c] for j in range(t)) % PRIME for c in range(k)] for i in range(m)]
    assert got.tolist() == want


def test_matrix_product_refuses_more_terms_than_float64_holds_exactly() -> None:
    with pytest.raises(ValueError, match="terms"):
        matmul_mod(np.ones((1, 2049), dtype=np.uint64), np.ones((2049, 1), dtype=np.uint64))
    full = matmul_mod(np.full((1, 2048), PRIME - 1, dtype=np.uint64), np.full((2048, 1), PRIME - 1, dtype=np.uint64))
    assert int(full[0, 0]) == 2048 * (PRIME - 1) ** 2 % PRIME


@pytest.mark.parametrize("t", [1, 2, 9, 10, 50])
def test_vandermonde_rows_are_powers(t: int) -> None:
    xs = np.array([1, 3, PRIME - 1, 123456789], dtype=np.uint64)
    v = vandermonde(xs, t)
    assert v.shape == (4, t)
    assert v.tolist() == [[pow(int(x), j, PRIME) for j in range(t)] for x in xs]


# ---------------------------------------------------------------------------- labels and commitments
_B32 = st.binary(min_size=32, max_size=32)


@settings(max_examples=60, deadline=None)
@given(rnd=st.integers(0, MAX_ROUND), cid=st.integers(0, (1 << 32) - 1), fields=st.tuples(_B32, _B32, _B32, _B32))
def test_advertisement_payload_is_the_label(rnd: int, cid: int, fields: tuple[bytes, ...]) -> None:
    adv = KeyAdvertisement(rnd, cid, fields[0], fields[1], fields[2], b"", fields[3])
    want = label(crypto.DOMAIN, "advertise", rnd, cid, *fields)
    assert crypto.advertisement_payload(adv) == want


def test_advertisement_payload_of_odd_fields_is_still_the_label() -> None:
    adv = KeyAdvertisement(1, 2, b"short", bytes(32), bytes(32), b"", bytes(31))  # a hand-built message
    assert crypto.advertisement_payload(adv) == label(
        crypto.DOMAIN, "advertise", 1, 2, b"short", *(bytes(32),) * 2, bytes(31)
    )
    with pytest.raises(OverflowError):  # out of the signed 64-bit range: refused as the label refuses it
        crypto.advertisement_payload(KeyAdvertisement(1 << 63, 2, *(bytes(32),) * 3))


_P25519 = (1 << 255) - 19
#: 32-byte strings biased to the edges of the check: near p, the top byte 0x7f / 0x80, low-order points
_U_EDGES = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.integers(_P25519 - 64, (1 << 256) - 1).map(lambda u: u.to_bytes(32, "little")),
    st.integers(0x7F << 248, (0x81 << 248) - 1).map(lambda u: u.to_bytes(32, "little")),
    st.sampled_from(sorted(crypto.LOW_ORDER_U)).flatmap(
        lambda u: st.sampled_from([u, u + _P25519, u | 1 << 255]).map(lambda v: (v % (1 << 256)).to_bytes(32, "little"))
    ),
)


@settings(max_examples=300, deadline=None)
@given(public=_U_EDGES)
def test_valid_x25519_public_is_the_integer_definition(public: bytes) -> None:
    u = int.from_bytes(public, "little")
    assert crypto.valid_x25519_public(public) is (u < _P25519 and u not in crypto.LOW_ORDER_U)


@pytest.mark.parametrize("short", range(4))
def test_advertisement_payload_with_any_one_field_not_32_bytes_is_the_label(short: int) -> None:
    fields = [bytes([i]) * (31 if i == short else 32) for i in range(4)]
    adv = KeyAdvertisement(1, 2, fields[0], fields[1], fields[2], b"", fields[3])
    assert crypto.advertisement_payload(adv) == label(crypto.DOMAIN, "advertise", 1, 2, *fields)


@settings(max_examples=60, deadline=None)
@given(rnd=st.integers(0, MAX_ROUND), cid=st.integers(0, (1 << 32) - 1), ch=_B32, value=st.binary(max_size=40))
def test_seed_commitment_is_the_labelled_hash(rnd: int, cid: int, ch: bytes, value: bytes) -> None:
    want = hashlib.sha256(label(crypto.DOMAIN, "seed-commit", rnd, cid, ch) + value).digest()
    assert seeding.commitment(round=rnd, client_id=cid, config_hash=ch, value=value) == want
    short = ch[:5]
    want = hashlib.sha256(label(crypto.DOMAIN, "seed-commit", rnd, cid, short) + value).digest()
    assert seeding.commitment(round=rnd, client_id=cid, config_hash=short, value=value) == want


# ---------------------------------------------------------------------------- roster decoder
def _adv(cid: int, *, signed: bool, rnd: int = 3) -> KeyAdvertisement:
    sig = os.urandom(64) if signed else b""
    return KeyAdvertisement(rnd, cid, os.urandom(32), os.urandom(32), os.urandom(32), sig, os.urandom(32))


def _slow_roster(data: bytes) -> KeyRoster:
    """The entry-by-entry reference decoder."""
    r = Reader(data, "KeyRoster")
    r.fixed(4)
    rnd = r.u64()
    n = r.u32()
    advs = tuple(KeyAdvertisement._read(r) for _ in range(n))
    r.end()
    return KeyRoster(rnd, advs)


@pytest.mark.parametrize("signed", [[False] * 5, [True] * 5, [True, False, True, True, False], [False, True]])
def test_roster_decoder_equals_the_entry_by_entry_one(signed: list[bool]) -> None:
    roster = KeyRoster(3, tuple(_adv(c, signed=s) for c, s in enumerate(signed)))
    data = roster.encode()
    assert KeyRoster.decode(data) == roster == _slow_roster(data)


def test_roster_decoder_still_refuses_bad_entries_and_trailing_bytes() -> None:
    good = KeyRoster(3, tuple(_adv(c, signed=True) for c in range(4)))
    with pytest.raises(InvalidMessage, match="trailing"):
        KeyRoster.decode(good.encode() + b"\0")
    bad_id = KeyRoster(3, (*good.advertisements[:3], _adv(1 << 31, signed=True)))
    with pytest.raises(InvalidMessage, match="client id"):
        KeyRoster.decode(bad_id.encode())
    bad_round = KeyRoster(3, (_adv(9, signed=True, rnd=MAX_ROUND + 1), *good.advertisements[1:]))
    with pytest.raises(InvalidMessage, match="out of range"):
        KeyRoster.decode(bad_round.encode())
    data = bytearray(good.encode())
    data[4:12] = (MAX_ROUND + 1).to_bytes(8, "big")  # the roster's own round is read before the entries
    with pytest.raises(InvalidMessage, match="round"):
        KeyRoster.decode(bytes(data))
    with pytest.raises(InvalidMessage):
        KeyRoster.decode(good.encode(), Limits(clients=3))  # more entries than the cohort
