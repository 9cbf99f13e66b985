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
        ({"psnr": 31.0, "random_image_psnr": 5.0}, None, "inference", ["PSNR 31.0 dB", "recognisable", ">= 25 dB"]),
        ({"psnr": 22.0}, None, "inference", ["PSNR 22.0 dB", "not recognisable"]),
        ({"psnr": 80.0, "fraction_recovered": 0.8, "images": 10.0, "psnr_median": 80.0}, None, "inference",
         ["80% of 10 images recovered", "median PSNR 80.0 dB", "LEAKS", ">= 25 dB"]),
        ({"fraction_recovered": 0.0, "images": 10.0, "psnr_median": 11.0, "target_fraction_recovered": 0.0,
          "target_images": 1.0}, None, "inference", ["0% of 10 images", "does not leak", "the target's: 0%"]),
        ({"fraction_recovered": 1.0, "identifiable": 1.0, "rounds": 20.0, "target_rounds": 5.0}, True, "inference",
         ["recovered in 5/5 of its rounds", "20 aggregates", "identifiable", "LEAKS"]),
        ({"auc": 0.51, "model_test_accuracy": 0.12, "undefended_test_accuracy": 0.9, "utility_gap_points": 78.0},
         None, "inference", ["near chance", "utility cost 78.0 points", "NOT an effective defense"]),
        ({"auc": 0.52, "auc_ci_low": 0.47, "auc_ci_high": 0.57, "model_test_accuracy": 0.88,
          "undefended_test_accuracy": 0.9, "utility_gap_points": 2.0}, None, "inference",
         ["[95% CI 0.47..0.57]", "utility cost 2.0 points", "no defense here"]),  # effective: needs a control
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
def test_verdict_is_one_line_naming_metric_and_meaning(
    metrics: dict[str, float], success: bool | None, kind: str, fragments: list[str]
) -> None:
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
