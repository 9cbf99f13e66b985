"""The attack x defense matrix: cells with intervals, refusals recorded, utility beside every defense,
and "effective" only when the attack is stopped within 5 points of the undefended model's accuracy."""

from __future__ import annotations

import pytest

from attacks.matrix import AttackMatrix, MatrixCell, attack_matrix, matrix_table, noise_check
from attacks.registry import AttackCase

pytestmark = pytest.mark.usefixtures("one_quiet_thread")


def _matrix(utility: dict[str, float | None], cells: list[MatrixCell]) -> AttackMatrix:
    return AttackMatrix(
        attack="matrix", case=AttackCase(), attacks=["a"], defenses=["none", "dp"], cells=cells, utility=utility
    )


def test_effective_needs_no_leak_and_utility_within_five_points() -> None:
    stopped = [MatrixCell("a", "none", "fraction_recovered", 1.0), MatrixCell("a", "dp", "fraction_recovered", 0.0)]
    assert _matrix({"none": 0.90, "dp": 0.86}, stopped).effective("a", "dp") is True
    assert _matrix({"none": 0.90, "dp": 0.84}, stopped).effective("a", "dp") is False  # 6 points
    assert _matrix({"none": 0.90, "dp": None}, stopped).effective("a", "dp") is None  # utility refused
    leaking = [MatrixCell("a", "none", "fraction_recovered", 1.0), MatrixCell("a", "dp", "fraction_recovered", 0.1)]
    assert _matrix({"none": 0.90, "dp": 0.90}, leaking).effective("a", "dp") is False
    # the positive control (no defense) recovered nothing either: not shown, never effective
    blind = [MatrixCell("a", "none", "fraction_recovered", 0.0), MatrixCell("a", "dp", "fraction_recovered", 0.0)]
    assert _matrix({"none": 0.90, "dp": 0.90}, blind).effective("a", "dp") is None


def test_cell_leak_semantics() -> None:
    assert MatrixCell("a", "d", "auc", 0.62).leaks is True
    assert MatrixCell("a", "d", "auc", 0.55).leaks is False
    assert MatrixCell("a", "d", "fraction_recovered", 0.0).leaks is False
    assert MatrixCell("a", "d", error="PrivacyBudgetExceeded: ...").leaks is None


def test_matrix_runs_each_attack_against_each_defense() -> None:
    m = attack_matrix(("imprint",), ("none", "dp"), seeds=(0, 1), utility_rounds=2)
    assert [(c.attack, c.defense) for c in m.cells] == [("imprint", "none"), ("imprint", "dp")]
    none, dp = m.cell("imprint", "none"), m.cell("imprint", "dp")
    assert none.metric == "fraction_recovered" and none.value == 1.0 and none.per_seed == (1.0, 1.0)
    assert dp.value == 0.0 and dp.leaks is False
    assert set(m.utility) == {"none", "dp"} and all(isinstance(v, float) for v in m.utility.values())
    header, rows = matrix_table(m)
    assert header[:4] == ["mode", "attack", "defense", "metric"] and len(rows) == 2
    assert {r[0] for r in rows} == {"cohort"} and m.data["mode"] == "cohort"
    assert rows[1][header.index("utility_gap_points")] == pytest.approx(m.utility_gap("dp"))


def test_noise_check_needs_both_columns_and_both_thresholds() -> None:
    def m(ddp: float, sec: float) -> AttackMatrix:
        return AttackMatrix(
            attack="matrix",
            case=AttackCase(),
            attacks=["imprint", "lira"],
            defenses=["secagg", "distributed-dp"],
            cells=[
                MatrixCell("imprint", "secagg", "fraction_recovered", sec),
                MatrixCell("imprint", "distributed-dp", "fraction_recovered", ddp),
                MatrixCell("lira", "secagg", "auc", 0.7),
                MatrixCell("lira", "distributed-dp", "auc", 0.5),
            ],
        )

    got = noise_check(m(0.0, 0.9))
    assert list(got) == ["imprint"]  # AUC cells are not image attacks
    assert {k: got["imprint"][k] for k in ("distributed-dp", "secagg", "met", "required")} == {
        "distributed-dp": 0.0,
        "secagg": 0.9,
        "met": True,
        "required": True,
    }
    assert noise_check(m(0.1, 0.9))["imprint"]["met"] is False  # the noise lets 10% through
    assert noise_check(m(0.0, 0.6))["imprint"]["met"] is False  # secure aggregation alone did not leak enough
    assert noise_check(m(0.0, 0.9), defense="dp") == {}  # not in the matrix


def test_the_distributed_dp_column_and_issue_15_check() -> None:
    m = attack_matrix(("imprint",), ("secagg", "distributed-dp"), seeds=(0, 1), utility_rounds=1)
    check = m.data["distributed_dp_check"]["imprint"]
    assert check["distributed-dp"] == 0.0 and check["secagg"] >= 0.7 and check["met"] is True
    assert check["distributed-dp_per_seed"] == (0.0, 0.0)
    caption, _, rows = next(t for t in m.tables if t[0].startswith("Issue 15"))
    assert "Issue 15" in caption and "epsilon 8" in caption and rows[0][0] == "imprint"
    assert set(m.utility) == {"none", "secagg", "distributed-dp"}
