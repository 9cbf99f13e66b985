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
    """One protocol attack class run against one mode: did it work, and what happened.

    ``kind``: ``isolation`` (a malicious server recovering one client's update, scored by
    PSNR), ``server`` / ``client`` (an adversarial conformance case: a malicious server or
    client against the promise ``promise``). ``succeeded``: the attack worked (the promise
    was broken); ``stopped_by``: what happened when it was run.
    """

    attack: str
    mode: str
    succeeded: bool
    stopped_by: str
    psnr: float | None
    kind: str = "isolation"
    promise: str = ""
    ran: bool = True  # False: the attack could not be run (not tested, never "held")

    @property
    def outcome(self) -> str:
        if not self.ran:
            return "NOT RUN"
        if not self.succeeded:
            return "stopped" if self.kind == "isolation" else "held"
        return "ATTACK WORKED" if not self.stopped_by.startswith("crashed") else "CRASHED"


@dataclass(frozen=True)
class BudgetCurve:
    """Epsilon after each marked round, per accountant (``rdp``, ``prv``)."""

    rounds: tuple[float, ...]
    epsilon: Mapping[str, tuple[float, ...]]
    delta: float
    max_epsilon: float
