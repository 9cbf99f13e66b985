"""Packing: exact per-slot sums under encryption (incl. worst cases at max clients), overflow refusal."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.encoding import sum_bits
from privagg.errors import ConfigurationError
from privagg.randomness import InsecureDeterministicSecrets
from protocols.paillier import PackingLayout, generate_keypair


@pytest.fixture(scope="module")
def key256():
    return generate_keypair(256, secrets=InsecureDeterministicSecrets(b"pack"), allow_insecure=True)


def test_layout_derivation():
    lay = PackingLayout.derive(key_bits=2048, value_bits=16, max_clients=10)
    assert lay.slot_bits == sum_bits(10, 16) == 20
    assert lay.slots == 2047 // 20 == 102
    lay3 = PackingLayout.derive(key_bits=3072, value_bits=16, max_clients=1000)
    assert lay3.slot_bits == 26 and lay3.slots == 3071 // 26
    assert lay.num_plaintexts(10_000) == 99


def test_layout_refuses_overflow():
    with pytest.raises(ConfigurationError, match="overflow") as e:
        PackingLayout(key_bits=2048, value_bits=16, max_clients=10, slot_bits=19, slots=100)
    assert e.value.field == "slot_bits" and "20" in str(e.value)
    with pytest.raises(ConfigurationError, match="do not fit"):
        PackingLayout(key_bits=2048, value_bits=16, max_clients=10, slot_bits=20, slots=103)
    with pytest.raises(ConfigurationError, match="does not fit"):
        PackingLayout.derive(key_bits=32, value_bits=30, max_clients=4)
    with pytest.raises(ConfigurationError, match="value_bits"):
        PackingLayout.derive(key_bits=2048, value_bits=48, max_clients=1 << 20)


def test_pack_refuses_out_of_range_and_too_many_summands():
    lay = PackingLayout.derive(key_bits=256, value_bits=8, max_clients=4)
    with pytest.raises(ConfigurationError, match="values must lie"):
        lay.pack(np.array([128]))
    with pytest.raises(ConfigurationError, match="num_summands"):
        lay.unpack(lay.pack(np.array([1])), count=1, num_summands=5)


def _encrypted_sum(key, lay, vectors):
    pk, sk = key
    acc = [pk.encrypt(m) for m in lay.pack(vectors[0])]
    for v in vectors[1:]:
        acc = [pk.add(a, pk.encrypt(m)) for a, m in zip(acc, lay.pack(v))]
    return lay.unpack([int(sk.decrypt(c)) for c in acc], count=len(vectors[0]), num_summands=len(vectors))


@pytest.mark.parametrize("value_bits", [2, 8, 16, 24])
def test_worst_case_values_at_max_clients_are_exact(key256, value_bits):
    max_clients = 7
    lay = PackingLayout.derive(key_bits=256, value_bits=value_bits, max_clients=max_clients)
    q = lay.q
    count = 2 * lay.slots + 3  # several plaintexts and a partly filled last one
    for fill in (q, -q):
        vecs = [np.full(count, fill, dtype=np.int64) for _ in range(max_clients)]
        assert np.array_equal(_encrypted_sum(key256, lay, vecs), np.full(count, fill * max_clients))
    # alternating extremes: every slot boundary sees carries from both directions
    alt = np.where(np.arange(count) % 2 == 0, q, -q)
    vecs = [alt * (1 if c % 2 else -1) for c in range(max_clients)]
    assert np.array_equal(_encrypted_sum(key256, lay, vecs), sum(vecs))


@settings(max_examples=30, deadline=None)
@given(
    value_bits=st.integers(min_value=2, max_value=20),
    max_clients=st.integers(min_value=1, max_value=40),
    data=st.data(),
)
def test_homomorphic_packed_sums_exact_per_slot(key256, value_bits, max_clients, data):
    lay = PackingLayout.derive(key_bits=256, value_bits=value_bits, max_clients=max_clients)
    clients = data.draw(st.integers(min_value=1, max_value=max_clients), label="clients")
    count = data.draw(st.integers(min_value=1, max_value=2 * lay.slots + 1), label="count")
    q = lay.q
    extreme = st.sampled_from([-q, q, 0, -q + 1, q - 1])
    value = st.one_of(extreme, st.integers(min_value=-q, max_value=q))
    vecs = [
        np.array(data.draw(st.lists(value, min_size=count, max_size=count)), dtype=np.int64) for _ in range(clients)
    ]
    assert np.array_equal(_encrypted_sum(key256, lay, vecs), np.sum(vecs, axis=0))


def test_overflow_would_corrupt_a_neighbour_without_headroom(key256):
    # the reason for the refusal: one bit less headroom and the max-client worst case carries over
    lay = PackingLayout.derive(key_bits=256, value_bits=8, max_clients=4)
    tight = object.__new__(PackingLayout)
    for f, v in (
        ("key_bits", 256),
        ("value_bits", 8),
        ("max_clients", 4),
        ("slot_bits", lay.slot_bits - 1),
        ("slots", lay.slots),
    ):
        object.__setattr__(tight, f, v)
    vecs = [np.full(3, lay.q, dtype=np.int64) for _ in range(4)]
    # the carry leaves every sum wrong; unpack notices (a sum outside [-N q, N q]) instead of returning it
    with pytest.raises(ConfigurationError, match=r"outside|padding|larger than the packed layout"):
        _encrypted_sum(key256, tight, vecs)


@settings(max_examples=40, deadline=None)
@given(clients=st.integers(1, 4), data=st.data())
def test_unpack_refuses_exactly_what_no_honest_summands_give(clients, data):
    """A decoded sum outside [-N q, N q] or non-zero padding is refused; anything N honest values give is not."""
    lay = PackingLayout.derive(key_bits=256, value_bits=8, max_clients=4)
    q, count = lay.q, lay.slots + 3
    bound = clients * q
    sums = data.draw(st.lists(st.integers(-bound - 3, bound + 3), min_size=count, max_size=count))
    pad = data.draw(st.sampled_from([0, 0, 1, -1]))
    slots = [s + bound for s in sums] + [bound + pad] * (2 * lay.slots - count)
    if min(slots) < 0:
        return  # below the slot's zero: a borrow, not a plaintext of this form
    rows = [slots[: lay.slots], slots[lay.slots :]]
    plain = [sum(v << (i * lay.slot_bits) for i, v in enumerate(row)) for row in rows]
    honest = max(abs(x) for x in sums) <= bound and pad == 0
    if honest:
        assert lay.unpack(plain, count=count, num_summands=clients).tolist() == sums
    else:
        with pytest.raises(ConfigurationError, match=r"outside|padding"):
            lay.unpack(plain, count=count, num_summands=clients)


def test_worst_case_at_a_thousand_clients_is_exact(key256):
    # the largest sum the layout admits: 1000 clients, every value at +q (then at -q)
    lay = PackingLayout.derive(key_bits=256, value_bits=16, max_clients=1000)
    pk, sk = key256
    for fill in (lay.q, -lay.q):
        pts = lay.pack(np.full(lay.slots + 1, fill, dtype=np.int64))
        acc = [pk.encrypt(m) for m in pts]
        for _ in range(999):
            acc = [pk.add(a, pk.encrypt(m)) for a, m in zip(acc, pts)]
        sums = lay.unpack([int(sk.decrypt(c)) for c in acc], count=lay.slots + 1, num_summands=1000)
        assert np.array_equal(sums, np.full(lay.slots + 1, 1000 * fill))


@settings(max_examples=60, deadline=None)
@given(
    key_bits=st.sampled_from([256, 512, 1024, 2048, 3072]),
    value_bits=st.integers(2, 24),
    max_clients=st.integers(2, 300),
    data=st.data(),
)
def test_pack_equals_the_row_by_row_reference(key_bits, value_bits, max_clients, data):
    """The whole-vector fast path (rows ending on a byte) gives the plaintexts of packing each row alone."""
    try:
        layout = PackingLayout.derive(key_bits=key_bits, value_bits=value_bits, max_clients=max_clients)
    except ConfigurationError:
        return
    q = layout.q
    count = data.draw(st.integers(1, 3 * layout.slots + 1))
    v = np.array(data.draw(st.lists(st.integers(-q, q), min_size=count, max_size=count)), dtype=np.int64)
    total = layout.num_plaintexts(count) * layout.slots
    padded = np.full(total, q, dtype=np.int64)
    padded[:count] = v + q
    rows = padded.astype(np.uint64).reshape(-1, layout.slots)
    reference = [sum(int(x) << (i * layout.slot_bits) for i, x in enumerate(row)) for row in rows]
    assert layout.pack(v) == reference
    assert np.array_equal(layout.unpack(reference, count=count, num_summands=1), v)
