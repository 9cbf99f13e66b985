"""Paillier keys: public key, CRT private key, and Damgård–Jurik/Shoup threshold key shares.

Plaintexts live in ``Z_n``, ciphertexts in ``Z*_{n^2}``; ``g = n + 1`` so that
``Enc(m; r) = (1 + m n) r^n mod n^2`` (the same convention as python-paillier, which the
known-answer tests use as an independent reference).

Threshold decryption (Damgård–Jurik 2001, ``s = 1``, after Shoup's threshold RSA) with a
**trusted dealer**: ``n = p q`` with safe primes ``p = 2 p' + 1``, ``q = 2 q' + 1``,
``m = p' q'``; the dealer picks ``d`` with ``d = 0 mod m`` and ``d = 1 mod n``, shares it with a
random polynomial ``f`` of degree ``t - 1`` over ``Z_{n m}`` (``f(0) = d``), hands decryptor
``i`` the share ``s_i = f(i)`` and forgets everything. Decryptor ``i`` publishes
``c_i = c^{2 Δ s_i}`` (``Δ = k!``); any ``t`` of them combine with integer Lagrange
coefficients ``μ_i = Δ λ_{0,i}`` into ``c^{4 Δ^2 d} = (1 + n)^{4 Δ^2 m}``, from which
``m = L(.) (4 Δ^2)^{-1} mod n``. Fewer than ``t`` shares reveal nothing about ``d`` (the
dealer assumption: the dealer is honest and erases ``p, q, d`` after dealing).

Each partial decryption comes with a proof of correctness (Shoup's verification keys
``v_i = v^{Δ s_i}`` and a Fiat–Shamir Chaum–Pedersen proof of equal discrete logs), batched
over all ciphertexts of an aggregate with random 128-bit weights (Bellare–Garay–Rabin), so
the combiner can detect a cheating decryptor and use another one's partial.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import gmpy2
from gmpy2 import mpz

from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource, label, prg_bytes, secret_below

from .multiexp import FixedBasePowers, fixed_base_powers, multi_pow
from .primes import random_prime, random_safe_prime

__all__ = [
    "KEY_BITS_ACCEPTED",
    "PaillierPublicKey",
    "PaillierPrivateKey",
    "ThresholdPublicKey",
    "ThresholdKeyShare",
    "generate_keypair",
    "generate_threshold_key",
    "deal_threshold_key",
]

#: Key sizes accepted for real use; smaller sizes are accepted with ``allow_insecure=True`` (tests).
KEY_BITS_ACCEPTED = (2048, 3072)
_MIN_TOY_BITS = 16


def _check_key_bits(key_bits: int, allow_insecure: bool) -> None:
    if key_bits in KEY_BITS_ACCEPTED:
        return
    if allow_insecure and key_bits >= _MIN_TOY_BITS and key_bits % 2 == 0:
        return
    raise ConfigurationError(
        f"got {key_bits}; smaller even sizes only with allow_insecure=True (tests, demos)",
        field="key_bits",
        accepted=KEY_BITS_ACCEPTED,
    )


@dataclass(frozen=True, slots=True, eq=False)
class PaillierPublicKey:
    """``n``; derived: ``n^2``, ``key_id`` (16-byte SHA-256 fingerprint), byte sizes."""

    n: int
    n2: mpz = field(init=False, repr=False)
    nz: mpz = field(init=False, repr=False)
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        n = mpz(self.n)
        if n < 15 or n % 2 == 0:
            raise ConfigurationError("the modulus must be an odd integer >= 15", field="n")
        object.__setattr__(self, "nz", n)
        object.__setattr__(self, "n", int(n))
        object.__setattr__(self, "n2", n * n)
        nbytes = (n.bit_length() + 7) // 8
        digest = hashlib.sha256(label("privagg/paillier/public-key/v1", int(n).to_bytes(nbytes, "big"))).digest()
        object.__setattr__(self, "key_id", digest[:16])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PaillierPublicKey) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.key_id)

    @property
    def key_bits(self) -> int:
        return int(self.nz.bit_length())

    @property
    def plaintext_bits(self) -> int:
        """Every integer below ``2**plaintext_bits`` is a valid plaintext (``< n``)."""
        return self.key_bits - 1

    @property
    def ciphertext_bytes(self) -> int:
        return (int(self.n2.bit_length()) + 7) // 8

    def random_r(self, secrets: SecretSource = SYSTEM_SECRETS) -> mpz:
        """A uniform unit of ``Z*_n`` (the textbook randomness)."""
        while True:
            r = mpz(secret_below(secrets, self.n))
            if r > 0 and gmpy2.gcd(r, self.nz) == 1:
                return r

    def obfuscator(self, r: int) -> mpz:
        """``r^n mod n^2``: the expensive, data-independent part of an encryption."""
        return gmpy2.powmod(mpz(r), self.nz, self.n2)

    def encrypt_with(self, m: int, rn: int) -> mpz:
        """``(1 + m n) * rn mod n^2`` for a precomputed obfuscator ``rn = r^n``; ``0 <= m < n``."""
        if not 0 <= m < self.n:
            raise ConfigurationError("plaintext out of range [0, n)", field="plaintext")
        return (1 + mpz(m) * self.nz) * rn % self.n2

    def encrypt(self, m: int, *, r: int | None = None, secrets: SecretSource = SYSTEM_SECRETS) -> mpz:
        """Textbook encryption with fresh ``r`` (or the given ``r``, for known-answer tests)."""
        rr = self.random_r(secrets) if r is None else mpz(r)
        return self.encrypt_with(m, self.obfuscator(rr))

    def add(self, c1: int, c2: int) -> mpz:
        """Homomorphic addition of plaintexts: ``c1 c2 mod n^2``."""
        return mpz(c1) * mpz(c2) % self.n2

    def is_ciphertext(self, c: int) -> bool:
        """``c`` is in ``Z*_{n^2}``."""
        return 0 < c < self.n2 and gmpy2.gcd(mpz(c), self.nz) == 1


class PaillierPrivateKey:
    """``p, q`` with CRT decryption. The repr never shows the factors."""

    __slots__ = ("_hp", "_hq", "_p", "_p2", "_q", "_q2", "_qinv", "public_key")

    def __init__(self, p: int, q: int) -> None:
        p, q = mpz(p), mpz(q)
        if p == q or not (gmpy2.is_prime(p) and gmpy2.is_prime(q)):
            raise ConfigurationError("p and q must be distinct primes", field="p, q")
        n = p * q
        if gmpy2.gcd(n, (p - 1) * (q - 1)) != 1:
            raise ConfigurationError("gcd(n, phi(n)) must be 1", field="p, q")
        self.public_key = PaillierPublicKey(int(n))
        self._p, self._q = p, q
        self._p2, self._q2 = p * p, q * q
        g = n + 1
        self._hp = gmpy2.invert((gmpy2.powmod(g, p - 1, self._p2) - 1) // p, p)
        self._hq = gmpy2.invert((gmpy2.powmod(g, q - 1, self._q2) - 1) // q, q)
        self._qinv = gmpy2.invert(q, p)

    @classmethod
    def from_primes(cls, p: int, q: int) -> PaillierPrivateKey:
        return cls(p, q)

    def decrypt(self, c: int) -> mpz:
        """CRT decryption: two half-size exponentiations mod ``p^2`` and ``q^2``."""
        c = mpz(c)
        p, q = self._p, self._q
        mp = (gmpy2.powmod(c % self._p2, p - 1, self._p2) - 1) // p * self._hp % p
        mq = (gmpy2.powmod(c % self._q2, q - 1, self._q2) - 1) // q * self._hq % q
        return mq + q * ((mp - mq) * self._qinv % p)

    def __repr__(self) -> str:
        return f"PaillierPrivateKey(<secret>, key_bits={self.public_key.key_bits})"


def generate_keypair(
    key_bits: int = 2048, *, secrets: SecretSource = SYSTEM_SECRETS, allow_insecure: bool = False
) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A fresh key pair with ``n`` of exactly ``key_bits`` bits (random primes, no safe-prime need)."""
    _check_key_bits(key_bits, allow_insecure)
    while True:
        p = random_prime(key_bits // 2, secrets)
        q = random_prime(key_bits // 2, secrets)
        if p == q or (p * q).bit_length() != key_bits:
            continue
        try:
            sk = PaillierPrivateKey(p, q)
        except ConfigurationError:
            continue
        return sk.public_key, sk


@dataclass(frozen=True, slots=True)
class ThresholdPublicKey:
    """The public part of a threshold key: ``n``, ``k`` decryptors, threshold ``t``, ``Δ = k!``."""

    public_key: PaillierPublicKey
    decryptors: int
    threshold: int
    verification_base: int = 0
    verification_keys: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.verification_keys and len(self.verification_keys) != self.decryptors:
            raise ConfigurationError("one verification key per decryptor", field="verification_keys")
        if not 1 <= self.threshold <= self.decryptors <= 255:
            raise ConfigurationError(
                f"need 1 <= threshold <= decryptors <= 255, got t={self.threshold}, k={self.decryptors}",
                field="threshold",
            )

    @property
    def delta(self) -> int:
        return math.factorial(self.decryptors)

    @property
    def has_proofs(self) -> bool:
        """Whether partial decryptions carry (and must carry) proofs of correctness."""
        return bool(self.verification_keys)

    def verify_partials(
        self, index: int, ciphertexts: Sequence[int], partials: Sequence[int], proof: bytes, *, context: bytes
    ) -> bool:
        """Check decryptor ``index``'s batch proof that ``partials[j] = ciphertexts[j]^(2 Δ s_i)`` for all ``j``."""
        if not self.has_proofs or not 1 <= index <= self.decryptors or len(ciphertexts) != len(partials):
            return False
        pk = self.public_key
        n2 = pk.n2
        zbytes = _proof_z_bytes(self)
        if len(proof) != _CHALLENGE_BYTES + zbytes or not ciphertexts:
            return False
        e = mpz(int.from_bytes(proof[:_CHALLENGE_BYTES], "big"))
        z = mpz(int.from_bytes(proof[_CHALLENGE_BYTES:], "big"))
        try:
            big_c, big_ci = _batch(self, index, ciphertexts, partials, context)
            c4 = gmpy2.powmod(big_c, 4, n2)
            ci2 = gmpy2.powmod(big_ci, 2, n2)
            vi = mpz(self.verification_keys[index - 1])
            a = gmpy2.powmod(c4, z, n2) * gmpy2.powmod(ci2, -e, n2) % n2
            b = _v_powers(self).power(z) * gmpy2.powmod(vi, -e, n2) % n2
        except (ValueError, ZeroDivisionError):
            return False
        return e == _challenge(self, context, index, c4, ci2, a, b)

    def combine(self, partials: Mapping[int, Sequence[int]]) -> list[mpz]:
        """Plaintexts from partial decryptions ``{decryptor index: [c_i per ciphertext]}``.

        Uses the ``t`` smallest indices given; raises :class:`ProtocolAbort` with fewer than ``t``.
        """
        idx = sorted(i for i in partials if 1 <= i <= self.decryptors)
        if len(idx) < self.threshold:
            raise ProtocolAbort(
                f"threshold decryption needs {self.threshold} distinct partial decryptions, got {len(idx)}",
                stage="combine",
            )
        use = idx[: self.threshold]
        lengths = {len(partials[i]) for i in use}
        if len(lengths) != 1:
            raise ProtocolAbort("partial decryptions cover different numbers of ciphertexts", stage="combine")
        delta = self.delta
        mus: dict[int, int] = {}
        for i in use:
            num, den = delta, 1
            for j in use:
                if j != i:
                    num *= j
                    den *= j - i
            if num % den:
                raise AssertionError("Lagrange coefficient times k! must be an integer")
            mus[i] = 2 * (num // den)
        n = self.public_key.nz
        n2 = self.public_key.n2
        inv = gmpy2.invert(4 * mpz(delta) ** 2, n)
        out: list[mpz] = []
        for pos in range(lengths.pop()):
            acc = mpz(1)
            for i in use:
                acc = acc * gmpy2.powmod(mpz(partials[i][pos]), mus[i], n2) % n2
            if acc % n != 1:
                raise ProtocolAbort("partial decryptions do not combine to a valid plaintext", stage="combine")
            out.append((acc - 1) // n * inv % n)
        return out


_CHALLENGE_BYTES = 32
_STAT_BITS = 128


def _proof_r_bits(tk: ThresholdPublicKey) -> int:
    # r hides e * Δ s_i (Δ s_i < Δ n m < Δ n^2) statistically
    return int(tk.public_key.n2.bit_length()) + tk.delta.bit_length() + 8 * _CHALLENGE_BYTES + _STAT_BITS


def _proof_z_bytes(tk: ThresholdPublicKey) -> int:
    return (_proof_r_bits(tk) + 1 + 7) // 8 + 1


def _v_powers(tk: ThresholdPublicKey) -> FixedBasePowers:
    """The verification base's powers (memoised per key): ``v^r`` / ``v^z`` at a fifth of a ``powmod``."""
    return fixed_base_powers(mpz(tk.verification_base), tk.public_key.n2, _proof_r_bits(tk) + 1)


def _fixed(x: int, tk: ThresholdPublicKey) -> bytes:
    return (x if type(x) is mpz else mpz(x)).to_bytes(tk.public_key.ciphertext_bytes, "big")


def _batch(
    tk: ThresholdPublicKey, index: int, ciphertexts: Sequence[int], partials: Sequence[int], context: bytes
) -> tuple[mpz, mpz]:
    """Random-linear-combination batch (Bellare–Garay–Rabin small exponents, Fiat–Shamir weights)."""
    h = hashlib.sha256(label("privagg/paillier/batch/v1", context, index))
    for c in ciphertexts:
        h.update(_fixed(c, tk))
    for c in partials:
        h.update(_fixed(c, tk))
    weights = prg_bytes(h.digest(), info=b"privagg/paillier/batch-weights/v1", nbytes=16 * len(ciphertexts))
    n2 = tk.public_key.n2
    rhos = [int.from_bytes(weights[16 * j : 16 * j + 16], "big") for j in range(len(ciphertexts))]
    # one multi-exponentiation each (shared squarings): the same products as one powmod per element
    big_c = multi_pow([mpz(c) for c in ciphertexts], rhos, n2)
    big_ci = multi_pow([mpz(ci) for ci in partials], rhos, n2)
    return big_c, big_ci


def _challenge(tk: ThresholdPublicKey, context: bytes, index: int, c4: mpz, ci2: mpz, a: mpz, b: mpz) -> mpz:
    parts = [tk.verification_base, c4, tk.verification_keys[index - 1], ci2, a, b]
    digest = hashlib.sha256(
        label("privagg/paillier/partial-proof/v1", context, index, *(_fixed(x, tk) for x in parts))
    ).digest()
    return mpz(int.from_bytes(digest, "big"))


_SHARE_MAGIC = b"PGKS"
_SHARE_VERSION = 1
_SHARE_HEADER = struct.Struct(">4sBBBB16s")


class ThresholdKeyShare:
    """Decryptor ``index``'s share ``s_i`` of ``d`` (held as the exponent ``2 Δ s_i``). Secret.

    :meth:`to_bytes` / :meth:`from_bytes` store it (e.g. in a file only the decryptor can read)::

        magic "PGKS" | version u8 | index u8 | threshold u8 | decryptors u8 | key_id 16 B | s_i (n^2 bytes)
    """

    __slots__ = ("_ds", "_exp", "_share", "index", "threshold_key")

    def __init__(self, *, threshold_key: ThresholdPublicKey, index: int, share: int) -> None:
        if not 1 <= index <= threshold_key.decryptors:
            raise ConfigurationError(f"index {index} out of range", field="index")
        if not 0 <= share < threshold_key.public_key.n2:
            raise ConfigurationError("the share is out of range (not a share of this key)", field="share")
        self.threshold_key = threshold_key
        self.index = index
        self._share = mpz(share)
        self._ds = threshold_key.delta * self._share
        self._exp = 2 * self._ds

    def to_bytes(self) -> bytes:
        """The versioned, fixed-length encoding of this share (secret: store it like a private key)."""
        tk = self.threshold_key
        pk = tk.public_key
        head = _SHARE_HEADER.pack(_SHARE_MAGIC, _SHARE_VERSION, self.index, tk.threshold, tk.decryptors, pk.key_id)
        return head + int(self._share).to_bytes(pk.ciphertext_bytes, "big")

    @classmethod
    def from_bytes(cls, data: bytes, *, threshold_key: ThresholdPublicKey) -> ThresholdKeyShare:
        """Parse :meth:`to_bytes` output for ``threshold_key``; anything else raises :class:`InvalidMessage`.

        Checks the length (exact), magic, version, key id, threshold and decryptor count, the
        index and the share's range; with verification keys, also that ``v^(Δ s_i) = v_i`` (the
        share is the one dealt to this index). Errors never contain the share.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidMessage("a key share must be bytes", stage="load-key-share")
        raw = bytes(data)
        pk = threshold_key.public_key
        if len(raw) != _SHARE_HEADER.size + pk.ciphertext_bytes:
            raise InvalidMessage(
                f"a key share for this key is {_SHARE_HEADER.size + pk.ciphertext_bytes} bytes, got {len(raw)}",
                stage="load-key-share",
            )
        magic, version, index, t, k, key_id = _SHARE_HEADER.unpack(raw[: _SHARE_HEADER.size])
        if magic != _SHARE_MAGIC:
            raise InvalidMessage("not a privagg threshold key share (bad magic)", stage="load-key-share")
        if version != _SHARE_VERSION:
            raise InvalidMessage(
                f"unsupported key share version {version} (supported: {_SHARE_VERSION})", stage="load-key-share"
            )
        if key_id != pk.key_id:
            raise InvalidMessage("the key share is for a different key (key id mismatch)", stage="load-key-share")
        if (t, k) != (threshold_key.threshold, threshold_key.decryptors):
            raise InvalidMessage(
                f"the key share is for a {t}-of-{k} key, expected "
                f"{threshold_key.threshold}-of-{threshold_key.decryptors}",
                stage="load-key-share",
            )
        if not 1 <= index <= k:
            raise InvalidMessage(f"key share index {index} out of range 1..{k}", stage="load-key-share")
        share = mpz(int.from_bytes(raw[_SHARE_HEADER.size :], "big"))
        if share >= pk.n2:
            raise InvalidMessage("the key share is out of range", stage="load-key-share")
        if threshold_key.has_proofs:
            expect = mpz(threshold_key.verification_keys[index - 1])
            got = gmpy2.powmod(mpz(threshold_key.verification_base), threshold_key.delta * share, pk.n2)
            if got != expect:
                raise InvalidMessage(
                    f"the key share does not match decryptor {index}'s verification key", stage="load-key-share"
                )
        return cls(threshold_key=threshold_key, index=index, share=int(share))

    @property
    def public_key(self) -> PaillierPublicKey:
        return self.threshold_key.public_key

    def partial_decrypt(self, c: int) -> mpz:
        """``c^{2 Δ s_i} mod n^2``."""
        return gmpy2.powmod(mpz(c), self._exp, self.public_key.n2)

    def prove_partials(
        self,
        ciphertexts: Sequence[int],
        partials: Sequence[int],
        *,
        context: bytes,
        secrets: SecretSource = SYSTEM_SECRETS,
    ) -> bytes:
        """A non-interactive proof that every partial is ``c^(2 Δ s_i)`` (equal discrete logs).

        The partials are batched into ``C_i = prod partial_j^rho_j`` and ``C = prod c_j^rho_j``;
        a Chaum–Pedersen proof (Fiat–Shamir) shows ``log_{C^4} C_i^2 = log_v v_i = Δ s_i``, as in
        Shoup / Damgård–Jurik. Empty if the key was dealt without verification keys.
        """
        tk = self.threshold_key
        if not tk.has_proofs:
            return b""
        n2 = tk.public_key.n2
        big_c, big_ci = _batch(tk, self.index, ciphertexts, partials, context)
        c4 = gmpy2.powmod(big_c, 4, n2)
        ci2 = gmpy2.powmod(big_ci, 2, n2)
        r = mpz(secret_below(secrets, 1 << _proof_r_bits(tk)))
        a = gmpy2.powmod(c4, r, n2)
        b = _v_powers(tk).power(r)  # = v^r (variable-time, like the powmod above)
        e = _challenge(tk, context, self.index, c4, ci2, a, b)
        z = r + e * self._ds
        return int(e).to_bytes(_CHALLENGE_BYTES, "big") + int(z).to_bytes(_proof_z_bytes(tk), "big")

    def __repr__(self) -> str:
        tk = self.threshold_key
        return f"ThresholdKeyShare(index={self.index}, t={tk.threshold}, k={tk.decryptors}, <secret>)"


def deal_threshold_key(
    p: int,
    q: int,
    *,
    decryptors: int,
    threshold: int,
    secrets: SecretSource = SYSTEM_SECRETS,
    proofs: bool = True,
) -> tuple[ThresholdPublicKey, list[ThresholdKeyShare]]:
    """The trusted dealer: share ``d`` for ``n = p q`` (safe primes) among ``decryptors``.

    ``proofs=True`` also publishes verification keys, so partial decryptions carry proofs.
    """
    p, q = mpz(p), mpz(q)
    pp, qq = (p - 1) // 2, (q - 1) // 2
    if p == q or not all(gmpy2.is_prime(x) for x in (p, q, pp, qq)):
        raise ConfigurationError("threshold keys need two distinct safe primes", field="p, q")
    n = p * q
    m = pp * qq
    if gmpy2.gcd(m, n) != 1:
        raise ConfigurationError("gcd(p'q', n) must be 1", field="p, q")
    pk = PaillierPublicKey(int(n))
    bare = ThresholdPublicKey(pk, decryptors, threshold)
    nm = n * m
    d = m * gmpy2.invert(m, n)  # d = 0 mod m, d = 1 mod n
    coeffs = [d] + [mpz(secret_below(secrets, int(nm))) for _ in range(threshold - 1)]
    raw_shares = []
    for i in range(1, decryptors + 1):
        s = mpz(0)
        for a in reversed(coeffs):
            s = (s * i + a) % nm
        raw_shares.append(s)
    if not proofs:
        return bare, [
            ThresholdKeyShare(threshold_key=bare, index=i + 1, share=int(s)) for i, s in enumerate(raw_shares)
        ]
    # verification keys: v a random square of Z*_{n^2} (a generator of the squares w.h.p.), v_i = v^(Δ s_i)
    n2 = n * n
    while True:
        u = mpz(secret_below(secrets, int(n2)))
        if u > 1 and gmpy2.gcd(u, n) == 1:
            break
    v = u * u % n2
    delta = bare.delta
    vks = tuple(int(gmpy2.powmod(v, delta * s, n2)) for s in raw_shares)
    tk = ThresholdPublicKey(pk, decryptors, threshold, verification_base=int(v), verification_keys=vks)
    return tk, [ThresholdKeyShare(threshold_key=tk, index=i + 1, share=int(s)) for i, s in enumerate(raw_shares)]


def generate_threshold_key(
    key_bits: int = 2048,
    *,
    decryptors: int,
    threshold: int,
    secrets: SecretSource = SYSTEM_SECRETS,
    allow_insecure: bool = False,
    proofs: bool = True,
) -> tuple[ThresholdPublicKey, list[ThresholdKeyShare]]:
    """Trusted-dealer threshold key generation (two safe primes of ``key_bits / 2`` bits)."""
    _check_key_bits(key_bits, allow_insecure)
    if not 1 <= threshold <= decryptors <= 255:
        raise ConfigurationError(
            f"need 1 <= threshold <= decryptors <= 255, got t={threshold}, k={decryptors}", field="threshold"
        )
    while True:
        p = random_safe_prime(key_bits // 2, secrets)
        q = random_safe_prime(key_bits // 2, secrets)
        if p == q or (p * q).bit_length() != key_bits:
            continue
        return deal_threshold_key(p, q, decryptors=decryptors, threshold=threshold, secrets=secrets, proofs=proofs)
