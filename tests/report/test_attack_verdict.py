"""Every attack result gets a one-line verdict naming its metric and what it means; titles say what ran."""

from __future__ import annotations

import pytest

from attacks.registry import AttackCase, AttackResult
from privagg.report.attacks import attack_title, verdict


def _r(metrics: dict[str, float], success: bool | None = None, defense: str = "none") -> AttackResult:
    return AttackResult(attack="a", case=AttackCase(defense=defense), metrics=metrics, success=success)


@pytest.mark.parametrize(
    ("metrics", "success", "kind", "fragments"),
    [
        ({"psnr": 31.0, "random_image_psnr": 5.0}, None, "inference", ["PSNR 31.0 dB", "recognisable", ">= 20 dB"]),
        ({"psnr": 7.5, "random_image_psnr": 5.2}, None, "inference", ["PSNR 7.5 dB", "not recognisable"]),
        ({"auc": 0.5, "tpr@1%fpr": 0.01, "model_test_accuracy": 0.15}, None, "inference",
         ["AUC 0.50", "near chance", "0.5 = chance", "test accuracy 0.15", "weak model"]),
        ({"auc": 0.9}, None, "inference", ["AUC 0.90", "better than chance"]),
        ({"accuracy": 0.9, "attack_success_rate": 0.8}, True, "poisoning", ["backdoor success rate 0.80", "succeeded"]),
        ({"accuracy": 0.4}, None, "poisoning", ["model accuracy under attack 0.40"]),
        ({"x/unprotected": 1.0, "x/active": 0.0, "y/unprotected": 1.0, "y/active": 0.0}, True, "protocol",
         ["unprotected 2/2", "active 0/2", "as expected", "1 = isolated"]),
        ({"x/active": 1.0}, False, "protocol", ["active 1/1", "NOT as expected"]),
        ({}, True, "inference", ["succeeded"]),
        ({"psnr": float("nan")}, None, "inference", ["no verdict metric"]),
    ],
)
def test_verdict_is_one_line_naming_metric_and_meaning(metrics, success, kind, fragments) -> None:
    line = verdict(_r(metrics, success), kind)
    assert line.startswith("verdict: ") and "\n" not in line and "None" not in line and "null" not in line
    for f in fragments:
        assert f in line


def test_titles_say_what_ran() -> None:
    proto = _r({"x/unprotected": 1.0, "x/semi-honest": 1.0, "x/active": 0.0})
    assert attack_title(proto, "protocol") == (
        "a: malicious server against secure aggregation (unprotected, semi-honest, active)"
    )
    assert "defense" not in attack_title(proto, "protocol")
    assert attack_title(_r({"psnr": 1.0}, defense="secagg"), "inference") == "a against defense secagg"
