"""A ledger that charges Poisson rounds whose cohorts were not Poisson-sampled is said so in its guarantee.

The accountant's amplification assumes each client joins each round independently with rate ``q``. A
driver whose strategy draws fixed-size cohorts (Flower's ``fraction_fit``) or everyone while the ledger
is told ``Sampling.poisson`` charges too little. The ledger keeps every round's roster (operator-side),
so the guarantee checks the cohort sizes against Binomial(N, q) and warns when they cannot be Poisson.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dp.accounting import Sampling
from dp.guarantee import ledger_guarantee
from dp.ledger import PrivacyLedger
from dp.sampling import poisson_cohort, poisson_sizes_p_value
from privagg.errors import ConfigurationError
from privagg.randomness import InsecureDeterministicSecrets

N, Q, T = 200, 0.1, 30
S = Sampling.poisson(rate=Q, population=N)


def _ledger(rosters: list[tuple[int, ...]]) -> PrivacyLedger:
    led = PrivacyLedger(delta=1e-5, accountants=("rdp",))
    for r, roster in enumerate(rosters, start=1):
        led.record(round=r, noise_multiplier=1.0, sampling=S, roster=roster)
    return led


def _guarantee(led: PrivacyLedger):  # type: ignore[no-untyped-def]
    return ledger_guarantee(led, noise="client", accountant="rdp", population=N, min_cohort=1, empty_released=True)


def test_fixed_size_cohorts_charged_as_poisson_are_warned() -> None:
    rng = np.random.default_rng(0)
    fixed = [tuple(sorted(rng.choice(N, size=20, replace=False).tolist())) for _ in range(T)]
    g = _guarantee(_ledger(fixed))
    assert g.sampling_p_value < 1e-6
    assert any("not Poisson" in w for w in g.warnings())
    everyone = _guarantee(_ledger([tuple(range(N))] * T))
    assert any("not Poisson" in w for w in everyone.warnings())


@pytest.mark.parametrize("seed", range(5))
def test_poisson_cohorts_are_not_warned(seed: int) -> None:
    secrets = InsecureDeterministicSecrets(seed)
    rosters = [poisson_cohort(N, Q, secrets=secrets) for _ in range(T)]
    g = _guarantee(_ledger(rosters))
    assert g.sampling_p_value > 1e-6 and not any("not Poisson" in w for w in g.warnings())


def test_p_value_is_the_two_sided_chi_square_dispersion_test() -> None:
    sizes = [20] * 10
    assert poisson_sizes_p_value(sizes, rate=Q, population=N) == 0.0  # no spread at all: fixed-size
    mean, var = N * Q, N * Q * (1 - Q)
    sizes = [int(mean + s * math.sqrt(var)) for s in (1, -1) * 5]
    p = poisson_sizes_p_value(sizes, rate=Q, population=N)
    assert 0.05 < p <= 1.0
    assert math.isnan(poisson_sizes_p_value([5, 6], rate=Q, population=N))  # too few rounds to say
    assert math.isnan(poisson_sizes_p_value([N] * 20, rate=1.0, population=N))  # q = 1: nothing random
    with pytest.raises(ConfigurationError):
        poisson_sizes_p_value([1] * 20, rate=0.0, population=N)
