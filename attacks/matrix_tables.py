"""The attack x defense matrix as flat tables: one row per cell (:func:`matrix_table`, the CSV and the report)
and one per defense's utility (:func:`utility_table`). Each cell row names its positive control (the defense
whose column must leak for "stopped" / "effective" to be read: :func:`attacks.registry.control_defense`) and
whether that control leaked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attacks.registry import control_defense

if TYPE_CHECKING:
    from attacks.matrix import AttackMatrix

__all__ = ["UTILITY_TOLERANCE_POINTS", "matrix_table", "utility_table"]

#: a defense whose model is more than this many accuracy points below the undefended one is not "effective"
UTILITY_TOLERANCE_POINTS = 5.0


def utility_table(m: AttackMatrix) -> tuple[list[str], list[list[Any]]]:
    """One row per defense: mean test accuracy over seeds [95% CI], per seed, the paired gap to the undefended
    model in points [95% CI], the DP noise multiplier, and whether the gap is within the tolerance."""
    header = ["mode", "defense", "utility", "ci_low", "ci_high", "per_seed", "gap_points", "gap_ci_low"]
    header += ["gap_ci_high", "noise_multiplier", f"within_{UTILITY_TOLERANCE_POINTS:.0f}_points", "error"]
    header += ["shortened"]
    rows: list[list[Any]] = []
    for d in dict.fromkeys(("none", *m.defenses)):
        if d not in m.utility:
            continue
        gap = m.utility_gap(d)
        rows.append(
            [
                m.mode,
                d,
                m.utility[d],
                *m.utility_interval(d),
                " ".join(f"{v:.3f}" for v in m.utility_per_seed.get(d, [])),
                gap,
                *m.utility_gap_interval(d),
                m.data.get("noise_multipliers", {}).get(d),
                None if gap is None else gap <= UTILITY_TOLERANCE_POINTS,
                m.utility_errors.get(d, ""),
                m.shortened(d),
            ]
        )
    return header, rows


def matrix_table(m: AttackMatrix) -> tuple[list[str], list[list[Any]]]:
    """Header and rows (one per attack x defense, plus the utility rows): what the CSV and the report hold."""
    header = [
        "mode",
        "attack",
        "defense",
        "metric",
        "mean",
        "ci_low",
        "ci_high",
        "per_seed",
        "leaks",
        "utility",
        "utility_ci_low",
        "utility_ci_high",
        "utility_gap_points",
        "gap_ci_low",
        "gap_ci_high",
        "effective",
        "error",
        "control",
        "control_leaks",
    ]
    rows: list[list[Any]] = []
    for c in m.cells:
        acc, gap = m.utility.get(c.defense), m.utility_gap(c.defense)
        (u_lo, u_hi), (g_lo, g_hi) = m.utility_interval(c.defense), m.utility_gap_interval(c.defense)
        rows.append(
            [
                m.mode,
                c.attack,
                c.defense,
                c.metric,
                c.value,
                c.low,
                c.high,
                " ".join(f"{v:.3g}" for v in c.per_seed),
                c.leaks,
                acc,
                u_lo,
                u_hi,
                gap,
                g_lo,
                g_hi,
                m.effective(c.attack, c.defense),
                c.error,
                control_defense(c.defense),
                None if (ctrl := m.control(c.attack, c.defense)) is None else ctrl.leaks,
            ]
        )
    return header, rows
