"""Secret cohorts: who takes part in a DP round, drawn from the secret source.

Amplification by subsampling (the ``q`` in every DP-FedAvg bound) assumes nobody outside the
cohort learns who was sampled. A cohort drawn from a generator seeded by the public run seed
is known to anyone holding the seed: with ``q = 0.05, z = 1, T = 100`` the guarantee moves from
epsilon about 4 to about 12. These samplers draw from a :class:`~privagg.randomness.SecretSource`
(the OS CSPRNG by default; tests inject ``InsecureDeterministicSecrets`` through the seam).

* :func:`poisson_cohort`: each client independently with probability exactly ``rate`` (the
  rate is a dyadic rational ``a / 2**k`` as a float; a client is in when a uniform ``k``-bit
  integer is below ``a``; exact, no floating-point comparison).
* :func:`fixed_cohort`: ``size`` of ``population`` uniformly without replacement (partial
  Fisher-Yates with unbiased :func:`~privagg.randomness.secret_below`).
* :func:`poisson_sizes_p_value`: whether recorded cohort sizes can come from Poisson sampling at
  the charged rate (a driver may be told ``Sampling.poisson`` while its strategy draws fixed-size
  cohorts; the accountant's amplification then does not hold). Operator-side: the sizes are
  the ledger's rosters, never published.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from scipy.stats import chi2

from dp.accounting import Sampling
from privagg.errors import ConfigurationError
from privagg.randomness import SYSTEM_SECRETS, SecretSource, secret_below

__all__ = ["MIN_CHECKED_ROUNDS", "federation_sampling", "poisson_cohort", "fixed_cohort", "poisson_sizes_p_value"]

#: fewer recorded rounds than this: :func:`poisson_sizes_p_value` says nothing (``nan``)
MIN_CHECKED_ROUNDS = 10


def federation_sampling(fed: Any, population: int) -> Sampling:
    """The accountant's view of a federation's sampling (``protocols.fedavg.FederationConfig``: ``sampling``,
    ``sampling_rate``, ``clients_per_round``) over ``population`` clients: Poisson at the rate, else fixed-size
    cohorts of ``clients_per_round`` (``"all"``: everyone) under replace-one neighbours."""
    if fed.sampling == "poisson":
        return Sampling.poisson(rate=fed.sampling_rate, population=population)
    k = fed.clients_per_round if fed.sampling == "fixed" else population
    return Sampling.fixed(sample_size=k, population=population)


def poisson_cohort(population: int, rate: float, *, secrets: SecretSource = SYSTEM_SECRETS) -> tuple[int, ...]:
    """Each of ``range(population)`` independently with probability ``rate`` (exact), sorted."""
    if population < 0:
        raise ConfigurationError(f"must be >= 0, got {population}", field="population")
    if not 0 < rate <= 1:
        raise ConfigurationError(f"must be in (0, 1], got {rate}", field="sampling_rate")
    if rate == 1 or population == 0:
        return tuple(range(population))
    q = Fraction(rate)  # exact: a float is a dyadic rational a / 2**k
    a, k = q.numerator, q.denominator.bit_length() - 1
    if k <= 64:
        words = np.frombuffer(secrets.token_bytes(8 * population), dtype="<u8")
        top = words >> np.uint64(64 - k) if k < 64 else words  # a uniform k-bit integer per client
        return tuple(np.flatnonzero(top < np.uint64(a)).tolist())
    return tuple(i for i in range(population) if secret_below(secrets, q.denominator) < a)  # pragma: no cover


def fixed_cohort(population: int, size: int, *, secrets: SecretSource = SYSTEM_SECRETS) -> tuple[int, ...]:
    """``size`` distinct clients of ``range(population)``, uniformly at random, sorted."""
    if not 0 <= size <= population:
        raise ConfigurationError(f"{size} clients per round out of {population}", field="federation.clients_per_round")
    pool = list(range(population))
    for i in range(size):
        j = i + secret_below(secrets, population - i)
        pool[i], pool[j] = pool[j], pool[i]
    return tuple(sorted(pool[:size]))


def poisson_sizes_p_value(sizes: Sequence[int], *, rate: float, population: int) -> float:
    """Two-sided p-value of the cohort sizes' dispersion under Poisson sampling (each ~ Binomial(N, q)).

    The statistic ``sum_r (n_r - N q)^2 / (N q (1 - q))`` is about chi-square with one degree of
    freedom per round (the normal approximation of the binomial); fixed-size cohorts give no spread
    (a tiny statistic), a cohort of everyone a huge one. ``nan`` when it cannot say: fewer than
    :data:`MIN_CHECKED_ROUNDS` rounds, ``q = 1`` (nothing random), or an expected cohort below 5 in
    or out (the approximation is poor there).
    """
    if not 0 < rate <= 1 or population < 1:
        raise ConfigurationError(
            f"rate {rate}, population {population}", field="sampling", accepted="0 < q <= 1, N >= 1"
        )
    var = population * rate * (1 - rate)
    if len(sizes) < MIN_CHECKED_ROUNDS or rate == 1 or min(population * rate, population * (1 - rate)) < 5:
        return math.nan
    mean = population * rate
    stat = float(sum((n - mean) ** 2 for n in sizes)) / var
    dof = len(sizes)
    return float(min(1.0, 2 * min(chi2.cdf(stat, dof), chi2.sf(stat, dof))))
