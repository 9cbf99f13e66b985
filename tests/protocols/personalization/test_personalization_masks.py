"""Masks: magnitude pruning, per-coordinate aggregation, the sparse wire codec."""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from privagg.errors import ConfigurationError, InvalidMessage
from protocols.personalization.masks import (
    Layer,
    aggregate_per_coordinate,
    decode_sparse,
    encode_sparse,
    layers_of,
    prune_magnitude,
    sparse_bytes,
    weight_density,
)

LAYERS = [Layer("w", 0, 100, prunable=True), Layer("b", 100, 110, prunable=False)]


def test_prune_drops_smallest_magnitudes_of_each_layer() -> None:
    w = np.concatenate([np.arange(100, dtype=float) - 50.0, np.zeros(10)])  # |w| smallest around index 50
    m = prune_magnitude(w, np.ones(110, dtype=bool), LAYERS, rate=0.2, target_sparsity=0.9)
    dropped = np.flatnonzero(~m)
    assert len(dropped) == 20
    assert np.abs(w[dropped]).max() <= np.abs(w[m[:100].nonzero()[0]]).min()
    assert m[100:].all()  # biases stay dense even though they are zero


def test_repeated_pruning_reaches_and_holds_the_target_sparsity() -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=110)
    m = np.ones(110, dtype=bool)
    densities = []
    for _ in range(30):
        m = prune_magnitude(w, m, LAYERS, rate=0.2, target_sparsity=0.9)
        densities.append(weight_density(m, LAYERS))
    assert densities[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in itertools.pairwise(densities))
    assert min(densities) == pytest.approx(0.1)
    assert m[100:].all()


def test_pruning_never_regrows_and_rejects_bad_rates() -> None:
    w = np.random.default_rng(1).normal(size=110)
    m = np.ones(110, dtype=bool)
    m[:30] = False
    new = prune_magnitude(w, m, LAYERS, rate=0.5, target_sparsity=0.5)
    assert not new[:30].any()
    assert int(new[:100].sum()) == 50
    with pytest.raises(ConfigurationError):
        prune_magnitude(w, m, LAYERS, rate=0.0, target_sparsity=0.5)
    with pytest.raises(ConfigurationError):
        prune_magnitude(w, m, LAYERS, rate=0.2, target_sparsity=1.0)


def test_layers_of_marks_batch_norm_local_and_biases_unprunable() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3))
    lay = {x.name: x for x in layers_of(model)}
    assert lay["0.weight"].prunable and not lay["0.bias"].prunable
    assert lay["1.weight"].local and lay["1.bias"].local and not lay["1.weight"].prunable
    assert lay["3.weight"].prunable and not lay["3.weight"].local
    assert sum(x.stop - x.start for x in lay.values()) == sum(p.numel() for p in model.parameters())


def test_per_coordinate_aggregation_is_exact_on_a_toy_case() -> None:
    v = [np.array([1.0, 2.0, 3.0, 4.0]), np.array([5.0, 6.0, 7.0, 8.0]), np.array([9.0, 10.0, 11.0, 12.0])]
    m = [np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool), np.array([0, 0, 1, 0], bool)]
    mean, counts = aggregate_per_coordinate(v, m)
    np.testing.assert_array_equal(counts, [2, 1, 2, 0])
    np.testing.assert_array_equal(mean[:3], [3.0, 2.0, 9.0])  # (1+5)/2, 2/1, (7+11)/2
    assert np.isnan(mean[3])
    wmean, wcounts = aggregate_per_coordinate(v, m, weights=[1.0, 3.0, 1.0])
    np.testing.assert_allclose(wmean[:3], [(1 + 15) / 4, 2.0, (21 + 11) / 4])
    np.testing.assert_array_equal(wcounts, [4, 1, 4, 0])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.integers(0, 2**32 - 1))
def test_encoding_round_trip_and_byte_count(dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random(dim) < rng.random()
    values = rng.normal(size=dim).astype(np.float32).astype(np.float64)
    data = encode_sparse(values, mask)
    assert len(data) == sparse_bytes(dim, int(mask.sum())) == 12 + (dim + 7) // 8 + 4 * int(mask.sum())
    v, m = decode_sparse(data, dimension=dim)
    np.testing.assert_array_equal(m, mask)
    np.testing.assert_array_equal(v, np.where(mask, values, 0.0))


def test_decoder_rejects_malformed_bytes() -> None:
    mask = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1], bool)
    good = encode_sparse(np.arange(9.0), mask)
    decode_sparse(good, dimension=9)
    bad = [
        good[:5],
        b"XYZ" + good[3:],
        good[:3] + b"\x02" + good[4:],
        good[:-1],
        good + b"\x00",
        good[:12] + bytes([good[12] ^ 0x40]) + good[13:],  # flips a mask bit: count disagrees
        good[:13] + b"\x01" + good[14:],  # padding bit set
        struct.pack("<3sBII", b"PLT", 1, 9, 10) + good[12:],  # count above dimension
        good[:-4] + struct.pack("<f", float("nan")),
    ]
    for data in bad:
        with pytest.raises(InvalidMessage):
            decode_sparse(data, dimension=9)
    with pytest.raises(InvalidMessage):
        decode_sparse(good, dimension=8)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_decoder_fuzz_only_raises_invalid_message(data: bytes) -> None:
    try:
        v, m = decode_sparse(data, dimension=20)
    except InvalidMessage:
        return
    assert v.shape == m.shape == (20,)


def test_secure_per_coordinate_mean_matches_the_plain_one() -> None:
    from protocols.personalization.secure import secure_aggregator, secure_per_coordinate_mean

    rng = np.random.default_rng(5)
    dim, n = 40, 4
    deltas = [rng.uniform(-0.5, 0.5, size=dim) for _ in range(n)]
    masks = [rng.random(dim) < 0.5 for _ in range(n)]
    masks[0][:3] = True  # coordinate 3 below: nobody keeps it
    for m in masks:
        m[3] = False
    plain, plain_counts = aggregate_per_coordinate(deltas, masks)
    agg = secure_aggregator(clip=1.0, value_bits=24)
    mean, counts, upload = secure_per_coordinate_mean(
        deltas, masks, aggregator=agg, round=0, rng=np.random.default_rng(0)
    )
    np.testing.assert_array_equal(counts, plain_counts)  # keeper counts exact after rounding
    kept = plain_counts > 0
    np.testing.assert_allclose(mean[kept], plain[kept], atol=1e-5)  # fixed-point error only
    assert np.isnan(mean[3])
    assert upload > 2 * dim * 3  # a dense [mask * delta, mask] vector of ring elements, plus key traffic
