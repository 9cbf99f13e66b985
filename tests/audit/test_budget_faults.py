"""A budget PASS needs a guarantee to hold at all: a delta above 1/population or public cohorts FAIL it.

On HEAD both deployments below got ``dp.budget`` PASS (the epsilon was accounted and under the limit).
"""

from __future__ import annotations

from typing import Any

import pytest

from privagg.audit import AuditConfig
from privagg.audit.engine import check_dp


def _budget(**dp: Any) -> Any:
    dep = {"num_clients": 1000, "threat": "active", "client_policy": True, "model_params": 650}
    base = {"sampling_rate": 0.2, "rounds": 40, "clip_norm": 0.5}
    cfg = AuditConfig.from_mapping({"protocol_attacks": False, "deployment": dep, "dp": {**base, **dp}})
    return next(f for f in check_dp(cfg)[0] if f.id == "dp.budget")


CLIENT = {"noise": "client", "noise_multiplier": 2.0}
DISTRIBUTED = {"noise": "distributed", "target_epsilon": 8.0}


@pytest.mark.parametrize("noise", [CLIENT, DISTRIBUTED])
def test_the_control_passes(noise: dict[str, Any]) -> None:
    f = _budget(**noise)
    assert f.severity == "pass" and f.data["faults"] == [], f.detail


@pytest.mark.parametrize(
    ("noise", "fault", "said"),
    [
        (CLIENT, {"delta": 0.01}, "exceeds 1/population = 1/1000"),
        (CLIENT, {"delta": 0.01, "allow_large_delta": True}, "exceeds 1/population = 1/1000"),
        (CLIENT, {"reproducible_cohorts": True}, "amplified epsilon does not hold"),
        (DISTRIBUTED, {"delta": 0.01, "allow_large_delta": True}, "exceeds 1/population = 1/1000"),
        (DISTRIBUTED, {"reproducible_cohorts": True}, "amplified epsilon does not hold"),
    ],
)
def test_a_guarantee_void_as_configured_fails_the_budget(
    noise: dict[str, Any], fault: dict[str, Any], said: str
) -> None:
    f = _budget(**noise, **fault)
    assert f.severity == "fail" and said in f.detail and f.title.endswith("does not hold as configured")


@pytest.mark.parametrize(("aggregation", "severity"), [("plain", "fail"), ("secagg", "pass")])
def test_client_noise_without_a_secure_sum_is_no_dp_against_the_server(aggregation: str, severity: str) -> None:
    # HEAD: "plain" got dp.server PASS ("epsilon 2.48, unamplified") while the server saw each client's update
    # carrying only its share of the noise
    dep = {"num_clients": 100, "aggregation": aggregation}
    dp = {"noise": "client", "noise_multiplier": 3.0, "sampling_rate": 1.0, "rounds": 5, "delta": 1e-3}
    cfg = AuditConfig.from_mapping({"protocol_attacks": False, "deployment": dep, "dp": {**dp, "max_epsilon": 20}})
    f = next(f for f in check_dp(cfg)[0] if f.id == "dp.server")
    assert f.severity == severity, f.title


@pytest.mark.parametrize(("corruption", "warned"), [(0.05, True), (0.3, False)])
def test_a_graph_judged_below_the_dp_tables_dishonest_fraction_is_warned(corruption: float, warned: bool) -> None:
    # HEAD: secagg.parameters PASSed at corruption 0.05 with nothing said, while [dp] allowed 30% dishonest
    from privagg.audit.aggregations import SecureAggregation

    dep = {"num_clients": 1000, "threat": "active", "client_policy": True, "corruption_rate": corruption}
    dp = {"noise": "client", "noise_multiplier": 2.0, "honest_fraction": 0.7, "sampling": "fixed"}
    cfg = AuditConfig.from_mapping({"protocol_attacks": False, "deployment": dep, "dp": dp})
    ids = [f.id for f in SecureAggregation().audit(cfg).findings]
    assert ("secagg.corruption" in ids) is warned
