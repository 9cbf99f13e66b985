"""Codec v5's pieces (``secagg.limbs``, ``secagg.vss``): 30-bit limbs round-trip every secret, a leaf
opens from a revealed share and its opening and from nothing else, known-answer vectors pin the leaf
and the digest, and a revealed share whose opening is wrong is the holder's fault at unmasking."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attacks.protocol.conformance import complete_params
from attacks.protocol.rewrite import TamperedRound, run_tampered
from secagg import ThreatModel, UnmaskResponse, vss
from secagg.limbs import LIMB_BITS, SECRET_LIMBS, from_limbs, from_limbs_batch, to_limbs
from secagg.messages import OPENING_BYTES, SHARE_BYTES, ClientMessage

secret = st.binary(min_size=32, max_size=32)


@settings(max_examples=300, deadline=None)
@given(s=secret)
def test_limbs_round_trip_every_secret(s: bytes) -> None:
    limbs = to_limbs(s)
    assert limbs.shape == (SECRET_LIMBS,) and all(int(v) < 1 << LIMB_BITS for v in limbs)
    assert int(limbs[-1]) < 1 << 16  # 256 = 8 x 30 + 16
    assert from_limbs(limbs) == s


@settings(max_examples=100, deadline=None)
@given(s=secret, i=st.integers(0, SECRET_LIMBS - 1), extra=st.integers(0, (1 << 31) - 2))
def test_a_limb_out_of_its_range_is_no_secret(s: bytes, i: int, extra: int) -> None:
    limbs = to_limbs(s)
    bound = 1 << (16 if i == SECRET_LIMBS - 1 else LIMB_BITS)
    limbs[i] = bound + extra % ((1 << 31) - 1 - bound)
    assert from_limbs(limbs) is None
    assert from_limbs_batch(np.stack([to_limbs(s), limbs])) == [s, None]


def test_limbs_known_answer() -> None:
    assert to_limbs(bytes(range(32))).tolist() == [
        50462976,
        471340048,
        815829120,
        58934018,
        303108111,
        408178764,
        563183985,
        122095302,
        7966,
    ]
    with pytest.raises(ValueError):
        to_limbs(bytes(31))


IDS = {"session": bytes(range(32)), "round": 7, "dealer": 3, "holder": 9}
PARTS = {"key": b"K" * 32, "self_share": b"s" * SHARE_BYTES, "key_share": b"k" * SHARE_BYTES}


def test_leaf_and_digest_known_answers() -> None:
    leaf = vss.leaf(**IDS, **PARTS)
    assert leaf.hex() == "1a90fdaddacf7308b19822f228a36a7a34cd0443f1bc562490ce39cc2be6ac93"
    pairs = [(9).to_bytes(4, "big") + leaf]
    digest = vss.digest_of(session=IDS["session"], round=7, dealer=3, seed_commitment=b"C" * 32, pairs=pairs)
    assert digest.hex() == "a21dda57c00f8f38bfa6a694af8138e9b73133f722806b303b9d400b981cc415"


shares = st.binary(min_size=SHARE_BYTES, max_size=SHARE_BYTES)


@settings(max_examples=150, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    s_self=shares,
    s_key=shares,
    kind=st.sampled_from(["self", "key"]),
    pos=st.integers(0, SHARE_BYTES + OPENING_BYTES - 1),
    flip=st.integers(1, 255),
)
def test_a_leaf_opens_from_its_share_and_opening_and_from_nothing_else(
    key: bytes, s_self: bytes, s_key: bytes, kind: str, pos: int, flip: int
) -> None:
    parts = {"key": key, "self_share": s_self, "key_share": s_key}
    leaf = vss.leaf(**IDS, **parts)
    share = s_self if kind == "self" else s_key
    opening = vss.opening(kind, **IDS, **parts)
    at = {"session": IDS["session"], "round": IDS["round"], "owner": IDS["dealer"], "holder": IDS["holder"]}
    assert vss.opened_leaf(kind, share, opening, **at) == leaf
    blob = bytearray(share + opening)  # any one byte of the share or its opening changed: another leaf
    blob[pos] ^= flip
    assert vss.opened_leaf(kind, bytes(blob[:SHARE_BYTES]), bytes(blob[SHARE_BYTES:]), **at) != leaf
    other = "key" if kind == "self" else "self"  # the share revealed as the other kind: another leaf
    assert s_self == s_key or vss.opened_leaf(other, share, opening, **at) != leaf
    for field, value in (("holder", 10), ("owner", 4), ("round", 8), ("session", bytes(32))):
        assert vss.opened_leaf(kind, share, opening, **{**at, field: value}) != leaf


@pytest.mark.parametrize("threat", [ThreatModel.SEMI_HONEST, ThreatModel.ACTIVE])
def test_a_revealed_share_with_a_wrong_opening_is_the_holders_fault(threat: ThreatModel) -> None:
    """A colluder reveals one true share with a wrong opening: the server records the share as corrupt
    against that holder, ignores it, and the round completes with the exact sum."""
    bad: list[int] = []

    def rewrite(sender: int, m: ClientMessage, rnd: TamperedRound) -> list[ClientMessage]:
        if sender == 2 and isinstance(m, UnmaskResponse) and m.self_shares:
            first = m.self_shares[0]
            bad.append(first.owner)
            wrong = dataclasses.replace(first, opening=bytes(OPENING_BYTES))
            m = dataclasses.replace(m, self_shares=(wrong, *m.self_shares[1:]))
            return [rnd.resign(m)]
        return [m]

    out = run_tampered(complete_params(threat), attackers=(2,), client_rewrite=rewrite)
    assert out.crash is None and out.correct_sum() and not out.exposed() and not out.honest_aborts
    assert bad and (2, bad[0], "self") in out.rnd.server.corrupt_shares
