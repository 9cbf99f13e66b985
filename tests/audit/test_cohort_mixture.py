"""A configured secure-aggregation graph is judged over the Poisson cohort sizes, not only at q*N.

``cohort_mixture`` mixes per-cohort bounds over ``C ~ Binomial(N, q)``, ``C >= m``: exact over a
window, plus the stated tail bound (every cohort outside it counted with bound 1), and names the
worst cohort. A hand-computed case, a truncated case against brute force, a Hypothesis property,
and the audit finding that now fails a graph which passes at the expected cohort.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from privagg.audit.aggregations import AGGREGATIONS, check_secagg
from privagg.audit.cohorts import cohort_mixture, secure_floor
from privagg.audit.config import AuditConfig, Deployment


def test_a_hand_computed_mixture() -> None:
    # N = 4, q = 1/2, cohorts of 2..4 run; privacy bound 2^-c, failure bound 4^-c
    mix = cohort_mixture(lambda c: (-c, -2 * c), population=4, rate=0.5, min_cohort=2)
    sec = sum(Fraction(math.comb(4, c), 16) * Fraction(1, 2**c) for c in (2, 3, 4))
    fail = sum(Fraction(math.comb(4, c), 16) * Fraction(1, 4**c) for c in (2, 3, 4))
    assert sec == Fraction(33, 256) and fail == Fraction(113, 4096)
    assert 2**mix.security_log2 == pytest.approx(float(sec), rel=1e-12)
    assert 2**mix.failure_log2 == pytest.approx(float(fail), rel=1e-12)
    assert (mix.low, mix.high, mix.tail) == (2, 4, 0.0) and mix.runs == pytest.approx(11 / 16, rel=1e-12)
    assert (mix.worst_security_cohort, mix.worst_security_log2) == (2, -2.0)  # the smallest cohort that runs
    assert "worst cohort 2: 2^-2.0, drawn with probability 2^-1.4" in mix.describe()  # P[C = 2] = 3/8


def _brute(bound: np.ndarray, n: int, q: float, m: int) -> float:
    c = np.arange(m, n + 1)
    return float(np.sum(binom.pmf(c, n, q) * 2.0 ** bound[m:]))


def test_the_truncated_tail_is_bounded_as_stated() -> None:
    n, q, m, tail_log2 = 400, 0.1, 5, -30.0
    bound = np.where(np.arange(n + 1) < 30, 0.0, -50.0)  # small cohorts always fail: the tail matters
    mix = cohort_mixture(lambda c: (bound[c], bound[c]), population=n, rate=q, min_cohort=m, tail_log2=tail_log2)
    exact = _brute(bound, n, q, m)
    assert mix.low > m and mix.high < n and 0 < mix.tail < 2**tail_log2  # the window was cut on both sides
    assert exact <= 2**mix.security_log2 <= exact + mix.tail + 1e-15
    assert mix.worst_security_log2 == 0.0 and mix.worst_security_cohort == mix.low


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(3, 300),
    q=st.floats(0.01, 1.0),
    m_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
    tail_log2=st.sampled_from([-100.0, -40.0, -12.0]),
)
def test_the_mixture_lies_between_the_per_cohort_bounds(
    n: int, q: float, m_frac: float, seed: int, tail_log2: float
) -> None:
    m = int(m_frac * n)
    rng = np.random.default_rng(seed)
    bound = -rng.uniform(0.0, 60.0, size=n + 1)
    mix = cohort_mixture(lambda c: (bound[c], -bound[c] / 2), population=n, rate=q, min_cohort=m, tail_log2=tail_log2)
    exact = _brute(bound, n, q, m)
    got = 2**mix.security_log2
    assert mix.tail <= 2**tail_log2 and mix.runs == pytest.approx(float(binom.sf(m - 1, n, q)), rel=1e-9, abs=1e-300)
    assert exact * (1 - 1e-9) <= got <= exact * (1 + 1e-9) + mix.tail  # exact, up to the stated tail bound
    if mix.low <= mix.high:
        window = bound[mix.low : mix.high + 1]
        mass = float(binom.pmf(np.arange(mix.low, mix.high + 1), n, q).sum())
        inside = (got - mix.tail) / mass  # the window's mixture, conditional on the cohort being in it
        assert 2 ** window.min() * (1 - 1e-6) - 1e-12 <= inside <= 2 ** window.max() * (1 + 1e-6) + 1e-12
        assert mix.worst_security_log2 == window.max()
        assert bound[mix.worst_security_cohort] == window.max()
        w = float(binom.logpmf(mix.worst_security_cohort, n, q)) / math.log(2)
        assert mix.worst_security_weight_log2 == pytest.approx(w, rel=1e-9, abs=1e-9)


def _deployment() -> Deployment:
    """Rates of the hardened example, 400 clients at q = 0.1 (cohorts of about 40), the graph derived for 40."""
    base = Deployment(num_clients=400, dropout_rate=0.1, corruption_rate=0.05)
    derived = base.derived_params(40)
    return dataclasses.replace(base, degree=derived.degree, threshold=derived.threshold)


def test_a_graph_that_passes_at_the_expected_cohort_is_judged_over_the_cohorts_that_run() -> None:
    dep = _deployment()
    (at_expected,), _ = check_secagg(dep, round_size=40)
    (mixed,), _ = check_secagg(dep, round_size=40, poisson_rate=0.1)
    assert at_expected.severity == "pass" and at_expected.data["failure_log2"] < -dep.failure_bits
    mix = mixed.data["cohort_mixture"]
    assert mixed.severity == "warn" and mixed.data["failure_log2"] == mix["failure_log2"] > -dep.failure_bits
    assert mixed.data["at_expected_cohort"]["failure_log2"] == at_expected.data["failure_log2"]
    assert mix["min_cohort"] == secure_floor(dep) and mix["worst_failure_cohort"] < 40  # a smaller cohort
    assert f"worst cohort {mix['worst_failure_cohort']}" in mixed.detail


def test_the_audit_passes_the_sampling_rate_to_the_graph_finding() -> None:
    dep = _deployment()
    table = {"noise_multiplier": 1.0, "sampling": "poisson", "sampling_rate": 0.1, "rounds": 10}
    cfg = AuditConfig.from_mapping({"deployment": dataclasses.asdict(dep), "dp": table, "protocol_attacks": False})
    found = {f.id: f for f in AGGREGATIONS.get("secagg")().audit(cfg).findings}
    assert found["secagg.parameters"].severity == "warn" and "cohort_mixture" in found["secagg.parameters"].data
    fixed = AuditConfig.from_mapping(
        {"deployment": dataclasses.asdict(dep), "dp": {**table, "sampling": "fixed"}, "protocol_attacks": False}
    )
    found = {f.id: f for f in AGGREGATIONS.get("secagg")().audit(fixed).findings}
    assert "cohort_mixture" not in found["secagg.parameters"].data  # a fixed cohort is judged at its size
