"""Vectorised t-of-n Shamir secret sharing over GF(p), p = 2**31 - 1.

A secret of ``B`` bytes (``B`` even) is split into ``B/2`` 16-bit limbs; every limb is a
field element shared with its own random polynomial of degree ``t-1`` (independent
coefficients, so each limb is perfectly hidden from ``t-1`` shares). Polynomials of all
limbs and all secrets are evaluated at all holders at once with numpy (Horner's rule in
``uint64``: products of two 31-bit values fit). A holder's share of a secret is ``B/2``
field elements, 4 bytes each on the wire.

Integrity is layered on top by the protocol (hash commitments to every share, and a
commitment to every secret), so a wrong share is detected and attributed; here,
:func:`reconstruct_bytes` refuses limbs outside 16 bits (a cheap corruption check).
"""

from __future__ import annotations

import numpy as np

from privagg.errors import VerificationError
from privagg.randomness import SecretSource

__all__ = [
    "PRIME",
    "random_field_elements",
    "share",
    "random_polynomials",
    "evaluate",
    "matmul_mod",
    "vandermonde",
    "interpolate",
    "reconstruct",
    "share_bytes",
    "reconstruct_bytes",
    "lagrange_at_zero",
    "lagrange_at_zero_batch",
    "reconstruct_batch",
    "is_share",
]

PRIME = (1 << 31) - 1
_P = np.uint64(PRIME)


def random_field_elements(source: SecretSource, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform elements of GF(p) (rejection sampling on 31-bit words, no bias)."""
    count = int(np.prod(shape)) if shape else 1
    out = np.frombuffer(source.token_bytes(4 * count), dtype="<u4").astype(np.uint64) & np.uint64(0x7FFFFFFF)
    bad = np.flatnonzero(out == _P)
    while bad.size:
        fresh = np.frombuffer(source.token_bytes(4 * bad.size), dtype="<u4").astype(np.uint64) & np.uint64(0x7FFFFFFF)
        out[bad] = fresh
        bad = bad[fresh == _P]
    return out.reshape(shape)


def _check_xs(xs: np.ndarray) -> np.ndarray:
    x = np.asarray(xs, dtype=np.uint64).ravel()
    if x.size == 0 or np.any(x == 0) or np.any(x >= _P) or np.unique(x).size != x.size:
        raise ValueError("evaluation points must be distinct and in 1..p-1")
    return x


def share(secrets: np.ndarray, *, xs: np.ndarray, threshold: int, source: SecretSource) -> np.ndarray:
    """Shares of field elements ``secrets`` (any shape ``S``) at points ``xs`` -> shape ``(len(xs), *S)``."""
    s = np.asarray(secrets, dtype=np.uint64)
    if np.any(s >= _P):
        raise ValueError("secrets must be field elements")
    x = _check_xs(xs)
    if not 1 <= threshold <= x.size:
        raise ValueError("threshold must be between 1 and the number of holders")
    coeffs = random_field_elements(source, (threshold - 1, *s.shape)) if threshold > 1 else None
    xb = x.reshape((-1,) + (1,) * s.ndim)
    acc = np.zeros((x.size, *s.shape), dtype=np.uint64)
    if coeffs is not None:
        acc[...] = coeffs[threshold - 2]
        for j in range(threshold - 3, -1, -1):
            acc *= xb
            acc += coeffs[j]
            acc %= _P
        acc *= xb
        acc %= _P
    acc += s
    acc %= _P
    return acc


def random_polynomials(constants: np.ndarray, *, threshold: int, source: SecretSource) -> np.ndarray:
    """Coefficients ``(threshold, *S)`` of random polynomials of degree ``threshold - 1`` whose
    constant terms are ``constants`` (field elements of any shape ``S``)."""
    c = np.asarray(constants, dtype=np.uint64)
    if np.any(c >= _P):
        raise ValueError("secrets must be field elements")
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    rest = random_field_elements(source, (threshold - 1, *c.shape)) if threshold > 1 else None
    return c[None] if rest is None else np.concatenate([c[None], rest])


def evaluate(coeffs: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The polynomials ``coeffs`` (shape ``(t, *S)``, lowest degree first) at ``xs`` -> ``(len(xs), *S)``.

    One exact matrix product mod p (:func:`matmul_mod`): the Vandermonde rows of ``xs`` times the
    coefficients."""
    co = np.asarray(coeffs, dtype=np.uint64)
    x = np.asarray(xs, dtype=np.uint64).ravel() % _P
    t = co.shape[0]
    if t <= 16 or t > _MATMUL_MAX_TERMS:  # few terms: Horner's numpy calls cost less than the product
        return _evaluate_horner(co, x)
    return matmul_mod(vandermonde(x, t), co.reshape(t, -1)).reshape((x.size, *co.shape[1:]))


def vandermonde(xs: np.ndarray, t: int) -> np.ndarray:
    """``x**j mod p`` for ``j < t``: shape ``(len(xs), t)``, in O(sqrt t) numpy steps (baby steps
    ``x**r``, giant steps ``x**(k i)``, one broadcast product)."""
    x = np.asarray(xs, dtype=np.uint64).ravel() % _P
    k = max(1, int(np.ceil(np.sqrt(t))))
    baby = np.empty((x.size, k), dtype=np.uint64)
    baby[:, 0] = 1
    for r in range(1, k):
        baby[:, r] = baby[:, r - 1] * x % _P
    step = baby[:, k - 1] * x % _P  # x**k
    giants = -(-t // k)
    giant = np.empty((x.size, giants), dtype=np.uint64)
    giant[:, 0] = 1
    for i in range(1, giants):
        giant[:, i] = giant[:, i - 1] * step % _P
    full = giant[:, :, None] * baby[:, None, :] % _P  # x**(k i + r)
    return full.reshape(x.size, giants * k)[:, :t]


#: float64 products are exact below 2**53: a (< 2**31) times an 11-bit limb of b, summed over t <= 2**11 terms
_MATMUL_MAX_TERMS = 1 << 11


def matmul_mod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b mod p`` for field-element matrices ``a`` ``(m, t)`` and ``b`` ``(t, k)``, ``t <= 2**11``.

    Exact: ``b`` is split in 11-bit limbs, and each limb's product is a float64 matrix product whose
    every partial sum is an integer below 2**53 (BLAS speed, no rounding)."""
    if a.shape[1] > _MATMUL_MAX_TERMS:
        raise ValueError(f"at most {_MATMUL_MAX_TERMS} terms")
    af = a.astype(np.float64)
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.uint64)
    for shift in (22, 11, 0):  # Horner over the limbs: out = out * 2**11 + a @ limb
        limb = ((b >> np.uint64(shift)) & np.uint64(0x7FF)).astype(np.float64)
        part = (af @ limb).astype(np.uint64)
        out <<= np.uint64(11)  # out < p: < 2**42
        out += part % _P
        out %= _P
    return out


def _evaluate_horner(co: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Reference evaluation (Horner's rule, one reduction per step)."""
    xb = x.reshape((-1,) + (1,) * (co.ndim - 1))
    acc = np.zeros((x.size, *co.shape[1:]), dtype=np.uint64)
    acc[...] = co[-1]
    for j in range(co.shape[0] - 2, -1, -1):  # products of two 31-bit values fit in 64 bits
        acc *= xb
        acc += co[j]
        acc %= _P
    return acc


def interpolate(xs: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Coefficients ``(len(xs), *S)`` of the polynomials of degree ``< len(xs)`` through ``values``
    (shape ``(len(xs), *S)``) at ``xs``: the inverse of :func:`evaluate` (O(t^2), for checks and tests)."""
    x = [int(v) for v in _check_xs(xs)]
    vals = np.asarray(values, dtype=np.uint64)
    out = np.zeros_like(vals)
    for i, xi in enumerate(x):
        basis, den = [1], 1  # prod_{j != i} (X - x_j), lowest degree first
        for j, xj in enumerate(x):
            if j != i:
                basis = [
                    ((basis[k - 1] if k else 0) - xj * (basis[k] if k < len(basis) else 0)) % PRIME
                    for k in range(len(basis) + 1)
                ]
                den = den * (xi - xj) % PRIME
        inv = pow(den, PRIME - 2, PRIME)
        for k, b in enumerate(basis):
            out[k] = (out[k] + vals[i] * np.uint64(b * inv % PRIME)) % _P
    return out


def lagrange_at_zero(xs: np.ndarray) -> np.ndarray:
    """Lagrange coefficients ``l_i`` with ``f(0) = sum l_i f(x_i)`` (mod p)."""
    x = [int(v) for v in _check_xs(xs)]
    out = []
    for i, xi in enumerate(x):
        num, den = 1, 1
        for j, xj in enumerate(x):
            if j != i:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        out.append(num * pow(den, PRIME - 2, PRIME) % PRIME)
    return np.array(out, dtype=np.uint64)


def _mulmod(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a * b mod p`` for field elements (``uint64``: the product of two 31-bit values fits)."""
    out = np.multiply(a, b, out=out)
    return np.remainder(out, _P, out=out)


def _inverse(a: np.ndarray) -> np.ndarray:
    """``a**(p-2) mod p`` elementwise (Fermat; ``a`` nonzero field elements), square and multiply."""
    result = np.ones_like(a)
    base = a.copy()
    e = PRIME - 2
    while e:
        if e & 1:
            _mulmod(result, base, out=result)
        _mulmod(base, base, out=base)
        e >>= 1
    return result


def lagrange_at_zero_batch(xs: np.ndarray) -> np.ndarray:
    """:func:`lagrange_at_zero` of many point sets at once: ``xs`` of shape ``(B, t)`` (each row distinct
    points in ``1..p-1``) -> coefficients ``(B, t)``, ``f(0) = sum_i l[b, i] f(xs[b, i])`` for every row."""
    x = np.asarray(xs, dtype=np.uint64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError("evaluation points must be a (batch, threshold) array")
    if np.any(x == 0) or np.any(x >= _P):
        raise ValueError("evaluation points must be distinct and in 1..p-1")
    srt = np.sort(x, axis=1)
    if np.any(srt[:, 1:] == srt[:, :-1]):
        raise ValueError("evaluation points must be distinct and in 1..p-1")
    b, t = x.shape
    num = np.ones((b, t), dtype=np.uint64)  # prod_{j != i} x_j
    den = np.ones((b, t), dtype=np.uint64)  # prod_{j != i} (x_j - x_i)
    diff = np.empty((b, t), dtype=np.uint64)
    for j in range(t):
        xj = x[:, j : j + 1]
        np.subtract(xj + _P, x, out=diff)  # x_j - x_i + p, in 1..2p-1 (0 only at i = j)
        np.remainder(diff, _P, out=diff)
        diff[:, j] = 1
        _mulmod(den, diff, out=den)
        factor = np.broadcast_to(xj, (b, t)).copy()
        factor[:, j] = 1
        _mulmod(num, factor, out=num)
    return _mulmod(num, _inverse(den))


def reconstruct_batch(shares: np.ndarray, *, xs: np.ndarray) -> np.ndarray:
    """:func:`reconstruct` of ``B`` independent sharings at once: ``shares`` ``(B, t, *S)`` taken at the
    points ``xs`` ``(B, t)`` (each row its own holders) -> secrets ``(B, *S)``."""
    sh = np.asarray(shares, dtype=np.uint64)
    lam = lagrange_at_zero_batch(xs)
    if sh.shape[:2] != lam.shape:
        raise ValueError("one share per evaluation point")
    if np.any(sh >= _P):
        raise ValueError("shares must be field elements")
    lam = lam.reshape(lam.shape + (1,) * (sh.ndim - 2))
    # each term is < p; a sum of t < 2**32 of them fits in 64 bits
    return np.remainder(np.remainder(sh * lam, _P).sum(axis=1, dtype=np.uint64), _P)


def reconstruct(shares: np.ndarray, *, xs: np.ndarray) -> np.ndarray:
    """Interpolate at 0 from ``len(xs)`` shares (shape ``(len(xs), *S)``) -> secrets of shape ``S``."""
    sh = np.asarray(shares, dtype=np.uint64)
    lam = lagrange_at_zero(xs)
    if sh.shape[0] != lam.size:
        raise ValueError("one share per evaluation point")
    if np.any(sh >= _P):
        raise ValueError("shares must be field elements")
    acc = np.zeros(sh.shape[1:], dtype=np.uint64)
    for li, si in zip(lam, sh):
        acc += (si * li) % _P
        acc %= _P
    return acc


def is_share(data: bytes, size: int) -> bool:
    """Whether ``data`` is one holder's share on the wire: ``size`` bytes of little-endian 32-bit field
    elements (each ``< p``)."""
    if not isinstance(data, bytes) or len(data) != size or size % 4:
        return False
    return not bool(np.any(np.frombuffer(data, dtype="<u4") >= PRIME))


def share_bytes(secrets: list[bytes], *, xs: np.ndarray, threshold: int, source: SecretSource) -> np.ndarray:
    """Share equal-length byte strings (even length) -> ``uint64`` array ``(len(xs), len(secrets), len/2)``."""
    if not secrets or len({len(s) for s in secrets}) != 1 or len(secrets[0]) % 2:
        raise ValueError("secrets must be non-empty byte strings of one even length")
    limbs = np.stack([np.frombuffer(s, dtype="<u2").astype(np.uint64) for s in secrets])
    return share(limbs, xs=xs, threshold=threshold, source=source)


def reconstruct_bytes(shares: np.ndarray, *, xs: np.ndarray) -> list[bytes]:
    """Inverse of :func:`share_bytes` from any ``threshold`` holders' shares.

    Raises :class:`VerificationError` if a share is not made of field elements (``< p``: untrusted
    bytes) or a limb is not a 16-bit value (inconsistent shares).
    """
    if np.any(np.asarray(shares, dtype=np.uint64) >= _P):
        raise VerificationError()
    limbs = reconstruct(shares, xs=xs)
    if np.any(limbs >> np.uint64(16)):
        raise VerificationError()
    flat = limbs.reshape(limbs.shape[0], -1) if limbs.ndim > 1 else limbs.reshape(1, -1)
    return [row.astype("<u2").tobytes() for row in flat]
