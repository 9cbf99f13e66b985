"""The client and server transforms of distributed DP, and the integer noise they draw.

:class:`DistributedEncoder` holds one run's :class:`~dp.distributed.DistributedDPParams` and
one round's public rotation; ``encode`` is a client's whole job (clip, rotate, scale,
conditional randomized rounding, noise share, mod ``2^b``), ``decode`` the server's (centre
the sum mod ``2^b``, unscale, rotate back). The secure sum between them is the caller's.

Randomness (all from :class:`IntegerNoise`, CSPRNG-backed by default): the rounding draws and
the noise share. Discrete Gaussian shares come from :func:`dp.noise.discrete_gaussian` (or the
integer-only :func:`dp.exact.discrete_gaussian_exact`); Skellam shares are the difference of
two Poisson draws, sampled here by inversion of a Poisson CDF table covering
``lambda +- (13 sqrt(lambda) + 40)`` (the mass outside is below ``1e-30``) with 53-bit uniforms
from the same AES-CTR stream. Each table entry is scipy's float64 CDF, so each integer's
probability is within a few ``1e-16`` (absolute) of Poisson's: a draw is within total variation
about ``1e-16 x (table size)`` of the exact distribution (``~1e-11`` at the largest ``lambda``
24 bits allow). That is *not* exact in the sense of Canonne-Kamath-Steinke (as for the float
sampler of :mod:`dp.noise`), and the deviation is not added to delta. The output has the exact
integer support; one call draws a fixed number of stream words per coordinate, whatever the
values drawn.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np

from dp.distributed import POISSON_TABLE_MAX, ROUNDING_TRIES, DistributedDPParams, check_beta, check_share
from dp.exact import discrete_gaussian_exact
from dp.noise import InsecureNoiseWarning, WordSource, discrete_gaussian
from dp.rotation import RandomizedHadamard
from privagg.errors import ConfigurationError
from privagg.randomness import SYSTEM_SECRETS, SecretSource, label, prg_words, simulation_rng

__all__ = ["IntegerNoise", "poisson_table_sample", "skellam", "conditional_round", "DistributedEncoder"]

_TWO_M53 = 2.0**-53
_MAX_ROUNDING_TRIES = ROUNDING_TRIES  # each try passes with probability >= 1 - beta (0.39 at beta = e^-0.5)


def _uniform53(words: WordSource, n: int) -> np.ndarray:
    return (words(n) >> np.uint64(11)).astype(np.float64) * _TWO_M53


@functools.lru_cache(maxsize=8)
def _poisson_table(lam: float) -> tuple[int, np.ndarray]:
    """``(lo, cdf)``: the CDF of Poisson(``lam``) on ``lo .. lo + len(cdf) - 1`` (memoised: every client of a
    round draws with the same ``lam``; read-only)."""
    width = 13.0 * math.sqrt(lam) + 40.0
    lo, hi = max(0, math.floor(lam - width)), math.ceil(lam + width)
    if hi - lo > POISSON_TABLE_MAX:
        raise ValueError(f"lambda {lam:g} too large for the table sampler")
    from scipy import stats  # loaded here: importing the encoder (and every aggregator) stays cheap

    cdf = stats.poisson.cdf(np.arange(lo, hi + 1, dtype=np.float64), lam)  # each entry to float64 accuracy
    cdf[-1] = 1.0  # the mass beyond the table (< 1e-30) is folded into its last entry
    cdf.setflags(write=False)
    return lo, cdf


def poisson_table_sample(lam: float, n: int, words: WordSource) -> np.ndarray:
    """``n`` Poisson(``lam``) draws by inversion of a CDF table (see the module docstring)."""
    if not (lam >= 0 and math.isfinite(lam)):
        raise ValueError("lambda must be finite and >= 0")
    if lam == 0 or n == 0:
        return np.zeros(n, dtype=np.int64)
    lo, cdf = _poisson_table(float(lam))
    u = _uniform53(words, n)
    idx = np.searchsorted(cdf, u, side="right")
    return lo + np.minimum(idx, cdf.size - 1).astype(np.int64)


def skellam(variance: float, n: int, words: WordSource) -> np.ndarray:
    """``n`` draws of the symmetric Skellam of the given variance: ``Poisson(v/2) - Poisson(v/2)``."""
    lam = variance / 2.0
    return poisson_table_sample(lam, n, words) - poisson_table_sample(lam, n, words)


class IntegerNoise:
    """Where a client's rounding and noise share come from.

    Secure by default: each :meth:`words` keys AES-256-CTR with 32 fresh bytes of ``secrets``
    (the OS CSPRNG). ``seed`` instead gives reproducible, *insecure* simulation randomness
    (warns). ``exact``: discrete Gaussian shares from the integer-only sampler.
    """

    def __init__(self, *, secrets: SecretSource = SYSTEM_SECRETS, seed: int | None = None, exact: bool = False) -> None:
        self._secrets = secrets
        self.exact = exact
        self.secure = seed is None
        self._rng: np.random.Generator | None = None
        if seed is not None:
            warnings.warn(
                "distributed DP noise drawn from a public seed (reproducible simulation only): it protects nobody",
                InsecureNoiseWarning,
                stacklevel=2,
            )
            self._rng = simulation_rng(seed, "distributed-dp-noise")

    def words(self) -> WordSource:
        """A fresh stream of uniform 64-bit words (one per client and round)."""
        rng = self._rng
        if rng is not None:
            return lambda n: rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)
        seed = self._secrets.token_bytes(32)
        counter = [0]

        def words(n: int) -> np.ndarray:
            counter[0] += 1
            return prg_words(seed, info=label("privagg/dp/distributed/v1", counter[0]), count=n, bits=64)

        return words

    def share(self, mechanism: str, sigma: float, n: int, words: WordSource) -> np.ndarray:
        """One noise share: discrete Gaussian of parameter ``sigma`` or Skellam of variance ``sigma^2``."""
        if mechanism == "dgauss":
            if self.exact:
                return discrete_gaussian_exact(sigma, n, words)
            return discrete_gaussian(sigma, n, words)
        return skellam(sigma * sigma, n, words)

    def __repr__(self) -> str:
        return f"IntegerNoise(secure={self.secure}, exact={self.exact})"


def conditional_round(x: np.ndarray, bound: float | None, words: WordSource) -> np.ndarray:
    """Randomized rounding of each coordinate (``floor + Bernoulli(frac)``: unbiased), redrawn until
    the L2 norm is at most ``bound`` (``None``: unconditional)."""
    x = np.asarray(x, dtype=np.float64)
    low = np.floor(x)
    frac = x - low
    base = low.astype(np.int64)
    for _ in range(_MAX_ROUNDING_TRIES):
        out = base + (_uniform53(words, x.size) < frac)
        if bound is None or float(np.dot(out, out)) <= bound * bound:
            return out
    raise ConfigurationError(
        f"conditional rounding found no draw of norm <= {bound} in {_MAX_ROUNDING_TRIES} tries (the input "
        "exceeds the clip norm it was planned for)",
        field="updates",
    )


@dataclass(frozen=True)
class DistributedEncoder:
    """One round's client ``encode`` and server ``decode`` (see the module docstring)."""

    params: DistributedDPParams
    rotation: RandomizedHadamard

    @classmethod
    def for_round(cls, params: DistributedDPParams, *, seed: bytes, round: int) -> DistributedEncoder:
        """``seed``: the run's public 32-byte rotation seed, shared by the clients and the server."""
        return cls(params=params, rotation=RandomizedHadamard(params.dim, seed, round))

    def encode(
        self, update: np.ndarray, noise: IntegerNoise, *, weight: float = 1.0, shares: int | None = None
    ) -> np.ndarray:
        """A client's ring vector (``uint64`` below ``2^bits``, length ``padded``).

        ``shares``: the honest noise shares this round's sum is guaranteed to hold (default: the
        run's plan); the share's size is ``sigma / sqrt(shares)``.
        """
        p = self.params
        x = np.asarray(update, dtype=np.float64)
        if x.shape != (p.dim,) or not np.all(np.isfinite(x)):
            raise ConfigurationError(f"expected a finite vector of length {p.dim}", field="updates")
        if not 0 <= weight <= 1:
            raise ConfigurationError(f"weights must be in [0, 1], got {weight}", field="weights")
        t = p.shares if shares is None else shares
        if t < 1:
            raise ConfigurationError("a round needs at least one honest noise share", field="shares")
        check_beta(p.beta, field="beta")  # before anything depends on the update (dp.distributed.MAX_BETA)
        check_share(p.mechanism, p.sigma / math.sqrt(t), p.bits)  # and a share its sampler can draw
        norm = float(np.linalg.norm(x))
        if norm > p.clip:
            x = x * (p.clip / norm)
        words = noise.words()
        scaled = self.rotation.rotate(x * weight) * p.scale
        bound = p.l2_sensitivity if p.beta > 0 else None
        ints = conditional_round(scaled, bound, words)
        ints = ints + noise.share(p.mechanism, p.sigma / math.sqrt(t), p.padded, words)
        return ints.astype(np.uint64) & np.uint64(p.modulus - 1)

    def centre(self, ring_sum: np.ndarray) -> np.ndarray:
        """Ring elements -> signed integers in ``[-2^(b-1), 2^(b-1))``."""
        m = self.params.modulus
        r = (np.asarray(ring_sum, dtype=np.uint64) & np.uint64(m - 1)).astype(np.int64)
        r[r >= m // 2] -= m
        return r

    def decode(self, ring_sum: np.ndarray) -> np.ndarray:
        """The server's estimate of the sum of the clipped, weighted updates (plus the noise)."""
        p = self.params
        s = np.asarray(ring_sum)
        if s.shape != (p.padded,):
            raise ConfigurationError(f"expected a sum of length {p.padded}, got {s.shape}", field="sum")
        return self.rotation.inverse(self.centre(s).astype(np.float64) / p.scale)

    def modular_sum(self, vectors: list[np.ndarray]) -> np.ndarray:
        """The plain sum mod ``2^bits`` of ring vectors (what a secure sum releases; for tests and drivers)."""
        acc = np.zeros(self.params.padded, dtype=np.uint64)
        for v in vectors:
            acc += np.asarray(v, dtype=np.uint64)
        return acc & np.uint64(self.params.modulus - 1)
