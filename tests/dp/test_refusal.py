"""The extra delta of whether a Poisson round ran (dp/refusal.py), checked against exact enumeration."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dp.refusal import flip_sizes, refusal_delta
from privagg.errors import ConfigurationError


def observable(cohort: int, m: int, empty_released: bool) -> str:
    """What an observer of the released models sees of one round of ``cohort`` clients."""
    if cohort == 0:
        return "released" if empty_released else "unchanged"
    return "released" if cohort >= m else "unchanged"


def exact_tv(n: int, q: Fraction, m: int, empty_released: bool) -> Fraction:
    """Total variation between the observable of one round without the target (n - 1 others) and with it
    (sampled with probability q), by enumerating every size of the rest of the cohort."""
    without: dict[str, Fraction] = {}
    with_target: dict[str, Fraction] = {}
    for c in range(n):
        p = comb(n - 1, c) * q**c * (1 - q) ** (n - 1 - c)
        a = observable(c, m, empty_released)
        without[a] = without.get(a, Fraction(0)) + p
        with_target[a] = with_target.get(a, Fraction(0)) + (1 - q) * p
        b = observable(c + 1, m, empty_released)
        with_target[b] = with_target.get(b, Fraction(0)) + q * p
    keys = set(without) | set(with_target)
    return sum((abs(without.get(k, Fraction(0)) - with_target.get(k, Fraction(0))) for k in keys), Fraction(0)) / 2


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 40),
    m=st.integers(0, 12),
    q=st.fractions(min_value=Fraction(1, 100), max_value=1, max_denominator=100),
    empty=st.booleans(),
)
def test_the_bound_is_the_exact_leak_of_one_round(n: int, m: int, q: Fraction, empty: bool) -> None:
    """The bound is at least the total variation of what observers see, and equal to it when the flips
    all move mass the same way (one flip size), so it is not loose there."""
    bound = refusal_delta(population=n, rate=float(q), min_cohort=m, rounds=1, empty_released=empty)
    tv = exact_tv(n, q, m, empty)
    assert float(tv) <= bound + 1e-12
    if len([c for c in flip_sizes(m, empty_released=empty) if c <= n - 1]) <= 1:
        assert bound == pytest.approx(float(tv), rel=1e-9, abs=1e-15)


def test_known_answer_and_composition_over_rounds() -> None:
    # N = 300, q = 0.1, m = 24, empty rounds released: q * (P[Bin(299, .1) = 0] + P[Bin(299, .1) = 23]) per round
    q = Fraction(1, 10)
    per_round = q * sum(comb(299, c) * q**c * (1 - q) ** (299 - c) for c in (0, 23))
    got = refusal_delta(population=300, rate=0.1, min_cohort=24, rounds=30, empty_released=True)
    assert got == pytest.approx(float(30 * per_round), rel=1e-9)
    assert 0.05 < got < 0.2  # this deployment's observers' delta is dominated by it, not by dp.delta
    # the default run's shape: 1,000 clients at q = 0.1, so a minimum far below qN costs nothing visible
    assert refusal_delta(population=1000, rate=0.1, min_cohort=24, rounds=30, empty_released=True) < 1e-20


def test_no_minimum_no_flip_and_bad_inputs_refused() -> None:
    assert flip_sizes(1, empty_released=True) == () and flip_sizes(0, empty_released=True) == ()
    assert flip_sizes(1, empty_released=False) == (0,)  # nothing vs a one-client release
    assert flip_sizes(3, empty_released=False) == (2,) and flip_sizes(3, empty_released=True) == (0, 2)
    assert refusal_delta(population=50, rate=0.2, min_cohort=1, rounds=10, empty_released=True) == 0.0
    for kw in ({"population": 0, "rate": 0.1}, {"population": 10, "rate": 0.0}, {"population": 10, "rate": 1.5}):
        with pytest.raises(ConfigurationError):
            refusal_delta(min_cohort=3, rounds=1, empty_released=True, **kw)  # type: ignore[arg-type]
