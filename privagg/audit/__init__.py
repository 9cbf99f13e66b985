"""The deployment audit behind ``privagg audit``: configuration in, typed findings out.

:class:`AuditConfig` (:mod:`privagg.audit.config`) describes the deployment;
:func:`run_audit` (:mod:`privagg.audit.engine`) runs the checks and returns an
:class:`AuditResult` of :class:`Finding` objects and their evidence;
:func:`privagg.report.audit.audit_report` turns it into a report.
"""

from privagg.audit.aggregations import AGGREGATIONS, AggregationAudit, AuditedAggregation, register_aggregation
from privagg.audit.config import FLOWER_DEFAULTS, AuditConfig, AuditDP, Deployment
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
    "Deployment",
    "Finding",
    "Severity",
    "register_aggregation",
    "run_audit",
]
