"""How the server receives the updates, as the audit knows it: one registered class per kind.

Each kind declares whether the server learns only the sum (``hides_updates``) and adds its
own checks (:meth:`AuditedAggregation.audit`): ``secagg`` analyses the SecAgg+ graph, *runs*
the malicious-server protocol attacks against the deployed threat model and estimates the
upload; ``paillier`` adds nothing; ``plain`` fails (the server sees every update).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from privagg.audit.findings import AttackRow, Finding, Severity
from privagg.errors import ConfigurationError
from privagg.registry import Registry

if TYPE_CHECKING:
    from privagg.audit.config import AuditConfig, Deployment
    from secagg import SecAggParams

__all__ = ["AGGREGATIONS", "AggregationAudit", "AuditedAggregation", "register_aggregation"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AggregationAudit:
    """What a kind's checks found: findings (reported before the DP budget), cost findings
    (reported last) and the protocol attacks' outcomes (``None``: not run)."""

    findings: tuple[Finding, ...] = ()
    cost: tuple[Finding, ...] = ()
    attacks: tuple[AttackRow, ...] | None = None


class AuditedAggregation:
    """A way the server receives updates; subclasses register with :func:`register_aggregation`."""

    name: ClassVar[str] = "aggregation"
    hides_updates: ClassVar[bool] = True

    def audit(self, cfg: AuditConfig, *, progress: Progress | None = None) -> AggregationAudit:
        return AggregationAudit()


AGGREGATIONS: Registry[type[AuditedAggregation]] = Registry("aggregation")


def register_aggregation(name: str) -> Callable[[type[AuditedAggregation]], type[AuditedAggregation]]:
    def deco(cls: type[AuditedAggregation]) -> type[AuditedAggregation]:
        cls.name = name
        AGGREGATIONS.register(name)(cls)
        return cls

    return deco


def _fmt_log2(v: float) -> str:
    return "0" if v == 0 else ("2^-inf" if v == -math.inf else f"2^{v:.1f}")


@register_aggregation("secagg")
class SecureAggregation(AuditedAggregation):
    """SecAgg+: the graph and threshold, the protocol attacks (run, not assumed), the upload."""

    def audit(self, cfg: AuditConfig, *, progress: Progress | None = None) -> AggregationAudit:
        findings, params = check_secagg(cfg.deployment)
        attacks: tuple[AttackRow, ...] | None = None
        if cfg.protocol_attacks:
            if progress is not None:
                progress("running protocol attacks against real state machines ...")
            threat, attacks = check_protocol_attacks(cfg)
            findings.append(threat)
        return AggregationAudit(tuple(findings), tuple(check_cost(cfg.deployment, params)), attacks)


@register_aggregation("paillier")
class PaillierAggregation(AuditedAggregation):
    """Threshold Paillier: the decryptors release only the sum."""


@register_aggregation("plain")
class PlainAggregation(AuditedAggregation):
    """No secure aggregation: the server sees every individual update."""

    hides_updates = False

    def audit(self, cfg: AuditConfig, *, progress: Progress | None = None) -> AggregationAudit:
        return AggregationAudit((
            Finding(
                "aggregation.plain",
                "fail",
                "The server sees every individual update",
                "without secure aggregation a curious server can invert single updates (gradient inversion) and "
                "run membership inference per client; see `privagg attack`",
            ),
        ))


def check_secagg(dep: Deployment) -> tuple[list[Finding], SecAggParams | None]:
    """Privacy and failure probabilities of the configured (or derived) graph against the targets."""
    from secagg import SecAggParams

    findings: list[Finding] = []
    derived: SecAggParams | None
    try:
        derived = SecAggParams.derive(
            num_clients=dep.num_clients,
            dropout_rate=dep.dropout_rate,
            corruption_rate=dep.corruption_rate,
            security_bits=dep.security_bits,
            failure_bits=dep.failure_bits,
            threat=dep.threat,
            value_bits=dep.value_bits,
        )
    except ConfigurationError as e:
        derived = None
        findings.append(Finding("secagg.derive", "warn", "No graph meets the stated targets", str(e)))
    params = derived
    if dep.degree is not None and dep.threshold is not None:
        try:
            params = SecAggParams.manual(
                num_clients=dep.num_clients,
                degree=dep.degree,
                threshold=dep.threshold,
                threat=dep.threat,
                value_bits=dep.value_bits,
            )
        except ConfigurationError as e:
            findings.append(Finding("secagg.parameters", "fail", "Configured graph is invalid", str(e)))
            return findings, derived
    if params is None:
        return findings, None
    sec = params.security_log2(dep.corruption_rate, dep.dropout_rate)
    fail = params.failure_log2(dep.dropout_rate)
    data = {
        "degree": params.degree,
        "threshold": params.threshold,
        "modulus_bits": params.modulus_bits,
        "security_log2": sec,
        "failure_log2": fail,
        "derived_degree": derived.degree if derived else None,
        "derived_threshold": derived.threshold if derived else None,
    }
    detail = (
        f"degree {params.degree}, threshold {params.threshold}, ring 2^{params.modulus_bits}: privacy failure "
        f"probability {_fmt_log2(sec)} (target 2^-{dep.security_bits}), round failure probability {_fmt_log2(fail)} "
        f"(target 2^-{dep.failure_bits}) at dropout {dep.dropout_rate:g} and corruption {dep.corruption_rate:g}"
    )
    if derived is not None:
        detail += f"; derived for these rates: degree {derived.degree}, threshold {derived.threshold}"
    severity: Severity = "pass"
    if sec > -dep.security_bits:
        severity = "fail"
    elif fail > -dep.failure_bits:
        severity = "warn"
    findings.append(Finding("secagg.parameters", severity, "Secure-aggregation graph and threshold", detail, data))
    return findings, params


def check_protocol_attacks(cfg: AuditConfig) -> tuple[Finding, tuple[AttackRow, ...]]:
    """Every registered protocol attack against the deployed configuration (and active mode)."""
    from attacks.protocol import CONFIGS, PROTOCOL_ATTACKS, config_for, protocol_attack

    mode = config_for(cfg.deployment.threat)
    modes = [mode] if mode.name == "active" else [mode, CONFIGS["active"]]
    rows: list[AttackRow] = []
    succeeded: list[str] = []
    for name in PROTOCOL_ATTACKS:
        attack = protocol_attack(name)
        victims = attack.make_victims(num_clients=cfg.attack_clients, target=0, seed=cfg.seed)
        for c in modes:
            out = attack.outcome(c, victims=victims)
            stopped = out.stopped_by or (out.server_abort or "; ".join(sorted(set(out.client_aborts.values()))))
            rows.append(AttackRow(name, c.name, out.succeeded, stopped[:120] or "-", out.psnr))
            if out.succeeded and c == mode:
                succeeded.append(name)
    if succeeded:
        finding = Finding(
            "secagg.threat-model",
            "fail",
            "A malicious server can isolate one client's update",
            f"in the deployed '{mode.name}' mode these attacks recovered a target client's exact update: "
            f"{', '.join(succeeded)}; privagg's active mode (signed, session bound to the model digest, "
            "consistency round) stops them",
            {"succeeded": succeeded, "mode": mode.name},
        )
    else:
        finding = Finding(
            "secagg.threat-model",
            "pass",
            "Protocol attacks by a malicious server are stopped",
            f"all {len(PROTOCOL_ATTACKS)} attacks were stopped in '{mode.name}' mode",
            {"mode": mode.name},
        )
    return finding, tuple(rows)


def check_cost(dep: Deployment, params: SecAggParams | None) -> list[Finding]:
    """The upload per client and round (an estimate: masked vector + keys + shares per neighbour)."""
    if params is None:
        return []
    masked = math.ceil(dep.model_params * params.modulus_bits / 8)
    plain = math.ceil(dep.model_params * dep.value_bits / 8)
    # key advertisement (2 X25519 + Ed25519 signature) and two encrypted shares per neighbour
    overhead = 2 * 32 + 64 + params.degree * (2 * 32 + 28 + 64)
    total = masked + overhead
    return [
        Finding(
            "secagg.cost",
            "pass",
            "Upload per client",
            f"about {total / 1e6:.2f} MB per client per round ({total / plain:.2f}x the {dep.value_bits}-bit "
            f"plaintext; the masked vector is {params.modulus_bits} bits per parameter)",
            {"upload_bytes": total, "expansion": total / plain},
        )
    ]
