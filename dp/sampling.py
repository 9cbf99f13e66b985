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
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from privagg.errors import ConfigurationError
from privagg.randomness import SYSTEM_SECRETS, SecretSource, secret_below

__all__ = ["poisson_cohort", "fixed_cohort"]


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
