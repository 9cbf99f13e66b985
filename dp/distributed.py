"""Distributed DP inside secure aggregation: parameters chosen from (epsilon, delta, rounds, q, cohort, dim, bits).

The mechanism (Kairouz, Liu, Steinke ICML 2021: distributed discrete Gaussian; Agarwal,
Kairouz, Liu NeurIPS 2021: Skellam). Each client

1. clips its update to L2 norm ``c`` (and weights it by ``w <= 1``);
2. rotates it with the public randomized Hadamard of :mod:`dp.rotation` (padded to ``P``);
3. multiplies by the scale ``s`` and rounds each coordinate randomly up or down (unbiased),
   *conditionally*: it redraws the rounding until the rounded vector's L2 norm is at most
   ``l2 = min(c s + sqrt(P), sqrt((c s)^2 + P/4 + sqrt(2 ln(1/beta)) (c s + sqrt(P)/2)))``
   (KLS21 Prop. 22: a draw passes with probability at least ``1 - beta``), so ``l2`` is the
   sensitivity in integer units; the L1 sensitivity is ``l2 min(sqrt(P), l2)``. A client gives up
   (and drops out of the round, visibly) after :data:`ROUNDING_TRIES` failed draws, which happens
   with probability at most ``beta^ROUNDING_TRIES`` *whatever its update*: ``beta`` is refused above
   :data:`MAX_BETA` (that bound ``2^-64``), by the plan, the encoder and a Flower client, since near
   ``beta = 1`` the bound gives nothing and whether a client answers would depend on its update (a
   clipped update fails where one inside the clip passes: a norm oracle outside the accounting);
4. adds its integer noise share (a discrete Gaussian of parameter ``sigma / sqrt(t)``, or a
   Skellam of variance ``sigma^2 / t``) from the secure source, ``t`` being the fewest honest
   shares the protocol guarantees in a released sum (the fewest survivors it releases a sum of,
   less the clients that may be dishonest);
5. reduces mod ``2^b`` and sends ``b`` bits per coordinate into the secure sum.

The server takes the sum mod ``2^b``, centres it into ``[-2^(b-1), 2^(b-1))``, divides by ``s``
and rotates back (:mod:`dp.distributed_encoding`).

Choosing ``s`` and ``sigma`` (:func:`choose_parameters`). The central noise ``sigma`` (integer
units) is calibrated so that ``rounds`` Poisson-subsampled rounds of the mechanism's own RDP
bound (:mod:`dp.distributed_accounting`) stay within ``epsilon``. The scale ``s`` is the
largest for which a coordinate of the centred sum leaves the ring with probability at most
``clip_probability`` (1e-4 by default) by a Bernstein tail bound
``2 exp(-T^2 / (2 (V + T/3)))``, ``T = 2^(b-1)``, with
``V = (n c s)^2 / P + n / 4 + n sigma^2 / t`` for ``n`` summands: the worst-case sum of the
signals (all ``n`` aligned, each coordinate after the rotation sub-Gaussian with proxy
``|sum|^2 / P``), the rounding errors (each in ``(-1, 1)``, proxy ``1/4``; conditioning on the
norm is *assumed* not to change this materially) and the noise of every survivor (each
share's proxy ``sigma^2 / t``; Skellam's tails are Poisson's, which the ``T/3`` of
Bernstein's bound covers). A larger ``s`` shrinks the rounding error and the sensitivity's
inflation; a smaller one keeps the sum in the ring. Few bits then cost accuracy as a growing
``noise inflation``: the error of the decoded sum (noise and rounding, per coordinate)
against the same mechanism's noise with unlimited bits. When even the best ``s`` inflates it
beyond ``max_inflation`` (or no ``s`` keeps the sum in the ring), :func:`choose_parameters`
refuses with a :class:`ConfigurationError` naming the smallest number of bits that works:
never a silent blow-up of the noise.

Neighbouring relation: add/remove one client (Poisson sampling); the released sum carries at
least ``t`` honest noise shares whether or not the target client is in it (the convention of
:mod:`dp.rounds` for client-side noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from dp.distributed_accounting import (
    INTEGER_ORDERS,
    DistributedDGaussRDP,
    RDPMechanism,
    SkellamRDP,
    rdp_to_epsilon,
    subsampled_rdp,
)
from dp.noise import MIN_SHARE_SIGMA
from dp.rotation import padded_dim
from privagg.errors import ConfigurationError

__all__ = [
    "MECHANISMS",
    "MIN_BITS",
    "MAX_BITS",
    "DEFAULT_BETA",
    "MAX_BETA",
    "POISSON_TABLE_MAX",
    "ROUNDING_TRIES",
    "SKELLAM_MAX_SHARE_VARIANCE",
    "check_beta",
    "check_share",
    "DistributedDPParams",
    "rounded_l2_bound",
    "rounded_l1_bound",
    "ring_overflow_bound",
    "mechanism_epsilon",
    "choose_parameters",
]

MECHANISMS = ("dgauss", "skellam")
MIN_BITS, MAX_BITS = 4, 24  # above 24 bits the Skellam tables and float64 scaling lose their margin
DEFAULT_BETA = math.exp(-0.5)
#: the most entries of the Poisson CDF table a Skellam share is drawn from (:mod:`dp.distributed_encoding`)
POISSON_TABLE_MAX = 5_000_000
#: the largest Skellam share variance (``2 lambda``) whose table (``lambda +- (13 sqrt(lambda) + 40)``) fits it;
#: a Skellam plan keeps its scale below what needs more (at 24 bits and a few clients it would)
SKELLAM_MAX_SHARE_VARIANCE = 2.0 * (0.99 * (POISSON_TABLE_MAX / 2 - 41) / 13.0) ** 2
#: conditional-rounding draws before a client gives up (each passes with probability >= 1 - beta, KLS21 Prop. 22)
ROUNDING_TRIES = 200
#: the largest beta at which giving up, whatever the update, has probability <= 2^-64 (beta^ROUNDING_TRIES)
MAX_BETA = 2.0 ** (-64.0 / ROUNDING_TRIES)


def check_beta(beta: float, *, field: str = "dp.beta") -> None:
    """Refuse a conditional-rounding ``beta`` outside ``[0, MAX_BETA]`` (module docstring, step 3)."""
    if not (isinstance(beta, float | int) and 0 <= beta <= MAX_BETA):
        raise ConfigurationError(
            f"beta {beta!r} outside [0, {MAX_BETA:.4f}]: above it a client's rounding may give up with a "
            "probability that depends on its update (an observable dropout outside the accounting)",
            field=field,
            accepted=f"0..{MAX_BETA:.4f}",
        )


def check_share(mechanism: str, share_sigma: float, bits: int, *, field: str = "sigma") -> None:
    """Refuse a noise share no plan chooses, before anything depends on the update: above ``2^bits`` (the share
    alone covers the ring; a plan keeps the whole sum's noise inside it) or, for Skellam, a variance beyond
    :data:`SKELLAM_MAX_SHARE_VARIANCE` (the table sampler would fail after training)."""
    top = SKELLAM_MAX_SHARE_VARIANCE if mechanism == "skellam" else math.inf
    if not (0 < share_sigma <= float(1 << bits) and share_sigma**2 <= top):
        raise ConfigurationError(
            f"a {mechanism} noise share of {share_sigma:.4g} is outside what a {bits}-bit plan draws",
            field=field,
        )


def rounded_l2_bound(scaled_clip: float, padded: int, beta: float) -> float:
    """L2 norm bound after conditional randomized rounding of a vector of norm ``scaled_clip`` (KLS21 Prop. 22)."""
    plain = scaled_clip + math.sqrt(padded)
    if beta <= 0:
        return plain
    sq = scaled_clip**2 + padded / 4.0 + math.sqrt(2.0 * math.log(1.0 / beta)) * (scaled_clip + math.sqrt(padded) / 2.0)
    return min(plain, math.sqrt(sq))


def rounded_l1_bound(l2: float, padded: int) -> float:
    """L1 bound of an integer vector of L2 norm ``<= l2``: ``l2 sqrt(P)``, and ``l2^2`` (``|k| <= k^2``)."""
    return l2 * min(math.sqrt(padded), l2)


def ring_overflow_bound(bits: int, variance: float) -> float:
    """Bernstein bound on ``P(|Y| >= 2^(b-1))`` for a centred coordinate of variance proxy ``variance``."""
    t = float(1 << (bits - 1))
    return min(1.0, 2.0 * math.exp(-(t * t) / (2.0 * (variance + t / 3.0))))


def _mechanism(kind: str, *, l2: float, padded: int, sigma: float, shares: int) -> RDPMechanism:
    if kind == "dgauss":
        return DistributedDGaussRDP(l2_sensitivity=l2, sigma=sigma / math.sqrt(shares), shares=shares, dim=padded)
    return SkellamRDP(l2_sensitivity=l2, l1_sensitivity=rounded_l1_bound(l2, padded), mu=sigma * sigma)


def mechanism_epsilon(mechanism: RDPMechanism, *, sampling_rate: float, rounds: int, delta: float) -> float:
    """Epsilon of ``rounds`` Poisson-subsampled rounds of ``mechanism`` (RDP at integer orders)."""
    rdp = rounds * subsampled_rdp(mechanism, sampling_rate, INTEGER_ORDERS)
    return rdp_to_epsilon(INTEGER_ORDERS, rdp, delta)


def _calibrate_sigma(eps_of: Callable[[float], float], target: float, guess: float, floor: float) -> float:
    """The smallest ``sigma >= floor`` (relative 1e-3) with ``eps_of(sigma) <= target`` (monotone)."""
    hi = max(guess, floor)
    while eps_of(hi) > target:
        hi *= 1.5
        if hi > 1e12:
            raise ConfigurationError(f"epsilon {target} is out of reach", field="dp.target_epsilon")
    lo = hi / 1.5
    if lo < floor or eps_of(lo) <= target:
        lo = floor
        if eps_of(lo) <= target:
            return lo
    while hi - lo > 1e-3 * hi:
        mid = 0.5 * (lo + hi)
        if eps_of(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True)
class DistributedDPParams:
    """One run's distributed-DP parameters (see the module docstring); integer units unless said."""

    mechanism: Literal["dgauss", "skellam"]
    bits: int
    clip: float
    dim: int
    padded: int
    scale: float
    beta: float
    sigma: float  # central noise std guaranteed in every released sum (at least ``shares`` honest shares)
    shares: int  # honest shares the noise is split into (the fewest the protocol guarantees)
    cohort: int  # summands the ring is sized for (the modular-clipping bound holds up to this many)
    l2_sensitivity: float
    l1_sensitivity: float
    epsilon: float  # of the run, at the planned parameters
    delta: float
    rounds: int
    sampling_rate: float
    noise_inflation: float  # decoded error per coordinate / the same mechanism's noise with unlimited bits
    clip_probability: float  # bound on a coordinate of the sum leaving the ring (at ``cohort`` summands)

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def share_sigma(self) -> float:
        """One client's noise share: discrete Gaussian parameter, or Skellam standard deviation."""
        return self.sigma / math.sqrt(self.shares)

    @property
    def noise_std_value(self) -> float:
        """Standard deviation of the guaranteed noise per coordinate of the decoded sum (value units)."""
        return self.sigma / self.scale

    @property
    def upload_bytes(self) -> int:
        """Bytes of one client's bit-packed vector (before the secure-aggregation framing)."""
        return (self.padded * self.bits + 7) // 8

    def rdp_mechanism(self, honest: int, shares: int | None = None) -> RDPMechanism:
        """The mechanism of a sum holding ``honest`` honest shares, each of ``sigma / sqrt(shares)``
        (``shares``: the split of the round, default the plan's)."""
        if honest < 1:
            raise ConfigurationError("a sum without an honest noise share has no DP guarantee", field="shares")
        t = self.shares if shares is None else shares
        total = self.sigma * math.sqrt(honest / t)
        return _mechanism(self.mechanism, l2=self.l2_sensitivity, padded=self.padded, sigma=total, shares=honest)

    def overflow_bound(self, summands: int, shares: int | None = None) -> float:
        """Per-coordinate bound on the sum of ``summands`` clients (shares split ``shares`` ways) leaving the ring."""
        t = self.shares if shares is None else shares
        v = (summands * self.clip * self.scale) ** 2 / self.padded + summands / 4.0 + summands * self.sigma**2 / t
        return ring_overflow_bound(self.bits, v)

    def effective_noise_std(self, honest: int, shares: int | None = None) -> float:
        """Noise std per coordinate of a sum with ``honest`` shares of ``sigma / sqrt(shares)`` (value units)."""
        t = self.shares if shares is None else shares
        return self.sigma * math.sqrt(max(honest, 0) / t) / self.scale


def choose_parameters(
    *,
    mechanism: str,
    bits: int,
    clip: float,
    dim: int,
    epsilon: float,
    delta: float,
    rounds: int,
    sampling_rate: float,
    cohort: int,
    shares: int,
    beta: float = DEFAULT_BETA,
    clip_probability: float = 1e-4,
    max_inflation: float = 1.2,
    _search_bits: bool = True,
) -> DistributedDPParams:
    """Scale and noise for ``bits`` per coordinate (module docstring); refuses what cannot work.

    ``cohort``: the most clients whose vectors enter one sum (the ring is sized for it);
    ``shares``: the fewest honest noise shares in a released sum. Raises
    :class:`ConfigurationError` (``dp.bits``) naming the smallest bits that keep the sum in the
    ring with the noise inflated by at most ``max_inflation``.
    """
    if mechanism not in MECHANISMS:
        raise ConfigurationError(f"unknown mechanism {mechanism!r}", field="dp.mechanism", accepted=list(MECHANISMS))
    if not (isinstance(bits, int) and MIN_BITS <= bits <= MAX_BITS):
        raise ConfigurationError(f"got {bits!r}", field="dp.bits", accepted=f"{MIN_BITS}..{MAX_BITS}")
    check_beta(beta)
    if not 0 < clip_probability < 1:
        raise ConfigurationError(f"must be in (0, 1), got {clip_probability}", field="dp.clip_probability")
    if not max_inflation > 1:
        raise ConfigurationError(f"must be > 1, got {max_inflation}", field="dp.max_noise_inflation")
    if not (1 <= shares <= cohort):
        raise ConfigurationError(f"need 1 <= shares ({shares}) <= cohort ({cohort})", field="shares")
    if not (clip > 0 and dim >= 1 and rounds >= 1 and 0 < sampling_rate <= 1 and epsilon > 0 and 0 < delta < 1):
        raise ConfigurationError("clip, dim, rounds, sampling rate, epsilon and delta out of range", field="dp")
    kind: Literal["dgauss", "skellam"] = "dgauss" if mechanism == "dgauss" else "skellam"
    padded = padded_dim(dim)
    floor = MIN_SHARE_SIGMA * math.sqrt(shares) if kind == "dgauss" else 1e-3  # each share >= the floor

    def eps_of(s: float, sigma: float) -> float:
        l2 = rounded_l2_bound(clip * s, padded, beta)
        mech = _mechanism(kind, l2=l2, padded=padded, sigma=sigma, shares=shares)
        return mechanism_epsilon(mech, sampling_rate=sampling_rate, rounds=rounds, delta=delta)

    # the same mechanism with unlimited bits: noise in value units, the reference for the inflation
    big = 1e7 / clip
    z_inf = _calibrate_sigma(lambda sg: eps_of(big, sg), epsilon, clip * big, floor) / (clip * big)
    ref_std = z_inf * clip  # value units

    cache: dict[float, float] = {}

    def sigma_at(s: float) -> float:
        if s not in cache:
            guess = z_inf * rounded_l2_bound(clip * s, padded, beta)
            cache[s] = _calibrate_sigma(lambda sg: eps_of(s, sg), epsilon, guess, floor)
        return cache[s]

    def overflow(s: float) -> float:
        sg = sigma_at(s)
        v = (cohort * clip * s) ** 2 / padded + cohort / 4.0 + cohort * sg * sg / shares
        return ring_overflow_bound(bits, v)

    def inflation(s: float) -> float:
        return math.sqrt(sigma_at(s) ** 2 + cohort / 4.0) / s / ref_std

    lo, hi = 1e-3 / clip, float(1 << bits) / clip
    best: float | None = None

    def fits(s: float) -> bool:  # in the ring, and (Skellam) a share the table sampler can draw
        share_ok = kind == "dgauss" or sigma_at(s) ** 2 / shares <= SKELLAM_MAX_SHARE_VARIANCE
        return share_ok and overflow(s) <= clip_probability

    if fits(lo):
        if fits(hi):
            best = hi
        else:
            for _ in range(40):  # bisection on log s: overflow and the share grow with s
                mid = math.sqrt(lo * hi)
                if fits(mid):
                    lo = mid
                else:
                    hi = mid
                if hi / lo < 1.002:
                    break
            best = lo
    if best is None or inflation(best) > max_inflation:
        why = (
            "no scale keeps the sum of the signals, rounding and noise in the ring"
            if best is None
            else f"the best scale inflates the noise {inflation(best):.3g}x over the same mechanism with unlimited "
            f"bits (max {max_inflation:g}; the TFF failure mode: a silent blow-up)"
        )
        request = dict(
            mechanism=mechanism,
            clip=clip,
            dim=dim,
            epsilon=epsilon,
            delta=delta,
            rounds=rounds,
            sampling_rate=sampling_rate,
            cohort=cohort,
            shares=shares,
            beta=beta,
            clip_probability=clip_probability,
            max_inflation=max_inflation,
        )
        need = _smallest_bits(bits, request) if _search_bits else None
        raise ConfigurationError(
            f"{bits} bits per coordinate cannot hold signal plus noise for {cohort} clients of dimension {dim} "
            f"({padded} after padding) at epsilon {epsilon:g}: {why}; "
            + (f"use bits >= {need}" if need is not None else f"no bits up to {MAX_BITS} work: lower the cohort"),
            field="dp.bits",
            accepted=f"{need}..{MAX_BITS}" if need is not None else None,
        )
    s = best
    sigma = sigma_at(s)
    l2 = rounded_l2_bound(clip * s, padded, beta)
    return DistributedDPParams(
        mechanism=kind,
        bits=bits,
        clip=clip,
        dim=dim,
        padded=padded,
        scale=s,
        beta=beta,
        sigma=sigma,
        shares=shares,
        cohort=cohort,
        l2_sensitivity=l2,
        l1_sensitivity=rounded_l1_bound(l2, padded),
        epsilon=eps_of(s, sigma),
        delta=delta,
        rounds=rounds,
        sampling_rate=sampling_rate,
        noise_inflation=inflation(s),
        clip_probability=overflow(s),
    )


def _smallest_bits(bits: int, request: dict[str, Any]) -> int | None:
    """The smallest ``b`` in ``bits+1..MAX_BITS`` that :func:`choose_parameters` accepts (monotone: bisection)."""

    def ok(b: int) -> bool:
        try:
            choose_parameters(bits=b, _search_bits=False, **request)
        except ConfigurationError:
            return False
        return True

    lo, hi = bits, MAX_BITS  # lo fails
    if not ok(hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi
