"""The discrete Gaussian in integer arithmetic only (Canonne, Kamath, Steinke 2020), vectorised.

Every random decision is a comparison of uniform *integers* against integers: no ``exp``, no
floating-point probability anywhere. The parameters are made exactly representable first:

* ``sigma`` is rounded *up* to ``sigma' = m * 2**b`` with ``m < 2**26`` (relative increase below
  ``2**-25``: more noise, never less), so ``sigma'^2 = m^2 * 2**(2b)`` is an exact rational;
* the discrete Laplace proposal has scale ``t = 2**j >= sigma'`` (any ``t > 0`` is correct in
  CKS's Algorithm 3; a power of two makes ``U / t`` dyadic), acceptance ``>= ~0.55``;
* the rejection probability ``exp(-gamma)``, ``gamma = (|Y| - sigma'^2/t)^2 / (2 sigma'^2)``, is
  written ``gamma = (q + r/m)^2 / 2**c`` with integers ``q, r < m`` and split into three exact
  rationals ``q^2 / 2**c + 2qr / (m 2**c) + r^2 / (m^2 2**c)``; ``Bernoulli(exp(-gamma))`` is the
  AND of independent ``Bernoulli(exp(-1))`` (for the integer part) and ``Bernoulli(exp(-x))``
  with ``x`` in ``[0, 1]`` (CKS Algorithm 1: ``Bernoulli(x / k) = Bernoulli(x) AND Bernoulli(1/k)``),
  each an exact comparison of uniform integers (``Bernoulli(P / (M 2**c))`` draws a uniform
  ``U_hi`` below ``M`` by rejection and ``c`` uniform bits ``U_lo``).

Exactness has one stated limit: proposals with ``|Y|`` beyond the point where the 64-bit
products would overflow are rejected outright. That cut sits at about ``40 sigma'`` for
``sigma >= 0.5`` (the exact algorithm accepts such proposals with probability below
``exp(-800)``) and never below ``10 sigma'`` (``exp(-50)``): smaller sigmas, whose cut would be
closer, are refused with a ``ValueError`` (use a coarser grid). Within that bound the output
differs from the exact discrete Gaussian of variance ``sigma'^2`` by less than that
probability in total variation.

Timing: the number of passes (and of random-stream calls) grows with the largest proposal in
the batch (the geometric part of the proposal and the integer part of ``gamma``); it never
depends on the input the noise is added to. This sampler uses no floating point at all; the
default sampler (:mod:`dp.certified`, exact under one stated assumption on numpy's ``log`` and
``exp``) is about 20x faster (see ``privagg bench dp --exact``).
"""

from __future__ import annotations

import math

import numpy as np

from dp.noise import SecureNoise, WordSource

__all__ = ["ExactSecureNoise", "exact_parameters", "gamma_parts", "discrete_gaussian_exact"]

_ONE = np.uint64(1)
_MAX_A_BITS = 57  # |N'| < 2**57 with m >= 2**25 keeps q < 2**32, q^2 < 2**64 and 2 q r < 2**59


def _below(words: WordSource, bound: int, n: int) -> np.ndarray:
    """``n`` uniform integers in ``[0, bound)``, ``1 <= bound < 2**63`` (masked words, rejection: exact)."""
    mask = np.uint64((1 << (bound - 1).bit_length()) - 1)
    out = np.empty(n, dtype=np.uint64)
    idx = np.arange(n)
    while idx.size:
        w = words(idx.size) & mask
        ok = w < np.uint64(bound)
        out[idx[ok]] = w[ok]
        idx = idx[~ok]
    return out


def _bern_ratio(words: WordSource, p: np.ndarray, m: int, c: int) -> np.ndarray:
    """``Bernoulli(p / (m * 2**c))`` for each element: ``U < p`` with ``U = U_hi 2**c + U_lo`` uniform."""
    low = (_ONE << np.uint64(c)) - _ONE if c else np.uint64(0)
    u_hi = np.zeros(p.size, dtype=np.uint64) if m == 1 else _below(words, m, p.size)
    u_lo = words(p.size) & low if c else np.zeros(p.size, dtype=np.uint64)
    p_hi = p >> np.uint64(c)
    p_lo = p & low
    return (u_hi < p_hi) | ((u_hi == p_hi) & (u_lo < p_lo))


def _bern_exp_small(words: WordSource, p: np.ndarray, m: int, c: int) -> np.ndarray:
    """``Bernoulli(exp(-x))`` with ``x = p / (m 2**c)`` in ``[0, 1]`` (CKS Algorithm 1)."""
    out = np.empty(p.size, dtype=bool)
    idx = np.arange(p.size)
    k = 1
    while idx.size:
        go = _bern_ratio(words, p[idx], m, c)
        if k > 1:
            go &= _below(words, k, idx.size) == 0  # Bernoulli(1/k)
        out[idx[~go]] = k % 2 == 1
        idx = idx[go]
        k += 1
    return out


def _bern_exp_one(words: WordSource, n: int) -> np.ndarray:
    return _bern_exp_small(words, np.ones(n, dtype=np.uint64), 1, 0)


def _bern_exp_int(words: WordSource, count: np.ndarray) -> np.ndarray:
    """``Bernoulli(exp(-count_i))``: ``count_i`` independent ``Bernoulli(exp(-1))`` all succeed."""
    ok = np.ones(count.size, dtype=bool)
    idx = np.flatnonzero(count > 0)
    j = 0
    while idx.size:
        good = _bern_exp_one(words, idx.size)
        ok[idx[~good]] = False
        idx = idx[good]
        j += 1
        idx = idx[count[idx] > j]
    return ok


def _geometric(words: WordSource, n: int) -> np.ndarray:
    """Successes of ``Bernoulli(exp(-1))`` before the first failure."""
    v = np.zeros(n, dtype=np.uint64)
    idx = np.arange(n)
    while idx.size:
        idx = idx[_bern_exp_one(words, idx.size)]
        v[idx] += _ONE
    return v


def exact_parameters(sigma: float) -> tuple[int, int, int]:
    """``(m, b, j)``: ``sigma' = m 2**b >= sigma`` (``m < 2**26``) and the proposal scale ``t = 2**j``."""
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError("sigma must be finite and > 0")
    _, e = math.frexp(sigma)  # sigma = f 2**e, f in [0.5, 1)
    b = e - 26
    m = math.ceil(math.ldexp(sigma, -b))  # exact scaling, then round up: 2**25 <= m <= 2**26
    j = max(0, (m - 1).bit_length() + b)  # the smallest j >= 0 with 2**j >= m 2**b
    return m, b, j


def gamma_parts(x: np.ndarray, m: int, b: int, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``gamma = (x - sigma'^2/t)^2 / (2 sigma'^2)`` for ``x = |Y|`` as exact integers ``(F, p1, p2, p3)``:

    ``gamma = F + p1 / 2**c + p2 / (m 2**c) + p3 / (m^2 2**c)`` with ``c = 2j + 1 - 2b``,
    ``p1 < 2**c``, ``p2 < m 2**c``, ``p3 < m^2 2**c`` (each fraction in ``[0, 1)``).
    Needs ``x 2**(j - 2b) < 2**57`` (the caller rejects larger proposals).
    """
    shift, c = j - 2 * b, 2 * j + 1 - 2 * b
    m_sq = np.uint64(m * m)
    big = x.astype(np.uint64) << np.uint64(shift)
    a = np.where(big >= m_sq, big - m_sq, m_sq - big)  # |N'|, N' = x 2**shift - m^2
    q, r = a // np.uint64(m), a % np.uint64(m)
    q2 = q * q
    low = (_ONE << np.uint64(c)) - _ONE
    return q2 >> np.uint64(c), q2 & low, np.uint64(2) * q * r, r * r


def discrete_gaussian_exact(sigma: float, n: int, words: WordSource) -> np.ndarray:
    """``n`` draws of ``N_Z(0, sigma'^2)``, ``sigma' = m 2**b >= sigma`` (see the module docstring)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if sigma == 0 or n == 0:
        return np.zeros(n, dtype=np.int64)
    m, b, j = exact_parameters(sigma)
    shift = j - 2 * b  # N' = |Y| 2**shift - m^2 (an integer: shift >= 0 for the sigmas the grid allows)
    if shift < 0:
        raise ValueError("sigma too large for the exact sampler")
    c = 2 * j + 1 - 2 * b
    if c > 63:
        raise ValueError("sigma out of the exact sampler's range")
    t = 1 << j
    m_sq = m * m
    limit = (1 << _MAX_A_BITS) >> shift  # |Y| below this keeps every product inside 64 bits
    if limit < 10 * m * 2.0**b:  # the cut sits beyond 10 sigma' (mass < e^-50); at 0 nothing would be accepted
        raise ValueError(f"sigma {sigma:g} is too small for the exact sampler (use a coarser grid)")
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        k = int((n - filled) * 2.9) + 64  # overall acceptance ~0.4 (t in [sigma, 2 sigma))
        # discrete Laplace proposal of scale t (CKS Algorithm 2)
        u = words(k) & np.uint64(t - 1)
        u = u[_bern_exp_small(words, u, 1, j)]
        x = u + np.uint64(t) * _geometric(words, u.size)
        neg = (words(u.size) & _ONE).astype(bool)
        valid = ~(neg & (x == 0)) & (x < np.uint64(limit))
        x, neg = x[valid], neg[valid]
        # rejection: Bernoulli(exp(-gamma)) with gamma = F + p1 / 2**c + p2 / (m 2**c) + p3 / (m^2 2**c)
        f, p1, p2, p3 = gamma_parts(x, m, b, j)
        idx = np.flatnonzero(_bern_exp_int(words, f))  # each factor only where all before passed
        idx = idx[_bern_exp_small(words, p1[idx], 1, c)]
        idx = idx[_bern_exp_small(words, p2[idx], m, c)]
        idx = idx[_bern_exp_small(words, p3[idx], m_sq, c)]
        y = np.where(neg[idx], -(x[idx].astype(np.int64)), x[idx].astype(np.int64))
        take = min(y.size, n - filled)
        out[filled : filled + take] = y[:take]
        filled += take
    return out


class ExactSecureNoise(SecureNoise):
    """:class:`~dp.noise.SecureNoise` (AES-256-CTR keyed from the secret source) with the exact sampler.

    Draws ``N_Z(0, sigma'^2)`` with ``sigma' >= sigma`` (relative ``< 2**-25``) in integer
    arithmetic only; slower than the default certified sampler (``privagg bench dp --exact``).
    """

    exact = True

    def discrete_gaussian(self, sigma: float, size: int) -> np.ndarray:
        return discrete_gaussian_exact(sigma, size, self._words())

    def __repr__(self) -> str:
        return "ExactSecureNoise()"
