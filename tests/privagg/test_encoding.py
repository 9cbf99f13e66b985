import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from privagg.encoding import RingEncoding, add_unpacked, pack_bits, packed_size, sum_bits, unpack_bits
from privagg.errors import ConfigurationError

floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    x=arrays(np.float64, st.integers(1, 64), elements=floats),
    clip=st.floats(0.01, 100.0),
    value_bits=st.integers(2, 24),
    seed=st.integers(0, 2**32 - 1),
)
def test_roundtrip_error_within_one_step_and_clipping_counted(x, clip, value_bits, seed):
    enc = RingEncoding.for_sum(clip=clip, max_summands=1, value_bits=value_bits)
    e = enc.encode(x, np.random.default_rng(seed))
    assert e.clipped == int(np.count_nonzero(np.abs(x) > clip))
    assert e.values.dtype == np.uint64 and int(e.values.max()) < enc.modulus
    err = np.abs(enc.decode(e.values) - np.clip(x, -clip, clip))
    assert np.all(err <= enc.step * (1 + 1e-9))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    value_bits=st.integers(2, 20),
    dim=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
)
def test_sum_of_n_worst_case_inputs_never_wraps(n, value_bits, dim, seed):
    enc = RingEncoding.for_sum(clip=1.0, max_summands=n, value_bits=value_bits)
    rng = np.random.default_rng(seed)
    # worst case: every client at +clip (or -clip), plus random ones
    for sign in (1.0, -1.0):
        xs = [np.full(dim, sign * 5.0)] * n
        total = np.zeros(dim, dtype=np.uint64)
        for x in xs:
            total = (total + enc.encode(x, rng).values) & np.uint64(enc.modulus - 1)
        np.testing.assert_allclose(enc.decode(total), sign * n, rtol=0, atol=1e-9)
    xs = rng.uniform(-1, 1, size=(n, dim))
    total = np.zeros(dim, dtype=np.uint64)
    for x in xs:
        total = (total + enc.encode(x, rng).values) & np.uint64(enc.modulus - 1)
    assert np.all(np.abs(enc.decode(total) - xs.sum(0)) <= enc.sum_error_bound(n) + 1e-9)


@pytest.mark.parametrize("value", [0.1234, -0.77, 0.5 / 32767, 0.999])
def test_stochastic_rounding_is_unbiased(value):
    # 20,000 roundings: the mean of the scaled integers equals value*scale within 5 sigma
    # (sigma <= 0.5 / sqrt(20000) = 0.0035 quantisation steps).
    enc = RingEncoding.for_sum(clip=1.0, max_summands=1, value_bits=16)
    ints, _ = enc.quantize(np.full(20_000, value), np.random.default_rng(12345))
    assert abs(ints.mean() - value * enc.scale) < 5 * 0.5 / np.sqrt(20_000)


def test_sum_bits_is_tight():
    # n values in [-q, q] sum to one of 2nq+1 integers
    for n, vb in [(1, 16), (1024, 16), (1000, 16), (7, 3), (100_000, 20)]:
        k = sum_bits(n, vb)
        q = 2 ** (vb - 1) - 1
        assert 2**k >= 2 * n * q + 1 > 2 ** (k - 1)
    assert sum_bits(1024, 16) == 26


def test_refuses_rings_that_can_wrap_with_a_useful_message():
    with pytest.raises(ConfigurationError, match="needs at least 26") as ei:
        RingEncoding(clip=1.0, value_bits=16, max_summands=1024, modulus_bits=25)
    assert ei.value.field == "modulus_bits"
    with pytest.raises(ConfigurationError, match="more than the 62 supported"):
        RingEncoding.for_sum(clip=1.0, max_summands=2**20, value_bits=48)
    with pytest.raises(ConfigurationError):
        RingEncoding.for_sum(clip=0.0, max_summands=2)
    with pytest.raises(ConfigurationError):
        RingEncoding.for_sum(clip=float("nan"), max_summands=2)


def test_refuses_non_finite_inputs():
    enc = RingEncoding.for_sum(clip=1.0, max_summands=4)
    with pytest.raises(ConfigurationError, match="NaN"):
        enc.encode(np.array([0.0, np.nan]), np.random.default_rng(0))


@settings(max_examples=100, deadline=None)
@given(bits=st.integers(1, 64), count=st.integers(0, 200), seed=st.integers(0, 2**32 - 1))
def test_pack_unpack_roundtrip(bits, count, seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 2**63, size=count, dtype=np.uint64, endpoint=True)
    if bits < 64:
        v &= np.uint64((1 << bits) - 1)
    data = pack_bits(v, bits)
    assert len(data) == packed_size(count, bits)
    np.testing.assert_array_equal(unpack_bits(data, bits, count), v)


def test_pack_known_answer_and_chunk_boundary():
    # 3-bit values 1..5 little-endian: bits 100 010 110 001 101 -> bytes
    assert pack_bits(np.array([1, 2, 3, 4, 5], dtype=np.uint64), 3) == bytes([0b11010001, 0b01011000])
    v = np.arange(70_001, dtype=np.uint64) % (1 << 26)  # crosses the 65,536-value chunk
    np.testing.assert_array_equal(unpack_bits(pack_bits(v, 26), 26, v.size), v)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64), bits=st.integers(1, 64), count=st.integers(0, 40))
def test_unpack_rejects_wrong_sizes_with_value_error_only(data, bits, count):
    try:
        out = unpack_bits(data, bits, count)
    except ValueError:
        assert len(data) != packed_size(count, bits)
    else:
        assert out.shape == (count,)


def test_pack_refuses_values_that_do_not_fit():
    with pytest.raises(ValueError):
        pack_bits(np.array([8], dtype=np.uint64), 3)


def _reference_pack(values: list[int], bits: int) -> bytes:
    """The layout by definition: value ``i`` at bits ``[i b, (i+1) b)`` of one little-endian integer."""
    whole = sum(v << (bits * i) for i, v in enumerate(values))
    return whole.to_bytes(packed_size(len(values), bits), "little")


@settings(max_examples=300, deadline=None)
@given(
    bits=st.integers(1, 64),
    count=st.integers(0, 90),
    dtype=st.sampled_from(["<u1", "<u2", "<u4", "<u8"]),
    seed=st.integers(0, 2**32 - 1),
    offset=st.integers(0, 3),
)
def test_pack_and_add_unpacked_follow_the_layout(bits, count, dtype, seed, offset):
    """Every packing path (windows, value pairs for 17..29 bits from uint32, lanes) lays values out as
    defined, from any unsigned dtype and from non-contiguous input; ``add_unpacked`` adds them back into
    an accumulator of any unsigned dtype with wrapping."""
    width = 8 * np.dtype(dtype).itemsize
    rng = np.random.default_rng(seed)
    top = min(bits, width)
    big = rng.integers(0, 2**63, size=2 * count + offset, dtype=np.uint64, endpoint=True)
    if top < 64:
        big &= np.uint64((1 << top) - 1)
    v = big.astype(dtype)[offset::2][:count]  # strided: not contiguous
    data = pack_bits(v, bits)
    assert data == _reference_pack([int(x) for x in v], bits)
    acc = rng.integers(0, 2**63, size=count, dtype=np.uint64).astype(dtype)
    want = (acc.astype(object) + np.array([int(x) for x in v], dtype=object)) % (1 << width)
    add_unpacked(acc, data, bits)
    assert [int(x) for x in acc] == [int(x) for x in want]


def test_add_unpacked_refuses_wrong_sizes_and_accumulators():
    with pytest.raises(ValueError, match="expected 29 bytes"):
        add_unpacked(np.zeros(10, np.uint32), b"\x00" * 3, 23)
    with pytest.raises(ValueError, match="unsigned"):
        add_unpacked(np.zeros(10, np.int64), bytes(packed_size(10, 23)), 23)
    acc = np.zeros(1000, np.uint32)
    add_unpacked(acc, pack_bits(np.full(1000, (1 << 23) - 1, dtype=np.uint32), 23), 23)
    add_unpacked(acc, pack_bits(np.full(1000, 2, dtype=np.uint32), 23), 23)
    assert (acc == (1 << 23) + 1).all()  # the sum carries past the 23 bits: the accumulator's word holds it


@settings(max_examples=60, deadline=None)
@given(
    x=arrays(np.float64, st.integers(1, 300), elements=st.floats(-50, 50)),
    dtype=st.sampled_from([np.float64, np.float32]),
    seed=st.integers(0, 2**32 - 1),
)
def test_encode_overwrite_and_input_dtypes_change_nothing_but_scratch(x, dtype, seed):
    """``quantize`` / ``encode`` give the same integers, ring elements and clip count whether or not the
    caller lends its vector as scratch; without ``overwrite`` the caller's vector is untouched; the ring
    elements are ``to_ring`` of the integers (same draws from the same generator)."""
    enc = RingEncoding(clip=3.0, value_bits=12, max_summands=7, modulus_bits=20)
    xs = x.astype(dtype)
    before = xs.copy()
    ints, clipped = enc.quantize(xs, np.random.default_rng(seed))
    np.testing.assert_array_equal(xs, before)
    assert clipped == int(np.count_nonzero(np.abs(xs.astype(np.float64)) > 3.0))
    ring = enc.encode(xs, np.random.default_rng(seed))
    np.testing.assert_array_equal(xs, before)
    np.testing.assert_array_equal(ring.values, enc.to_ring(ints))
    assert ring.values.dtype == np.uint64 and ring.clipped == clipped
    scratch = xs.astype(np.float64)
    lent = enc.encode(scratch, np.random.default_rng(seed), overwrite=True)
    np.testing.assert_array_equal(lent.values, ring.values)
    assert lent.clipped == clipped
    ro = before.astype(np.float64)
    ro.setflags(write=False)  # a read-only vector is never written, even when lent
    np.testing.assert_array_equal(enc.encode(ro, np.random.default_rng(seed), overwrite=True).values, ring.values)
