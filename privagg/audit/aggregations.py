"""How the server receives the updates, as the audit knows it: one registered class per kind.

Each kind declares whether the server learns only the sum (``hides_updates``) and adds its
own checks (:meth:`AuditedAggregation.audit`): ``secagg`` analyses the SecAgg+ graph, *runs*
every protocol attack class (the malicious server's isolation attacks and the adversarial
conformance cases of :mod:`attacks.protocol.conformance`) against the deployed threat model,
judges the threat model by what happened (semi-honest: no protection against an active
server; what was not run or not covered: assumed, not tested) and sizes the upload from the
encoded messages; ``paillier`` states what it assumes (no attack is run); ``plain`` fails
(the server sees every update).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from privagg.audit.findings import AttackRow, Finding, Severity
from privagg.audit.malicious_model import check_malicious_model
from privagg.errors import ConfigurationError
from privagg.registry import Registry

if TYPE_CHECKING:
    from privagg.audit.config import AuditConfig, Deployment
    from secagg import SecAggParams

__all__ = [
    "AGGREGATIONS",
    "NOT_COVERED",
    "AggregationAudit",
    "AuditedAggregation",
    "check_threat_model",
    "register_aggregation",
    "run_protocol_attacks",
    "check_malicious_model",
    "upload_bytes",
]

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
    #: the run's aggregator computes a sum mod ``2^bits`` (what distributed DP needs; ``Aggregator.modular_sum``)
    modular_sum: ClassVar[bool] = False

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
    """SecAgg+: the graph and threshold, the threat model (attacks run, not assumed), the upload."""

    modular_sum = True

    def audit(self, cfg: AuditConfig, *, progress: Progress | None = None) -> AggregationAudit:
        from privagg.audit.client_policy import check_client_policy

        poisson = cfg.dp.mechanism is not None and cfg.dp.sampling == "poisson"
        rate = cfg.dp.sampling_rate if poisson else None
        findings, params = check_secagg(cfg.deployment, round_size=cfg.round_size, poisson_rate=rate)
        findings.extend(check_client_policy(cfg.deployment))  # active clients without a policy of their own
        mech, dep = cfg.dp.mechanism, cfg.deployment
        if mech is not None and 1.0 - mech.honest_fraction > dep.corruption_rate + 1e-12:
            findings.append(
                Finding(
                    "secagg.corruption",
                    "warn",
                    "The graph is judged at a lower corruption than the DP table assumes",
                    f"[dp] honest_fraction {mech.honest_fraction:g} assumes up to {1 - mech.honest_fraction:g} of a "
                    f"cohort dishonest, but secagg.parameters judges the graph at corruption_rate "
                    f"{dep.corruption_rate:g}: its privacy figure does not cover the colluders the DP accounting "
                    "allows; set corruption_rate to at least the dishonest fraction",
                    {"corruption_rate": dep.corruption_rate, "dishonest_fraction": 1 - mech.honest_fraction},
                )
            )
        attacks: tuple[AttackRow, ...] | None = None
        if cfg.protocol_attacks:
            if progress is not None:
                progress("running protocol attacks against real state machines ...")
            attacks = run_protocol_attacks(cfg)
        findings.extend(check_threat_model(cfg, attacks))
        if cfg.protocol_attacks:
            findings.append(check_malicious_model(cfg))
        return AggregationAudit(tuple(findings), tuple(check_cost(cfg.deployment, params)), attacks)


@register_aggregation("paillier")
class PaillierAggregation(AuditedAggregation):
    """Threshold Paillier: the decryptors release only the sum. This audit runs no Paillier attack: what
    it relies on is reported as assumed (the adversarial tests live in ``tests/protocols/paillier``)."""

    def audit(self, cfg: AuditConfig, *, progress: Progress | None = None) -> AggregationAudit:
        assumed = (
            "trusted: the dealer, which makes the threshold key, its shares and the client and decryptor "
            "directories, and erases p and q; fewer than `threshold` decryptors collude",
            "not run by this audit: the Paillier attacks (Sybil clients, re-signed or combined ciphertexts, two "
            "contribution sets in one round, spoofed partials) -- privagg's test suite runs them against the real "
            "parties (tests/protocols/paillier/test_paillier_attacks.py), not against this deployment",
            "not covered by any proof: slot ranges -- a malicious client can corrupt the sum (not read it)",
            "not run by this audit: the malicious-model (imprint) attack -- a crafted model sent to every client "
            "passes any sum; only noise in the decrypted sum stops it (run for secagg deployments only)",
            "what no sum hides: the server with all but one of the summed clients learns the last one's update",
        )
        return AggregationAudit(
            (Finding("paillier.assumed", "warn", "Assumed, not tested by this audit", "; ".join(assumed)),)
        )


@register_aggregation("plain")
class PlainAggregation(AuditedAggregation):
    """No secure aggregation: the server sees every individual update."""

    hides_updates = False
    modular_sum = True

    def audit(self, cfg: AuditConfig, *, progress: Progress | None = None) -> AggregationAudit:
        return AggregationAudit(
            (
                Finding(
                    "aggregation.plain",
                    "fail",
                    "The server sees every individual update",
                    "without secure aggregation a curious server can invert single updates (gradient inversion) and "
                    "run membership inference per client; see `privagg attack`",
                ),
            )
        )


def check_secagg(
    dep: Deployment, *, round_size: int | None = None, poisson_rate: float | None = None
) -> tuple[list[Finding], SecAggParams | None]:
    """Privacy and failure probabilities of the configured (or derived) graph against the targets, for
    rounds of ``round_size`` clients (default: the whole deployment; with DP sampling the cohort, which
    is what each round's graph is built over). With ``poisson_rate`` a configured graph is judged by its
    per-round figures mixed over the cohort sizes (:func:`privagg.audit.cohorts.graph_mixture`)."""
    from privagg.audit.cohorts import graph_mixture

    n = dep.num_clients if round_size is None else round_size
    findings: list[Finding] = []
    derived: SecAggParams | None
    try:
        derived = dep.derived_params(n)
    except ConfigurationError as e:
        derived = None
        findings.append(Finding("secagg.derive", "warn", "No graph meets the stated targets", str(e)))
    params = derived
    try:
        params = dep.configured_params(n) or derived
    except ConfigurationError as e:
        findings.append(Finding("secagg.parameters", "fail", "Configured graph is invalid", str(e)))
        return findings, derived
    if params is None:
        return findings, None
    sec = params.security_log2(dep.corruption_rate, dep.dropout_rate)
    fail = params.failure_log2(dep.dropout_rate)
    data: dict[str, Any] = {
        "round_size": n,
        "degree": params.degree,
        "threshold": params.threshold,
        "modulus_bits": params.modulus_bits,
        "security_log2": sec,
        "failure_log2": fail,
        "derived_degree": derived.degree if derived else None,
        "derived_threshold": derived.threshold if derived else None,
    }
    mix = graph_mixture(dep, rate=poisson_rate) if poisson_rate is not None else None
    judged = (sec, fail) if mix is None else (mix.security_log2, mix.failure_log2)  # over the cohorts that run
    if mix is not None:
        data.update(security_log2=judged[0], failure_log2=judged[1], cohort_mixture=vars(mix))
        data["at_expected_cohort"] = {"security_log2": sec, "failure_log2": fail}
    rounds = "" if n == dep.num_clients else f"rounds of {n} clients (the sampled cohort of {dep.num_clients}): "
    rounds = f"judged {mix.describe()}; at the expected cohort, " + rounds if mix is not None else rounds
    detail = rounds + (
        f"degree {params.degree}, threshold {params.threshold}, ring 2^{params.modulus_bits}: privacy failure "
        f"probability {_fmt_log2(sec)} (target 2^-{dep.security_bits}), round failure probability {_fmt_log2(fail)} "
        f"(target 2^-{dep.failure_bits}) at dropout {dep.dropout_rate:g} and corruption {dep.corruption_rate:g} "
        "(computed from the graph's parameters by secagg.params' bounds, not measured)"
    )
    if derived is not None:
        detail += f"; derived for these rates: degree {derived.degree}, threshold {derived.threshold}"
    severity: Severity = "pass"
    if dep.grinding_bits:
        detail += f"; the privacy target is raised by {dep.grinding_bits} bits for 2^{dep.grinding_bits} server retries"
    if judged[0] > -dep.security_bits - dep.grinding_bits:
        severity = "fail"
    elif judged[1] > -dep.failure_bits:
        severity = "warn"
    findings.append(Finding("secagg.parameters", severity, "Secure-aggregation graph and threshold", detail, data))
    return findings, params


def run_protocol_attacks(cfg: AuditConfig) -> tuple[AttackRow, ...]:
    """Every protocol attack class, run against the deployed mode (and privagg's active mode):
    the isolation attacks (:data:`attacks.protocol.PROTOCOL_ATTACKS`, scored on real updates) and
    the adversarial conformance cases (:data:`attacks.protocol.ROUND_ATTACKS`, each held to the
    outcome the threat model promises). Each row is what happened when it was run."""
    from attacks.protocol import CONFIGS, PROTOCOL_ATTACKS, ROUND_ATTACKS, config_for, protocol_attack, round_attack

    mode = config_for(cfg.deployment.threat)
    modes = [mode] if mode.name == "active" else [mode, CONFIGS["active"]]
    rows: list[AttackRow] = []
    for name in PROTOCOL_ATTACKS:
        attack = protocol_attack(name)
        victims = attack.make_victims(num_clients=cfg.attack_clients, target=0, seed=cfg.seed)
        for c in modes:
            out = attack.outcome(c, victims=victims)
            stopped = out.stopped_by or (out.server_abort or "; ".join(sorted(set(out.client_aborts.values()))))
            if out.succeeded:
                psnr = f", image PSNR {out.psnr:.0f} dB" if out.psnr is not None else ""
                stopped = f"recovered the target's exact update{psnr}"
            rows.append(AttackRow(name, c.name, out.succeeded, stopped[:160] or "-", out.psnr))
    for name in ROUND_ATTACKS.names():
        case = round_attack(name)
        for c in modes:
            if c.threat not in case.threats:
                continue
            try:
                o = case.run(c.threat, seed=cfg.seed, client_policy=cfg.deployment.client_policy)
            except Exception as e:  # a broken attack is reported as not run, never as held
                why = f"the attack itself failed ({type(e).__name__}: {e})"[:160]
                rows.append(AttackRow(name, c.name, False, why, None, case.who, case.promise, ran=False))
                continue
            rows.append(AttackRow(name, c.name, not o.held, o.happened[:160], None, case.who, case.promise))
    return tuple(rows)


#: What no run of the audit exercises: assumed, not tested (reported, never PASS).
NOT_COVERED = (
    "grinding the graph by aborting sessions: in active mode the ring comes from contributions committed "
    "before and revealed after the roster (secagg.seeding), so omitting clients or redrawing colluders' keys "
    "no longer moves it and only aborting a session and running another buys a new ring (semi-honest: "
    "offline retries); bounded in secagg.params by the deployment's grinding_bits, not exercised",
    "the Flower adapter (node <-> client-id mapping, transport, its session nonce; that an active node answers "
    "no plain fit, evaluate or get-parameters message and takes its policy, roles and trust root from its own "
    "config, never the run config): the audit runs the attacks on the in-memory driver only (the test suite "
    "drives these through Flower's mods: tests/protocols/flower)",
    "collusion larger than the runs' (a few colluding clients per case) and populations beyond a dozen clients",
    "timing and other side channels; the PKI (identity directory) and its provisioning are trusted",
)


def check_threat_model(cfg: AuditConfig, rows: tuple[AttackRow, ...] | None) -> list[Finding]:
    """The deployed threat model, judged by what the attacks did when they were run.

    Semi-honest mode fails: it offers no protection against a server that deviates. Active
    mode passes only when every attack class was run and held; an attack that worked fails;
    what was not run (``--no-attacks``) or not covered is reported as assumed, not tested.
    """
    mode = cfg.deployment.threat.value
    worked = [r for r in rows or () if r.succeeded and r.mode == mode and r.ran]
    run = [r for r in rows or () if r.mode == mode and r.ran]
    not_run = [r.attack for r in rows or () if r.mode == mode and not r.ran]
    listed = "; ".join(
        f"{r.attack}: {r.stopped_by}" + (f" (promised: {r.promise})" if r.promise else "") for r in worked[:8]
    )
    out: list[Finding] = []
    if mode != "active":
        detail = (
            "semi-honest mode trusts the server to follow the protocol: a server that deviates (rewrites its "
            "messages, picks the roster, forges dropouts) is outside its threat model, and nothing stops it"
        )
        if rows is not None:
            detail += (
                f"; run in '{mode}' mode, {len(worked)} of {len(run)} attack classes worked ({listed}); the "
                f"{len({(r.attack, r.kind) for r in rows}) - len(run)} other classes (a malicious server's) are "
                "outside this "
                "mode's promise and were run in 'active' mode only"
            )
        else:
            detail += " (the attacks were not run)"
        out.append(
            Finding(
                "secagg.threat-model",
                "fail",
                "Semi-honest mode offers no protection against an active (malicious) server",
                detail,
                {"mode": mode, "succeeded": [r.attack for r in worked], "run": rows is not None},
            )
        )
    elif rows is None:
        out.append(
            Finding(
                "secagg.threat-model",
                "warn",
                "Active threat model assumed, not tested",
                "the protocol attacks were not run (--no-attacks): nothing here shows that the deployed "
                "configuration withstands a malicious server or malicious clients",
                {"mode": mode, "run": False},
            )
        )
    elif worked:
        out.append(
            Finding(
                "secagg.threat-model",
                "fail",
                f"{len(worked)} of {len(run)} attack classes worked against the active mode",
                f"run against real state machines, these broke the promise of the active threat model: {listed}",
                {"mode": mode, "succeeded": [r.attack for r in worked], "run": True},
            )
        )
    elif not_run:
        out.append(
            Finding(
                "secagg.threat-model",
                "warn",
                f"{len(not_run)} attack classes could not be run: not tested",
                f"the {len(run)} classes run were stopped, but these could not be run (see the protocol attacks "
                f"table): {', '.join(not_run)}",
                {"mode": mode, "succeeded": [], "run": True, "not_run": not_run},
            )
        )
    else:
        out.append(
            Finding(
                "secagg.threat-model",
                "pass",
                "Every attack class run was stopped",
                f"all {len(run)} attack classes were run against real state machines in 'active' mode and each "
                "ended as the threat model promises (see the protocol attacks table); run on the attack harness's "
                f"own small rounds ({cfg.attack_clients} clients for the isolation attacks, each conformance case "
                "its own), not on the deployment's population or graph (judged in secagg.parameters)",
                {"mode": mode, "succeeded": [], "run": True},
            )
        )
    assumed = list(NOT_COVERED)
    if cfg.deployment.grinding_bits == 0:
        assumed[0] = (
            "grinding: the deployment assumes each client input enters one session (grinding_bits = 0); a "
            "server that aborts and re-runs sessions over the same inputs gets one fresh ring per session: set "
            "grinding_bits to log2 of the sessions it may run (semi-honest: of its offline retries, e.g. 40)"
        )
    if cfg.deployment.client_policy:
        assumed.append(
            "the deployment's own client policy: the policy cases (weak parameters, roster shrinking, split view) "
            "run with small policies of their own (8 to 40 clients); that the deployed clients hold a policy at "
            "least as strict (minimum cohort, rates, security bits) is assumed"
        )
    out.append(Finding("secagg.not-covered", "warn", "Assumed, not tested", "; ".join(assumed), {"assumed": assumed}))
    return out


def upload_bytes(params: SecAggParams, model_params: int) -> dict[str, int]:
    """What one client uploads in one round, per message, from the codecs' real sizes
    (:mod:`secagg.messages`): advertisement, the share envelopes to ``degree`` neighbours, the
    masked vector, the consistency signature (active) and the unmask response (``degree + 1``
    revealed shares, the most a client sends)."""
    from privagg.encoding import packed_size
    from secagg import (
        ConsistencySignature,
        EncryptedShares,
        KeyAdvertisement,
        MaskedInput,
        RevealedShare,
        SeedReveal,
        ShareCheck,
        ShareEnvelope,
        ThreatModel,
        UnmaskResponse,
    )
    from secagg.messages import (
        CIPHERTEXT_BYTES,
        DIGEST_BYTES,
        KEY_BYTES,
        OPENING_BYTES,
        SHARE_BYTES,
        SIGNATURE_BYTES,
    )
    from secagg.vss import check_bytes

    active = params.threat is ThreatModel.ACTIVE
    d, k = bytes(DIGEST_BYTES), bytes(KEY_BYTES)

    def size(cls: Any, **fields: Any) -> int:
        """The encoded size of a message; signed (a 64-byte signature) where active mode signs it."""
        if active and "signature" in {f.name for f in dataclasses.fields(cls)}:
            fields["signature"] = bytes(SIGNATURE_BYTES)
        return len(cls(**fields).encode())

    env = ShareEnvelope(recipient=1, leaf=d, ciphertext=bytes(CIPHERTEXT_BYTES))
    check = bytes(check_bytes(params.threshold))

    def shares(n: int) -> int:
        fields = {"round": 0, "session_id": d, "sender": 0, "self_seed_commitment": d, "check": check}
        return size(EncryptedShares, envelopes=(env,) * n, **fields)

    def unmask(n: int) -> int:
        rs = (RevealedShare(owner=1, share=bytes(SHARE_BYTES), opening=bytes(OPENING_BYTES)),) * n
        return size(UnmaskResponse, round=0, session_id=d, sender=0, self_shares=rs, key_shares=())

    mb = params.modulus_bits
    one = size(MaskedInput, round=0, session_id=d, sender=0, modulus_bits=mb, count=1, data=bytes(packed_size(1, mb)))
    out = {
        "advertisement": size(
            KeyAdvertisement, round=0, client_id=0, config_hash=d, enc_public_key=k, mask_public_key=k
        ),
        "seed_reveal": size(SeedReveal, round=0, session_id=d, sender=0, value=d) if active else 0,
        "shares": shares(0) + params.degree * (shares(1) - shares(0)),
        "share_check": size(ShareCheck, round=0, session_id=d, sender=0, complaints=()),
        "masked_input": one - packed_size(1, mb) + packed_size(model_params, mb),
        "consistency": size(ConsistencySignature, round=0, session_id=d, sender=0, signature=bytes(SIGNATURE_BYTES))
        if active
        else 0,
        "unmask": unmask(0) + (params.degree + 1) * (unmask(1) - unmask(0)),
    }
    out["per_neighbour_envelope"] = shares(1) - shares(0)
    return out


def check_cost(dep: Deployment, params: SecAggParams | None) -> list[Finding]:
    """The upload per client and round, from the messages' encoded sizes (:func:`upload_bytes`)."""
    if params is None:
        return []
    sizes = upload_bytes(params, dep.model_params)
    total = sum(v for k, v in sizes.items() if k != "per_neighbour_envelope")
    plain = math.ceil(dep.model_params * dep.value_bits / 8)
    overhead = total - sizes["masked_input"]
    return [
        Finding(
            "secagg.cost",
            "pass",
            "Upload per client",
            f"{total / 1e6:.3f} MB per client per round ({total / plain:.3f}x the {dep.value_bits}-bit plaintext): "
            f"the masked vector at {params.modulus_bits} bits per parameter plus {overhead} B of protocol messages "
            f"(key advertisement, {params.degree} share envelopes of {sizes['per_neighbour_envelope']} B, "
            + ("consistency signature, " if sizes["consistency"] else "")
            + "unmask response; computed from the encoded messages' sizes, not measured on a network)",
            {"upload_bytes": total, "expansion": total / plain, "messages": sizes},
        )
    ]
