"""Fast paths of the holder and of the decoders give the bytes and objects of the slow ones: a
:class:`secagg.vss.Held` reveals exactly the :func:`secagg.vss.opening` of its share, the slot
builder builds what the constructor builds, and one-pass decoding of rosters and share deliveries
returns what field-by-field decoding returns (or refuses what it refuses)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import secagg.messages as messages
from privagg.errors import InvalidMessage, VerificationError
from privagg.randomness import InsecureDeterministicSecrets, label
from secagg import crypto, vss
from secagg.codec import CIPHERTEXT_BYTES, slot_builder
from secagg.messages import DeliveredShare, EncryptedShares, KeyAdvertisement, KeyRoster, ShareDelivery
from secagg.params import MAX_CLIENT_ID
from secagg.shamir import PRIME
from secagg.wire import NO_LIMITS, Limits

SESSION, ROUND, DEALER, T = bytes(range(32)), 7, 2, 3
HOLDERS = [0, 1, 3, 4, 5]


def _sealed(seed: int) -> tuple[EncryptedShares, dict[int, bytes]]:
    """DEALER's dealing to HOLDERS (seeded) and the holders' pairwise keys."""
    src = InsecureDeterministicSecrets(seed)
    keys = {v: src.token_bytes(32) for v in HOLDERS}
    msg, _ = vss.seal_dealing(
        session=SESSION,
        round=ROUND,
        dealer=DEALER,
        self_seed=src.token_bytes(32),
        mask_key=src.token_bytes(32),
        keys=keys,
        threshold=T,
        source=src,
    )
    return msg, keys


def _delivered(msg: EncryptedShares) -> dict[int, DeliveredShare]:
    return {v: lst[0] for v, lst in vss.deliveries({DEALER: msg}, frozenset(HOLDERS)).items()}


def _dealing(seed: int, tamper_holder: int | None = None) -> tuple[dict[int, DeliveredShare], dict[int, bytes]]:
    msg, keys = _sealed(seed)
    if tamper_holder is not None:  # a leaf the shares do not open: the dealer's fault, no Held
        envs = tuple(
            dataclasses.replace(e, leaf=bytes(32)) if e.recipient == tamper_holder else e for e in msg.envelopes
        )
        msg = dataclasses.replace(msg, envelopes=envs)
    return _delivered(msg), keys


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_a_held_dealing_reveals_the_opening_of_each_share(seed: int) -> None:
    delivered, keys = _dealing(seed)
    for v in HOLDERS:
        ((pt, why, held),) = vss.open_shares(
            [delivered[v]], keys=[keys[v]], session=SESSION, round=ROUND, holder=v, threshold=T
        )
        assert why is None and held is not None and held.dealer == DEALER
        assert repr(held) == f"Held(dealer={DEALER})"  # no share in a repr
        parts = {"self_share": pt[: vss.PART_BYTES], "key_share": pt[vss.PART_BYTES : 2 * vss.PART_BYTES]}
        ids = {"session": SESSION, "round": ROUND, "dealer": DEALER, "holder": v, "key": keys[v]}
        for kind in ("self", "key"):
            got = held.reveal(kind)
            assert got.owner == DEALER and got.share == parts[f"{kind}_share"]
            assert got.opening == vss.opening(kind, **ids, **parts)  # the bytes the eager reveals sent
            leaf = vss.opened_leaf(kind, got.share, got.opening, session=SESSION, round=ROUND, owner=DEALER, holder=v)
            assert leaf == delivered[v].leaf


def test_a_delivery_off_its_signed_leaf_does_not_open() -> None:
    delivered, keys = _dealing(5, tamper_holder=3)
    with pytest.raises(VerificationError):  # the AES-GCM binding covers the leaf (and the digest all leaves)
        vss.open_shares([delivered[3]], keys=[keys[3]], session=SESSION, round=ROUND, holder=3, threshold=T)


def test_a_share_off_the_polynomial_names_the_dealer_and_is_not_held() -> None:
    real = vss.deal

    def deal(*a, **kw):  # type: ignore[no-untyped-def]
        sh, co = real(*a, **kw)
        sh[1, 0] = (int(sh[1, 0]) + 1) % int(vss._P)  # holder 1's first self-share limb
        return sh, co

    vss.deal = deal  # type: ignore[assignment]
    try:
        msg, keys = _sealed(9)
    finally:
        vss.deal = real
    delivered = _delivered(msg)
    ((_, why, held),) = vss.open_shares(
        [delivered[1]], keys=[keys[1]], session=SESSION, round=ROUND, holder=1, threshold=T
    )
    assert why is not None and "off its polynomials" in why and held is None


digest = st.binary(min_size=32, max_size=32)
adv = st.builds(
    KeyAdvertisement,
    round=st.integers(0, 2**63 - 1),
    client_id=st.integers(0, MAX_CLIENT_ID),
    config_hash=digest,
    enc_public_key=digest,
    mask_public_key=digest,
    signature=st.sampled_from([b"", bytes(64), b"\x01" * 64]),
    seed_commitment=digest,
)


@settings(max_examples=200, deadline=None)
@given(a=adv)
def test_the_slot_builder_builds_what_the_constructor_builds(a: KeyAdvertisement) -> None:
    order = ("signature", "", "round", "client_id", "config_hash", "enc_public_key", "mask_public_key")
    order += ("seed_commitment",)
    row = [a.signature, None, *(getattr(a, n) for n in order[2:])]
    built = slot_builder(KeyAdvertisement, order)(row)
    assert built == a and type(built) is KeyAdvertisement and hash(built) == hash(a)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.round = 0  # type: ignore[misc]


def test_the_slot_builder_refuses_a_missing_field_or_a_post_init() -> None:
    with pytest.raises(TypeError):
        slot_builder(DeliveredShare, ("sender", "ciphertext", "dealing_digest", "leaf"))

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            raise ValueError

    with pytest.raises(TypeError):
        slot_builder(Checked, ("x",))


@contextmanager
def _slow_paths() -> Iterator[None]:
    """The field-by-field decoders only (the reference the one-pass paths must match)."""
    real_adv, real_ds = messages._read_uniform_advertisements, messages.uniform_delivered
    messages._read_uniform_advertisements = lambda r, n: None  # type: ignore[assignment]
    messages.uniform_delivered = lambda r, n, limits: None  # type: ignore[assignment]
    try:
        yield
    finally:
        messages._read_uniform_advertisements, messages.uniform_delivered = real_adv, real_ds


def _both(decode, data: bytes, limits: Limits) -> None:  # type: ignore[no-untyped-def]
    """The fast and the slow decoder agree: the same message, or both refuse with InvalidMessage."""
    try:
        fast: object = decode(data, limits)
    except InvalidMessage:
        fast = InvalidMessage
    with _slow_paths():
        try:
            slow: object = decode(data, limits)
        except InvalidMessage:
            slow = InvalidMessage
    assert fast == slow


delivered = st.builds(
    DeliveredShare,
    sender=st.integers(0, 2**32 - 1),
    ciphertext=st.binary(min_size=CIPHERTEXT_BYTES, max_size=CIPHERTEXT_BYTES),
    dealing_digest=digest,
    leaf=digest,
    check=st.sampled_from([b"", bytes(36), b"\x07" * 36, b"\x02" * 48]),
)
flips = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3)


@settings(max_examples=200, deadline=None)
@given(shares=st.lists(delivered, max_size=6), flip=flips, cut=st.integers(0, 3), small=st.booleans())
def test_one_pass_share_delivery_decoding_is_the_field_by_field_one(
    shares: list[DeliveredShare], flip: list[tuple[int, int]], cut: int, small: bool
) -> None:
    msg = ShareDelivery(3, SESSION, 1, tuple(shares))
    data = bytearray(msg.encode())
    if all(s.sender <= MAX_CLIENT_ID for s in shares) and not flip and not cut:
        assert ShareDelivery.decode(bytes(data)) == msg  # the round trip
    for i, v in flip:
        data[i % len(data)] = v
    data = data[: len(data) - cut]
    _both(ShareDelivery.decode, bytes(data), Limits(clients=3) if small else NO_LIMITS)


@settings(max_examples=100, deadline=None)
@given(advs=st.lists(adv, max_size=5), flip=flips, cut=st.integers(0, 3))
def test_one_pass_roster_decoding_is_the_field_by_field_one(
    advs: list[KeyAdvertisement], flip: list[tuple[int, int]], cut: int
) -> None:
    msg = KeyRoster(4, tuple(advs))
    data = bytearray(msg.encode())
    if not flip and not cut:
        assert KeyRoster.decode(bytes(data)) == msg
    for i, v in flip:
        data[i % len(data)] = v
    data = data[: len(data) - cut]
    _both(KeyRoster.decode, bytes(data), NO_LIMITS)


@settings(max_examples=100, deadline=None)
@given(
    session=digest,
    rnd=st.integers(0, 2**63 - 1),
    ids=st.tuples(st.integers(0, MAX_CLIENT_ID), st.integers(0, MAX_CLIENT_ID)),
    key=digest,
    shares=st.tuples(st.binary(min_size=36, max_size=36), st.binary(min_size=36, max_size=36)),
)
def test_envelope_commitments_are_the_key_and_share_commitments(
    session: bytes, rnd: int, ids: tuple[int, int], key: bytes, shares: tuple[bytes, bytes]
) -> None:
    (a, b), (s, k) = ids, shares
    got = crypto.envelope_commitments(session, rnd)(a, b, key, s, k)
    assert got == (
        crypto.key_commitment(key, session=session, round=rnd, sender=a, recipient=b),
        crypto.share_commitment(session=session, owner=a, holder=b, kind="self", share=s),
        crypto.share_commitment(session=session, owner=a, holder=b, kind="key", share=k),
    )


def _challenge_by_definition(d: bytes) -> list[list[int]]:
    """SHAKE-256 of the label and the digest, 64-bit little-endian words mod p, row by row."""
    raw = hashlib.shake_256(label(crypto.DOMAIN, "vss-challenge") + d).digest(
        8 * vss.CHECK_LIMBS * 2 * vss.SECRET_LIMBS
    )
    words = [int.from_bytes(raw[i : i + 8], "little") % PRIME for i in range(0, len(raw), 8)]
    w = 2 * vss.SECRET_LIMBS
    return [words[i * w : (i + 1) * w] for i in range(vss.CHECK_LIMBS)]


@settings(max_examples=50, deadline=None)
@given(ds=st.lists(digest, min_size=1, max_size=5))
def test_challenges_in_one_pass_are_each_digests_challenge(ds: list[bytes]) -> None:
    got = vss.challenges(ds)
    assert got.shape == (len(ds), vss.CHECK_LIMBS, 2 * vss.SECRET_LIMBS)
    for d, r in zip(ds, got):
        assert r.tolist() == _challenge_by_definition(d) == vss.challenge(d).tolist()


def test_challenge_known_answer() -> None:
    r = vss.challenge(bytes(range(32)))  # pinned before the one-pass version
    assert r[0, :3].tolist() == [592765991, 1378563607, 1491768434] and int(r[-1, -1]) == 977357317
