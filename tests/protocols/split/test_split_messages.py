"""The split-learning codec: round trips, exact sizes, and untrusted bytes never crash the decoder."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.errors import InvalidMessage
from protocols.split.messages import CutGradient, HeadGradient, ServerActivations, Smashed, decode, encode


def _tensor(rng: np.random.Generator, b: int, d: int) -> np.ndarray:
    return rng.normal(size=(b, d)).astype(np.float32)


@pytest.mark.parametrize("cls", [CutGradient, ServerActivations, HeadGradient])
def test_round_trip_and_exact_size(cls: type) -> None:
    t = _tensor(np.random.default_rng(0), 5, 7)
    msg = cls(step=9, client=3, tensor=t)
    wire = encode(msg)
    assert len(wire) == 15 + 1 + 2 * 4 + 5 * 7 * 4
    back = decode(wire)
    assert type(back) is cls and back.step == 9 and back.client == 3
    np.testing.assert_array_equal(back.tensor, t)


def test_smashed_carries_ids() -> None:
    t = _tensor(np.random.default_rng(1), 4, 3)
    msg = Smashed(step=1, client=0, tensor=t, example_ids=np.array([7, 1, 2**32 - 1, 0]))
    wire = encode(msg)
    assert len(wire) == 15 + 4 * 4 + 1 + 2 * 4 + 4 * 3 * 4
    back = decode(wire)
    assert isinstance(back, Smashed)
    np.testing.assert_array_equal(back.ids, [7, 1, 2**32 - 1, 0])


def test_construction_refuses_bad_fields() -> None:
    t = np.zeros((2, 2), np.float32)
    with pytest.raises(InvalidMessage):
        Smashed(step=0, client=0, tensor=t, example_ids=np.array([1]))
    with pytest.raises(InvalidMessage):
        CutGradient(step=0, client=0, tensor=t.astype(np.float64))
    with pytest.raises(InvalidMessage):
        CutGradient(step=0, client=0, tensor=np.array([[np.nan]], np.float32))
    with pytest.raises(InvalidMessage):
        CutGradient(step=-1, client=0, tensor=t)


def test_decoder_rejects_structural_lies() -> None:
    wire = bytearray(encode(CutGradient(step=0, client=0, tensor=np.ones((2, 2), np.float32))))
    with pytest.raises(InvalidMessage, match="magic"):
        decode(b"XYZ" + bytes(wire[3:]))
    with pytest.raises(InvalidMessage, match="version"):
        decode(bytes(wire[:3]) + b"\x09" + bytes(wire[4:]))
    with pytest.raises(InvalidMessage, match="payload"):
        decode(bytes(wire[:-1]))
    huge = bytearray(wire)
    huge[11:15] = (2**31).to_bytes(4, "little")  # an id count far beyond the bytes left
    with pytest.raises(InvalidMessage, match="id count"):
        decode(bytes(huge))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_decode_or_raise_invalid(data: bytes) -> None:
    try:
        decode(data)
    except InvalidMessage:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 60), st.integers(0, 255))
def test_mutated_valid_messages_decode_or_raise_invalid(pos: int, value: int) -> None:
    msg = Smashed(step=2, client=1, tensor=np.ones((2, 3), np.float32), example_ids=np.array([4, 5]))
    wire = bytearray(encode(msg))
    wire[pos % len(wire)] = value
    try:
        decode(bytes(wire))
    except InvalidMessage:
        pass
