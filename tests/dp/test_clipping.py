"""Clipping bound for every client, bounded weights, sensitivity."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dp.clipping import client_weights, clip_l2, clip_updates, sum_sensitivity
from privagg.errors import ConfigurationError

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(1, 40)), elements=finite),
    st.floats(min_value=1e-6, max_value=1e3),
)
def test_clipping_bound_holds_for_every_client(stack: np.ndarray, clip: float) -> None:
    res = clip_updates(stack, clip)
    norms = np.linalg.norm(res.clipped, axis=1)
    assert np.all(norms <= clip)  # every client, no tolerance
    # unclipped rows pass unchanged; clipped rows keep their direction
    for i in range(len(stack)):
        if res.unclipped[i]:
            assert np.array_equal(res.clipped[i], stack[i])
        else:
            assert norms[i] == pytest.approx(clip, rel=1e-9)
            assert np.allclose(res.clipped[i] * res.norms[i] / norms[i], stack[i], rtol=1e-9, atol=1e-9 * res.norms[i])


def test_clip_l2_and_errors() -> None:
    v, n = clip_l2(np.array([3.0, 4.0]), 1.0)
    assert n == 5.0 and np.allclose(v, [0.6, 0.8])
    z, n0 = clip_l2(np.zeros(3), 1.0)
    assert n0 == 0.0 and np.array_equal(z, np.zeros(3))
    with pytest.raises(ConfigurationError):
        clip_updates([np.array([np.nan, 1.0])], 1.0)
    with pytest.raises(ConfigurationError):
        clip_updates([np.ones(2)], 0.0)


def test_weights_are_bounded_a_priori() -> None:
    n = np.array([1, 10, 50, 500])
    assert np.array_equal(client_weights(n, weighting="uniform"), np.ones(4))
    w = client_weights(n, weighting="capped", weight_cap=50)
    assert np.allclose(w, [0.02, 0.2, 1.0, 1.0]) and w.max() <= 1.0
    with pytest.raises(ConfigurationError):
        client_weights(n, weighting="capped")
    with pytest.raises(ConfigurationError):
        client_weights(n, weighting="examples")  # type: ignore[arg-type]


def test_sum_sensitivity_add_remove_and_replace() -> None:
    assert sum_sensitivity(clip=0.5, sensitivity_factor=1.0) == 0.5
    assert sum_sensitivity(clip=0.5, sensitivity_factor=2.0) == 1.0
    assert sum_sensitivity(clip=0.5, sensitivity_factor=1.0, max_weight=0.25) == 0.125


def test_clipping_shaves_until_the_bound_holds() -> None:
    # one shave of 4 ulps was not enough here: the norm stayed 1 ulp above the clip
    big, mid, small, other = 779818.09375, 181571.26660698, 942.35546875, 595891.2021367324
    row = [-big, -big, mid, -small, -small, -big, big, -other, small, big, big, big, -small, small, small, -other]
    row += [-small, small, other, -small, -mid, -small, mid]
    clip = 926.926266890088
    res = clip_updates([np.array(row)], clip)
    assert np.linalg.norm(res.clipped, axis=1)[0] <= clip
