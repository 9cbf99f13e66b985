"""Verifiable dealing: each holder checks on receipt that its shares lie on the dealer's polynomials.

A dealer shares two 32-byte secrets (self-mask seed, mask key), :data:`SECRET_LIMBS` limbs of 30 bits
each (``secagg.limbs``), with one random polynomial of degree ``t - 1`` over GF(p) per limb
(:mod:`secagg.shamir`), and deals :data:`CHECK_LIMBS` *check polynomials* ``m_i`` (uniformly random,
constant term included) with them, one set for both secrets. A holder's plaintext is its self-seed
share, its key share (:data:`PART_BYTES` each: what unmasking reveals) and its check limbs. Then (a
Fiat-Shamir linear check, no public-key operation):

1. per holder, the dealer hashes the commitments to the pairwise share-encryption key and to each of
   the two shares into one *leaf* (:func:`leaf`), and signs the leaves in its
   :class:`~secagg.messages.EncryptedShares` (the server keeps 32 bytes per envelope, not three
   commitments);
2. the challenge ``r`` (``CHECK_LIMBS x 2 SECRET_LIMBS`` field elements) is a hash of the leaves and
   the seed commitment (:func:`dealing_digest`, :func:`challenge`): fixed only after every share is;
3. the dealer publishes ``Q_i = m_i + sum_j r_ij a_j`` (``t`` coefficients each,
   :func:`check_polynomials`): uniformly random whatever the ``a_j``, because ``m_i`` is;
4. each holder checks ``Q_i(x) = m_i(x) + sum_j r_ij a_j(x)`` on its own share, and that its
   plaintext and key rebuild its leaf (:func:`share_fault`). If the honest holders' shares of some
   limb do not lie on one polynomial of degree ``< t``, a fixed nonzero residual must vanish under a
   random ``r_i``: probability ``<= 1/p`` for each ``i``, so ``p**-CHECK_LIMBS ~ 2**-93`` per dealing
   the dealer tries.

The share ciphertext is authenticated (AES-GCM associated data) over the digest, the check
polynomials and the holder's leaf (:func:`binding`), so what a holder checks is what the dealer
signed (an honest server forwards the signed leaf). A holder whose check fails reveals that one
pairwise key: with the dealer's signed message, anyone re-runs :func:`dealing_fault` (the signed
ciphertext opens under the key to shares that fail the check or miss their signed leaf): a proof, so
the dealer is excluded before anyone masks with it (``secagg/THREAT_MODEL.md``). At unmasking a
holder sends each revealed share with its :func:`opening` (the other share's commitment and the key
commitment); the server rebuilds the leaf (:func:`opened_leaf`).
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from privagg.errors import InvalidMessage, VerificationError
from privagg.randomness import SecretSource, label
from secagg import crypto
from secagg.limbs import to_limbs
from secagg.messages import (
    CHECK_LIMBS,
    DIGEST_BYTES,
    OPENING_BYTES,
    PART_BYTES,
    PLAIN_BYTES,
    SECRET_LIMBS,
    Complaint,
    DeliveredShare,
    EncryptedShares,
    Exclusion,
    Limits,
    RevealedShare,
    ShareEnvelope,
)
from secagg.shamir import PRIME, evaluate, random_field_elements, random_polynomials

if TYPE_CHECKING:
    from secagg.dealings import Dealing, DeliveryView

__all__ = [
    "exclusion_proven",
    "CHECK_LIMBS",
    "SECRET_LIMBS",
    "PART_BYTES",
    "deal",
    "leaf",
    "opening",
    "opened_leaf",
    "Held",
    "dealing_digest",
    "digest_of",
    "challenge",
    "challenges",
    "check_polynomials",
    "check_bytes",
    "binding",
    "share_fault",
    "dealing_fault",
    "part_bytes",
    "seal_rows",
    "seal_dealing",
    "open_shares",
    "deliveries",
    "resolve",
]

_P = np.uint64(PRIME)
_S = SECRET_LIMBS
_ROW = 2 * SECRET_LIMBS + CHECK_LIMBS  # one holder's field elements: self share, key share, check limbs


def check_bytes(threshold: int) -> int:
    """Size of the check polynomials of one dealing: CHECK_LIMBS x threshold x 4 bytes."""
    return CHECK_LIMBS * threshold * 4


def deal(
    self_seed: bytes, mask_key: bytes, *, xs: np.ndarray, threshold: int, source: SecretSource
) -> tuple[np.ndarray, np.ndarray]:
    """Shares ``(len(xs), 2 SECRET_LIMBS + CHECK_LIMBS)`` of both secrets' limbs and the check limbs,
    and the polynomials' coefficients ``(threshold, 2 SECRET_LIMBS + CHECK_LIMBS)``."""
    constants = np.concatenate([to_limbs(self_seed), to_limbs(mask_key), random_field_elements(source, (CHECK_LIMBS,))])
    coeffs = random_polynomials(constants, threshold=threshold, source=source)
    return evaluate(coeffs, xs), coeffs


def leaf(
    *, session: bytes, round: int, dealer: int, holder: int, key: bytes, self_share: bytes, key_share: bytes
) -> bytes:
    """The envelope's leaf from its parts: the commitments to the pairwise key and to both shares."""
    return _leaf(
        session,
        round,
        dealer,
        holder,
        crypto.key_commitment(key, session=session, round=round, sender=dealer, recipient=holder),
        crypto.share_commitment(session=session, owner=dealer, holder=holder, kind="self", share=self_share),
        crypto.share_commitment(session=session, owner=dealer, holder=holder, kind="key", share=key_share),
    )


#: the two ids after the leaf's cached prefix, laid out as :func:`privagg.randomness.label` lays out ints
#: (length 8, signed 64-bit): ``_prefix(...) + _LEAF_IDS.pack(8, dealer, 8, holder)`` is the full label
_LEAF_IDS = struct.Struct(">" + "Iq" * 2)


def _leaf(session: bytes, round: int, dealer: int, holder: int, kc: bytes, c_self: bytes, c_key: bytes) -> bytes:
    """SHA-256 of ``label(DOMAIN, "dealing-leaf", session, round, dealer, holder)`` and the three commitments
    (a hot path: one leaf per envelope, built by dealer, holder and server)."""
    head = crypto._prefix("dealing-leaf", session, round) + _LEAF_IDS.pack(8, dealer, 8, holder)
    return hashlib.sha256(head + kc + c_self + c_key).digest()


def opening(
    kind: str, *, session: bytes, round: int, dealer: int, holder: int, key: bytes, self_share: bytes, key_share: bytes
) -> bytes:
    """What a holder sends with its revealed ``kind`` share: the other share's commitment and the key
    commitment (:data:`OPENING_BYTES`); with the share they rebuild the leaf."""
    other = ("key", key_share) if kind == "self" else ("self", self_share)
    c_other = crypto.share_commitment(session=session, owner=dealer, holder=holder, kind=other[0], share=other[1])
    return c_other + crypto.key_commitment(key, session=session, round=round, sender=dealer, recipient=holder)


def opened_leaf(
    kind: str, share: bytes, opened: bytes, *, session: bytes, round: int, owner: int, holder: int
) -> bytes:
    """The leaf a revealed ``kind`` share and its opening rebuild (compared with the signed one)."""
    if len(opened) != OPENING_BYTES:
        raise ValueError("an opening is 64 bytes")
    c = crypto.share_commitment(session=session, owner=owner, holder=holder, kind=kind, share=share)
    c_other, kc = opened[:DIGEST_BYTES], opened[DIGEST_BYTES:]
    return _leaf(session, round, owner, holder, kc, *((c, c_other) if kind == "self" else (c_other, c)))


def digest_of(*, session: bytes, round: int, dealer: int, seed_commitment: bytes, pairs: Sequence[bytes]) -> bytes:
    """:func:`dealing_digest` from its parts: ``pairs`` are ``recipient (4 bytes, big-endian) + leaf``."""
    h = hashlib.sha256(label(crypto.DOMAIN, "dealing", session, round, dealer, len(pairs)))
    h.update(seed_commitment)
    h.update(b"".join(pairs))
    return h.digest()


class Held(NamedTuple):
    """A dealing its holder checked, as the holder keeps it until unmasking: both shares and the three
    commitments its leaf was rebuilt from, so a reveal costs no hash (the bytes :func:`opening` gives)."""

    dealer: int
    self_share: bytes
    key_share: bytes
    key_commitment: bytes
    self_commitment: bytes
    key_share_commitment: bytes

    def __repr__(self) -> str:  # the shares are secret
        return f"Held(dealer={self.dealer})"

    def reveal(self, kind: str) -> RevealedShare:
        """The ``kind`` ("self" or "key") share with its :func:`opening`."""
        if kind == "self":
            return RevealedShare(self.dealer, self.self_share, self.key_share_commitment + self.key_commitment)
        return RevealedShare(self.dealer, self.key_share, self.self_commitment + self.key_commitment)


def dealing_digest(msg: EncryptedShares) -> bytes:
    """Hash of everything the dealer committed to before the challenge: its seed commitment and,
    per holder (in the message's order), the holder's id and leaf."""
    pairs = [e.recipient.to_bytes(4, "big") + e.leaf for e in msg.envelopes]
    return digest_of(
        session=msg.session_id,
        round=msg.round,
        dealer=msg.sender,
        seed_commitment=msg.self_seed_commitment,
        pairs=pairs,
    )


_CHALLENGE_LABEL = label(crypto.DOMAIN, "vss-challenge")


def challenge(digest: bytes) -> np.ndarray:
    """``r``: ``(CHECK_LIMBS, 2 SECRET_LIMBS)`` field elements from the dealing digest (SHAKE-256, a
    random oracle here; 64-bit words mod p: bias below 2**-33)."""
    return challenges([digest])[0]


def challenges(digests: Sequence[bytes]) -> np.ndarray:
    """:func:`challenge` of each digest, ``(n, CHECK_LIMBS, 2 SECRET_LIMBS)``, in one modular pass."""
    raw = b"".join([hashlib.shake_256(_CHALLENGE_LABEL + d).digest(8 * CHECK_LIMBS * 2 * _S) for d in digests])
    return (np.frombuffer(raw, dtype="<u8") % _P).reshape(len(digests), CHECK_LIMBS, 2 * _S)


@functools.lru_cache(maxsize=64)
def _powers(x: int, t: int) -> np.ndarray:
    """``x**0 .. x**(t-1)`` mod p (a holder evaluates every dealer's check polynomials at its point)."""
    out, v = [], 1
    for _ in range(t):
        out.append(v)
        v = v * x % PRIME
    return np.array(out, dtype=np.uint64)


def check_polynomials(coeffs: np.ndarray, digest: bytes) -> bytes:
    """``Q_i = m_i + sum_j r_ij a_j``, ``(CHECK_LIMBS, t)`` little-endian u32."""
    r = challenge(digest)
    prod = (r[None, :, :] * coeffs[:, None, : 2 * _S]) % _P  # (t, L, 2S)
    q = (prod.sum(axis=-1) + coeffs[:, 2 * _S :]) % _P  # (t, L)
    return np.ascontiguousarray(q.T).astype("<u4").tobytes()


def binding(digest: bytes, check: bytes, envelope_leaf: bytes) -> bytes:
    """What the share ciphertext authenticates besides the parties: the digest, the check
    polynomials and this holder's leaf (a holder checks only what its dealer signed)."""
    return digest + hashlib.sha256(check).digest() + envelope_leaf


def _passes(parts: np.ndarray, q: np.ndarray, r: np.ndarray, x: int, t: int) -> np.ndarray:
    """The check of ``n`` plaintexts ``(n, _ROW)`` against their check polynomials ``(n, L, t)`` and
    challenges ``(n, L, 2S)`` at the holder's point ``x``: ``(n,)`` booleans."""
    lhs = ((q * _powers(x, t)) % _P).sum(axis=-1) % _P  # Q_i(x): (n, L)
    rhs = (parts[:, 2 * _S :] + ((r * parts[:, None, : 2 * _S]) % _P).sum(axis=-1)) % _P
    return np.all(parts < _P, axis=1) & np.all(lhs == rhs, axis=1)  # type: ignore[no-any-return]


def share_fault(
    plaintext: bytes,
    *,
    session: bytes,
    round: int,
    dealer: int,
    holder: int,
    key: bytes,
    envelope_leaf: bytes,
    digest: bytes,
    check: bytes,
    threshold: int,
) -> str | None:
    """Why a holder's decrypted plaintext proves the dealer faulty (``None``: it passes)."""
    who = f"client {dealer} dealt client {holder}"
    if len(plaintext) != PLAIN_BYTES or len(check) != check_bytes(threshold):
        return f"{who} shares or check polynomials of the wrong size"
    parts = np.frombuffer(plaintext, dtype="<u4").astype(np.uint64).reshape(1, _ROW)
    if np.any(parts >= _P):
        return f"{who} shares that are not field elements"
    ids: dict[str, Any] = {"session": session, "round": round, "dealer": dealer, "holder": holder, "key": key}
    if (
        leaf(**ids, self_share=plaintext[:PART_BYTES], key_share=plaintext[PART_BYTES : 2 * PART_BYTES])
        != envelope_leaf
    ):
        return f"{who} shares that miss their signed leaf"
    q = np.frombuffer(check, dtype="<u4").astype(np.uint64).reshape(1, CHECK_LIMBS, threshold)
    if not _passes(parts, q, challenge(digest)[None], holder + 1, threshold)[0]:
        return f"{who} shares off its polynomials (the verifiable-sharing check fails)"
    return None


def dealing_fault(msg: EncryptedShares, *, holder: int, key: bytes, threshold: int) -> str | None:
    """The proof check: with the dealer's (signed) message and the pairwise key ``holder`` reveals,
    why the dealer is provably faulty; ``None`` when nothing is proven (no envelope for ``holder``, a
    key under which the signed ciphertext does not open, or shares that pass: the complaint is
    unfounded). Only the dealer and the holder can make a ciphertext open under the key, and the dealer
    signed this one: what it opens to is the dealer's."""
    env = next((e for e in msg.envelopes if e.recipient == holder), None)
    if env is None or len(key) != 32:
        return None
    ids: dict[str, Any] = {"session": msg.session_id, "round": msg.round, "sender": msg.sender, "recipient": holder}
    digest = dealing_digest(msg)
    try:
        pt = crypto.decrypt_shares(key, env.ciphertext, **ids, bound=binding(digest, msg.check, env.leaf))
    except VerificationError:
        return None
    return share_fault(
        pt,
        session=msg.session_id,
        round=msg.round,
        dealer=msg.sender,
        holder=holder,
        key=key,
        envelope_leaf=env.leaf,
        digest=digest,
        check=msg.check,
        threshold=threshold,
    )


def part_bytes(row: np.ndarray) -> bytes:
    """Field elements on the wire (little-endian u32): a part, or a holder's whole plaintext row."""
    return np.asarray(row, dtype=np.uint64).astype("<u4").tobytes()


def seal_rows(
    *,
    session: bytes,
    round: int,
    dealer: int,
    seed_commitment: bytes,
    rows: Mapping[int, np.ndarray],
    coeffs: np.ndarray,
    keys: Mapping[int, bytes],
) -> EncryptedShares:
    """The (unsigned) message that deals ``rows`` (holder -> its ``_ROW`` field elements) under the
    pairwise ``keys``, with the check polynomials of ``coeffs``: leaves, digest, challenge, encryption.
    Envelopes go in ascending holder order."""
    holders = sorted(rows)
    plain = {v: part_bytes(rows[v]) for v in holders}
    commit = crypto.envelope_commitments(session, round)
    leaves = {
        v: _leaf(
            session, round, dealer, v, *commit(dealer, v, keys[v], pt[:PART_BYTES], pt[PART_BYTES : 2 * PART_BYTES])
        )
        for v, pt in plain.items()
    }
    digest = digest_of(
        session=session,
        round=round,
        dealer=dealer,
        seed_commitment=seed_commitment,
        pairs=[v.to_bytes(4, "big") + leaves[v] for v in holders],
    )
    check = check_polynomials(coeffs, digest)
    head = digest + hashlib.sha256(check).digest()  # binding(): the same for every holder up to its leaf
    ids: dict[str, Any] = {"session": session, "round": round, "sender": dealer}
    envelopes = tuple(
        ShareEnvelope(
            v, leaves[v], crypto.encrypt_shares(keys[v], plain[v], **ids, recipient=v, bound=head + leaves[v])
        )
        for v in holders
    )
    return EncryptedShares(round, session, dealer, seed_commitment, envelopes, check)


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
    """The dealer's message to its holders ``keys`` (holder -> pairwise share-encryption key) and its
    own share of its self-mask seed: deal, then :func:`seal_rows`."""
    holders = sorted(keys)
    xs = np.array([v + 1 for v in holders] + [dealer + 1], dtype=np.uint64)
    shares, coeffs = deal(self_seed, mask_key, xs=xs, threshold=threshold, source=source)
    msg = seal_rows(
        session=session,
        round=round,
        dealer=dealer,
        seed_commitment=crypto.seed_commitment(session=session, owner=dealer, seed=self_seed),
        rows={v: shares[i] for i, v in enumerate(holders)},
        coeffs=coeffs,
        keys=keys,
    )
    return msg, part_bytes(shares[-1, :_S])


def open_shares(
    delivered: Sequence[DeliveredShare],
    *,
    keys: Sequence[bytes],
    session: bytes,
    round: int,
    holder: int,
    threshold: int,
) -> list[tuple[bytes, str | None, Held | None]]:
    """A holder opens every dealer's delivery (``keys``: the pairwise keys, in the same order): the
    plaintext, why it proves its dealer faulty (``None``: it passes) and, when it passes, the
    :class:`Held` the holder keeps; the check of all dealers in one vectorised pass. A ciphertext that
    does not open raises :class:`VerificationError`: the server or the dealer, unprovable either way."""
    opened = [
        crypto.decrypt_shares(
            key,
            ds.ciphertext,
            session=session,
            round=round,
            sender=ds.sender,
            recipient=holder,
            bound=binding(ds.dealing_digest, ds.check, ds.leaf),
        )
        for ds, key in zip(delivered, keys)
    ]
    good = np.zeros(len(opened), dtype=bool)
    sized = [
        i for i, pt in enumerate(opened) if len(pt) == PLAIN_BYTES and len(delivered[i].check) == check_bytes(threshold)
    ]
    if sized:  # the verifiable-sharing check of every well-sized delivery at once
        parts = np.frombuffer(b"".join(opened[i] for i in sized), dtype="<u4").astype(np.uint64).reshape(-1, _ROW)
        q = np.frombuffer(b"".join(delivered[i].check for i in sized), dtype="<u4").astype(np.uint64)
        r = challenges([delivered[i].dealing_digest for i in sized])
        good[sized] = _passes(parts, q.reshape(len(sized), CHECK_LIMBS, threshold), r, holder + 1, threshold)
    out: list[tuple[bytes, str | None, Held | None]] = []
    commit = crypto.envelope_commitments(session, round)
    for i, (pt, ds, key) in enumerate(zip(opened, delivered, keys)):
        d = ds.sender
        if good[i]:  # the leaf's commitments, kept for the reveals
            s, k = pt[:PART_BYTES], pt[PART_BYTES : 2 * PART_BYTES]
            kc, cs, ck = commit(d, holder, key, s, k)
            if _leaf(session, round, d, holder, kc, cs, ck) == ds.leaf:
                out.append((pt, None, Held(d, s, k, kc, cs, ck)))
                continue
        ids: dict[str, Any] = {"session": session, "round": round, "dealer": d, "holder": holder, "key": key}
        why = share_fault(  # the slow path names the reason
            pt, **ids, envelope_leaf=ds.leaf, digest=ds.dealing_digest, check=ds.check, threshold=threshold
        )
        out.append((pt, why, None))
    return out


def deliveries(
    dealings: Mapping[int, EncryptedShares | Dealing],
    recipients: Iterable[int],
    delivered: Mapping[int, AbstractSet[int]] | None = None,
) -> dict[int, DeliveryView]:
    """What the server forwards to each of ``recipients``: every dealer's envelope for it, with the
    dealer's digest, check polynomials and the envelope's leaf (what the recipient checks), as lazy
    views (``delivered``: recipient -> its dealers, when the caller has it)."""
    from secagg.dealings import Dealing, DeliveryView

    table = {d: m if isinstance(m, Dealing) else Dealing.of(m) for d, m in dealings.items()}
    if delivered is None:
        got: dict[int, set[int]] = {}
        for d, m in table.items():
            for h in m.holders:
                got.setdefault(h, set()).add(d)
        delivered = {c: frozenset(got.get(c, ())) for c in recipients}
    return {c: DeliveryView(table, c, delivered[c]) for c in sorted(recipients)}


def resolve(
    complaints: list[tuple[int, Complaint]], dealings: Mapping[int, Dealing], *, threshold: int
) -> tuple[dict[int, tuple[Exclusion, str]], list[tuple[int, str]]]:
    """The server's judgement of ``(holder, complaint)`` pairs: proven dealers (their
    :class:`Exclusion` and why) and unfounded complaints (attributed to their holder)."""
    proven: dict[int, tuple[Exclusion, str]] = {}
    unfounded: list[tuple[int, str]] = []
    for holder, c in complaints:
        if c.dealer in proven:
            continue
        stored = dealings.get(c.dealer)
        msg = stored.message() if stored is not None else None
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
