"""Messages of the Paillier summation protocol and their one versioned binary codec.

Every message starts with the same header::

    magic "PGPA" | version u8 | type u8 | key_id 16 B | session 16 B | round u64

followed by a type-specific body (big-endian integers, ciphertexts as fixed-width
``ciphertext_bytes`` big-endian integers)::

    RoundSetup          count u32 | model_digest 32 B
    ClientContribution  client_id u32 | count u32 | model_digest 32 B | n u32 | n ciphertexts
                        | proof_len u32 | proof | Ed25519 sig 64 B
    AggregateRequest    count u32 | model_digest 32 B | n u32 | n ciphertexts | m u32 | m x (len u32 | contribution)
                        | e u16 | e x SetEndorsement body
    PartialDecryption   decryptor u16 | kind u8 | n u32 | n values | proof_len u16 | proof | set_hash 32 B | sig 64 B
    SetEndorsement      decryptor u16 | set_hash 32 B | Ed25519 sig 64 B

Version 2 added the model digest: a client signs the digest of the global model it trained on
(:func:`model_digest`), so decryptors can refuse an aggregate mixing contributions made on
different models (a server sending a crafted model to one client). Version 3 (this one) added
the proof of plaintext knowledge of a contribution (signed with it), the decryptors' signed
endorsements of one contribution set per round (:func:`set_hash`) and signed partial
decryptions. Older versions are refused. :func:`decode_message` needs the public key: it
refuses a wrong ``key_id``, any ciphertext outside ``Z*_{n^2}``, any length that does not
match the bytes actually present (checked *before* allocating), trailing bytes and unknown
versions or types, always with :class:`InvalidMessage`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec

import gmpy2
from gmpy2 import mpz

from privagg.digest import model_digest
from privagg.errors import InvalidMessage
from privagg.randomness import label

from .keys import PaillierPublicKey

__all__ = [
    "CODEC_VERSION",
    "DIGEST_BYTES",
    "NO_MODEL_DIGEST",
    "model_digest",
    "RoundSetup",
    "ClientContribution",
    "AggregateRequest",
    "PartialDecryption",
    "PaillierMessage",
    "encode_message",
    "decode_message",
    "PARTIAL_THRESHOLD",
    "PARTIAL_PLAINTEXT",
    "SetEndorsement",
    "contribution_signed_bytes",
    "partial_context",
    "partial_signed_bytes",
    "endorsement_signed_bytes",
    "set_hash",
]

MAGIC = b"PGPA"
CODEC_VERSION = 3
_HEADER = struct.Struct(">4sBB16s16sQ")
_T_CONTRIBUTION, _T_AGGREGATE, _T_PARTIAL, _T_SETUP, _T_ENDORSEMENT = 1, 2, 3, 4, 5
HASH_BYTES = 32
SIGNATURE_BYTES = 64
DIGEST_BYTES = 32
PARTIAL_THRESHOLD = 0  # values are c^(2 Δ s_i) mod n^2
PARTIAL_PLAINTEXT = 1  # values are plaintexts (a single key holder, CRT decryption)
_MAX_U32 = (1 << 32) - 1


#: The digest of the empty model: the in-memory driver's rounds when no model is given.
NO_MODEL_DIGEST = model_digest(())


@dataclass(frozen=True, slots=True)
class RoundSetup:
    """Server -> clients: the round, the vector length and the digest of the model to train on."""

    key_id: bytes
    session: bytes
    round: int
    count: int
    model_digest: bytes


@dataclass(frozen=True, slots=True)
class ClientContribution:
    """One client's packed ciphertexts for one round, signed (Ed25519) by the client.

    The signature covers everything but itself: key id, session, round, client id, count, the
    digest of the model the client trained on, and the ciphertexts.
    """

    key_id: bytes
    session: bytes
    round: int
    client_id: int
    count: int  # number of values packed
    model_digest: bytes
    ciphertexts: tuple[int, ...]
    signature: bytes = b""
    proof: bytes = b""  # proof of plaintext knowledge (:mod:`.knowledge`), covered by the signature


@dataclass(frozen=True, slots=True)
class SetEndorsement:
    """Decryptor -> server (-> decryptors): "for this round, the contribution set is ``set_hash``".

    An honest decryptor signs at most one set per (session, round), after checking it; a partial
    decryption is released only for a set endorsed by a quorum of decryptors.
    """

    key_id: bytes
    session: bytes
    round: int
    decryptor: int
    set_hash: bytes
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class AggregateRequest:
    """Server -> decryptors: the aggregate and the signed contributions it claims to multiply.

    First sent without endorsements (each decryptor checks it and endorses its :func:`set_hash`),
    then with a quorum of endorsements (the decryptors decrypt).
    """

    key_id: bytes
    session: bytes
    round: int
    count: int
    model_digest: bytes  # the model every listed contribution must have signed
    aggregate: tuple[int, ...]
    contributions: tuple[ClientContribution, ...]
    endorsements: tuple[SetEndorsement, ...] = ()


@dataclass(frozen=True, slots=True)
class PartialDecryption:
    """Decryptor -> server: one partial decryption per aggregate ciphertext."""

    key_id: bytes
    session: bytes
    round: int
    decryptor: int
    kind: int
    values: tuple[int, ...]
    proof: bytes = b""  # batch proof of correct partial decryption (threshold keys with verification keys)
    set_hash: bytes = bytes(HASH_BYTES)  # the endorsed contribution set this decrypts
    signature: bytes = b""  # the decryptor's Ed25519 signature (the decryptor directory)


PaillierMessage = RoundSetup | ClientContribution | AggregateRequest | PartialDecryption | SetEndorsement


_P = ParamSpec("_P")


def _encoding(f: Callable[_P, bytes]) -> Callable[_P, bytes]:
    """An encoder that refuses any field outside its encoded range with ``ValueError`` (a party's screening
    turns it into :class:`InvalidMessage`): a negative or too wide integer, a count beyond its width."""

    @functools.wraps(f)
    def encode(*args: _P.args, **kwargs: _P.kwargs) -> bytes:
        try:
            return f(*args, **kwargs)
        except (struct.error, OverflowError) as e:
            raise ValueError(f"a field does not fit its encoding ({e})") from None

    return encode


def _header(msg_type: int, key_id: bytes, session: bytes, rnd: int) -> bytes:
    if len(key_id) != 16 or len(session) != 16:
        raise ValueError("key_id and session are 16 bytes")
    if not 0 <= rnd < 1 << 64:
        raise ValueError("round out of range")
    return _HEADER.pack(MAGIC, CODEC_VERSION, msg_type, key_id, session, rnd)


def _digest(d: bytes) -> bytes:
    if len(d) != DIGEST_BYTES:
        raise ValueError(f"model digest must be {DIGEST_BYTES} bytes")
    return bytes(d)


def _ints(values: tuple[int, ...], width: int) -> bytes:
    # gmpy2's own to_bytes is twice as fast as a conversion to int first (ciphertexts are mpz)
    return b"".join(v.to_bytes(width, "big") if type(v) is mpz else int(v).to_bytes(width, "big") for v in values)


def partial_context(key_id: bytes, session: bytes, round: int) -> bytes:
    """Domain separation of partial-decryption proofs: bound to key, session and round."""
    return label("privagg/paillier/partial/v1", key_id, session, round)


@_encoding
def contribution_signed_bytes(msg: ClientContribution, public_key: PaillierPublicKey) -> bytes:
    """What the client signs: the whole encoding except the signature."""
    w = public_key.ciphertext_bytes
    return (
        _header(_T_CONTRIBUTION, msg.key_id, msg.session, msg.round)
        + struct.pack(">II", msg.client_id, msg.count)
        + _digest(msg.model_digest)
        + struct.pack(">I", len(msg.ciphertexts))
        + _ints(msg.ciphertexts, w)
        + struct.pack(">I", len(msg.proof))
        + msg.proof
    )


def _hash32(h: bytes) -> bytes:
    if len(h) != HASH_BYTES:
        raise ValueError(f"a set hash is {HASH_BYTES} bytes")
    return bytes(h)


@_encoding
def endorsement_signed_bytes(msg: SetEndorsement) -> bytes:
    """What a decryptor signs to endorse a contribution set."""
    return (
        _header(_T_ENDORSEMENT, msg.key_id, msg.session, msg.round)
        + struct.pack(">H", msg.decryptor)
        + _hash32(msg.set_hash)
    )


@_encoding
def partial_signed_bytes(msg: PartialDecryption, public_key: PaillierPublicKey) -> bytes:
    """What a decryptor signs with its partial decryption: the whole encoding except the signature."""
    if len(msg.proof) > 0xFFFF:
        raise ValueError("proof too long")
    return (
        _header(_T_PARTIAL, msg.key_id, msg.session, msg.round)
        + struct.pack(">HBI", msg.decryptor, msg.kind, len(msg.values))
        + _ints(msg.values, public_key.ciphertext_bytes)
        + struct.pack(">H", len(msg.proof))
        + msg.proof
        + _hash32(msg.set_hash)
    )


@_encoding
def set_hash(msg: AggregateRequest, public_key: PaillierPublicKey) -> bytes:
    """The hash of a contribution set: key, session, round, count, model digest, aggregate and every
    signed contribution (endorsements excluded). Two requests differing in any of these differ here."""
    body = encode_message(dataclasses.replace(msg, endorsements=()), public_key)
    return hashlib.sha256(label("privagg/paillier/contribution-set/v1", body)).digest()


@_encoding
def encode_message(msg: PaillierMessage, public_key: PaillierPublicKey) -> bytes:
    """The canonical bytes of a message (widths from ``public_key``)."""
    w = public_key.ciphertext_bytes
    if isinstance(msg, RoundSetup):
        return (
            _header(_T_SETUP, msg.key_id, msg.session, msg.round)
            + struct.pack(">I", msg.count)
            + _digest(msg.model_digest)
        )
    if isinstance(msg, ClientContribution):
        if len(msg.signature) != SIGNATURE_BYTES:
            raise ValueError("contribution is not signed")
        return contribution_signed_bytes(msg, public_key) + msg.signature
    if isinstance(msg, AggregateRequest):
        parts = [
            _header(_T_AGGREGATE, msg.key_id, msg.session, msg.round),
            struct.pack(">I", msg.count),
            _digest(msg.model_digest),
            struct.pack(">I", len(msg.aggregate)),
            _ints(msg.aggregate, w),
            struct.pack(">I", len(msg.contributions)),
        ]
        for c in msg.contributions:
            body = encode_message(c, public_key)
            parts.append(struct.pack(">I", len(body)))
            parts.append(body)
        if len(msg.endorsements) > 0xFFFF:
            raise ValueError("too many endorsements")
        parts.append(struct.pack(">H", len(msg.endorsements)))
        for e in msg.endorsements:
            parts.append(encode_message(e, public_key))
        return b"".join(parts)
    if isinstance(msg, PartialDecryption):
        if len(msg.signature) != SIGNATURE_BYTES:
            raise ValueError("partial decryption is not signed")
        return partial_signed_bytes(msg, public_key) + msg.signature
    if isinstance(msg, SetEndorsement):
        if len(msg.signature) != SIGNATURE_BYTES:
            raise ValueError("endorsement is not signed")
        return endorsement_signed_bytes(msg) + msg.signature
    raise TypeError(f"not a Paillier message: {type(msg).__name__}")


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise InvalidMessage("truncated message", stage="decode")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size))

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos


_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_II = struct.Struct(">II")
_HBI = struct.Struct(">HBI")


def _read_ciphertexts(r: _Reader, count: int, pk: PaillierPublicKey) -> tuple[int, ...]:
    w = pk.ciphertext_bytes
    if count > r.remaining // w:
        raise InvalidMessage(f"declares {count} ciphertexts, only {r.remaining} bytes follow", stage="decode")
    raw = r.take(count * w)
    out = []
    n, n2 = pk.nz, pk.n2
    units = mpz(1)  # gcd(prod c_j mod n, n) = 1 iff every c_j is prime to n: one gcd for all
    for i in range(count):
        c = mpz.from_bytes(raw[i * w : (i + 1) * w], "big")
        if not 0 < c < n2:
            raise InvalidMessage("ciphertext outside Z*_{n^2}", stage="decode")
        units = units * (c % n) % n
        out.append(c)
    if gmpy2.gcd(units, n) != 1:
        raise InvalidMessage("ciphertext outside Z*_{n^2}", stage="decode")
    return tuple(out)


def _read_header(r: _Reader, pk: PaillierPublicKey) -> tuple[int, bytes, bytes, int]:
    fields: tuple[Any, ...] = _HEADER.unpack(r.take(_HEADER.size))
    magic, version, mtype, key_id, session, rnd = fields
    if magic != MAGIC:
        raise InvalidMessage("not a privagg Paillier message (bad magic)", stage="decode")
    if version != CODEC_VERSION:
        raise InvalidMessage(f"unsupported codec version {version} (supported: {CODEC_VERSION})", stage="decode")
    if key_id != pk.key_id:
        raise InvalidMessage("message is for a different key (key id mismatch)", stage="decode")
    return mtype, key_id, session, rnd


def _decode(r: _Reader, pk: PaillierPublicKey, depth: int) -> PaillierMessage:
    mtype, key_id, session, rnd = _read_header(r, pk)
    if mtype == _T_SETUP and depth == 0:
        (count,) = r.unpack(_U32)
        digest = r.take(DIGEST_BYTES)
        return RoundSetup(key_id, session, rnd, count, digest)
    if mtype == _T_CONTRIBUTION:
        client_id, count = r.unpack(_II)
        digest = r.take(DIGEST_BYTES)
        (nct,) = r.unpack(_U32)
        cts = _read_ciphertexts(r, nct, pk)
        (plen,) = r.unpack(_U32)
        proof = r.take(plen)
        sig = r.take(SIGNATURE_BYTES)
        return ClientContribution(key_id, session, rnd, client_id, count, digest, cts, sig, proof)
    if mtype == _T_ENDORSEMENT and depth <= 1:
        (decryptor,) = r.unpack(_U16)
        h = r.take(HASH_BYTES)
        sig = r.take(SIGNATURE_BYTES)
        return SetEndorsement(key_id, session, rnd, decryptor, h, sig)
    if mtype == _T_AGGREGATE and depth == 0:
        (count,) = r.unpack(_U32)
        digest = r.take(DIGEST_BYTES)
        (nct,) = r.unpack(_U32)
        agg = _read_ciphertexts(r, nct, pk)
        (ncontrib,) = r.unpack(_U32)
        if ncontrib > r.remaining // (_U32.size + _HEADER.size):
            raise InvalidMessage(f"declares {ncontrib} contributions, too few bytes follow", stage="decode")
        contribs = []
        for _ in range(ncontrib):
            (length,) = r.unpack(_U32)
            sub = _Reader(r.take(length))
            c = _decode(sub, pk, depth + 1)
            if sub.remaining or not isinstance(c, ClientContribution):
                raise InvalidMessage("malformed embedded contribution", stage="decode")
            contribs.append(c)
        (nend,) = r.unpack(_U16)
        _end_size = _HEADER.size + _U16.size + HASH_BYTES + SIGNATURE_BYTES
        if nend > r.remaining // _end_size:
            raise InvalidMessage(f"declares {nend} endorsements, too few bytes follow", stage="decode")
        ends = []
        for _ in range(nend):
            e = _decode(r, pk, depth + 1)
            if not isinstance(e, SetEndorsement):
                raise InvalidMessage("malformed embedded endorsement", stage="decode")
            ends.append(e)
        return AggregateRequest(key_id, session, rnd, count, digest, agg, tuple(contribs), tuple(ends))
    if mtype == _T_PARTIAL:
        decryptor, kind, nval = r.unpack(_HBI)
        if kind == PARTIAL_THRESHOLD:
            values = _read_ciphertexts(r, nval, pk)
        elif kind == PARTIAL_PLAINTEXT:
            w = pk.ciphertext_bytes
            if nval > r.remaining // w:
                raise InvalidMessage("declares more values than bytes follow", stage="decode")
            raw = r.take(nval * w)
            vals = [int.from_bytes(raw[i * w : (i + 1) * w], "big") for i in range(nval)]
            if any(v >= pk.n for v in vals):
                raise InvalidMessage("plaintext outside Z_n", stage="decode")
            values = tuple(vals)
        else:
            raise InvalidMessage(f"unknown partial decryption kind {kind}", stage="decode")
        (plen,) = r.unpack(_U16)
        proof = r.take(plen)
        h = r.take(HASH_BYTES)
        sig = r.take(SIGNATURE_BYTES)
        return PartialDecryption(key_id, session, rnd, decryptor, kind, values, proof, h, sig)
    raise InvalidMessage(f"unknown message type {mtype}", stage="decode")


def decode_message(data: bytes, *, public_key: PaillierPublicKey) -> PaillierMessage:
    """Parse untrusted bytes; returns a message or raises :class:`InvalidMessage` (nothing else)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidMessage("expected bytes", stage="decode")
    r = _Reader(bytes(data))
    try:
        msg = _decode(r, public_key, 0)
    except InvalidMessage:
        raise
    except (struct.error, ValueError, OverflowError) as e:  # defensive: never leak another error type
        raise InvalidMessage(f"malformed message ({type(e).__name__})", stage="decode") from None
    if r.remaining:
        raise InvalidMessage(f"{r.remaining} trailing bytes", stage="decode")
    return msg
