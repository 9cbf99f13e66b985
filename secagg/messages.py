"""SecAgg+ messages: immutable dataclasses, one versioned binary codec per type.

Every encoding starts with ``b"PS"``, the codec version and the message type. Decoding
untrusted bytes returns a message or raises :class:`~privagg.errors.InvalidMessage`;
list lengths are checked against the bytes left before anything is allocated. The codecs
check *structure* only (sizes, ranges); whether ids repeat, overlap or contradict the
round is for the receiving party to judge (a malicious server can send such messages,
and clients must refuse them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

import numpy as np

from privagg.encoding import MAX_MODULUS_BITS, packed_size
from privagg.errors import ConfigurationError, InvalidMessage
from secagg.params import MAX_CLIENT_ID, SecAggParams, ThreatModel
from secagg.wire import (
    MAX_DIMENSION,
    MAX_ROUND,
    NO_LIMITS,
    SIGNATURE_BYTES,
    Limits,
    Reader,
    Writer,
    pack_ring,
    read_client_id,
    read_ids,
    read_round,
    read_signature,
    unpack_ring,
    write_ids,
    write_signature,
)

__all__ = [
    "CODEC_VERSION",
    "KEY_BYTES",
    "SIGNATURE_BYTES",
    "DIGEST_BYTES",
    "SHARE_BYTES",
    "CIPHERTEXT_BYTES",
    "MAX_DIMENSION",
    "RoundSetup",
    "KeyAdvertisement",
    "KeyRoster",
    "ShareEnvelope",
    "EncryptedShares",
    "DeliveredShare",
    "ShareDelivery",
    "MaskedInput",
    "ConsistencyRequest",
    "ConsistencySignature",
    "UnmaskRequest",
    "RevealedShare",
    "UnmaskResponse",
    "Message",
    "ServerMessage",
    "ClientMessage",
    "MAX_ROUND",
    "Limits",
    "decode_message",
]

CODEC_VERSION = 2  # 2: RoundSetup nonce, sender signatures on client messages
_MAGIC = b"PS"
KEY_BYTES = 32
DIGEST_BYTES = 32
#: one holder's share of one 32-byte secret: 16 field elements of 4 bytes
SHARE_BYTES = 64
#: AES-GCM of (self-seed share || key share) + 16-byte tag
CIPHERTEXT_BYTES = 2 * SHARE_BYTES + 16
_DELIVERED = struct.Struct(f">I{CIPHERTEXT_BYTES}s")
_ENVELOPE = struct.Struct(f">I{DIGEST_BYTES}s{DIGEST_BYTES}s{CIPHERTEXT_BYTES}s")
_THREAT_CODE = {ThreatModel.SEMI_HONEST: 0, ThreatModel.ACTIVE: 1}
_THREAT_FROM = {v: k for k, v in _THREAT_CODE.items()}


def _header(w: Writer, type_code: int) -> Writer:
    return w.raw(_MAGIC).u8(CODEC_VERSION).u8(type_code)


def _open(data: bytes, type_code: int, name: str) -> Reader:
    r = Reader(data, name)
    if r.fixed(2) != _MAGIC:
        raise InvalidMessage(f"{name}: bad magic")
    if (v := r.u8()) != CODEC_VERSION:
        raise InvalidMessage(f"{name}: unsupported codec version {v}")
    if (t := r.u8()) != type_code:
        raise InvalidMessage(f"{name}: wrong message type {t}")
    return r


# ---------------------------------------------------------------------------- server -> client
@dataclass(frozen=True, slots=True)
class RoundSetup:
    """Server -> every client: the round's parameters, vector length and model digest, and a fresh
    ``nonce`` naming this session (advertisements sign it, through the config hash, so none is
    accepted in another session)."""

    TYPE: ClassVar[int] = 1
    round: int
    params: SecAggParams
    dimension: int
    model_digest: bytes
    nonce: bytes = bytes(DIGEST_BYTES)

    def encode(self) -> bytes:
        p = self.params
        w = _header(Writer(), self.TYPE).u64(self.round)
        w.u8(_THREAT_CODE[p.threat]).u32(p.num_clients).u32(p.degree).u32(p.threshold)
        w.u8(p.modulus_bits).u8(p.value_bits).u32(self.dimension).fixed(self.model_digest, DIGEST_BYTES)
        return w.fixed(self.nonce, DIGEST_BYTES).getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> RoundSetup:
        r = _open(data, cls.TYPE, "RoundSetup")
        rnd = read_round(r)
        code = r.u8()
        if code not in _THREAT_FROM:
            raise InvalidMessage("RoundSetup: unknown threat model")
        n, k, t, mb, vb, dim = r.u32(), r.u32(), r.u32(), r.u8(), r.u8(), r.u32()
        digest, nonce = r.fixed(DIGEST_BYTES), r.fixed(DIGEST_BYTES)
        r.end()
        if not 1 <= dim < MAX_DIMENSION:
            raise InvalidMessage("RoundSetup: dimension out of range")
        try:
            params = SecAggParams(
                num_clients=n, degree=k, threshold=t, modulus_bits=mb, threat=_THREAT_FROM[code], value_bits=vb
            )
        except ConfigurationError as e:
            raise InvalidMessage(f"RoundSetup: invalid parameters ({e})") from None
        return cls(round=rnd, params=params, dimension=dim, model_digest=digest, nonce=nonce)


@dataclass(frozen=True, slots=True)
class KeyAdvertisement:
    """Client -> server (and inside :class:`KeyRoster`): the client's two X25519 public keys.

    ``config_hash`` is the hash of the :class:`RoundSetup` the client received; in active
    mode ``signature`` is the client's Ed25519 signature over all other fields (empty in
    semi-honest mode).
    """

    TYPE: ClassVar[int] = 2
    round: int
    client_id: int
    config_hash: bytes
    enc_public_key: bytes
    mask_public_key: bytes
    signature: bytes = b""

    def _body(self, w: Writer) -> Writer:
        w.u64(self.round).u32(self.client_id).fixed(self.config_hash, DIGEST_BYTES)
        w.fixed(self.enc_public_key, KEY_BYTES).fixed(self.mask_public_key, KEY_BYTES)
        return write_signature(w, self.signature)

    def encode(self) -> bytes:
        return self._body(_header(Writer(), self.TYPE)).getvalue()

    @classmethod
    def _read(cls, r: Reader) -> KeyAdvertisement:
        rnd, cid, ch, epk, mpk, slen = r.unpack(_ADV_STRUCT)
        if rnd > MAX_ROUND:
            raise InvalidMessage(f"round {rnd} out of range 0..{MAX_ROUND}")
        if cid > MAX_CLIENT_ID:
            raise InvalidMessage(f"client id {cid} out of range")
        if slen not in (0, SIGNATURE_BYTES):
            raise InvalidMessage("KeyAdvertisement: bad signature length")
        return cls(rnd, cid, ch, epk, mpk, r.fixed(slen))

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> KeyAdvertisement:
        r = _open(data, cls.TYPE, "KeyAdvertisement")
        m = cls._read(r)
        r.end()
        return m


_ADV_STRUCT = struct.Struct(f">QI{DIGEST_BYTES}s{KEY_BYTES}s{KEY_BYTES}sB")
_ADV_MIN = _ADV_STRUCT.size


@dataclass(frozen=True, slots=True)
class KeyRoster:
    """Server -> every client: the advertisements the server collected (the set U1)."""

    TYPE: ClassVar[int] = 3
    round: int
    advertisements: tuple[KeyAdvertisement, ...]

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).u32(len(self.advertisements))
        for a in self.advertisements:
            a._body(w)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> KeyRoster:
        r = _open(data, cls.TYPE, "KeyRoster")
        rnd = read_round(r)
        n = r.count(_ADV_MIN, limits.clients)
        advs = tuple(KeyAdvertisement._read(r) for _ in range(n))
        r.end()
        return cls(rnd, advs)


@dataclass(frozen=True, slots=True)
class DeliveredShare:
    sender: int
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class ShareDelivery:
    """Server -> one client: the encrypted shares other clients addressed to it."""

    TYPE: ClassVar[int] = 5
    round: int
    session_id: bytes
    recipient: int
    shares: tuple[DeliveredShare, ...]

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).fixed(self.session_id, DIGEST_BYTES).u32(self.recipient)
        w.u32(len(self.shares))
        for s in self.shares:
            w.u32(s.sender).fixed(s.ciphertext, CIPHERTEXT_BYTES)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> ShareDelivery:
        r = _open(data, cls.TYPE, "ShareDelivery")
        rnd, sid, rcp = read_round(r), r.fixed(DIGEST_BYTES), read_client_id(r)
        n = r.count(_DELIVERED.size, limits.clients)
        shares = tuple(DeliveredShare(*r.unpack(_DELIVERED)) for _ in range(n))
        if any(s.sender > MAX_CLIENT_ID for s in shares):
            raise InvalidMessage("ShareDelivery: client id out of range")
        r.end()
        return cls(rnd, sid, rcp, shares)


@dataclass(frozen=True, slots=True)
class ConsistencyRequest:
    """Server -> clients (active mode): the survivors U3 whose masked inputs arrived, to sign."""

    TYPE: ClassVar[int] = 7
    round: int
    session_id: bytes
    survivors: tuple[int, ...]

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).fixed(self.session_id, DIGEST_BYTES)
        write_ids(w, self.survivors)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> ConsistencyRequest:
        r = _open(data, cls.TYPE, "ConsistencyRequest")
        rnd, sid = read_round(r), r.fixed(DIGEST_BYTES)
        ids = read_ids(r, limits.clients)
        r.end()
        return cls(rnd, sid, ids)


@dataclass(frozen=True, slots=True)
class UnmaskRequest:
    """Server -> clients: who survived (reveal self-mask shares) and who dropped (reveal key shares).

    In active mode ``signatures`` carries the consistency signatures ``(client, sig)``.
    """

    TYPE: ClassVar[int] = 9
    round: int
    session_id: bytes
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    signatures: tuple[tuple[int, bytes], ...] = ()

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).fixed(self.session_id, DIGEST_BYTES)
        write_ids(w, self.survivors)
        write_ids(w, self.dropped)
        w.u32(len(self.signatures))
        for cid, sig in self.signatures:
            w.u32(cid).fixed(sig, SIGNATURE_BYTES)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> UnmaskRequest:
        r = _open(data, cls.TYPE, "UnmaskRequest")
        rnd, sid = read_round(r), r.fixed(DIGEST_BYTES)
        surv, drop = read_ids(r, limits.clients), read_ids(r, limits.clients)
        n = r.count(4 + SIGNATURE_BYTES, limits.clients)
        sigs = tuple((read_client_id(r), r.fixed(SIGNATURE_BYTES)) for _ in range(n))
        r.end()
        return cls(rnd, sid, surv, drop, sigs)


# ---------------------------------------------------------------------------- client -> server
@dataclass(frozen=True, slots=True)
class ShareEnvelope:
    """One recipient's encrypted shares, with hash commitments to each of the two shares."""

    recipient: int
    self_share_commitment: bytes
    key_share_commitment: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class EncryptedShares:
    """Client -> server: shares for every neighbour (set U2), and a commitment to the self-mask seed."""

    TYPE: ClassVar[int] = 4
    round: int
    session_id: bytes
    sender: int
    self_seed_commitment: bytes
    envelopes: tuple[ShareEnvelope, ...]
    signature: bytes = b""  # active mode: the sender's Ed25519 signature (secagg.crypto.message_payload)

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).fixed(self.session_id, DIGEST_BYTES).u32(self.sender)
        w.fixed(self.self_seed_commitment, DIGEST_BYTES).u32(len(self.envelopes))
        for e in self.envelopes:
            w.u32(e.recipient).fixed(e.self_share_commitment, DIGEST_BYTES)
            w.fixed(e.key_share_commitment, DIGEST_BYTES).fixed(e.ciphertext, CIPHERTEXT_BYTES)
        return write_signature(w, self.signature).getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> EncryptedShares:
        r = _open(data, cls.TYPE, "EncryptedShares")
        rnd, sid, snd, com = read_round(r), r.fixed(DIGEST_BYTES), read_client_id(r), r.fixed(DIGEST_BYTES)
        n = r.count(_ENVELOPE.size, limits.clients)
        envs = tuple(ShareEnvelope(*r.unpack(_ENVELOPE)) for _ in range(n))
        if any(e.recipient > MAX_CLIENT_ID for e in envs):
            raise InvalidMessage("EncryptedShares: client id out of range")
        sig = read_signature(r)
        r.end()
        return cls(rnd, sid, snd, com, envs, sig)


@dataclass(frozen=True, slots=True)
class MaskedInput:
    """Client -> server: the masked vector, bit-packed at ``modulus_bits`` per element."""

    TYPE: ClassVar[int] = 6
    round: int
    session_id: bytes
    sender: int
    modulus_bits: int
    count: int
    data: bytes
    signature: bytes = b""  # active mode: the sender's Ed25519 signature (secagg.crypto.message_payload)

    @classmethod
    def from_values(
        cls, *, round: int, session_id: bytes, sender: int, modulus_bits: int, values: np.ndarray
    ) -> MaskedInput:
        return cls(round, session_id, sender, modulus_bits, int(values.size), pack_ring(values, modulus_bits))

    def values(self) -> np.ndarray:
        return unpack_ring(self.data, self.modulus_bits, self.count)

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).fixed(self.session_id, DIGEST_BYTES).u32(self.sender)
        w.u8(self.modulus_bits).u32(self.count)
        if len(self.data) != packed_size(self.count, self.modulus_bits):
            raise InvalidMessage("MaskedInput: data size does not match count and modulus_bits")
        return write_signature(w, self.signature).raw(self.data).getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> MaskedInput:
        r = _open(data, cls.TYPE, "MaskedInput")
        rnd, sid, snd, mb, cnt = read_round(r), r.fixed(DIGEST_BYTES), read_client_id(r), r.u8(), r.u32()
        if not 1 <= mb <= MAX_MODULUS_BITS or not 1 <= cnt <= limits.dimension:
            raise InvalidMessage("MaskedInput: modulus_bits or count out of range")
        sig = read_signature(r)
        if r.remaining() != packed_size(cnt, mb):
            raise InvalidMessage("MaskedInput: payload size does not match count and modulus_bits")
        return cls(rnd, sid, snd, mb, cnt, r.rest(), sig)


@dataclass(frozen=True, slots=True)
class ConsistencySignature:
    """Client -> server (active mode): the client's signature over (session, round, survivors)."""

    TYPE: ClassVar[int] = 8
    round: int
    session_id: bytes
    sender: int
    signature: bytes

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).fixed(self.session_id, DIGEST_BYTES).u32(self.sender)
        return w.fixed(self.signature, SIGNATURE_BYTES).getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> ConsistencySignature:
        r = _open(data, cls.TYPE, "ConsistencySignature")
        m = cls(read_round(r), r.fixed(DIGEST_BYTES), read_client_id(r), r.fixed(SIGNATURE_BYTES))
        r.end()
        return m


@dataclass(frozen=True, slots=True)
class RevealedShare:
    owner: int
    share: bytes


@dataclass(frozen=True, slots=True)
class UnmaskResponse:
    """Client -> server: shares of survivors' self-mask seeds and of dropped clients' mask keys."""

    TYPE: ClassVar[int] = 10
    round: int
    session_id: bytes
    sender: int
    self_shares: tuple[RevealedShare, ...]
    key_shares: tuple[RevealedShare, ...]
    signature: bytes = b""  # active mode: the sender's Ed25519 signature (secagg.crypto.message_payload)

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).fixed(self.session_id, DIGEST_BYTES).u32(self.sender)
        for lst in (self.self_shares, self.key_shares):
            w.u32(len(lst))
            for s in lst:
                w.u32(s.owner).fixed(s.share, SHARE_BYTES)
        return write_signature(w, self.signature).getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> UnmaskResponse:
        r = _open(data, cls.TYPE, "UnmaskResponse")
        rnd, sid, snd = read_round(r), r.fixed(DIGEST_BYTES), read_client_id(r)
        lists = []
        for _ in range(2):
            n = r.count(4 + SHARE_BYTES, limits.clients)
            lists.append(tuple(RevealedShare(read_client_id(r), r.fixed(SHARE_BYTES)) for _ in range(n)))
        sig = read_signature(r)
        r.end()
        return cls(rnd, sid, snd, lists[0], lists[1], sig)


ServerMessage: TypeAlias = RoundSetup | KeyRoster | ShareDelivery | ConsistencyRequest | UnmaskRequest
ClientMessage: TypeAlias = KeyAdvertisement | EncryptedShares | MaskedInput | ConsistencySignature | UnmaskResponse
Message: TypeAlias = ServerMessage | ClientMessage

_DECODERS: dict[int, Callable[[bytes, Limits], Any]] = {
    c.TYPE: c.decode
    for c in (
        RoundSetup,
        KeyAdvertisement,
        KeyRoster,
        EncryptedShares,
        ShareDelivery,
        MaskedInput,
        ConsistencyRequest,
        ConsistencySignature,
        UnmaskRequest,
        UnmaskResponse,
    )
}


def decode_message(data: bytes, limits: Limits = NO_LIMITS) -> Message:
    """Decode any SecAgg message from untrusted bytes (or raise :class:`InvalidMessage`).

    A party passes the :class:`Limits` of its round (``Limits.of(params, dimension)``): no list
    longer than the cohort, no vector longer than the round's, is even allocated."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < 4:
        raise InvalidMessage("message too short")
    data = bytes(data)
    dec = _DECODERS.get(data[3])
    if dec is None:
        raise InvalidMessage(f"unknown message type {data[3]}")
    try:
        return dec(data, limits)  # type: ignore[no-any-return]
    except InvalidMessage:
        raise
    except Exception as e:  # defence in depth: a codec bug must not leak another exception type
        raise InvalidMessage(f"undecodable message ({type(e).__name__})") from None
