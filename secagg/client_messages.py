"""Client -> server messages of SecAgg+ (see :mod:`secagg.messages`, which re-exports them)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from privagg.encoding import MAX_MODULUS_BITS, packed_size
from privagg.errors import InvalidMessage
from secagg.codec import (
    _ENVELOPE,
    CIPHERTEXT_BYTES,
    DIGEST_BYTES,
    KEY_BYTES,
    OPENING_BYTES,
    SHARE_BYTES,
    max_check,
)
from secagg.codec import header as _header
from secagg.codec import open_message as _open
from secagg.params import MAX_CLIENT_ID
from secagg.wire import (
    NO_LIMITS,
    SIGNATURE_BYTES,
    Limits,
    Writer,
    pack_ring,
    read_client_id,
    read_round,
    read_signature,
    unpack_ring,
    write_signature,
)

__all__ = [
    "SeedReveal",
    "ShareEnvelope",
    "EncryptedShares",
    "Complaint",
    "ShareCheck",
    "MaskedInput",
    "ConsistencySignature",
    "RevealedShare",
    "UnmaskResponse",
]


# ---------------------------------------------------------------------------- client -> server
@dataclass(frozen=True, slots=True)
class SeedReveal:
    """Client -> server (active mode): the graph-seed contribution this client committed to in its
    advertisement, sent once it holds the roster (``secagg.seeding``). It opens that signed
    commitment, so it needs no signature of its own."""

    TYPE: ClassVar[int] = 13
    round: int
    session_id: bytes
    sender: int
    value: bytes

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).fixed(self.session_id, DIGEST_BYTES).u32(self.sender)
        return w.fixed(self.value, DIGEST_BYTES).getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> SeedReveal:
        r = _open(data, cls.TYPE, "SeedReveal")
        m = cls(read_round(r), r.fixed(DIGEST_BYTES), read_client_id(r), r.fixed(DIGEST_BYTES))
        r.end()
        return m


@dataclass(frozen=True, slots=True)
class ShareEnvelope:
    """One recipient's encrypted shares and the envelope's *leaf*: a hash of the commitments to the
    pairwise key and to each of the two shares (``secagg.vss.leaf``: what makes a complaint a proof
    and a revealed share checkable)."""

    recipient: int
    leaf: bytes
    ciphertext: bytes


_ENVELOPE_SIZES = (DIGEST_BYTES, CIPHERTEXT_BYTES)


def _pack_envelope(e: ShareEnvelope) -> bytes:
    """One envelope in one precompiled pack (sizes checked first: ``struct`` would pad or cut)."""
    fields = (e.leaf, e.ciphertext)
    for f, n in zip(fields, _ENVELOPE_SIZES):
        if len(f) != n:
            raise ValueError(f"field must be {n} bytes, got {len(f)}")
    try:
        return _ENVELOPE.pack(e.recipient, *fields)
    except struct.error:
        raise InvalidMessage(f"integer field {e.recipient!r} does not fit the wire format (>I)") from None


@dataclass(frozen=True, slots=True)
class EncryptedShares:
    """Client -> server: shares for every neighbour (set U2, ascending recipient ids), a commitment to
    the self-mask seed and the check polynomials of the verifiable dealing (``secagg.vss``)."""

    TYPE: ClassVar[int] = 4
    round: int
    session_id: bytes
    sender: int
    self_seed_commitment: bytes
    envelopes: tuple[ShareEnvelope, ...]
    check: bytes = b""
    signature: bytes = b""  # active mode: the sender's Ed25519 signature (secagg.crypto.message_payload)

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).fixed(self.session_id, DIGEST_BYTES).u32(self.sender)
        w.fixed(self.self_seed_commitment, DIGEST_BYTES).u32(len(self.envelopes))
        w.raw(b"".join([_pack_envelope(e) for e in self.envelopes]))
        return write_signature(w.var(self.check), self.signature).getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> EncryptedShares:
        r = _open(data, cls.TYPE, "EncryptedShares")
        rnd, sid, snd, com = read_round(r), r.fixed(DIGEST_BYTES), read_client_id(r), r.fixed(DIGEST_BYTES)
        n = r.count(_ENVELOPE.size, limits.clients)
        envs = tuple(ShareEnvelope(*row) for row in _ENVELOPE.iter_unpack(r.fixed(n * _ENVELOPE.size)))
        if any(e.recipient > MAX_CLIENT_ID for e in envs):
            raise InvalidMessage("EncryptedShares: client id out of range")
        check = r.var(max_check(limits))
        sig = read_signature(r)
        r.end()
        return cls(rnd, sid, snd, com, envs, check, sig)


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
    """A holder's share of ``owner``'s secret and its ``opening`` (``secagg.vss.opening``: the other
    share's commitment and the key commitment, which with the share rebuild the signed leaf)."""

    owner: int
    share: bytes
    opening: bytes = bytes(OPENING_BYTES)


_REVEALED = struct.Struct(f">I{SHARE_BYTES}s{OPENING_BYTES}s")


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
                w.u32(s.owner).fixed(s.share, SHARE_BYTES).fixed(s.opening, OPENING_BYTES)
        return write_signature(w, self.signature).getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> UnmaskResponse:
        r = _open(data, cls.TYPE, "UnmaskResponse")
        rnd, sid, snd = read_round(r), r.fixed(DIGEST_BYTES), read_client_id(r)
        lists = []
        for _ in range(2):  # each list in one pass over its bytes
            n = r.count(_REVEALED.size, limits.clients)
            rows = list(_REVEALED.iter_unpack(r.fixed(n * _REVEALED.size)))
            if any(row[0] > MAX_CLIENT_ID for row in rows):
                raise InvalidMessage("UnmaskResponse: client id out of range")
            lists.append(tuple(RevealedShare(*row) for row in rows))
        sig = read_signature(r)
        r.end()
        return cls(rnd, sid, snd, lists[0], lists[1], sig)


@dataclass(frozen=True, slots=True)
class Complaint:
    """A holder's proof material against a dealer: the pairwise key of the dealer's envelope for it
    (``secagg.vss.dealing_fault`` re-runs the holder's check with the dealer's signed message)."""

    dealer: int
    key: bytes


@dataclass(frozen=True, slots=True)
class ShareCheck:
    """Client -> server, after the share delivery: the dealers whose shares failed the client's
    verifiable-sharing check (usually none), each with its :class:`Complaint`."""

    TYPE: ClassVar[int] = 11
    round: int
    session_id: bytes
    sender: int
    complaints: tuple[Complaint, ...]
    signature: bytes = b""  # active mode: the sender's Ed25519 signature (secagg.crypto.message_payload)

    def encode(self) -> bytes:
        w = _header(Writer(), self.TYPE).u64(self.round).fixed(self.session_id, DIGEST_BYTES).u32(self.sender)
        w.u32(len(self.complaints))
        for c in self.complaints:
            w.u32(c.dealer).fixed(c.key, KEY_BYTES)
        return write_signature(w, self.signature).getvalue()

    @classmethod
    def decode(cls, data: bytes, limits: Limits = NO_LIMITS) -> ShareCheck:
        r = _open(data, cls.TYPE, "ShareCheck")
        rnd, sid, snd = read_round(r), r.fixed(DIGEST_BYTES), read_client_id(r)
        n = r.count(4 + KEY_BYTES, limits.clients)
        complaints = tuple(Complaint(read_client_id(r), r.fixed(KEY_BYTES)) for _ in range(n))
        sig = read_signature(r)
        r.end()
        return cls(rnd, sid, snd, complaints, sig)
