"""The exact discrete Gaussian at numpy speed: certified floating-point decisions, exact fallback.

The output is distributed *exactly* as ``N_Z(0, sigma^2)``, ``P(k) ∝ exp(-k^2 / (2 sigma^2))``
over the integers, for the float ``sigma`` given (a float is an exact dyadic rational), under
one stated assumption about the platform (below). The algorithm is Canonne, Kamath and
Steinke (2020), Algorithm 3, with the discrete Laplace proposal scale ``t = sigma`` (CKS allow
any ``t > 0``):

1. proposal magnitude ``X = floor(-t ln V)`` for a uniform real ``V`` in ``(0, 1)``, so
   ``P(X = k) = exp(-k/t) (1 - exp(-1/t))``; a sign bit, and ``(-, 0)`` rejected, give the
   discrete Laplace ``P(y) ∝ exp(-|y| / t)``;
2. acceptance iff a second uniform real ``W < exp(-gamma)``,
   ``gamma = (|y| - sigma^2/t)^2 / (2 sigma^2) = (|y|/sigma - 1)^2 / 2``.

Each uniform real is read lazily: its first 63 bits are the low bits of one 64-bit word of
the stream (the word's top bit is the proposal's sign). Both decisions are made in float64,
vectorised, and each is **certified**: it is taken only if it holds for *every* real in the
interval ``[w, w + 1) / 2**63`` the bits leave open, with a margin above the worst float error
(``_X_REL``, ``_X_DISC``, ``_P_ABS``). Anything not certified (about ``2**-23`` of the
proposals at ``sigma = 1e6``: usually none in a million) is decided exactly in
Python: the same uniform is extended by further stream words and compared with rigorous
bounds on ``exp(-q)`` for the rational ``q`` (``decimal``, whose ``exp`` and division are
correctly rounded), at increasing precision until the interval of the uniform lies on one
side. The output therefore depends only on the random bits, never on the float error.

**Assumption (stated, tested):** numpy's float64 ``log`` and ``exp`` are within 32 ulp of the
true value on this platform (``tests/dp/test_certified.py`` measures them against ``decimal``:
at most a few ulp); the margins are at least twice the worst error that allows (for ``exp``,
a hundred times). Under that assumption the sampler is exact like the integer-only
:mod:`dp.exact`; unlike the float-``exp`` sampler it replaces, no probability is rounded.
If the assumption failed, a certified decision could be wrong only for a proposal within
``~2**-45`` (relative) of a boundary: the output would still be on the integers.

Timing, truthfully: the vectorised passes (about 1.35 proposals per output, whole-array
operations in chunks of 65,536) run the same operations on every proposal whatever its value
(any data-dependent path inside numpy's ``log``/``exp`` sees the noise only); the number of
passes depends only on how many proposals were accepted. The exact fallback runs tens of
Python for a proposal that fell within the certification margin of a decision boundary, an
event of probability ``~2**-23`` that is a function of the noise (never of the input the
noise is added to). The margins widen with the float ulp of ``t ln V``: above
:data:`FAST_SIGMA_MAX` (``2**36`` grid units) :func:`discrete_gaussian` hands over to the
integer-only sampler of :mod:`dp.exact`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import MAX_EMAX, MIN_EMIN, ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

import numpy as np

__all__ = ["FAST_SIGMA_MAX", "LazyUniform", "WordSource", "discrete_gaussian", "discrete_laplace", "exp_neg_bounds"]

WordSource = Callable[[int], np.ndarray]

#: above this sigma (grid units) the float margins grow wide; the integer-only sampler takes over
FAST_SIGMA_MAX = 2.0**36
_TWO_M63 = 2.0**-63
_LOW63 = (1 << 63) - 1
# geometric: |x_hat - x| <= (x + t) 2**-46.9 + t 2**-62 / V with log within 32 ulp (_magnitudes)
_X_REL = 2.0**-45
_X_DISC = 2.0**-61
# acceptance: |p_hat - exp(-gamma)| + |W_hat - W| <= 2**-46.6 with exp within 32 ulp (_gaussian_pass)
_P_ABS = 2.0**-40
_CHUNK = 1 << 16  # proposals per vectorised pass (cache-sized temporaries)
SCALE_MIN = 2.0**-500


def _u64(words: np.ndarray) -> np.ndarray:
    """A word source's output as uint64 (refuses anything that is not 64-bit words)."""
    if words.dtype.itemsize != 8 or words.dtype.kind not in "ui":
        raise TypeError(f"a word source must return 64-bit integers, got {words.dtype}")
    return words.view(np.uint64)


def exp_neg_bounds(q: Fraction, digits: int) -> tuple[Fraction, Fraction]:
    """Rational ``lo <= exp(-q) <= hi`` for a rational ``q >= 0``, relative width ``~10**(3 - digits)``.

    ``decimal`` rounds ``q`` and ``exp`` correctly (half-even) at ``digits`` significant digits:
    ``|q~ - q| <= q 10**(1 - digits) / 2`` and ``|e - exp(-q~)| <= e 10**(1 - digits) / 2``, so
    ``exp(-q) = e * exp(q~ - q)`` lies within a relative ``(q + 2) 10**(2 - digits)`` of ``e``
    whenever that is below 1/2 (the caller's ``digits`` grows with ``q``).
    """
    if q < 0:
        raise ValueError("q must be >= 0")
    if q == 0:
        return Fraction(1), Fraction(1)
    with localcontext() as ctx:
        ctx.prec, ctx.rounding, ctx.Emin, ctx.Emax = digits, ROUND_HALF_EVEN, MIN_EMIN, MAX_EMAX
        e = (-(Decimal(q.numerator) / Decimal(q.denominator))).exp()
    r = (q + 2) * Fraction(10) ** (2 - digits)
    if r >= Fraction(1, 2):
        raise ValueError("not enough digits for this q")
    ef = Fraction(e)
    return ef * (1 - r), ef * (1 + r)


class LazyUniform:
    """A uniform real in ``[0, 1)`` known to its first ``bits`` bits; more words are drawn on demand."""

    __slots__ = ("_words", "bits", "num")

    def __init__(self, word: int, words: WordSource, *, bits: int = 63) -> None:
        self.num, self.bits, self._words = int(word), bits, words

    def _extend(self) -> None:
        self.num = (self.num << 64) | int(_u64(self._words(1))[0])
        self.bits += 64

    def below_exp_neg(self, q: Fraction) -> bool:
        """``U < exp(-q)`` decided exactly (ties have probability 0: ``exp(-q)`` is irrational for ``q != 0``)."""
        if q == 0:
            return True
        digits = 30 + len(str(q.numerator // q.denominator))
        while True:
            lo, hi = exp_neg_bounds(q, digits)
            scale = 1 << self.bits
            if self.num + 1 <= lo * scale:
                return True
            if self.num >= hi * scale:
                return False
            self._extend()
            digits += 20

    def estimate(self) -> float:
        """A float near the uniform (for a starting guess only)."""
        while self.num == 0:
            self._extend()
        return math.log(self.num + 0.5) - self.bits * math.log(2.0)


def _exact_geometric(word: int, t: Fraction, words: WordSource) -> int:
    """``floor(-t ln V)`` for the uniform ``V`` whose first 63 bits are ``word``, decided exactly."""
    v = LazyUniform(word, words)
    k = max(0, math.floor(-float(t) * v.estimate()))
    while True:  # X = k  iff  exp(-(k+1)/t) < V <= exp(-k/t)
        if not v.below_exp_neg(k / t):
            k -= 1  # never below 0: V < exp(0) = 1 always
        elif v.below_exp_neg((k + 1) / t):
            k += 1
        else:
            return k


def _exact_accept(word: int, x: int, sigma: Fraction, words: WordSource) -> bool:
    """``W < exp(-(x/sigma - 1)^2 / 2)`` for the uniform ``W`` whose first 63 bits are ``word``."""
    return LazyUniform(word, words).below_exp_neg((x / sigma - 1) ** 2 / 2)


def _magnitudes(t: float, low: np.ndarray, widen: float) -> tuple[np.ndarray, np.ndarray]:
    """``(k, ok)``: ``k = floor(-t ln V)`` as floats, ``ok`` where ``k`` is certified.

    ``low`` holds 63-bit integers; ``V`` lies in ``[low, low + 1) / 2**63``. Float error:
    ``V_hat`` is within a relative ``2**-53`` (conversion) plus ``2**-63 / V_hat`` (the open
    interval) of any such ``V``, so ``|ln V_hat - ln V| <= 2**-52 + 2**-62 / V_hat`` (where that
    exceeds 1/2 the margin exceeds 1 and nothing is certified); ``log`` adds at most 32 ulp
    (``2**-47 |ln V|``), the product one rounding: ``|x_hat - x| <= (x_hat + t) 2**-46.9 +
    t 2**-62 / V_hat``. The margin is ``(x_hat + t) 2**-45 + t 2**-61 / V_hat``; ``floor`` and
    ``x_hat - k`` are exact below ``2**52``.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = low.astype(np.float64)
        v *= _TWO_M63
        x = np.log(v)
        x *= -t
        k = np.floor(x)
        frac = x - k
        margin = x + t
        margin *= _X_REL * widen
        margin += (t * _X_DISC * widen) / v
        frac -= 0.5
        np.abs(frac, out=frac)
        margin -= 0.5
        ok = frac < -margin  # margin < frac < 1 - margin; NaN (V = 0) and V rounded to 1 are never certified
    return k, ok


def _split(words: WordSource, m: int) -> tuple[np.ndarray, np.ndarray]:
    """``m`` words read as (sign bit, 63-bit integer): the int64 view converts to float64 fast."""
    w = _u64(words(m)).view(np.int64)
    return w < 0, np.bitwise_and(w, _LOW63)


def _signed(k: np.ndarray, neg: np.ndarray, keep: np.ndarray) -> np.ndarray:
    keep &= ~(neg & (k == 0))  # -0 and +0 are one outcome: drop the negative one (CKS Algorithm 2)
    y = np.compress(keep, k).astype(np.int64)
    np.negative(y, out=y, where=np.compress(keep, neg))
    return y


def _gaussian_pass(sigma: float, m: int, words: WordSource, widen: float) -> np.ndarray:
    """``m`` proposals (scale ``t = sigma``); the accepted samples, every decision exact.

    Float error of the acceptance: ``k / sigma`` and ``d = k / sigma - 1`` are within
    ``(|d| + 1) 2**-51``, so ``|gamma_hat - gamma| <= (3 gamma + 2) 2**-51``; with ``exp`` within 32
    ulp, ``|p_hat - p| <= p ((3 gamma + 2) 2**-51 + 2**-47) <= 2**-46.7`` (``p gamma <= 1/e``), and
    ``|W_hat - W| <= 2**-52.9``. The margin ``2**-40`` is a hundred times their sum.
    """
    neg, uv = _split(words, m)
    uw = np.bitwise_and(_u64(words(m)).view(np.int64), _LOW63)
    k, ok = _magnitudes(sigma, uv, widen)
    with np.errstate(invalid="ignore", over="ignore"):
        d = k * (1.0 / sigma)  # gamma = (k / sigma - 1)^2 / 2, p = exp(-gamma)
        d -= 1.0
        d *= d
        d *= -0.5
        p = np.exp(d)
        wf = uw.astype(np.float64)
        wf *= _TWO_M63
        accept = wf < p
        wf -= p
        np.abs(wf, out=wf)
        ok &= wf > _P_ABS * widen
    bad = np.flatnonzero(~ok)
    if bad.size:
        sq = Fraction(sigma)
        for i in bad.tolist():
            kk = _exact_geometric(int(uv[i]), sq, words)
            k[i] = kk
            accept[i] = _exact_accept(int(uw[i]), kk, sq, words)
    return _signed(k, neg, accept)


def _laplace_pass(t: float, m: int, words: WordSource, widen: float) -> np.ndarray:
    neg, uv = _split(words, m)
    k, ok = _magnitudes(t, uv, widen)
    bad = np.flatnonzero(~ok)
    if bad.size:
        tq = Fraction(t)
        for i in bad.tolist():
            k[i] = _exact_geometric(int(uv[i]), tq, words)
    return _signed(k, neg, np.ones(m, dtype=bool))


def _check(scale: float, n: int, name: str) -> None:
    if not (scale >= 0 and math.isfinite(scale)):
        raise ValueError(f"{name} must be finite and >= 0")
    if n < 0:
        raise ValueError("n must be >= 0")
    if 0 < scale < SCALE_MIN:
        raise ValueError(f"{name} below 2**-500 is not supported")


def _fill(n: int, rate: float, draw: Callable[[int], np.ndarray]) -> np.ndarray:
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        y = draw(min(_CHUNK, int((n - filled) * rate) + 32))
        take = min(y.size, n - filled)
        out[filled : filled + take] = y[:take]
        filled += take
    return out


def discrete_gaussian(sigma: float, n: int, words: WordSource, *, _widen: float = 1.0) -> np.ndarray:
    """``n`` exact draws of ``N_Z(0, sigma^2)`` from 64-bit words (see the module docstring).

    ``sigma`` above :data:`FAST_SIGMA_MAX` is handed to :func:`dp.exact.discrete_gaussian_exact`
    (integer arithmetic; ``sigma`` rounded up by a relative ``< 2**-25``). ``_widen`` multiplies
    the certification margins: a test seam (``inf`` sends every decision through the exact
    fallback, which must give the same output word for word).
    """
    _check(sigma, n, "sigma")
    if sigma == 0 or n == 0:
        return np.zeros(n, dtype=np.int64)
    if sigma > FAST_SIGMA_MAX:
        from dp.exact import discrete_gaussian_exact

        return discrete_gaussian_exact(sigma, n, words)
    return _fill(n, 1.4, lambda m: _gaussian_pass(sigma, m, words, _widen))


def discrete_laplace(t: float, n: int, words: WordSource, *, _widen: float = 1.0) -> np.ndarray:
    """``n`` exact draws of ``P(y) ∝ exp(-|y| / t)`` over the integers, ``0 < t <= FAST_SIGMA_MAX``."""
    _check(t, n, "t")
    if not 0 < t <= FAST_SIGMA_MAX:
        raise ValueError(f"t must be in (0, {FAST_SIGMA_MAX:g}]")
    return _fill(n, 1.1, lambda m: _laplace_pass(t, m, words, _widen))
