"""Verifiable dealing: each holder checks on receipt that its shares lie on the dealer's polynomials.

A dealer shares two 32-byte secrets (self-mask seed, mask key), 16 limbs each, with one random
polynomial of degree ``t - 1`` over GF(p) per limb (:mod:`secagg.shamir`). For every secret it
also deals :data:`CHECK_LIMBS` *check polynomials* ``m_i`` (uniformly random, constant term
included), so a holder's share of one secret is ``16 + CHECK_LIMBS`` field elements
(:data:`PART_BYTES` on the wire). Then (a Fiat-Shamir linear check, no public-key operation):

1. the dealer commits to every holder's share (SHA-256, per secret, as before) and to every
   pairwise share-encryption key (:func:`key_commitment`), and signs them in its
   :class:`~secagg.messages.EncryptedShares`;
2. the challenge ``r`` (``CHECK_LIMBS x 16`` field elements per secret) is a hash of all those
   commitments (:func:`dealing_digest`, :func:`challenge`): fixed only after every share is;
3. the dealer publishes ``Q_i = m_i + sum_j r_ij a_j`` (``t`` coefficients each,
   :func:`check_polynomials`): uniformly random whatever the ``a_j``, because ``m_i`` is;
4. each holder checks ``Q_i(x) = m_i(x) + sum_j r_ij a_j(x)`` on its own share
   (:func:`share_fault`). If the honest holders' shares of some limb do not lie on one polynomial
   of degree ``< t``, a fixed nonzero residual must vanish under a random ``r_i``: probability
   ``<= 1/p`` for each ``i``, so ``p**-CHECK_LIMBS ~ 2**-93`` per dealing the dealer tries.

The share ciphertext is authenticated (AES-GCM associated data) over the digest, the check
polynomials and the holder's commitments, so what a holder checks is what the dealer sent. A
holder whose check fails reveals that one pairwise key: with the dealer's signed message, anyone
re-runs :func:`dealing_fault` (the key matches the dealer's key commitment, the ciphertext opens
to shares that fail the check or their commitments): a proof, so the dealer is excluded before
anyone masks with it (``secagg/THREAT_MODEL.md``).
"""

from __future__ import annotations

import array
import bisect
import functools
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, overload

import numpy as np

from privagg.errors import InvalidMessage, VerificationError
from privagg.randomness import SecretSource, label
from secagg import crypto
from secagg.idset import IdSet
from secagg.messages import (
    CHECK_LIMBS,
    PART_BYTES,
    SECRET_LIMBS,
    Complaint,
    DeliveredShare,
    EncryptedShares,
    Exclusion,
    Limits,
    ShareEnvelope,
)
from secagg.shamir import PRIME, evaluate, random_field_elements, random_polynomials

__all__ = [
    "exclusion_proven",
    "CHECK_LIMBS",
    "SECRET_LIMBS",
    "PART_BYTES",
    "deal",
    "dealing_digest",
    "challenge",
    "check_polynomials",
    "check_bytes",
    "binding",
    "share_fault",
    "dealing_fault",
    "part_bytes",
    "seal_dealing",
    "open_shares",
    "deliveries",
    "delivery_map",
    "DeliveryView",
    "resolve",
]

_P = np.uint64(PRIME)
_LIMBS = SECRET_LIMBS + CHECK_LIMBS


def check_bytes(threshold: int) -> int:
    """Size of the check polynomials of one dealing: 2 secrets x CHECK_LIMBS x threshold x 4 bytes."""
    return 2 * CHECK_LIMBS * threshold * 4


def deal(
    self_seed: bytes, mask_key: bytes, *, xs: np.ndarray, threshold: int, source: SecretSource
) -> tuple[np.ndarray, np.ndarray]:
    """Shares ``(len(xs), 2, 16 + CHECK_LIMBS)`` of both secrets plus check limbs, and the
    polynomials' coefficients ``(threshold, 2, 16 + CHECK_LIMBS)``."""
    if len(self_seed) != 2 * SECRET_LIMBS or len(mask_key) != 2 * SECRET_LIMBS:
        raise ValueError("secrets are 32 bytes")
    limbs = np.stack([np.frombuffer(s, dtype="<u2").astype(np.uint64) for s in (self_seed, mask_key)])
    constants = np.concatenate([limbs, random_field_elements(source, (2, CHECK_LIMBS))], axis=1)
    coeffs = random_polynomials(constants, threshold=threshold, source=source)
    return evaluate(coeffs, xs), coeffs


def dealing_digest(msg: EncryptedShares) -> bytes:
    """Hash of everything the dealer committed to before the challenge: its seed commitment and,
    per holder (in the message's order), the two share commitments and the key commitment."""
    h = hashlib.sha256(label(crypto.DOMAIN, "dealing", msg.session_id, msg.round, msg.sender, len(msg.envelopes)))
    h.update(msg.self_seed_commitment)
    h.update(
        b"".join(
            e.recipient.to_bytes(4, "big") + e.self_share_commitment + e.key_share_commitment + e.key_commitment
            for e in msg.envelopes
        )
    )
    return h.digest()


def challenge(digest: bytes) -> np.ndarray:
    """``r``: ``(2, CHECK_LIMBS, 16)`` field elements from the dealing digest (SHAKE-256, a random
    oracle here; 64-bit words mod p: bias below 2**-33)."""
    xof = hashlib.shake_256(label(crypto.DOMAIN, "vss-challenge") + digest)
    words = np.frombuffer(xof.digest(8 * 2 * CHECK_LIMBS * SECRET_LIMBS), dtype="<u8")
    return (words % _P).reshape(2, CHECK_LIMBS, SECRET_LIMBS)


@functools.lru_cache(maxsize=64)
def _powers(x: int, t: int) -> np.ndarray:
    """``x**0 .. x**(t-1)`` mod p (a holder evaluates every dealer's check polynomials at its point)."""
    out, v = [], 1
    for _ in range(t):
        out.append(v)
        v = v * x % PRIME
    return np.array(out, dtype=np.uint64)


def check_polynomials(coeffs: np.ndarray, digest: bytes) -> bytes:
    """``Q_i = m_i + sum_j r_ij a_j`` for both secrets, ``(2, CHECK_LIMBS, t)`` little-endian u32."""
    r = challenge(digest)
    prod = (r[None, :, :, :] * coeffs[:, :, None, :SECRET_LIMBS]) % _P  # (t, 2, L, 16)
    q = (prod.sum(axis=-1) + coeffs[:, :, SECRET_LIMBS:]) % _P  # (t, 2, L)
    return np.ascontiguousarray(q.transpose(1, 2, 0)).astype("<u4").tobytes()


def binding(digest: bytes, check: bytes, envelope: ShareEnvelope) -> bytes:
    """What the share ciphertext authenticates besides the parties: the digest, the check
    polynomials and this holder's commitments (a holder checks only what its dealer sent)."""
    return (
        digest
        + hashlib.sha256(check).digest()
        + envelope.self_share_commitment
        + envelope.key_share_commitment
        + envelope.key_commitment
    )


def share_fault(
    plaintext: bytes,
    *,
    session: bytes,
    dealer: int,
    holder: int,
    envelope: ShareEnvelope,
    digest: bytes,
    check: bytes,
    threshold: int,
) -> str | None:
    """Why a holder's decrypted shares prove the dealer faulty (``None``: they pass)."""
    who = f"client {dealer} dealt client {holder}"
    if len(plaintext) != 2 * PART_BYTES or len(check) != check_bytes(threshold):
        return f"{who} shares or check polynomials of the wrong size"
    parts = np.frombuffer(plaintext, dtype="<u4").astype(np.uint64).reshape(2, _LIMBS)
    if np.any(parts >= _P):
        return f"{who} shares that are not field elements"
    for kind, part in (("self", plaintext[:PART_BYTES]), ("key", plaintext[PART_BYTES:])):
        want = envelope.self_share_commitment if kind == "self" else envelope.key_share_commitment
        if crypto.share_commitment(session=session, owner=dealer, holder=holder, kind=kind, share=part) != want:
            return f"{who} a {kind} share that misses its own commitment"
    q = np.frombuffer(check, dtype="<u4").astype(np.uint64).reshape(2, CHECK_LIMBS, threshold)
    lhs = ((q * _powers(holder + 1, threshold)) % _P).sum(axis=-1) % _P  # Q_i(x) for both secrets: (2, L)
    r = challenge(digest)
    rhs = (parts[:, SECRET_LIMBS:] + ((r * parts[:, None, :SECRET_LIMBS]) % _P).sum(axis=-1)) % _P
    if not np.array_equal(lhs, rhs):
        return f"{who} shares off its polynomials (the verifiable-sharing check fails)"
    return None


def dealing_fault(msg: EncryptedShares, *, holder: int, key: bytes, threshold: int) -> str | None:
    """The proof check: with the dealer's (signed) message and the pairwise key ``holder`` reveals,
    why the dealer is provably faulty; ``None`` when nothing is proven (a wrong key, no envelope for
    ``holder``, or shares that pass: the complaint is unfounded)."""
    env = next((e for e in msg.envelopes if e.recipient == holder), None)
    if env is None or len(key) != 32:
        return None
    ids: dict[str, Any] = {"session": msg.session_id, "round": msg.round, "sender": msg.sender, "recipient": holder}
    if crypto.key_commitment(key, **ids) != env.key_commitment:
        return None
    digest = dealing_digest(msg)
    try:
        pt = crypto.decrypt_shares(key, env.ciphertext, **ids, bound=binding(digest, msg.check, env))
    except VerificationError:
        return f"client {msg.sender}'s shares for client {holder} do not open under the key it committed to"
    return share_fault(
        pt,
        session=msg.session_id,
        dealer=msg.sender,
        holder=holder,
        envelope=env,
        digest=digest,
        check=msg.check,
        threshold=threshold,
    )


def part_bytes(row: np.ndarray) -> bytes:
    """One holder's share of one secret on the wire (``16 + CHECK_LIMBS`` little-endian u32)."""
    return np.asarray(row, dtype=np.uint64).astype("<u4").tobytes()


def seal_dealing(
    *,
    session: bytes,
    round: int,
    dealer: int,
    self_seed: bytes,
    mask_key: bytes,
    keys: dict[int, bytes],
    threshold: int,
    source: SecretSource,
) -> tuple[EncryptedShares, bytes]:
    """The dealer's message to its holders ``keys`` (holder -> pairwise share-encryption key, in ring
    order) and its own share of its self-mask seed: deal, commit, challenge, check polynomials, encrypt."""
    holders = list(keys)
    xs = np.array([v + 1 for v in holders] + [dealer + 1], dtype=np.uint64)
    shares, coeffs = deal(self_seed, mask_key, xs=xs, threshold=threshold, source=source)
    wire = shares.astype("<u4")  # every holder's two parts, as on the wire (part_bytes)
    ids: dict[str, Any] = {"session": session, "round": round, "sender": dealer}
    plain, envelopes = [], []
    for i, v in enumerate(holders):
        s_self, s_key = wire[i, 0].tobytes(), wire[i, 1].tobytes()
        plain.append(s_self + s_key)
        envelopes.append(
            ShareEnvelope(
                v,
                crypto.share_commitment(session=session, owner=dealer, holder=v, kind="self", share=s_self),
                crypto.share_commitment(session=session, owner=dealer, holder=v, kind="key", share=s_key),
                b"",
                crypto.key_commitment(keys[v], **ids, recipient=v),
            )
        )
    seed_com = crypto.seed_commitment(session=session, owner=dealer, seed=self_seed)
    digest = dealing_digest(
        EncryptedShares(
            round=round, session_id=session, sender=dealer, self_seed_commitment=seed_com, envelopes=tuple(envelopes)
        )
    )
    check = check_polynomials(coeffs, digest)
    head = digest + hashlib.sha256(check).digest()  # binding(): the same for every holder up to its commitments
    sealed = tuple(
        ShareEnvelope(
            e.recipient,
            e.self_share_commitment,
            e.key_share_commitment,
            crypto.encrypt_shares(
                keys[e.recipient],
                pt,
                **ids,
                recipient=e.recipient,
                bound=head + e.self_share_commitment + e.key_share_commitment + e.key_commitment,
            ),
            e.key_commitment,
        )
        for e, pt in zip(envelopes, plain)
    )
    msg = EncryptedShares(round, session, dealer, seed_com, sealed, check)
    return msg, wire[-1, 0].tobytes()


def open_shares(
    delivered: Sequence[DeliveredShare],
    *,
    keys: Sequence[bytes],
    session: bytes,
    round: int,
    holder: int,
    threshold: int,
) -> list[tuple[bytes, str | None]]:
    """A holder opens every dealer's delivery (``keys``: the pairwise keys, in the same order): the
    plaintext (both parts) and why it proves its dealer faulty (``None``: it passes), the check of
    all dealers in one vectorised pass. A key commitment that is not this key's, or a ciphertext that
    does not open, raises :class:`VerificationError`: the server or the dealer, unprovable either way."""
    opened: list[tuple[bytes, ShareEnvelope]] = []
    for ds, key in zip(delivered, keys):
        env = ShareEnvelope(holder, ds.self_share_commitment, ds.key_share_commitment, b"", ds.key_commitment)
        if (
            crypto.key_commitment(key, session=session, round=round, sender=ds.sender, recipient=holder)
            != env.key_commitment
        ):
            raise VerificationError()
        bound = binding(ds.dealing_digest, ds.check, env)
        pt = crypto.decrypt_shares(
            key, ds.ciphertext, session=session, round=round, sender=ds.sender, recipient=holder, bound=bound
        )
        opened.append((pt, env))
    good = np.zeros(len(opened), dtype=bool)
    sized = [
        i
        for i, (pt, _) in enumerate(opened)
        if len(pt) == 2 * PART_BYTES and len(delivered[i].check) == check_bytes(threshold)
    ]
    if sized:  # the verifiable-sharing check of every well-sized delivery at once
        parts = np.frombuffer(b"".join(opened[i][0] for i in sized), dtype="<u4").astype(np.uint64)
        parts = parts.reshape(len(sized), 2, _LIMBS)
        q = np.frombuffer(b"".join(delivered[i].check for i in sized), dtype="<u4").astype(np.uint64)
        q = q.reshape(len(sized), 2, CHECK_LIMBS, threshold)
        lhs = ((q * _powers(holder + 1, threshold)) % _P).sum(axis=-1) % _P
        r = np.stack([challenge(delivered[i].dealing_digest) for i in sized])
        rhs = (parts[:, :, SECRET_LIMBS:] + ((r * parts[:, :, None, :SECRET_LIMBS]) % _P).sum(axis=-1)) % _P
        good[sized] = np.all(parts < _P, axis=(1, 2)) & np.all(lhs == rhs, axis=(1, 2))
    out: list[tuple[bytes, str | None]] = []
    for i, ((pt, env), ds) in enumerate(zip(opened, delivered)):
        committed = good[i] and all(
            crypto.share_commitment(session=session, owner=ds.sender, holder=holder, kind=kind, share=part) == want
            for kind, part, want in (
                ("self", pt[:PART_BYTES], env.self_share_commitment),
                ("key", pt[PART_BYTES:], env.key_share_commitment),
            )
        )
        why = None
        if not committed:  # the slow path names the reason
            why = share_fault(
                pt,
                session=session,
                dealer=ds.sender,
                holder=holder,
                envelope=env,
                digest=ds.dealing_digest,
                check=ds.check,
                threshold=threshold,
            )
        out.append((pt, why))
    return out


class _Dealings:
    """The dealers' messages indexed for delivery: per dealer its digest and its holders sorted (with
    their positions in the signed message), so one holder's envelope is found by bisection."""

    __slots__ = ("_rows",)

    def __init__(self, dealings: dict[int, EncryptedShares]) -> None:
        self._rows: dict[int, tuple[EncryptedShares, bytes, array.array[int], array.array[int]]] = {}
        for d, msg in dealings.items():
            rcp = np.array([e.recipient for e in msg.envelopes], dtype=np.intc)
            order = np.argsort(rcp, kind="stable").astype(np.intc)
            keys, pos = array.array("i"), array.array("i")
            keys.frombytes(rcp[order].tobytes())
            pos.frombytes(order.tobytes())
            self._rows[d] = (msg, dealing_digest(msg), keys, pos)

    def recipients(self, d: int) -> array.array[int]:
        return self._rows[d][2]

    def share(self, d: int, holder: int) -> DeliveredShare:
        msg, digest, keys, pos = self._rows[d]
        e = msg.envelopes[pos[bisect.bisect_left(keys, holder)]]
        c_self, c_key, kc = e.self_share_commitment, e.key_share_commitment, e.key_commitment
        return DeliveredShare(d, e.ciphertext, digest, c_self, c_key, kc, msg.check)


class DeliveryView(Sequence[DeliveredShare]):
    """What the server forwards to one holder: every dealer's envelope for it (ascending dealer ids),
    each :class:`~secagg.messages.DeliveredShare` built when read (encoding it, or a study's hook),
    so a server delivering to all its clients at once holds no object per share."""

    __slots__ = ("_dealers", "_holder", "_table")

    def __init__(self, table: _Dealings, holder: int, dealers: AbstractSet[int]) -> None:
        self._table, self._holder, self._dealers = table, holder, dealers

    def __len__(self) -> int:
        return len(self._dealers)

    @overload
    def __getitem__(self, i: int) -> DeliveredShare: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[DeliveredShare, ...]: ...

    def __getitem__(self, i: int | slice) -> DeliveredShare | tuple[DeliveredShare, ...]:
        if isinstance(i, slice):
            return tuple(self)[i]
        d = self._dealers.at(i) if isinstance(self._dealers, IdSet) else sorted(self._dealers)[i]
        return self._table.share(d, self._holder)

    def __iter__(self) -> Iterator[DeliveredShare]:
        return (self._table.share(d, self._holder) for d in sorted(self._dealers))

    def __repr__(self) -> str:
        return f"DeliveryView(holder={self._holder}, dealers={len(self._dealers)})"


def delivery_map(dealings: dict[int, EncryptedShares], recipients: frozenset[int]) -> dict[int, AbstractSet[int]]:
    """Who gets whose envelope: recipient -> the dealers (of ``dealings``) that addressed it, for every
    one of ``recipients``; from one sorted array of (recipient, dealer) keys (no object per envelope)."""
    parts = [
        (np.fromiter((e.recipient for e in m.envelopes), dtype=np.int64, count=len(m.envelopes)) << 32) | d
        for d, m in dealings.items()
    ]
    keys = np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    del parts
    out: dict[int, AbstractSet[int]] = {}
    for c in sorted(recipients):
        a, b = np.searchsorted(keys, [c << 32, (c + 1) << 32])
        out[c] = IdSet.of_sorted(keys[a:b] & 0xFFFFFFFF)
    return out


def deliveries(
    dealings: dict[int, EncryptedShares],
    recipients: frozenset[int],
    delivered: Mapping[int, AbstractSet[int]] | None = None,
) -> dict[int, DeliveryView]:
    """What the server forwards to each of ``recipients``: every dealer's envelope for it, with the
    dealer's digest, check polynomials and commitments (what the recipient checks), as lazy views
    (``delivered``: :func:`delivery_map` of the same dealings, when the caller has it)."""
    table = _Dealings(dealings)
    got = delivered if delivered is not None else delivery_map(dealings, recipients)
    return {c: DeliveryView(table, c, got[c]) for c in sorted(recipients)}


def resolve(
    complaints: list[tuple[int, Complaint]], dealings: dict[int, EncryptedShares], *, threshold: int
) -> tuple[dict[int, tuple[Exclusion, str]], list[tuple[int, str]]]:
    """The server's judgement of ``(holder, complaint)`` pairs: proven dealers (their
    :class:`Exclusion` and why) and unfounded complaints (attributed to their holder)."""
    proven: dict[int, tuple[Exclusion, str]] = {}
    unfounded: list[tuple[int, str]] = []
    for holder, c in complaints:
        if c.dealer in proven:
            continue
        msg = dealings.get(c.dealer)
        why = dealing_fault(msg, holder=holder, key=c.key, threshold=threshold) if msg is not None else None
        if why is None:
            unfounded.append((holder, f"unfounded complaint about client {c.dealer}"))
        elif msg is not None:
            proven[c.dealer] = (Exclusion(c.dealer, holder, c.key, msg.encode()), why)
    return proven, unfounded


def exclusion_proven(
    e: Exclusion, *, round: int, session: bytes, threshold: int, limits: Limits, directory: dict[int, bytes]
) -> bool:
    """An exclusion's proof: the dealer's signed message and a holder's key under which it fails."""
    try:
        dealing = EncryptedShares.decode(e.dealing, limits)
    except InvalidMessage:
        return False
    return (
        dealing.sender == e.dealer
        and (dealing.round, dealing.session_id) == (round, session)
        and crypto.signed_by_sender(dealing, directory, survivors=())
        and dealing_fault(dealing, holder=e.holder, key=e.key, threshold=threshold) is not None
    )
