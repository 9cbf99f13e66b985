"""What an audit check returns: typed findings and the evidence behind them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["AttackRow", "BudgetCurve", "Finding", "Severity"]

Severity = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    """One check's verdict: ``id`` (e.g. ``secagg.parameters``), severity, title, detail and data."""

    id: str
    severity: Severity
    title: str
    detail: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackRow:
    """One protocol attack run against one mode: did it isolate the target, what stopped it."""

    attack: str
    mode: str
    succeeded: bool
    stopped_by: str
    psnr: float | None


@dataclass(frozen=True)
class BudgetCurve:
    """Epsilon after each marked round, per accountant (``rdp``, ``prv``)."""

    rounds: tuple[float, ...]
    epsilon: Mapping[str, tuple[float, ...]]
    delta: float
    max_epsilon: float
