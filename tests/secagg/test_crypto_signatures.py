"""What ``secagg.crypto.verify`` accepts and refuses (Ed25519 through libsodium, strict).

Known answers from RFC 8032 (section 7.1, tests 1-3), the edge cases where Ed25519 verifiers
disagree, and properties. Each edge case is built here from first principles with a small
reference implementation of the curve (twisted Edwards arithmetic in Python, test-only), and
the test states whether the case satisfies the verification equation, so a refusal is a rule and
not a broken construction.

Measured behaviour of the two libraries on these cases (cryptography 50 / OpenSSL, PyNaCl 1.6.2 /
libsodium), for the record: OpenSSL accepts a small-order public key (with it, one signature
``(R = identity, S = 0)`` fits every message), the all-zero key, non-canonical key encodings and
a small-order ``R``; libsodium refuses all of them. Both refuse ``S >= L`` and a non-canonical
``R``, and both accept a mixed-order key whose holder signs (the equation holds). No case here is
accepted by libsodium and refused by OpenSSL, so ``verify`` follows libsodium: the strict one.
"""

from __future__ import annotations

import dataclasses
import hashlib

import nacl.bindings as sodium
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import crypto
from secagg.messages import KeyAdvertisement

# --- reference Edwards25519 (RFC 8032 section 5.1), for building cases -----------------------------

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
Point = tuple[int, int]
_O: Point = (0, 1)


def _inv(x: int) -> int:
    return pow(x, _P - 2, _P)


def _add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    return ((x1 * y2 + y1 * x2) * _inv(1 + t) % _P, (y1 * y2 + x1 * x2) * _inv(1 - t) % _P)


def _ext_add(p: tuple[int, int, int, int], q: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Addition in extended coordinates (RFC 8032 section 5.1.4): no inversion."""
    a = (p[1] - p[0]) * (q[1] - q[0]) % _P
    b = (p[1] + p[0]) * (q[1] + q[0]) % _P
    c = 2 * _D * p[3] * q[3] % _P
    d = 2 * p[2] * q[2] % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _mul(k: int, pt: Point) -> Point:
    acc, q = (0, 1, 1, 0), (pt[0], pt[1], 1, pt[0] * pt[1] % _P)
    while k:
        if k & 1:
            acc = _ext_add(acc, q)
        q, k = _ext_add(q, q), k >> 1
    zi = _inv(acc[2])
    return acc[0] * zi % _P, acc[1] * zi % _P


def _x_of(y: int, sign: int, *, strict: bool = True) -> int | None:
    u = (y * y - 1) * _inv(_D * y * y + 1) % _P
    x = pow(u, (_P + 3) // 8, _P)
    if x * x % _P != u:
        x = x * _SQRT_M1 % _P
    if x * x % _P != u or (strict and x == 0 and sign):
        return None
    return _P - x if (x & 1) != sign else x


def _decode(b: bytes) -> Point | None:
    """Strict RFC 8032 decoding (``y < p``; ``x = 0`` with the sign bit set is no point)."""
    n = int.from_bytes(b, "little")
    y = n & ((1 << 255) - 1)
    if y >= _P:
        return None
    x = _x_of(y, n >> 255)
    return None if x is None else (x, y)


def _encode(pt: Point) -> bytes:
    return (pt[1] | ((pt[0] & 1) << 255)).to_bytes(32, "little")


_B: Point = (_x_of(4 * _inv(5) % _P, 0) or 0, 4 * _inv(5) % _P)


def _h(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little")


def _scalar(seed: bytes) -> tuple[int, bytes]:
    h = hashlib.sha512(seed).digest()
    return int.from_bytes(h[:32], "little") & ((1 << 254) - 8) | (1 << 254), h[32:]


def _sign(seed: bytes, msg: bytes, *, key: bytes | None = None, r_enc: bytes | None = None, add_s: int = 0) -> bytes:
    """RFC 8032 signing; ``key`` replaces the encoded public key in the hash, ``r_enc`` fixes ``R`` to a
    point of known discrete log 0 (an encoding of the identity), ``add_s`` is added to ``S`` after
    the reduction (a non-canonical ``S``)."""
    a, prefix = _scalar(seed)
    a_enc = key if key is not None else _encode(_mul(a, _B))
    r = 0 if r_enc is not None else _h(prefix, msg) % _L
    rb = r_enc if r_enc is not None else _encode(_mul(r, _B))
    s = (r + _h(rb, a_enc, msg) % _L * a) % _L + add_s
    return rb + s.to_bytes(32, "little")


def _equation(key: bytes, sig: bytes, msg: bytes, *, cofactor: int = 1) -> bool:
    """``[c S]B == [c]R + [c k]A`` with ``A`` and ``R`` decoded leniently (``y`` reduced mod p, the sign
    bit of ``x = 0`` ignored)."""

    def lenient(b: bytes) -> Point | None:
        n = int.from_bytes(b, "little")
        x = _x_of((n & ((1 << 255) - 1)) % _P, n >> 255, strict=False)
        return None if x is None else (x, (n & ((1 << 255) - 1)) % _P)

    a_pt, r_pt = lenient(key), lenient(sig[:32])
    if a_pt is None or r_pt is None:
        return False
    s = int.from_bytes(sig[32:], "little")
    k = _h(sig[:32], key, msg) % _L
    return _mul(cofactor, _mul(s, _B)) == _mul(cofactor, _add(r_pt, _mul(k, a_pt)))


def _torsion() -> list[Point]:
    """The 8 points of order dividing 8, derived as multiples of ``[L]P`` for curve points ``P``."""
    found = {_O}
    y = 2
    while len(found) < 8:
        x = _x_of(y, 0)
        if x is not None:
            t = _mul(_L, (x, y))
            pt = t
            for _ in range(8):
                found.add(pt)
                pt = _add(pt, t)
        y += 1
    return sorted(found)


TORSION = _torsion()
SMALL = [t for t in TORSION if t != _O]
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PK = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
MSG = b"advertisement"
IDENTITY = _encode(_O)


def test_reference_curve_is_the_curve() -> None:
    assert len(TORSION) == 8 and all(_mul(8, t) == _O for t in TORSION)
    assert sum(_mul(4, t) != _O for t in TORSION) == 4  # four points of order exactly 8
    assert _mul(_L, _B) == _O and _B != _O
    assert _sign(SEED, b"") == ed25519.Ed25519PrivateKey.from_private_bytes(SEED).sign(b"")


# --- RFC 8032 section 7.1, tests 1-3 -----------------------------------------------------------------

RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_known_answers(seed: str, public: str, message: str, signature: str) -> None:
    sk = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed))
    pk, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    assert sk.public_key().public_bytes_raw() == pk
    assert crypto.sign(sk, msg) == sig
    pk2, sk64 = sodium.crypto_sign_seed_keypair(bytes.fromhex(seed))
    assert pk2 == pk and sodium.crypto_sign(msg, sk64)[:64] == sig  # the other library signs alike
    assert crypto.verify(pk, sig, msg)
    assert not crypto.verify(pk, sig, msg + b"\x00")


# --- edge cases ----------------------------------------------------------------------------------------


def _small_key_forgery(t: Point) -> tuple[bytes, bytes, bytes]:
    """Under a small-order key ``A = t``, ``(R = identity, S = 0)`` satisfies the equation for every
    message whose ``[k]t`` is the identity (all of them for the identity, one in 8 at worst)."""
    key = _encode(t)
    i = 0
    while _mul(_h(IDENTITY, key, b"m%d" % i) % _L, t) != _O:
        i += 1
    return key, IDENTITY + bytes(32), b"m%d" % i


def _cases() -> list[tuple[str, bytes, bytes, bytes, bool]]:
    """(name, key, signature, message, whether the cofactorless equation holds)."""
    out = []
    good = _sign(SEED, MSG)
    s = int.from_bytes(good[32:], "little")
    out.append(("S + L (same S mod L)", PK, _sign(SEED, MSG, add_s=_L), MSG, True))
    out.append(("S with bit 255 set", PK, good[:32] + (s | 1 << 255).to_bytes(32, "little"), MSG, False))
    out.append(("R is the identity (small order)", PK, _sign(SEED, MSG, r_enc=IDENTITY), MSG, True))
    noncanonical_identity = (_P + 1).to_bytes(32, "little")  # y = p + 1, i.e. y = 1
    out.append(("R non-canonical (y = p + 1)", PK, _sign(SEED, MSG, r_enc=noncanonical_identity), MSG, True))
    for t in TORSION:
        key, sig, msg = _small_key_forgery(t)
        out.append((f"small-order key {key.hex()[:4]}..{key.hex()[-2:]}", key, sig, msg, True))
    out.append(("key non-canonical (y = p + 1)", noncanonical_identity, IDENTITY + bytes(32), MSG, True))
    sign_bit_identity = (1 | 1 << 255).to_bytes(32, "little")  # x = 0 with the sign bit: no point
    out.append(("key x = 0 with sign bit", sign_bit_identity, IDENTITY + bytes(32), MSG, True))
    out.append(("all-zero key", bytes(32), IDENTITY + bytes(32), _small_key_forgery(_decode(bytes(32)) or _O)[2], True))
    return out


CASES = _cases()


@pytest.mark.parametrize(("name", "key", "sig", "msg", "holds"), CASES, ids=[c[0] for c in CASES])
def test_strict_rules_refuse(name: str, key: bytes, sig: bytes, msg: bytes, holds: bool) -> None:
    assert _equation(key, sig, msg) is holds  # the case is what its name says
    assert not crypto.verify(key, sig, msg)


def test_all_zero_key_is_small_order() -> None:
    zero = _decode(bytes(32))
    assert zero is not None and zero in TORSION and _mul(4, zero) == _O


@pytest.mark.parametrize("t", SMALL, ids=[_encode(t).hex()[:4] + _encode(t).hex()[-2:] for t in SMALL])
def test_mixed_order_R_refused_though_cofactored_equation_holds(t: Point) -> None:
    """``R + t`` for a torsion point ``t``: what cofactored (ZIP-215) verifiers accept; we do not."""
    a, _ = _scalar(SEED)
    r = 0x1234567
    rb = _encode(_add(_mul(r, _B), t))
    s = (r + _h(rb, PK, MSG) % _L * a) % _L
    sig = rb + s.to_bytes(32, "little")
    assert _equation(PK, sig, MSG, cofactor=8) and not _equation(PK, sig, MSG)
    assert not crypto.verify(PK, sig, MSG)


@pytest.mark.parametrize("t", SMALL, ids=[_encode(t).hex()[:4] + _encode(t).hex()[-2:] for t in SMALL])
def test_mixed_order_key_signed_by_its_holder_is_accepted(t: Point) -> None:
    """A key ``A + t`` (not small order, not in the prime-order subgroup): its holder's signatures verify
    where the plain equation holds, as with both libraries. Only the holder of ``a`` can make them; the
    identity directory is trusted (THREAT_MODEL.md)."""
    a, _ = _scalar(SEED)
    key = _encode(_add(_mul(a, _B), t))
    i = 0
    while True:
        msg = b"x%d" % i
        sig = _sign(SEED, msg, key=key)
        if _mul(_h(sig[:32], key, msg) % _L, t) == _O:
            break
        i += 1
    assert _equation(key, sig, msg)
    assert crypto.verify(key, sig, msg)
    assert not crypto.verify(key, sig, msg + b"!")


def test_lengths_and_types() -> None:
    sig = _sign(SEED, MSG)
    assert crypto.verify(PK, sig, MSG)
    # a 63-byte signature must not borrow the payload's first byte (libsodium sees signature + payload)
    assert not crypto.verify(PK, sig[:63], sig[63:] + MSG)
    assert not crypto.verify(PK, sig + MSG[:1], MSG[1:])
    for key in (PK[:31], PK + b"\x00", b"", bytes(64)):
        assert not crypto.verify(key, sig, MSG)
    assert not crypto.verify(PK, b"", MSG)
    # bytes-like arguments are their bytes; other types are refused, never converted (bytes(64) is zeros)
    assert crypto.verify(bytearray(PK), memoryview(sig), bytearray(MSG))  # type: ignore[arg-type]
    assert not crypto.verify(bytearray(PK), memoryview(sig)[:63], MSG)  # type: ignore[arg-type]
    assert not crypto.verify(PK, sig, MSG.decode())  # type: ignore[arg-type]
    assert not crypto.verify(PK, 64, MSG)  # type: ignore[arg-type]
    assert not crypto.verify(32, sig, MSG)  # type: ignore[arg-type]
    assert not crypto.verify(None, None, None)  # type: ignore[arg-type]


def test_small_order_directory_key_forges_no_advertisement() -> None:
    """Under the identity as a directory key, ``(R = identity, S = 0)`` satisfies the equation for any
    payload (OpenSSL takes it); the advertisement check refuses it."""
    adv = KeyAdvertisement(0, 3, bytes(range(32)), _encode(_mul(9, _B)), _encode(_mul(11, _B)), bytes(32), b"")
    forged = IDENTITY + bytes(32)
    payload = crypto.advertisement_payload(adv)
    assert _equation(IDENTITY, forged, payload)
    adv = dataclasses.replace(adv, signature=forged)
    assert (
        crypto.advertisement_fault(adv, directory={3: IDENTITY}) == "advertisement of client 3 has no valid signature"
    )


# --- properties -------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=300), use_sodium=st.booleans())
def test_honest_signatures_of_either_library_verify(seed: bytes, msg: bytes, use_sodium: bool) -> None:
    sk = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    pk = sk.public_key().public_bytes_raw()
    sig = sodium.crypto_sign(msg, sodium.crypto_sign_seed_keypair(seed)[1])[:64] if use_sodium else crypto.sign(sk, msg)
    assert sig == sk.sign(msg)  # deterministic: the same bytes from both
    assert crypto.verify(pk, sig, msg)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    msg=st.binary(min_size=1, max_size=200),
    where=st.sampled_from(["message", "signature", "key"]),
    bit=st.integers(min_value=0),
)
def test_any_single_bit_flip_is_refused(seed: bytes, msg: bytes, where: str, bit: int) -> None:
    sk = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    parts = {"message": msg, "signature": crypto.sign(sk, msg), "key": sk.public_key().public_bytes_raw()}
    assert crypto.verify(parts["key"], parts["signature"], parts["message"])
    target = bytearray(parts[where])
    i = bit % (8 * len(target))
    target[i // 8] ^= 1 << (i % 8)
    parts[where] = bytes(target)
    assert not crypto.verify(parts["key"], parts["signature"], parts["message"])
