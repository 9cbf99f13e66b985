"""The audit of a distributed-DP deployment: the parameters the run would choose, or its refusal."""

from __future__ import annotations

from typing import Any

import pytest

from privagg.audit import AuditConfig
from privagg.audit.engine import check_dp


def _cfg(dp: dict[str, Any], **deployment: Any) -> AuditConfig:
    dep = {"num_clients": 1000, "model_params": 650, "threat": "active", **deployment}
    base = {"noise": "distributed", "target_epsilon": 8.0, "sampling_rate": 0.2, "rounds": 40, "clip_norm": 0.5}
    return AuditConfig.from_mapping({"protocol_attacks": False, "deployment": dep, "dp": {**base, **dp}})


def test_distributed_plan_is_audited() -> None:
    findings, budget = check_dp(_cfg({"mechanism": "skellam", "bits": 16}))
    by_id = {f.id: f for f in findings}
    assert by_id["dp.budget"].severity == "pass" and "PRV n/a" in by_id["dp.budget"].detail
    assert by_id["dp.distributed"].severity == "pass" and "16 bits" in by_id["dp.distributed"].title
    assert budget is not None and budget.epsilon["rdp"][-1] <= 8.0 and "prv" not in budget.epsilon
    assert "dp.distributed.trust" not in by_id  # a secure sum


def test_too_few_bits_fail_naming_the_bits_that_work() -> None:
    findings, budget = check_dp(_cfg({"bits": 6}))
    assert budget is None
    assert findings[0].id == "dp.distributed" and findings[0].severity == "fail"
    assert "use bits >=" in findings[0].detail


def test_plain_aggregation_and_fixed_sampling_are_flagged() -> None:
    findings, _ = check_dp(_cfg({}, aggregation="plain"))
    assert any(f.id == "dp.distributed.trust" and f.severity == "warn" for f in findings)
    findings, _ = check_dp(_cfg({"sampling": "fixed"}))
    assert findings[0].severity == "fail" and "Poisson" in findings[0].detail


def test_malicious_model_runs_the_deployed_distributed_mechanism() -> None:
    """The imprint attack is run through the real distributed-DP path with the deployment's mechanism and
    bits (not a client-noised stand-in), and the finding says so."""
    from privagg.audit.aggregations import check_malicious_model

    f = check_malicious_model(_cfg({"mechanism": "skellam", "bits": 18}), seeds=(0, 1))
    assert f.id == "secagg.malicious-model"
    assert "'distributed-dp'" in f.detail and "skellam, 18 bits, as deployed" in f.detail
    assert f.severity == "pass" and max(f.data["fractions"]) < 0.05


def test_the_audit_plans_what_the_run_would_choose() -> None:
    """The audit asks the run's own planner, with the survivor floor of the deployment's graph (the
    aggregator's ``min_survivors``, not its threshold): same bits, scale and noise split as the run."""
    from dp.accounting import Sampling
    from privagg.audit.engine import check_dp
    from protocols.distributed_dp import plan_parameters
    from protocols.secagg_aggregator import SecAggAggregator

    cfg = _cfg({}, degree=20, threshold=12)
    (found,) = [f for f in check_dp(cfg)[0] if f.id == "dp.distributed"]
    mech = cfg.dp.mechanism
    assert mech is not None
    run = plan_parameters(
        mech,
        Sampling.poisson(rate=0.2, population=1000),
        650,
        rounds=40,
        inner=SecAggAggregator(threat="active", degree=20, threshold=12),
    )
    assert found.data["shares"] == run.shares > 12  # a threshold-sized split would have planned 12
    assert (found.data["bits"], found.data["scale"]) == (run.bits, run.scale)


def test_distributed_dp_under_paillier_cannot_run_and_is_not_a_pass() -> None:
    """HEAD: dp.budget and dp.distributed PASSed a Paillier deployment, whose aggregator has no sum mod 2^bits
    (``Aggregator.modular_sum`` refuses): the run cannot release one such round."""
    from privagg.errors import ConfigurationError
    from protocols.aggregation import build_aggregator

    with pytest.raises(ConfigurationError, match="cannot compute a sum mod"):
        build_aggregator("paillier", {}).modular_sum({}, bits=16, ctx=None)  # type: ignore[arg-type]
    findings, budget = check_dp(_cfg({}, aggregation="paillier"))
    assert budget is None and [(f.id, f.severity) for f in findings] == [("dp.distributed", "fail")]
    assert "computes no sum mod 2^bits" in findings[0].detail
