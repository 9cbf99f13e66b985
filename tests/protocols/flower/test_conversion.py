"""Flower's serialised arrays read without a copy (``_fit_round.array_views``): the same arrays as Flower's
own reader, for every dtype, shape and memory order; malformed bytes refused with ``ValueError``."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.common import ndarray_to_bytes, parameters_to_ndarrays
from flwr.common.typing import Parameters
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocols.flower._fit_round import array_views, narrow_ring
from secagg.params import SecAggParams, ThreatModel

DTYPES = st.sampled_from(["<f4", "<f8", ">f8", "<i8", "<u4", "|u1", "<f2", "|b1", "<c8"])


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)), st.booleans())
def test_views_equal_flowers_reader(arr: np.ndarray, fortran: bool) -> None:
    a = np.asfortranarray(arr) if fortran else arr
    blobs = [ndarray_to_bytes(a), ndarray_to_bytes(np.zeros(0, dtype=np.float32))]
    got = array_views(blobs)
    want = parameters_to_ndarrays(Parameters(tensors=blobs, tensor_type="numpy.ndarray"))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)
        assert not g.flags.writeable  # a view of the message's bytes


def test_malformed_or_object_arrays_are_refused() -> None:
    blob = ndarray_to_bytes(np.arange(10, dtype=np.float64))
    for bad in (blob[:-1], blob + b"\x00", b"not npy", blob[:20]):
        with pytest.raises(ValueError):
            array_views([bad])
    header = blob[: len(blob) - 80].replace(b"'<f8'", b"'|O8'")  # an object array's header (np.save refuses them)
    with pytest.raises(ValueError):
        array_views([header + bytes(80)])


def test_ring_inputs_narrow_to_the_rings_word() -> None:
    p32 = SecAggParams.manual(num_clients=10, degree=6, threshold=5, threat=ThreatModel.SEMI_HONEST, modulus_bits=32)
    v = np.array([0, 1, (1 << 32) - 1], dtype=np.uint64)
    out = narrow_ring(v, p32)
    assert out.dtype == np.uint32 and out.tolist() == v.tolist()
    over = np.array([1 << 32], dtype=np.uint64)  # out of the ring: left for the core to refuse
    assert narrow_ring(over, p32).dtype == np.uint64
    wide = SecAggParams.manual(num_clients=10, degree=6, threshold=5, threat=ThreatModel.SEMI_HONEST, modulus_bits=40)
    assert narrow_ring(v, wide).dtype == np.uint64
    assert narrow_ring(np.array([1, 2], dtype=np.int64), p32).dtype == np.int64  # signed: as it is (the core refuses)
