"""Rényi DP of the distributed integer mechanisms, each from its own published bound.

Everything is in *integer units* (after the client's scaling and rounding): ``l2`` and ``l1``
bound the L2 and L1 norms of one client's rounded vector (its whole contribution to the sum,
the add/remove sensitivity under Poisson sampling).

* :class:`DistributedDGaussRDP`: the sum of ``shares`` independent discrete Gaussians
  ``N_Z(0, sigma^2)`` per coordinate is *not* a discrete Gaussian. Kairouz, Liu, Steinke
  (ICML 2021), Theorem 1 / Proposition 14, bound its Rényi divergence at order ``alpha`` by
  ``min(alpha l2^2 / (2 n sigma^2) + tau d,  alpha / 2 (l2 / (sqrt(n) sigma) + tau sqrt(d))^2)``
  with ``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1))`` (``n`` shares, ``d``
  coordinates; their third, L1 term is left out of the minimum, which only loosens the bound).
  It needs ``sigma >= 1/2``.
* :class:`SkellamRDP`: a sum of independent Skellam shares is Skellam (closed under sums), of
  total variance ``mu``. Agarwal, Kairouz, Liu (NeurIPS 2021), Theorem 3.5 / Corollary 4.1:
  ``alpha l2^2 / (2 mu) + min(((2 alpha - 1) l2^2 + 6 l1) / (4 mu^2), 3 l1 / (2 mu))``.

Poisson subsampling of a mechanism known only through its RDP curve uses the general upper
bound of Zhu and Wang (ICML 2019), Theorem 6, at integer orders ``alpha >= 2``:
``1/(alpha-1) log[(1-q)^(alpha-1) (alpha q - q + 1) + C(alpha,2) q^2 (1-q)^(alpha-2) e^eps(2)
+ 3 sum_{l=3}^{alpha} C(alpha,l) q^l (1-q)^(alpha-l) e^((l-1) eps(l))]``, never above the
unsampled ``eps(alpha)``. (For the Gaussian, whose tight subsampled bound is known, this is
looser; the tests hold the two side by side.)
"""

from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import special

from privagg.errors import ConfigurationError

__all__ = [
    "INTEGER_ORDERS",
    "RDPMechanism",
    "DistributedDGaussRDP",
    "SkellamRDP",
    "dgauss_tau",
    "subsampled_rdp",
    "mechanism_from_dict",
    "rdp_to_epsilon",
]

#: integer Rényi orders (the subsampling bound is stated for integers)
INTEGER_ORDERS: tuple[int, ...] = (*range(2, 65), 72, 80, 96, 128, 160, 192, 256)


class RDPMechanism(abc.ABC):
    """One release whose Rényi DP curve is known: ``rdp(orders)`` (nats, per order)."""

    kind: ClassVar[str] = "mechanism"

    @abc.abstractmethod
    def rdp(self, orders: np.ndarray) -> np.ndarray: ...

    @property
    @abc.abstractmethod
    def central_std(self) -> float:
        """Standard deviation of the total noise per coordinate (integer units)."""

    @property
    @abc.abstractmethod
    def l2(self) -> float: ...

    @property
    def noise_multiplier(self) -> float:
        """``central_std / l2``: the Gaussian-equivalent noise multiplier, for display only."""
        return self.central_std / self.l2

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}  # type: ignore[call-overload]


def dgauss_tau(sigma: float, shares: int) -> float:
    """KLS21's ``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k+1))`` (0 for one share)."""
    k = np.arange(1, max(shares, 1), dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi**2 * sigma**2 * k / (k + 1.0))))


@dataclass(frozen=True)
class DistributedDGaussRDP(RDPMechanism):
    """The sum of ``shares`` discrete Gaussians of parameter ``sigma`` each (KLS21 Theorem 1)."""

    kind: ClassVar[str] = "dgauss"
    l2_sensitivity: float
    sigma: float
    shares: int
    dim: int

    def __post_init__(self) -> None:
        if not self.sigma >= 0.5:
            raise ConfigurationError(f"KLS21's bound needs sigma >= 1/2 per share, got {self.sigma:g}", field="sigma")
        if self.shares < 1 or self.dim < 1 or not self.l2_sensitivity > 0:
            raise ConfigurationError("shares, dim and l2 sensitivity must be positive", field="mechanism")

    @property
    def l2(self) -> float:
        return self.l2_sensitivity

    @property
    def central_std(self) -> float:
        return self.sigma * math.sqrt(self.shares)

    @property
    def tau(self) -> float:
        return dgauss_tau(self.sigma, self.shares)

    def rdp(self, orders: np.ndarray) -> np.ndarray:
        a = np.asarray(orders, dtype=np.float64)
        scale = self.l2_sensitivity / (math.sqrt(self.shares) * self.sigma)
        tau, d = self.tau, self.dim
        return np.minimum(a * scale**2 / 2.0 + tau * d, a / 2.0 * (scale + math.sqrt(d) * tau) ** 2)


@dataclass(frozen=True)
class SkellamRDP(RDPMechanism):
    """Skellam noise of total variance ``mu`` per coordinate (AKL21 Corollary 4.1)."""

    kind: ClassVar[str] = "skellam"
    l2_sensitivity: float
    l1_sensitivity: float
    mu: float

    def __post_init__(self) -> None:
        if not (self.mu > 0 and self.l2_sensitivity > 0 and self.l1_sensitivity > 0):
            raise ConfigurationError("mu and the sensitivities must be positive", field="mechanism")

    @property
    def l2(self) -> float:
        return self.l2_sensitivity

    @property
    def central_std(self) -> float:
        return math.sqrt(self.mu)

    def rdp(self, orders: np.ndarray) -> np.ndarray:
        a = np.asarray(orders, dtype=np.float64)
        l2sq, l1, mu = self.l2_sensitivity**2, self.l1_sensitivity, self.mu
        extra = np.minimum(((2.0 * a - 1.0) * l2sq + 6.0 * l1) / (4.0 * mu**2), 3.0 * l1 / (2.0 * mu))
        out: np.ndarray = a * l2sq / (2.0 * mu) + extra
        return out


def mechanism_from_dict(data: dict[str, Any]) -> RDPMechanism:
    """Inverse of :meth:`RDPMechanism.to_dict` (durable ledgers)."""
    fields = {k: v for k, v in data.items() if k != "kind"}
    kind = data.get("kind")
    try:
        if kind == "dgauss":
            return DistributedDGaussRDP(
                l2_sensitivity=float(fields["l2_sensitivity"]),
                sigma=float(fields["sigma"]),
                shares=int(fields["shares"]),
                dim=int(fields["dim"]),
            )
        if kind == "skellam":
            return SkellamRDP(
                l2_sensitivity=float(fields["l2_sensitivity"]),
                l1_sensitivity=float(fields["l1_sensitivity"]),
                mu=float(fields["mu"]),
            )
    except (KeyError, TypeError, ValueError):
        pass
    raise ConfigurationError(f"unreadable mechanism record {data!r}", field="ledger")


def subsampled_rdp(mechanism: RDPMechanism, q: float, orders: tuple[int, ...] = INTEGER_ORDERS) -> np.ndarray:
    """RDP at ``orders`` of ``mechanism`` under Poisson sampling with rate ``q`` (Zhu-Wang Thm 6)."""
    if not 0 < q <= 1:
        raise ConfigurationError(f"must be in (0, 1], got {q}", field="sampling_rate")
    alphas = np.asarray(orders, dtype=np.int64)
    if np.any(alphas < 2):
        raise ConfigurationError("integer orders >= 2 only", field="orders")
    top = int(alphas.max())
    eps = mechanism.rdp(np.arange(0, top + 1, dtype=np.float64))  # eps[l] at order l (0, 1 unused)
    if q == 1.0:
        return np.asarray(eps[alphas], dtype=np.float64)
    log_q, log_1q = math.log(q), math.log1p(-q)
    a = alphas.astype(np.float64)[:, None]  # one row per order
    ell = np.arange(2, top + 1, dtype=np.float64)[None, :]  # one column per term l = 2..top
    log_terms = special.gammaln(a + 1) - special.gammaln(ell + 1) - special.gammaln(np.maximum(a - ell, 0) + 1)
    log_terms = log_terms + ell * log_q + (a - ell) * log_1q + (ell - 1) * eps[None, 2:]
    log_terms = log_terms + np.where(ell >= 3, math.log(3.0), 0.0)  # l >= 3 carry the factor 3
    log_terms = np.where(ell <= a, log_terms, -np.inf)  # terms up to l = alpha only
    head = (a - 1) * log_1q + np.log(a * q - q + 1.0)
    total = special.logsumexp(np.concatenate([head, log_terms], axis=1), axis=1)
    out: np.ndarray = np.minimum(total / (alphas - 1), eps[alphas])
    return out


def rdp_to_epsilon(orders: tuple[int, ...] | list[float], rdp: np.ndarray, delta: float) -> float:
    """``(epsilon, delta)`` from RDP at ``orders``: ``min_a rdp(a) + log((a-1)/a) - (log delta + log a)/(a-1)``
    (Balle et al. 2020's conversion, the one Opacus uses); never below 0."""
    a = np.asarray(orders, dtype=np.float64)
    r = np.asarray(rdp, dtype=np.float64)
    eps = r + np.log1p(-1.0 / a) - (math.log(delta) + np.log(a)) / (a - 1.0)
    eps = np.where(np.isnan(eps), np.inf, eps)
    return float(max(0.0, float(np.min(eps))))
