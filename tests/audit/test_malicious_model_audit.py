"""The malicious-model finding runs the imprint attack against the deployment's own per-round noise.

On HEAD the attack case was calibrated to ``target_epsilon`` or, without one, to a fixed epsilon 8: a
deployment whose configured noise multiplier is far too small to stop a crafted model still got a PASS.
"""

from __future__ import annotations

from typing import Any

import pytest

from privagg.audit import AuditConfig
from privagg.audit.malicious_model import check_malicious_model

pytestmark = pytest.mark.filterwarnings("ignore::dp.noise.InsecureNoiseWarning")


def _cfg(**dp: Any) -> AuditConfig:
    dep = {"num_clients": 1000, "threat": "active", "client_policy": True}
    base = {"noise": "client", "sampling_rate": 0.1, "rounds": 10, "max_epsilon": 1e9}
    return AuditConfig.from_mapping({"protocol_attacks": False, "deployment": dep, "dp": {**base, **dp}})


def test_a_noise_multiplier_too_small_to_stop_a_crafted_model_is_not_a_pass() -> None:
    f = check_malicious_model(_cfg(noise_multiplier=0.001), seeds=(0, 1))
    assert f.severity == "fail", f.detail  # HEAD: "pass", run at epsilon 8 instead of the deployed noise
    assert "noise multiplier 0.001" in f.detail and max(f.data["fractions"]) > 0.1


def test_the_deployed_noise_that_stops_it_passes_and_says_what_was_run() -> None:
    f = check_malicious_model(_cfg(noise_multiplier=1.0), seeds=(0, 1))
    assert f.severity == "pass" and max(f.data["fractions"]) == 0.0
    assert "the deployment's per-round noise in the sum (std 1 clip norms" in f.detail


def test_a_calibrated_deployment_is_attacked_with_the_multiplier_the_run_calibrates() -> None:
    from dp import Sampling, calibrate

    f = check_malicious_model(_cfg(target_epsilon=8.0), seeds=(0, 1))
    z = calibrate(target_epsilon=8.0, delta=1e-5, rounds=10, sampling=Sampling.poisson(rate=0.1, population=1000))
    assert f"noise multiplier {z:.3g}" in f.detail and f.severity == "pass"
