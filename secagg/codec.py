"""The codec's shared parts: header (magic, version, type), sizes and bounded field readers."""

from __future__ import annotations

import struct

from privagg.errors import InvalidMessage
from secagg.limbs import SECRET_LIMBS
from secagg.params import ThreatModel
from secagg.wire import Limits, Reader, Writer

__all__ = [
    "CODEC_VERSION",
    "KEY_BYTES",
    "DIGEST_BYTES",
    "SECRET_LIMBS",
    "CHECK_LIMBS",
    "PART_BYTES",
    "SHARE_BYTES",
    "PLAIN_BYTES",
    "CIPHERTEXT_BYTES",
    "OPENING_BYTES",
    "header",
    "open_message",
    "max_check",
]

CODEC_VERSION = 5  # 2: RoundSetup nonce, sender signatures; 3: verifiable dealing; 4: graph seed commit-reveal;
# 5: 30-bit limbs, one leaf hash per share envelope, one check-limb set per dealing (secagg.vss)
_MAGIC = b"PS"
KEY_BYTES = 32
DIGEST_BYTES = 32
#: check limbs dealt with every dealing (both secrets: ``secagg.vss``, the verifiable-sharing check)
CHECK_LIMBS = 3
#: one holder's share of one secret (what unmasking reveals): SECRET_LIMBS field elements of 4 bytes
PART_BYTES = 4 * SECRET_LIMBS
SHARE_BYTES = PART_BYTES
#: what a holder decrypts: its self-seed share, its key share and its check limbs
PLAIN_BYTES = 2 * PART_BYTES + 4 * CHECK_LIMBS
#: AES-GCM of the plaintext + 16-byte tag
CIPHERTEXT_BYTES = PLAIN_BYTES + 16
#: what opens a share envelope's leaf besides the revealed share: the other share's commitment and the
#: key commitment (``secagg.vss.opening``)
OPENING_BYTES = 2 * DIGEST_BYTES
_DELIVERED = struct.Struct(f">I{CIPHERTEXT_BYTES}s{DIGEST_BYTES}s{DIGEST_BYTES}s")
_ENVELOPE = struct.Struct(f">I{DIGEST_BYTES}s{CIPHERTEXT_BYTES}s")


def max_check(limits: Limits) -> int:
    """The largest check-polynomial field a round allows (the threshold is below the cohort size)."""
    return CHECK_LIMBS * 4 * limits.clients


_THREAT_CODE = {ThreatModel.SEMI_HONEST: 0, ThreatModel.ACTIVE: 1}
_THREAT_FROM = {v: k for k, v in _THREAT_CODE.items()}


def header(w: Writer, type_code: int) -> Writer:
    return w.raw(_MAGIC).u8(CODEC_VERSION).u8(type_code)


_HEADER = struct.Struct(">2sBB")


def open_message(data: bytes, type_code: int, name: str) -> Reader:
    r = Reader(data, name)
    magic, v, t = r.unpack(_HEADER)
    if magic != _MAGIC:
        raise InvalidMessage(f"{name}: bad magic")
    if v != CODEC_VERSION:
        raise InvalidMessage(f"{name}: unsupported codec version {v}")
    if t != type_code:
        raise InvalidMessage(f"{name}: wrong message type {t}")
    return r
