"""What the analytic DP audit claims: ``honest_fraction`` is assumed of every cohort (the audit says what it
costs if it holds of the population only), and a budget PASS is accounting, not a test of the deployment.

With client or distributed noise each client adds ``1/t`` of the noise variance and the accounting subtracts
``floor((1 - h) n)`` dishonest clients from the survivors. An adversary holding a fraction ``1 - h`` of the
*population* has more than that in a random cohort with probability near one half per round; then a sum at
the secure sum's survivor floor carries fewer honest shares than charged. The audit WARNs with that
probability and the per-cohort ``honest_fraction`` that covers the population fraction at ``delta``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from scipy.stats import binom

from privagg.audit import AuditConfig
from privagg.audit.engine import check_dp


def _cfg(dp: dict[str, Any]) -> AuditConfig:
    dep = {"num_clients": 1000, "model_params": 650, "threat": "active"}
    return AuditConfig.from_mapping({"protocol_attacks": False, "deployment": dep, "dp": dp})


BASE = {"sampling_rate": 0.1, "rounds": 30, "clip_norm": 0.5}
NOISE = {"client": {"noise_multiplier": 1.0}, "distributed": {"target_epsilon": 8.0}}  # no calibration for client


@pytest.mark.parametrize("noise", ["client", "distributed"])
def test_a_per_cohort_honest_fraction_is_warned_with_its_population_reading(noise: str) -> None:
    findings, _ = check_dp(_cfg({**BASE, **NOISE[noise], "noise": noise, "honest_fraction": 0.9}))
    f = {x.id: x for x in findings}["dp.honest"]
    n, c = 100, 0.1  # expected cohort q N, population fraction 1 - h
    p = float(binom.sf(math.floor(c * n + 1e-9), n, c))  # independent: more than floor((1-h) n) corrupt
    assert f.severity == "warn"
    assert f.data["exceed_probability"] == pytest.approx(p, rel=1e-9) and 0.3 < p < 0.6
    # the per-cohort fraction that covers a population fraction 0.1 in every round but delta of the time
    k = n - round(f.data["covering_honest_fraction"] * n)
    assert 30 * float(binom.sf(k, n, c)) <= 1e-5 < 30 * float(binom.sf(k - 1, n, c))
    assert "each cohort" in f.title and "population" in f.detail


def test_every_client_honest_needs_no_such_finding() -> None:
    findings, _ = check_dp(_cfg({**BASE, **NOISE["client"], "noise": "client"}))
    assert "dp.honest" not in {x.id for x in findings}


@pytest.mark.parametrize("noise", ["client", "distributed"])
def test_a_budget_pass_says_it_is_accounting_not_a_test_of_the_deployment(noise: str) -> None:
    findings, _ = check_dp(_cfg({**BASE, **NOISE[noise], "noise": noise}))
    budget = {x.id: x for x in findings}["dp.budget"]
    assert budget.severity == "pass"
    assert "accounting of the configured mechanism" in budget.detail and "not shown here" in budget.detail
