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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeAlias

from privagg.errors import ConfigurationError, InvalidMessage
from secagg.params import MAX_CLIENT_ID, SecAggParams
from secagg.wire import (
    MAX_DIMENSION,
    MAX_ROUND,
    NO_LIMITS,
    SIGNATURE_BYTES,
    Limits,
    Reader,
    Writer,
    read_client_id,
    read_ids,
    read_round,
    write_ids,
    write_signature,
)

__all__ = [
    "CODEC_VERSION",
    "KEY_BYTES",
    "SIGNATURE_BYTES",
    "DIGEST_BYTES",
    "SHARE_BYTES",
    "SECRET_LIMBS",
    "CHECK_LIMBS",
    "PART_BYTES",
    "PLAIN_BYTES",
    "CIPHERTEXT_BYTES",
    "OPENING_BYTES",
    "MAX_DIMENSION",
    "RoundSetup",
    "KeyAdvertisement",
    "KeyRoster",
    "SeedReveal",
    "RevealSet",
    "ShareEnvelope",
    "EncryptedShares",
    "DeliveredShare",
    "ShareDelivery",
    "Complaint",
    "ShareCheck",
    "Exclusion",
    "MaskRequest",
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
from secagg.client_messages import (
    Complaint,
    ConsistencySignature,
    EncryptedShares,
    MaskedInput,
    RevealedShare,
    SeedReveal,
    ShareCheck,
    ShareEnvelope,
    UnmaskResponse,
)
from secagg.codec import (
    _DELIVERED,
    _THREAT_CODE,
    _THREAT_FROM,
    CHECK_LIMBS,
    CIPHERTEXT_BYTES,
    CODEC_VERSION,
    DIGEST_BYTES,
    KEY_BYTES,
    OPENING_BYTES,
    PART_BYTES,
    PLAIN_BYTES,
    SECRET_LIMBS,
    SHARE_BYTES,
    max_check,
    slot_builder,
    uniform_delivered,
)
from secagg.codec import header as _header
from secagg.codec import open_message as _open


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
        w.u8(p.modulus_bits).u8(p.value_bits).u8(int(p.modular)).u32(self.dimension)
        w.fixed(self.model_digest, DIGEST_BYTES)
        return w.fixed(self.nonce, DIGEST_BYTES).getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> RoundSetup:
        r = _open(data, cls.TYPE, "RoundSetup")
        rnd = read_round(r)
        code = r.u8()
        if code not in _THREAT_FROM:
            raise InvalidMessage("RoundSetup: unknown threat model")
        n, k, t, mb, vb, flags, dim = r.u32(), r.u32(), r.u32(), r.u8(), r.u8(), r.u8(), r.u32()
        if flags not in (0, 1):
            raise InvalidMessage("RoundSetup: unknown flags")
        digest, nonce = r.fixed(DIGEST_BYTES), r.fixed(DIGEST_BYTES)
        r.end()
        if not 1 <= dim < MAX_DIMENSION:
            raise InvalidMessage("RoundSetup: dimension out of range")
        try:
            params = SecAggParams(
                num_clients=n,
                degree=k,
                threshold=t,
                modulus_bits=mb,
                threat=_THREAT_FROM[code],
                value_bits=vb,
                modular=bool(flags),
            )
        except ConfigurationError as e:
            raise InvalidMessage(f"RoundSetup: invalid parameters ({e})") from None
        return cls(round=rnd, params=params, dimension=dim, model_digest=digest, nonce=nonce)


@dataclass(frozen=True, slots=True)
class KeyAdvertisement:
    """Client -> server (and inside :class:`KeyRoster`): the client's two X25519 public keys.

    ``config_hash`` is the hash of the :class:`RoundSetup` the client received; in active
    mode ``signature`` is the client's Ed25519 signature over all other fields (empty in
    semi-honest mode), ``seed_commitment`` its hash commitment to its graph-seed contribution
    (``secagg.seeding``; zeros in semi-honest mode).
    """

    TYPE: ClassVar[int] = 2
    round: int
    client_id: int
    config_hash: bytes
    enc_public_key: bytes
    mask_public_key: bytes
    signature: bytes = b""
    seed_commitment: bytes = bytes(DIGEST_BYTES)

    def _body(self, w: Writer) -> Writer:
        w.u64(self.round).u32(self.client_id).fixed(self.config_hash, DIGEST_BYTES)
        w.fixed(self.enc_public_key, KEY_BYTES).fixed(self.mask_public_key, KEY_BYTES)
        w.fixed(self.seed_commitment, DIGEST_BYTES)
        return write_signature(w, self.signature)

    def encode(self) -> bytes:
        return self._body(_header(Writer(), self.TYPE)).getvalue()

    @classmethod
    def _read(cls, r: Reader) -> KeyAdvertisement:
        rnd, cid, ch, epk, mpk, commit, slen = r.unpack(_ADV_STRUCT)
        if rnd > MAX_ROUND:
            raise InvalidMessage(f"round {rnd} out of range 0..{MAX_ROUND}")
        if cid > MAX_CLIENT_ID:
            raise InvalidMessage(f"client id {cid} out of range")
        if slen not in (0, SIGNATURE_BYTES):
            raise InvalidMessage("KeyAdvertisement: bad signature length")
        return cls(rnd, cid, ch, epk, mpk, r.fixed(slen), commit)

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> KeyAdvertisement:
        r = _open(data, cls.TYPE, "KeyAdvertisement")
        m = cls._read(r)
        r.end()
        return m


_ADV_FIELDS = ("round", "client_id", "config_hash", "enc_public_key", "mask_public_key", "seed_commitment")
_ADV_ROW = slot_builder(KeyAdvertisement, (*_ADV_FIELDS, "", "signature"))
_ADV_STRUCT = struct.Struct(f">QI{DIGEST_BYTES}s{KEY_BYTES}s{KEY_BYTES}s{DIGEST_BYTES}sB")
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
        advs = _read_uniform_advertisements(r, n)
        if advs is None:  # entries of mixed sizes, or a bad one: field by field, with its reason
            advs = tuple(KeyAdvertisement._read(r) for _ in range(n))
        r.end()
        return cls(rnd, advs)


_UNIFORM = {s: struct.Struct(f"{_ADV_STRUCT.format}{s}s") for s in (0, SIGNATURE_BYTES)}


def _read_uniform_advertisements(r: Reader, n: int) -> tuple[KeyAdvertisement, ...] | None:
    """The roster's ``n`` entries when all have one size (every signature empty, or every one 64 bytes:
    what an honest server sends) and every field is in range, in one pass over the bytes; else ``None``
    and the reader is untouched (the entry-by-entry path then decodes or refuses)."""
    if n == 0:
        return None
    for slen, st in _UNIFORM.items():
        if r.remaining() != n * st.size:  # the roster ends after its entries
            continue
        body = r.peek(n * st.size)
        rows = list(st.iter_unpack(body))
        if any(row[0] > MAX_ROUND or row[1] > MAX_CLIENT_ID or row[6] != slen for row in rows):
            continue
        r.fixed(n * st.size)
        return tuple(map(_ADV_ROW, rows))
    return None


_ID_DIGEST = struct.Struct(f">I{DIGEST_BYTES}s")
_ID_SIGNATURE = struct.Struct(f">I{SIGNATURE_BYTES}s")


def _id_rows(r: Reader, st: struct.Struct, n: int, what: str) -> tuple[tuple[int, bytes], ...]:
    """``n`` (client id, fixed-size field) pairs in one pass over their bytes (ids range-checked)."""
    rows: list[tuple[int, bytes]] = list(st.iter_unpack(r.fixed(n * st.size)))
    if any(cid > MAX_CLIENT_ID for cid, _ in rows):
        raise InvalidMessage(f"{what}: client id out of range")
    return tuple(rows)


@dataclass(frozen=True, slots=True)
class RevealSet:
    """Server -> every roster client (active mode): every roster client's graph-seed contribution,
    ``(client id, value)`` in ascending id order (``secagg.seeding``)."""

    TYPE: ClassVar[int] = 14
    round: int
    session_id: bytes
    reveals: tuple[tuple[int, bytes], ...]

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).fixed(self.session_id, DIGEST_BYTES)
        w.u32(len(self.reveals))
        for cid, value in self.reveals:
            w.u32(cid).fixed(value, DIGEST_BYTES)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> RevealSet:
        r = _open(data, cls.TYPE, "RevealSet")
        rnd, sid = read_round(r), r.fixed(DIGEST_BYTES)
        n = r.count(_ID_DIGEST.size, limits.clients)
        reveals = _id_rows(r, _ID_DIGEST, n, "RevealSet")
        r.end()
        return cls(rnd, sid, reveals)


@dataclass(frozen=True, slots=True)
class DeliveredShare:
    """One dealer's encrypted shares for the recipient, with what the recipient checks them against:
    the dealer's dealing digest and check polynomials (``secagg.vss``) and the envelope's leaf."""

    sender: int
    ciphertext: bytes
    dealing_digest: bytes = bytes(DIGEST_BYTES)
    leaf: bytes = bytes(DIGEST_BYTES)
    check: bytes = b""


_DS_ROW = slot_builder(DeliveredShare, ("sender", "ciphertext", "dealing_digest", "leaf", "", "check"))
_DELIVERED_SIZES = (CIPHERTEXT_BYTES, DIGEST_BYTES, DIGEST_BYTES)


def _read_delivered(r: Reader, limits: Limits) -> DeliveredShare:
    sender, ct, digest, leaf = r.unpack(_DELIVERED)
    return DeliveredShare(sender, ct, digest, leaf, r.var(max_check(limits)))


@dataclass(frozen=True, slots=True)
class ShareDelivery:
    """Server -> one client: the encrypted shares other clients addressed to it."""

    TYPE: ClassVar[int] = 5
    round: int
    session_id: bytes
    recipient: int
    shares: Sequence[DeliveredShare]  # a tuple, or the server's lazy view (secagg.dealings.DeliveryView)

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).fixed(self.session_id, DIGEST_BYTES).u32(self.recipient)
        w.u32(len(self.shares))
        for s in self.shares:
            fields = (s.ciphertext, s.dealing_digest, s.leaf)
            for f, n in zip(fields, _DELIVERED_SIZES):
                if len(f) != n:
                    raise ValueError(f"field must be {n} bytes, got {len(f)}")
            try:
                w.raw(_DELIVERED.pack(s.sender, *fields))
            except struct.error:
                raise InvalidMessage(f"integer field {s.sender!r} does not fit the wire format (>I)") from None
            w.var(s.check)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> ShareDelivery:
        r = _open(data, cls.TYPE, "ShareDelivery")
        rnd, sid, rcp = read_round(r), r.fixed(DIGEST_BYTES), read_client_id(r)
        n = r.count(_DELIVERED.size + 4, limits.clients)
        rows = uniform_delivered(r, n, limits)
        shares = tuple(_read_delivered(r, limits) for _ in range(n)) if rows is None else tuple(map(_DS_ROW, rows))
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
        n = r.count(_ID_SIGNATURE.size, limits.clients)
        sigs = _id_rows(r, _ID_SIGNATURE, n, "UnmaskRequest")
        r.end()
        return cls(rnd, sid, surv, drop, sigs)


@dataclass(frozen=True, slots=True)
class Exclusion:
    """A dealer proven faulty: the holder's complaint key and the dealer's own signed
    :class:`EncryptedShares` (encoded), which every neighbour re-checks before dropping it."""

    dealer: int
    holder: int
    key: bytes
    dealing: bytes


@dataclass(frozen=True, slots=True)
class MaskRequest:
    """Server -> clients that passed the share check: mask now, without the ``excluded`` dealers."""

    TYPE: ClassVar[int] = 12
    round: int
    session_id: bytes
    excluded: tuple[Exclusion, ...] = ()

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).fixed(self.session_id, DIGEST_BYTES)
        w.u32(len(self.excluded))
        for e in self.excluded:
            w.u32(e.dealer).u32(e.holder).fixed(e.key, KEY_BYTES).var(e.dealing)
        return w.getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> MaskRequest:
        r = _open(data, cls.TYPE, "MaskRequest")
        rnd, sid = read_round(r), r.fixed(DIGEST_BYTES)
        n = r.count(12 + KEY_BYTES, limits.clients)
        out = tuple(
            Exclusion(read_client_id(r), read_client_id(r), r.fixed(KEY_BYTES), r.var(r.remaining())) for _ in range(n)
        )
        r.end()
        return cls(rnd, sid, out)


ServerMessage: TypeAlias = (
    RoundSetup | KeyRoster | RevealSet | ShareDelivery | MaskRequest | ConsistencyRequest | UnmaskRequest
)
ClientMessage: TypeAlias = (
    KeyAdvertisement | SeedReveal | EncryptedShares | ShareCheck | MaskedInput | ConsistencySignature | UnmaskResponse
)
Message: TypeAlias = ServerMessage | ClientMessage

_DECODERS: dict[int, Callable[[bytes, Limits], Any]] = {
    c.TYPE: c.decode
    for c in (
        RoundSetup,
        KeyAdvertisement,
        KeyRoster,
        SeedReveal,
        RevealSet,
        EncryptedShares,
        ShareDelivery,
        ShareCheck,
        MaskRequest,
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
