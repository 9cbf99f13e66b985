"""What observers learn from whether a Poisson round ran: an extra delta, bounded exactly.

A secure sum refuses a cohort below its minimum ``m`` (``Aggregator.min_cohort``): the round
releases nothing and the model stays as it was. Whether a round ran is then a function of the
cohort size, which depends on who was sampled, so it is an output the subsampled accountant
does not see. ``dp/SUBSAMPLING.md`` ("Refused rounds") proves that it costs at most an additive

    delta_refusal = sum over rounds of  q * P[Bin(N - 1, q) in F]

on top of the accountant's ``(epsilon, delta)`` against observers of the released models, where
``F`` is the set of cohort sizes of the *other* clients at which adding the target changes what
is observable (:func:`flip_sizes`): ``m - 1`` (refused -> runs), and ``0`` when an empty round is
seen differently from a one-client round. Against the server, which sees the roster sizes, nothing
is added.

Assumed (stated, not measured): the protocol runs every cohort of at least ``m`` clients, as
``min_cohort`` reports it (``SecAggAggregator.min_cohort`` searches for the smallest such cohort).
"""

from __future__ import annotations

from scipy.stats import binom

from privagg.errors import ConfigurationError

__all__ = ["flip_sizes", "refusal_delta"]


def flip_sizes(min_cohort: int, *, empty_released: bool) -> tuple[int, ...]:
    """The sizes ``c`` of the rest of the cohort at which adding one client changes what observers see of
    the round (whether the model moved): ``m - 1`` when ``m >= 2`` (refused -> runs), and ``0`` when an
    empty round is observed differently from a one-client round (released noise vs refused, or nothing
    vs a release)."""
    flips = [0] if empty_released != (min_cohort <= 1) else []
    if min_cohort >= 2:
        flips.append(min_cohort - 1)
    return tuple(sorted(set(flips)))


def refusal_delta(*, population: int, rate: float, min_cohort: int, rounds: int, empty_released: bool) -> float:
    """The additive delta of ``rounds`` Poisson rounds at rate ``rate`` over ``population`` clients whose
    secure sum refuses cohorts below ``min_cohort`` (module docstring; proof in dp/SUBSAMPLING.md)."""
    if population < 1 or rounds < 0 or not 0 < rate <= 1:
        raise ConfigurationError(
            f"population {population}, rate {rate}, rounds {rounds}", field="sampling", accepted="N >= 1, 0 < q <= 1"
        )
    flips = flip_sizes(min_cohort, empty_released=empty_released)
    per_round = rate * sum(float(binom.pmf(c, population - 1, rate)) for c in flips if c <= population - 1)
    return min(1.0, rounds * per_round)
