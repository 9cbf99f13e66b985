"""The protocol's cryptographic recipes (OpenSSL through ``cryptography``; Ed25519 verification by
libsodium through PyNaCl).

- key agreement: X25519; every derived key goes through HKDF-SHA256 with a
  :func:`privagg.randomness.label` naming the protocol, purpose, session, round and parties;
- share encryption: AES-256-GCM under a key unique to (session, sender, recipient), with
  sender, recipient, session and round in the associated data;
- masks: :func:`privagg.randomness.prg_add_words` (HKDF -> AES-256-CTR) keyed by full
  32-byte seeds; pairwise seeds from X25519, self-mask seeds from the OS CSPRNG;
- signatures: Ed25519 long-term identity keys (active mode): signed with OpenSSL, verified with
  libsodium's strict rules (:func:`verify`);
- commitments: SHA-256 over labelled, high-entropy values (shares, seeds).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import operator
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

from privagg.errors import VerificationError
from privagg.randomness import hkdf, label, prg_add_words, prg_words
from secagg.messages import (
    ConsistencySignature,
    EncryptedShares,
    KeyAdvertisement,
    MaskedInput,
    Message,
    RoundSetup,
    SeedReveal,
    ShareCheck,
    UnmaskResponse,
)

__all__ = [
    "DOMAIN",
    "digest",
    "config_hash",
    "session_id",
    "advertisement_payload",
    "consistency_payload",
    "message_payload",
    "SIGNED_MESSAGES",
    "sign_message",
    "signed_by_sender",
    "sign",
    "verify",
    "x25519_public",
    "valid_x25519_public",
    "LOW_ORDER_U",
    "advertisement_fault",
    "x25519_shared",
    "share_cipher_key",
    "encrypt_shares",
    "decrypt_shares",
    "pair_seed",
    "share_commitment",
    "key_commitment",
    "seed_commitment",
    "add_self_mask",
    "add_pair_mask",
    "MaskTask",
    "MaskExpander",
    "self_mask_task",
    "pair_mask_task",
    "apply_masks",
    "NeighbourGraph",
    "reconstruct_secret",
    "strip_masks",
]

DOMAIN = "privagg/secagg/v1"
_NONCE = bytes(12)


def digest(*parts: str | bytes | int) -> bytes:
    return hashlib.sha256(label(DOMAIN, *parts)).digest()


@functools.lru_cache(maxsize=4096)
def _prefix(*parts: str | bytes | int) -> bytes:
    """``label(DOMAIN, *parts)``, cached: hot paths append fixed-width fields to it."""
    return label(DOMAIN, *parts)


_PAIR = struct.Struct(">II")


def _ids(a: int, b: int) -> bytes:
    """Two client ids, fixed width (a hot path: every key, share and mask label holds a pair)."""
    return _PAIR.pack(a, b)


def config_hash(setup: RoundSetup) -> bytes:
    """What a client signs as "the round I was asked to join": parameters, round, dimension, model."""
    return digest("config", setup.encode())


def session_id(round: int, advertisements: Iterable[KeyAdvertisement]) -> bytes:
    """Hash of the round, every client's config hash, both public keys and seed commitment (sorted by id).

    Every per-client field has a fixed size (4 + 32 + 32 + 32 + 32 bytes), so the concatenation
    after the label is unambiguous.
    """
    advs = sorted(advertisements, key=_by_id)
    h = hashlib.sha256(label(DOMAIN, "session", round, len(advs)))
    h.update(
        b"".join(
            a.client_id.to_bytes(4, "big") + a.config_hash + a.enc_public_key + a.mask_public_key + a.seed_commitment
            for a in advs
        )
    )
    return h.digest()


_by_id = operator.attrgetter("client_id")


#: the advertisement fields after the ``advertise`` prefix as :func:`privagg.randomness.label` lays them
#: out (round and id as signed 64-bit, four 32-byte fields), in one precompiled pack
_ADV_TAIL = struct.Struct(">" + "Iq" * 2 + "I32s" * 4)
_MAX_I64 = (1 << 63) - 1
_ADV_PREFIX = label(DOMAIN, "advertise")


def advertisement_payload(adv: KeyAdvertisement) -> bytes:
    """What an advertisement's signature covers: ``label(DOMAIN, "advertise", round, id, config hash,
    both keys, seed commitment)``. Every client checks every roster entry, so the common shape (32-byte
    fields, ids in range) is packed in one step; it is the same bytes (tests/secagg/test_fastpaths.py)."""
    ch, ek, mk, sc = adv.config_hash, adv.enc_public_key, adv.mask_public_key, adv.seed_commitment
    if (
        0 <= adv.round <= _MAX_I64
        and 0 <= adv.client_id <= _MAX_I64
        and len(ch) == 32
        and len(ek) == 32
        and len(mk) == 32
        and len(sc) == 32
    ):
        return _ADV_PREFIX + _ADV_TAIL.pack(8, adv.round, 8, adv.client_id, 32, ch, 32, ek, 32, mk, 32, sc)
    return label(
        DOMAIN,
        "advertise",
        adv.round,
        adv.client_id,
        adv.config_hash,
        adv.enc_public_key,
        adv.mask_public_key,
        adv.seed_commitment,
    )


def consistency_payload(session: bytes, round: int, survivors: Sequence[int]) -> bytes:
    return label(DOMAIN, "consistency", session, round, b"".join(int(i).to_bytes(4, "big") for i in survivors))


def sign(identity_key: ed25519.Ed25519PrivateKey, payload: bytes) -> bytes:
    """RFC 8032 Ed25519 (deterministic: OpenSSL and libsodium give the same 64 bytes)."""
    return identity_key.sign(payload)


_BYTES_LIKE = (bytes, bytearray, memoryview)


def verify(public_key: bytes, signature: bytes, payload: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``payload``, by libsodium's strict
    rules: the RFC 8032 equation ``[S]B = R + [k]A`` without the cofactor, ``S < L``, canonical
    encodings of ``A`` and ``R``, and neither of small order (an all-zero key is one). OpenSSL accepts
    small-order and non-canonical keys and a small-order ``R`` (under a small-order key, one signature
    fits every message); libsodium refuses all of them, and of the cases in
    tests/secagg/test_crypto_signatures.py it accepts none that OpenSSL refuses. It is also the faster
    of the two (37 vs 59 us a verification, quiet machine).
    Bytes-like arguments count as their bytes; anything else, and wrong lengths, is ``False``."""
    if not (
        isinstance(public_key, _BYTES_LIKE) and isinstance(signature, _BYTES_LIKE) and isinstance(payload, _BYTES_LIKE)
    ):
        return False
    key, sig = bytes(public_key), bytes(signature)
    # the lengths first: libsodium reads 32 key bytes unchecked, and takes the first 64 bytes of
    # ``signature + payload`` as the signature, so a short signature would borrow from the payload
    if len(key) != 32 or len(sig) != 64:
        return False
    try:
        crypto_sign_open(sig + bytes(payload), key)
    except BadSignatureError:
        return False
    return True


def message_payload(msg: EncryptedShares | ShareCheck | MaskedInput | UnmaskResponse) -> bytes:
    """What a client signs in active mode to bind a message to its sender (the server checks it
    with the directory, so no client can speak in another's name): every field but the signature,
    the bulk of it through SHA-256."""
    if isinstance(msg, MaskedInput):
        body = hashlib.sha256(msg.data).digest()
        return label(DOMAIN, "masked-input", msg.round, msg.session_id, msg.sender, msg.modulus_bits, msg.count, body)
    body = hashlib.sha256(dataclasses.replace(msg, signature=b"").encode()).digest()
    return label(DOMAIN, "client-message", type(msg).__name__, body)


SIGNED_MESSAGES = (EncryptedShares, ShareCheck, MaskedInput, UnmaskResponse)


def sign_message(msg: Message, key: ed25519.Ed25519PrivateKey) -> Message:
    """``msg`` signed by its sender (:data:`SIGNED_MESSAGES`; any other message is returned as is)."""
    if not isinstance(msg, SIGNED_MESSAGES):
        return msg
    return dataclasses.replace(msg, signature=sign(key, message_payload(msg)))


def signed_by_sender(msg: Message, directory: Mapping[int, bytes], *, survivors: Sequence[int]) -> bool:
    """Whether a client message carries its sender's signature: a :class:`ConsistencySignature` over
    ``survivors``, the others over :func:`message_payload` (a :class:`KeyAdvertisement` is screened by
    :func:`advertisement_fault`, with its own reasons; a :class:`SeedReveal` opens its signed commitment,
    checked by its receiver)."""
    if isinstance(msg, (KeyAdvertisement, SeedReveal)):
        return True
    key = directory.get(getattr(msg, "sender", -1), b"")
    if isinstance(msg, ConsistencySignature):
        return verify(key, msg.signature, consistency_payload(msg.session_id, msg.round, survivors))
    if isinstance(msg, SIGNED_MESSAGES):
        return verify(key, msg.signature, message_payload(msg))
    return False


_P25519 = (1 << 255) - 19
#: u-coordinates of the points of order dividing 8 on Curve25519 and its twist (0, 1, p - 1 and the
#: two of order 8): the X25519 output with them is all-zero for every private key
LOW_ORDER_U = frozenset(
    {
        0,
        1,
        _P25519 - 1,
        int.from_bytes(bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"), "little"),
        int.from_bytes(bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"), "little"),
    }
)


#: the canonical encodings of :data:`LOW_ORDER_U` (a canonical ``u`` has exactly one)
_LOW_ORDER_BYTES = frozenset(u.to_bytes(32, "little") for u in LOW_ORDER_U)


def valid_x25519_public(public: bytes) -> bool:
    """A canonical X25519 public key (``u < p``, top bit clear) that is not of low order.

    Every honest key passes; refusing the others at advertisement keeps them out of every key
    agreement (a low-order point gives the same all-zero secret to everybody). Every client checks
    every roster entry's two keys, so a key costs one byte comparison and one set lookup: a last byte
    below ``0x7f`` means ``u < 2^248 * 0x7f < p``; only ``0x7f`` needs the whole number."""
    if not isinstance(public, bytes) or len(public) != 32:
        return False
    top = public[31]
    if top >= 0x7F and (top > 0x7F or int.from_bytes(public, "little") >= _P25519):
        return False
    return public not in _LOW_ORDER_BYTES


def x25519_public(private: x25519.X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes_raw()


def advertisement_fault(
    adv: KeyAdvertisement, *, config_hash: bytes | None = None, directory: Mapping[int, bytes] | None = None
) -> str | None:
    """Why no honest client accepts ``adv`` (invalid keys; with ``config_hash``: another configuration
    or model; with ``directory``: unknown identity or no valid signature), or ``None``. The server
    screens with it and every client checks every roster entry with it: one list of reasons."""
    c = adv.client_id
    if config_hash is not None and adv.config_hash != config_hash:
        return f"client {c} joined a different configuration or model"
    if directory is not None:
        key = directory.get(c)
        if key is None:
            return f"client {c} is not in the identity directory"
        if not verify(key, adv.signature, advertisement_payload(adv)):
            return f"advertisement of client {c} has no valid signature"
    # last: a signed bad key is its client's fault
    for name, public in (("enc_public_key", adv.enc_public_key), ("mask_public_key", adv.mask_public_key)):
        if not valid_x25519_public(public):
            return f"client {c} advertised an invalid {name} (low order or non-canonical)"
    return None


def x25519_shared(private: x25519.X25519PrivateKey, peer_public: bytes) -> bytes:
    """Raw X25519 output; a low-order peer key (all-zero output) is a VerificationError."""
    try:
        return private.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        raise VerificationError() from None


def share_cipher_key(shared: bytes, *, session: bytes, round: int, sender: int, recipient: int) -> bytes:
    """AES-256-GCM key for shares sent by ``sender`` to ``recipient`` (one key per direction)."""
    return hkdf(shared, info=_prefix("share-key", session, round) + _ids(sender, recipient))


def _aad(session: bytes, round: int, sender: int, recipient: int) -> bytes:
    return _prefix("share", session, round) + _ids(sender, recipient)


def encrypt_shares(
    key: bytes, plaintext: bytes, *, session: bytes, round: int, sender: int, recipient: int, bound: bytes = b""
) -> bytes:
    """``bound``: further associated data (``secagg.vss.binding``: what the dealer commits to)."""
    # the key is unique to (session, round, sender, recipient) and used once: a fixed nonce is safe
    return AESGCM(key).encrypt(_NONCE, plaintext, _aad(session, round, sender, recipient) + bound)


def decrypt_shares(
    key: bytes, ciphertext: bytes, *, session: bytes, round: int, sender: int, recipient: int, bound: bytes = b""
) -> bytes:
    try:
        return AESGCM(key).decrypt(_NONCE, ciphertext, _aad(session, round, sender, recipient) + bound)
    except InvalidTag:
        raise VerificationError() from None


def key_commitment(key: bytes, *, session: bytes, round: int, sender: int, recipient: int) -> bytes:
    """SHA-256 commitment to the share-encryption key of (sender -> recipient): revealing the key then
    proves which ciphertext plaintext the sender committed to (``secagg.vss.dealing_fault``)."""
    return hashlib.sha256(_prefix("share-key-commitment", session, round) + _ids(sender, recipient) + key).digest()


def pair_seed(shared: bytes, *, session: bytes, round: int, a: int, b: int) -> bytes:
    """The 32-byte seed of the pairwise mask between clients ``a`` and ``b`` (symmetric).

    It is the X25519 output itself: the mask PRG's HKDF-Extract turns it into a uniform
    AES key, with a label binding the session, the round and the pair (see
    :func:`add_pair_mask`), so no second key derivation is needed here.
    """
    if len(shared) != 32:
        raise ValueError("X25519 outputs are 32 bytes")
    return shared


def share_commitment(*, session: bytes, owner: int, holder: int, kind: str, share: bytes) -> bytes:
    """SHA-256 over the labelled (session, kind) prefix, both ids (fixed width) and the share."""
    return hashlib.sha256(_prefix("share-commitment", session, kind) + _ids(owner, holder) + share).digest()


def envelope_commitments(session: bytes, round: int) -> Callable[[int, int, bytes, bytes, bytes], tuple[bytes, ...]]:
    """``(sender, recipient, key, self share, key share) -> (key commitment, self-share commitment,
    key-share commitment)``: :func:`key_commitment` and :func:`share_commitment` of one share envelope,
    the same bytes, with the session's prefixes looked up once (three hashes per envelope at dealer and holder)."""
    kp = _prefix("share-key-commitment", session, round)
    sp, qp = _prefix("share-commitment", session, "self"), _prefix("share-commitment", session, "key")
    sha, pair = hashlib.sha256, _PAIR.pack

    def commit(sender: int, recipient: int, key: bytes, self_share: bytes, key_share: bytes) -> tuple[bytes, ...]:
        ids = pair(sender, recipient)
        return sha(kp + ids + key).digest(), sha(sp + ids + self_share).digest(), sha(qp + ids + key_share).digest()

    return commit


def seed_commitment(*, session: bytes, owner: int, seed: bytes) -> bytes:
    return digest("self-seed-commitment", session, owner, seed)


def _mask_info(kind: str, session: bytes, round: int) -> bytes:
    return _prefix("mask", kind, session, round)


@dataclasses.dataclass(frozen=True, slots=True)
class MaskTask:
    """One mask to add to (or subtract from) an accumulator: ``prg_add_words(acc, seed, info=info)``."""

    seed: bytes = dataclasses.field(repr=False)
    info: bytes
    subtract: bool


#: how a party adds a stream of masks into its accumulator (:func:`apply_masks`, or a parallel driver's);
#: the stream may raise midway (a secret that fails its check): the accumulator is then discarded
MaskExpander = Callable[[np.ndarray, Iterable[MaskTask]], None]


def self_mask_task(seed: bytes, *, session: bytes, round: int, subtract: bool = False) -> MaskTask:
    return MaskTask(seed, _mask_info("self", session, round), subtract)


def pair_mask_task(seed: bytes, *, session: bytes, round: int, me: int, peer: int, subtract: bool = False) -> MaskTask:
    """Client ``me`` adds ``+PRG(s)`` if ``me < peer`` else ``-PRG(s)``; ``subtract`` removes it."""
    positive = (me < peer) != subtract
    return MaskTask(seed, _mask_info("pair", session, round) + _ids(min(me, peer), max(me, peer)), not positive)


def apply_masks(acc: np.ndarray, tasks: Iterable[MaskTask]) -> None:
    """Add every task's mask into ``acc`` in place (wrapping: the order does not matter)."""
    for t in tasks:
        prg_add_words(acc, t.seed, info=t.info, subtract=t.subtract)


def add_self_mask(acc: np.ndarray, seed: bytes, *, session: bytes, round: int, subtract: bool = False) -> None:
    apply_masks(acc, (self_mask_task(seed, session=session, round=round, subtract=subtract),))


def add_pair_mask(
    acc: np.ndarray, seed: bytes, *, session: bytes, round: int, me: int, peer: int, subtract: bool = False
) -> None:
    """Client ``me`` adds ``+PRG(s)`` if ``me < peer`` else ``-PRG(s)``; ``subtract`` removes it."""
    task = pair_mask_task(seed, session=session, round=round, me=me, peer=peer, subtract=subtract)
    apply_masks(acc, (task,))


class NeighbourGraph:
    """The SecAgg+ graph: a ring of the roster's clients in an order drawn from the session id,
    each joined to ``degree/2`` clients on either side (complete graph when ``degree >= n-1``)."""

    __slots__ = ("_ids", "_pos", "complete", "degree")

    def __init__(self, ids: Iterable[int], *, session: bytes, degree: int) -> None:
        sorted_ids = np.array(sorted(set(ids)), dtype=np.int64)
        n = sorted_ids.size
        self.complete = degree >= n - 1
        self.degree = min(degree, max(n - 1, 0))
        keys = prg_words(hashlib.sha256(label(DOMAIN, "graph", session)).digest(), info=b"ring", count=n, bits=64)
        order = np.argsort(keys, kind="stable")
        self._ids = sorted_ids[order]
        self._pos = dict(zip(self._ids.tolist(), range(n)))

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


def reconstruct_secret(shares: dict[int, bytes], *, threshold: int) -> bytes:
    """A 32-byte secret from ``threshold`` revealed shares ``{holder id: share bytes}``
    (:func:`secagg.limbs.reconstruct_secret`: the limb layout lives there, with the codec).

    Raises :class:`VerificationError` if the shares are not field elements or are inconsistent
    (the protocol additionally checks the result against the dealer's commitment).
    """
    from secagg.limbs import reconstruct_secret as rebuild

    return rebuild(shares, threshold=threshold)


def strip_masks(
    masked: np.ndarray,
    *,
    owner: int,
    self_seed: bytes,
    mask_key: bytes,
    peers: dict[int, bytes],
    session: bytes,
    round: int,
    modulus_bits: int,
) -> np.ndarray:
    """One client's input from its masked vector, its self-mask seed and its mask key.

    ``peers`` maps the neighbours it masked with to their mask public keys. This is what a
    server holding *both* secrets of a client can do; the protocol exists to prevent it.
    """
    word = np.uint32 if modulus_bits <= 32 else np.uint64
    acc = np.asarray(masked).astype(word)
    add_self_mask(acc, self_seed, session=session, round=round, subtract=True)
    sk = x25519.X25519PrivateKey.from_private_bytes(mask_key)
    for v, pk in peers.items():
        seed = pair_seed(x25519_shared(sk, pk), session=session, round=round, a=owner, b=v)
        add_pair_mask(acc, seed, session=session, round=round, me=owner, peer=v, subtract=True)
    if modulus_bits < acc.dtype.itemsize * 8:
        np.bitwise_and(acc, word((1 << modulus_bits) - 1), out=acc)
    return acc.astype(np.uint64)
