"""Secret cohorts: exact Poisson inclusion and uniform fixed-size cohorts from the secret source."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dp.sampling import fixed_cohort, poisson_cohort
from privagg.errors import ConfigurationError
from privagg.randomness import InsecureDeterministicSecrets, SecretSource


class Counting:
    """A secret source that counts the bytes it gave (to check the sampler reads the source)."""

    def __init__(self, seed: int) -> None:
        self.inner = InsecureDeterministicSecrets(seed)
        self.bytes = 0

    def token_bytes(self, n: int) -> bytes:
        self.bytes += n
        return self.inner.token_bytes(n)


def test_poisson_inclusion_rate_matches_within_5_sigma() -> None:
    # 200,000 Bernoulli(0.05): std of the count is sqrt(n q (1 - q)) ~ 97; tolerance 5 sigma
    n, q = 200_000, 0.05
    src = Counting(0)
    cohort = poisson_cohort(n, q, secrets=src)
    assert src.bytes == 8 * n  # one 64-bit word per client, all from the secret source
    assert abs(len(cohort) - n * q) < 5 * math.sqrt(n * q * (1 - q))
    assert list(cohort) == sorted(set(cohort)) and all(0 <= c < n for c in cohort)


def test_poisson_uses_the_exact_dyadic_rate() -> None:
    # rate 0.5 = 1/2: a client is in iff the top bit of its word is 0 (known answer from the stream)
    words = np.frombuffer(InsecureDeterministicSecrets(3).token_bytes(8 * 64), dtype="<u8")
    want = tuple(int(i) for i in np.flatnonzero((words >> np.uint64(63)) == 0))
    assert poisson_cohort(64, 0.5, secrets=InsecureDeterministicSecrets(3)) == want
    assert poisson_cohort(7, 1.0, secrets=InsecureDeterministicSecrets(3)) == tuple(range(7))
    assert poisson_cohort(0, 0.3, secrets=InsecureDeterministicSecrets(3)) == ()


@settings(max_examples=50, deadline=None)
@given(pop=st.integers(0, 300), frac=st.floats(0, 1), seed=st.integers(0, 2**32))
def test_fixed_cohorts_are_distinct_and_of_the_right_size(pop: int, frac: float, seed: int) -> None:
    size = int(frac * pop)
    cohort = fixed_cohort(pop, size, secrets=InsecureDeterministicSecrets(seed))
    assert len(cohort) == size == len(set(cohort)) and all(0 <= c < pop for c in cohort)


def test_fixed_cohorts_are_uniform() -> None:
    # every 2-subset of 5 equally likely: 20,000 draws, chi-square with 9 dof below 27.9 (p = 0.001)
    src: SecretSource = InsecureDeterministicSecrets(11)
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(20_000):
        c = fixed_cohort(5, 2, secrets=src)
        counts[c] = counts.get(c, 0) + 1
    assert len(counts) == 10
    chi2 = sum((v - 2000) ** 2 / 2000 for v in counts.values())
    assert chi2 < 27.9


def test_refusals() -> None:
    with pytest.raises(ConfigurationError):
        poisson_cohort(10, 0.0)
    with pytest.raises(ConfigurationError):
        poisson_cohort(-1, 0.5)
    with pytest.raises(ConfigurationError):
        fixed_cohort(3, 4)
