"""The protocol's cryptographic recipes (all primitives from OpenSSL through ``cryptography``).

- key agreement: X25519; every derived key goes through HKDF-SHA256 with a
  :func:`privagg.randomness.label` naming the protocol, purpose, session, round and parties;
- share encryption: AES-256-GCM under a key unique to (session, sender, recipient), with
  sender, recipient, session and round in the associated data;
- masks: :func:`privagg.randomness.prg_add_words` (HKDF -> AES-256-CTR) keyed by full
  32-byte seeds; pairwise seeds from X25519, self-mask seeds from the OS CSPRNG;
- signatures: Ed25519 long-term identity keys (active mode);
- commitments: SHA-256 over labelled, high-entropy values (shares, seeds).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privagg.errors import VerificationError
from privagg.randomness import hkdf, label, prg_add_words, prg_words
from secagg.messages import KeyAdvertisement, RoundSetup

__all__ = [
    "DOMAIN",
    "digest",
    "config_hash",
    "session_id",
    "advertisement_payload",
    "consistency_payload",
    "sign",
    "verify",
    "x25519_public",
    "x25519_shared",
    "share_cipher_key",
    "encrypt_shares",
    "decrypt_shares",
    "pair_seed",
    "share_commitment",
    "seed_commitment",
    "add_self_mask",
    "add_pair_mask",
    "NeighbourGraph",
]

DOMAIN = "privagg/secagg/v1"
_NONCE = bytes(12)


def digest(*parts: str | bytes | int) -> bytes:
    return hashlib.sha256(label(DOMAIN, *parts)).digest()


def config_hash(setup: RoundSetup) -> bytes:
    """What a client signs as "the round I was asked to join": parameters, round, dimension, model."""
    return digest("config", setup.encode())


def session_id(round: int, advertisements: Iterable[KeyAdvertisement]) -> bytes:
    """Hash of the round, every client's config hash and both public keys (sorted by id)."""
    parts: list[str | bytes | int] = ["session", round]
    for a in sorted(advertisements, key=lambda a: a.client_id):
        parts += [a.client_id, a.config_hash, a.enc_public_key, a.mask_public_key]
    return digest(*parts)


def advertisement_payload(adv: KeyAdvertisement) -> bytes:
    return label(DOMAIN, "advertise", adv.round, adv.client_id, adv.config_hash, adv.enc_public_key, adv.mask_public_key)


def consistency_payload(session: bytes, round: int, survivors: Sequence[int]) -> bytes:
    return label(DOMAIN, "consistency", session, round, b"".join(int(i).to_bytes(4, "big") for i in survivors))


def sign(identity_key: ed25519.Ed25519PrivateKey, payload: bytes) -> bytes:
    return identity_key.sign(payload)


def verify(public_key: bytes, signature: bytes, payload: bytes) -> bool:
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def x25519_public(private: x25519.X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


def x25519_shared(private: x25519.X25519PrivateKey, peer_public: bytes) -> bytes:
    """Raw X25519 output; a low-order peer key (all-zero output) is a VerificationError."""
    try:
        return private.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise VerificationError() from None


def share_cipher_key(shared: bytes, *, session: bytes, round: int, sender: int, recipient: int) -> bytes:
    """AES-256-GCM key for shares sent by ``sender`` to ``recipient`` (one key per direction)."""
    return hkdf(shared, info=label(DOMAIN, "share-key", session, round, sender, recipient))


def _aad(session: bytes, round: int, sender: int, recipient: int) -> bytes:
    return label(DOMAIN, "share", session, round, sender, recipient)


def encrypt_shares(key: bytes, plaintext: bytes, *, session: bytes, round: int, sender: int, recipient: int) -> bytes:
    # the key is unique to (session, round, sender, recipient) and used once: a fixed nonce is safe
    return AESGCM(key).encrypt(_NONCE, plaintext, _aad(session, round, sender, recipient))


def decrypt_shares(key: bytes, ciphertext: bytes, *, session: bytes, round: int, sender: int, recipient: int) -> bytes:
    try:
        return AESGCM(key).decrypt(_NONCE, ciphertext, _aad(session, round, sender, recipient))
    except InvalidTag:
        raise VerificationError() from None


def pair_seed(shared: bytes, *, session: bytes, round: int, a: int, b: int) -> bytes:
    """32-byte seed of the pairwise mask between clients ``a`` and ``b`` (symmetric)."""
    lo, hi = min(a, b), max(a, b)
    return hkdf(shared, info=label(DOMAIN, "pair-seed", session, round, lo, hi))


def share_commitment(*, session: bytes, owner: int, holder: int, kind: str, share: bytes) -> bytes:
    return digest("share-commitment", session, owner, holder, kind, share)


def seed_commitment(*, session: bytes, owner: int, seed: bytes) -> bytes:
    return digest("self-seed-commitment", session, owner, seed)


def _mask_info(kind: str, session: bytes, round: int) -> bytes:
    return label(DOMAIN, "mask", kind, session, round)


def add_self_mask(acc: np.ndarray, seed: bytes, *, session: bytes, round: int, subtract: bool = False) -> None:
    prg_add_words(acc, seed, info=_mask_info("self", session, round), subtract=subtract)


def add_pair_mask(
    acc: np.ndarray, seed: bytes, *, session: bytes, round: int, me: int, peer: int, subtract: bool = False
) -> None:
    """Client ``me`` adds ``+PRG(s)`` if ``me < peer`` else ``-PRG(s)``; ``subtract`` removes it."""
    positive = (me < peer) != subtract
    prg_add_words(acc, seed, info=_mask_info("pair", session, round), subtract=not positive)


class NeighbourGraph:
    """The SecAgg+ graph: a ring of the roster's clients in an order drawn from the session id,
    each joined to ``degree/2`` clients on either side (complete graph when ``degree >= n-1``)."""

    __slots__ = ("_ids", "_pos", "degree", "complete")

    def __init__(self, ids: Iterable[int], *, session: bytes, degree: int) -> None:
        sorted_ids = np.array(sorted(set(ids)), dtype=np.int64)
        n = sorted_ids.size
        self.complete = degree >= n - 1
        self.degree = min(degree, max(n - 1, 0))
        keys = prg_words(hashlib.sha256(label(DOMAIN, "graph", session)).digest(), info=b"ring", count=n, bits=64)
        order = np.argsort(keys, kind="stable")
        self._ids = sorted_ids[order]
        self._pos = {int(c): i for i, c in enumerate(self._ids)}

    def __contains__(self, cid: object) -> bool:
        return cid in self._pos

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(int(c) for c in self._ids)

    def neighbours(self, cid: int) -> tuple[int, ...]:
        i = self._pos[cid]
        n = self._ids.size
        if self.complete:
            return tuple(int(c) for c in self._ids if c != cid)
        h = self.degree // 2
        idx = [(i + d) % n for d in range(-h, h + 1) if d != 0]
        return tuple(int(self._ids[j]) for j in idx)
