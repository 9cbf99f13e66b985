"""The deployment audit behind ``privagg audit``: configuration in, typed findings out.

:class:`AuditConfig` (:mod:`privagg.audit.config`) describes the deployment;
:func:`run_audit` (:mod:`privagg.audit.engine`) runs the checks and returns an
:class:`AuditResult` of :class:`Finding` objects and their evidence;
:func:`privagg.report.audit.audit_report` turns it into a report.

The empirical audit (:mod:`privagg.audit.canaries`, statistics in :mod:`privagg.audit.empirical`):
:func:`run_canary_audit` runs a run configuration's own DP-FedAvg with canary clients and
returns a :class:`CanaryAuditResult` (epsilon lower bounds beside the accountant's epsilon);
:func:`privagg.report.audit.empirical_report` renders it.
"""

from privagg.audit.aggregations import AGGREGATIONS, AggregationAudit, AuditedAggregation, register_aggregation
from privagg.audit.canaries import CanaryAuditResult, CanaryConfig, EmpiricalCurve, run_canary_audit
from privagg.audit.config import FLOWER_DEFAULTS, AuditConfig, AuditDP, Deployment
from privagg.audit.empirical import EpsilonBound
from privagg.audit.engine import AuditResult, run_audit
from privagg.audit.findings import AttackRow, BudgetCurve, Finding, Severity

__all__ = [
    "AGGREGATIONS",
    "FLOWER_DEFAULTS",
    "AggregationAudit",
    "AttackRow",
    "AuditConfig",
    "AuditDP",
    "AuditResult",
    "AuditedAggregation",
    "BudgetCurve",
    "CanaryAuditResult",
    "CanaryConfig",
    "Deployment",
    "EmpiricalCurve",
    "EpsilonBound",
    "Finding",
    "Severity",
    "register_aggregation",
    "run_canary_audit",
    "run_audit",
]
