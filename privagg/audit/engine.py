"""The audit engine: run every check on an :class:`~privagg.audit.config.AuditConfig`.

1. the aggregation's own checks (:mod:`privagg.audit.aggregations`; for SecAgg+: the graph
   and threshold against the derived ones and the stated targets, and every protocol attack
   class -- the malicious server's isolation attacks and the adversarial conformance cases
   of :mod:`attacks.protocol.conformance` -- *run* against real state machines in the
   deployed threat model and in privagg's active mode; the threat model is judged by what
   happened: semi-honest fails, an attack that worked fails, what was not run or not covered
   is reported as assumed, not tested);
2. the differential-privacy budget (RDP and PRV) over the planned rounds, against observers of the
   released models (amplified by sampling), and ``dp.server``: against the server, which sees
   who took part (client and distributed noise: the planned unamplified bound of
   :mod:`dp.server_view`; central noise: the server is trusted, said as a WARN); for distributed DP
   (``[dp] noise = "distributed"``) the parameters the run would choose (or its refusal, naming
   the bits that work), the modular-clipping bound, the noise split for the fewest survivors the
   secure-aggregation graph allows, and the budget from the mechanism's own RDP bound;
3. whether the robust rule can run under the aggregation at all;
4. the upload per client (the encoded sizes of the messages a client sends).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from privagg.audit.aggregations import AGGREGATIONS, Progress
from privagg.audit.config import AuditConfig, Deployment
from privagg.audit.findings import AttackRow, BudgetCurve, Finding, Severity
from privagg.errors import ConfigurationError

if TYPE_CHECKING:
    from dp import Sampling
    from dp.config import DPConfig
    from dp.distributed_accounting import RDPMechanism
    from secagg import SecAggParams

__all__ = ["AuditResult", "check_compatibility", "check_dp", "run_audit"]


@dataclass(frozen=True)
class AuditResult:
    """Every finding, in report order, with the evidence: protocol attack outcomes (``None``:
    not run) and the privacy budget curve (``None``: no DP)."""

    config: AuditConfig
    findings: tuple[Finding, ...]
    attacks: tuple[AttackRow, ...] | None
    budget: BudgetCurve | None
    seconds: float

    @property
    def counts(self) -> dict[Severity, int]:
        return {s: sum(f.severity == s for f in self.findings) for s in ("pass", "warn", "fail")}

    @property
    def verdict(self) -> Severity:
        counts = self.counts
        return "fail" if counts["fail"] else ("warn" if counts["warn"] else "pass")

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"


def _sampling(cfg: AuditConfig) -> Sampling:
    from dp import Sampling

    d, n = cfg.dp, cfg.deployment.num_clients
    if d.sampling == "poisson":
        return Sampling.poisson(rate=d.sampling_rate, population=n)
    return Sampling.fixed(sample_size=max(1, round(d.sampling_rate * n)), population=n)


def check_dp(cfg: AuditConfig) -> tuple[list[Finding], BudgetCurve | None]:
    """The client-level privacy budget over the planned rounds (RDP and PRV where it applies)."""
    from dp import calibrate, make_accountant

    d, mech = cfg.dp, cfg.dp.mechanism
    if mech is None:
        return [
            Finding(
                "dp.budget",
                "warn",
                "No differential privacy",
                "secure aggregation hides individual updates from the server, but the trained model itself "
                "may still reveal individual participants (membership, reconstruction from the model); "
                "client-level DP bounds that",
            )
        ], None
    sampling = _sampling(cfg)
    if mech.noise == "distributed":
        return check_distributed(cfg, sampling)
    z = mech.noise_multiplier
    if z is None:  # calibrated for the plan, as DP-FedAvg does
        assert mech.target_epsilon is not None
        z = calibrate(
            target_epsilon=mech.target_epsilon,
            delta=mech.delta,
            rounds=d.rounds,
            sampling=sampling,
            accountant=mech.accountant,
        )
    marks = sorted({max(1, round(d.rounds * f / 10)) for f in range(1, 11)})
    curves: dict[str, tuple[float, ...]] = {}
    for name in ("rdp", "prv"):
        acc = make_accountant(name)
        if not acc.supports(sampling):
            continue
        eps, done = [], 0
        for r in marks:
            acc.step(noise_multiplier=z, sampling=sampling, count=r - done)
            done = r
            eps.append(acc.get_epsilon(mech.delta))
        curves[name] = tuple(eps)
    finals = {k: v[-1] for k, v in curves.items()}
    worst = max(finals.values())
    detail = (
        f"{sampling.describe()}, noise multiplier {z:g}, {d.rounds} rounds: epsilon "
        + ", ".join(f"{k.upper()} {v:.3g}" for k, v in finals.items())
        + f" at delta {mech.delta:g} (limit {d.max_epsilon:g}); {_enforced(mech)}; {_ACCOUNTING_ONLY}"
    )
    faults = _budget_faults(cfg)
    findings = [
        Finding(
            "dp.budget",
            "fail" if worst > d.max_epsilon or faults else "pass",
            _budget_title("Privacy budget", mech.noise) + (": does not hold as configured" if faults else ""),
            "; ".join([*faults, detail]),
            {"epsilon": finals, "delta": mech.delta, "budget_against": mech.budget_against, "faults": faults},
        ),
        _server_finding(cfg, sampling, amplified=finals.get("rdp", worst), noise_multiplier=z, noise=str(mech.noise)),
        *filter(None, [_refusal_finding(cfg, sampling), _honest_finding(cfg, sampling)]),
    ]
    if not mech.secure_noise:
        findings.append(
            Finding(
                "dp.noise",
                "fail",
                "Noise from a non-cryptographic, seeded generator",
                "textbook floating-point Gaussian sampling leaks through its low-order bits (Mironov 2012) and a "
                "seeded generator is predictable; use privagg's secure sampler (dp.SecureNoise)",
            )
        )
    budget = BudgetCurve(tuple(float(r) for r in marks), curves, mech.delta, d.max_epsilon)
    return findings, budget


#: what a budget PASS is and is not: the configured mechanism's accounting, not a test of what the deployment releases
_ACCOUNTING_ONLY = (
    "this is the accounting of the configured mechanism: whether the deployment releases that mechanism is not "
    "shown here (privagg audit --empirical measures a lower bound on epsilon and the released noise against the "
    "ledger's charge; neither can show that a mechanism is private)"
)


def _budget_faults(cfg: AuditConfig) -> list[str]:
    """Why the accounted (epsilon, delta) is no guarantee as configured, whatever epsilon it comes to."""
    mech, n = cfg.dp.mechanism, cfg.deployment.num_clients
    assert mech is not None
    faults = []
    if mech.delta * n > 1:
        faults.append(
            f"delta {mech.delta:g} exceeds 1/population = 1/{n}: a mechanism may then publish one client's data "
            "outright with probability delta (privagg run refuses it unless allow_large_delta = true)"
        )
    if mech.reproducible_cohorts:
        faults.append(
            "cohorts are drawn from the public run seed (reproducible_cohorts = true): amplification by "
            "subsampling assumes a secret cohort, so the amplified epsilon does not hold (simulation only)"
        )
    return faults


def _enforced(mech: DPConfig) -> str:
    """Which guarantee the run's budget enforces before each round (``dp.budget_against``)."""
    if mech.budget is None:
        return "the run enforces no budget"
    if mech.budget_against == "server":
        return (
            f'the run\'s budget {mech.budget:g} is enforced against the server (budget_against = "server": a round '
            "is refused before the worst client's unamplified epsilon, or the amplified one, would exceed it)"
        )
    return (
        f"the run's budget {mech.budget:g} is enforced against observers of the released models (the amplified "
        'epsilon; budget_against = "observers")'
    )


def _budget_title(title: str, noise: str) -> str:
    """The budget finding's title says against whom its (amplified) figure holds: never the server."""
    if noise == "central":
        return f"{title} against observers of the released models (the server is trusted: central noise)"
    return f"{title} against observers of the released models who do not see the rosters (amplified by sampling)"


def _server_finding(
    cfg: AuditConfig,
    sampling: Sampling,
    *,
    amplified: float,
    noise: str,
    noise_multiplier: float = math.nan,
    mechanism: RDPMechanism | None = None,
) -> Finding:
    """DP against the server, which sees who took part: the planned bound of :mod:`dp.server_view`.

    Client and distributed noise: the worst client's rounds (a bound holding with probability
    ``1 - PARTICIPATION_FAILURE`` over the secret cohorts) composed unamplified; WARN when above the
    limit or more than twice the target epsilon (``target_epsilon``, else the amplified figure),
    never a PASS read from the amplified figure. Central noise: the server is trusted, a WARN.
    """
    from dp.server_view import planned_server_view

    d, mech = cfg.dp, cfg.dp.mechanism
    assert mech is not None
    if noise == "central":
        return Finding(
            "dp.server",
            "warn",
            "No DP against the server: it adds the noise (central noise, the server is trusted)",
            "the server sees the aggregate before the noise (every update without secure aggregation); the budget "
            "above holds against observers of the released models only; use client or distributed noise",
        )
    if not AGGREGATIONS.get(cfg.deployment.aggregation).hides_updates:
        return Finding(
            "dp.server",
            "fail",
            f"No DP against the server: it sees every client's update ('{cfg.deployment.aggregation}' aggregation)",
            f"with {noise} noise each client adds only its share, sized so that the sum carries the accounted noise; "
            "the server receives each update with that share alone, so the planned figure against the server (which "
            "assumes it sees only the sum) does not hold; use secure aggregation",
            {"aggregation": cfg.deployment.aggregation},
        )
    planned = planned_server_view(
        population=cfg.deployment.num_clients,
        rounds=d.rounds,
        rate=sampling.rate,
        delta=mech.delta,
        noise_multiplier=noise_multiplier,
        sensitivity_factor=sampling.sensitivity_factor,
        mechanism=mechanism,
    )
    target = mech.target_epsilon if mech.target_epsilon is not None else amplified
    eps = planned.epsilon
    over_target = eps > 2.0 * target
    ok = eps <= d.max_epsilon and not over_target
    why = []
    if over_target:
        what = "target" if mech.target_epsilon is not None else "amplified"
        why.append(f"{eps / target:.3g}x the {what} epsilon {target:.3g}")
    if eps > d.max_epsilon:
        why.append(f"above the limit {d.max_epsilon:g}")
    detail = (
        f"{planned.describe()}; the amplified epsilon {amplified:.3g} holds only against observers of the released "
        "models who do not see the rosters: the server runs secure aggregation with authenticated rosters; "
        + (
            'the run\'s budget is enforced against this figure (budget_against = "server")'
            if mech.budget_against == "server"
            else 'the run\'s budget does not enforce this figure (budget_against = "observers")'
        )
        + "; accounting of the configured mechanism, not a measurement"
    )
    return Finding(
        "dp.server",
        "pass" if ok else "warn",
        f"DP against the server (it sees who took part): epsilon {eps:.3g}, unamplified"
        + (f" ({'; '.join(why)})" if why else ""),
        detail,
        {
            "epsilon": eps,
            "delta": mech.delta,
            "max_rounds": planned.max_rounds,
            "failure": planned.failure,
            "target_epsilon": target,
            "amplified_epsilon": amplified,
            "budget_against": mech.budget_against,
        },
    )


def _refusal_finding(cfg: AuditConfig, sampling: Sampling) -> Finding | None:
    """What whether a Poisson round ran costs against observers (:mod:`dp.refusal`): the secure sum refuses
    a cohort below its minimum, a function of who was sampled. FAIL when the extra delta exceeds dp.delta
    (the stated guarantee does not hold), WARN above a tenth of it; ``None`` when no cohort is refused."""
    from dp.refusal import refusal_delta

    d, mech = cfg.dp, cfg.dp.mechanism
    assert mech is not None
    m = _DeploymentFloor(cfg.deployment).min_cohort()
    if sampling.kind != "poisson" or m <= 1:
        return None
    n = cfg.deployment.num_clients
    if sampling.rate * n < m:
        return Finding(
            "dp.refusal",
            "fail",
            f"Most rounds cannot run: the expected cohort ({sampling.rate:g} x {n}) is below the secure sum's minimum",
            f"Poisson cohorts of about {sampling.rate * n:.3g} clients, but the secure sum needs at least {m} at the "
            "deployment's rates (smaller cohorts are refused, each still charged to the DP budget); privagg run "
            "refuses this configuration before round 1: raise num_clients or the sampling rate",
            {"min_cohort": m, "expected_cohort": sampling.rate * n},
        )
    extra = refusal_delta(population=n, rate=sampling.rate, min_cohort=m, rounds=d.rounds, empty_released=True)
    severity: Severity = "fail" if extra > mech.delta else "warn" if extra > mech.delta / 10 else "pass"
    return Finding(
        "dp.refusal",
        severity,
        f"Whether a round ran adds delta {extra:.3g} against observers",
        f"the secure sum refuses a Poisson cohort below {m} clients; whether a round ran is a function of who was "
        f"sampled, bounded as an extra delta q*P[Bin(N-1, q) in F] per round (dp/refusal.py, proof in "
        f"dp/SUBSAMPLING.md): {extra:.3g} over {d.rounds} rounds at q = {sampling.rate:g}, N = {n}, against "
        f"dp.delta {mech.delta:g}; assumed: every cohort of at least {m} clients runs",
        {"delta_refusal": extra, "min_cohort": m, "delta": mech.delta},
    )


def _honest_finding(cfg: AuditConfig, sampling: Sampling) -> Finding | None:
    """``honest_fraction < 1`` is assumed of every cohort (the accounting subtracts ``floor((1-h) n)``
    dishonest survivors). Read as a fraction of the population, a random cohort of the expected size ``n``
    holds more with probability ``P[Bin(n, 1-h) > floor((1-h) n)]`` (binomial: the sampled cohort's
    corrupt count, hypergeometric under fixed sampling, is no more spread); a sum at the survivor floor
    then carries fewer honest shares than charged. WARN, with the per-cohort fraction covering it."""
    from scipy.stats import binom

    mech, rounds = cfg.dp.mechanism, cfg.dp.rounds
    assert mech is not None
    h = mech.honest_fraction
    if h >= 1:
        return None
    n = max(1, round(sampling.rate * cfg.deployment.num_clients))
    c = 1.0 - h
    assumed = math.floor(c * n + 1e-9)
    p = float(binom.sf(assumed, n, c))
    k = assumed
    while k < n and rounds * float(binom.sf(k, n, c)) > mech.delta:
        k += 1
    covering = 1.0 - k / n
    return Finding(
        "dp.honest",
        "warn",
        f"honest_fraction {h:g} is assumed of each cohort, not of the population",
        f"the accounting counts at most {assumed} dishonest clients in a cohort of {n} (floor((1-h) n)); if the "
        f"adversary instead holds a fraction {c:g} of the population, a random cohort holds more with probability "
        f"{p:.3g} per round, and a sum released at the secure sum's survivor floor then carries fewer honest noise "
        f"shares than charged (epsilon understated). To cover a population fraction {c:g} in all {rounds} rounds "
        f"but delta {mech.delta:g} of the time, set honest_fraction <= {covering:.4g} (at most {k} of {n} dishonest)",
        {"exceed_probability": p, "covering_honest_fraction": covering, "assumed_dishonest": assumed, "cohort": n},
    )


class _DeploymentFloor:
    """The fewest survivors the deployment's aggregation releases a sum of (the run's
    :class:`~protocols.distributed_dp.SurvivorFloor`): its secure-aggregation graph for ``n`` clients
    (configured, or derived from the rates, as the run's aggregator does), or everyone without one."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep

    def min_survivors(self, n: int) -> int:
        if not AGGREGATIONS.get(self.dep.aggregation).hides_updates or n < 3:
            return n
        return self._params(n).min_survivors(n)

    def min_cohort(self) -> int:
        """The smallest cohort the deployment's secure sum runs (3, or the smallest population its parameters
        can be derived for; searched assuming a larger cohort is never harder to secure; the whole deployment
        when none is); 1 without one."""
        from privagg.audit.cohorts import secure_floor

        return secure_floor(self.dep) if AGGREGATIONS.get(self.dep.aggregation).hides_updates else 1

    def _params(self, n: int) -> SecAggParams:
        """The run's graph for ``n`` clients: configured, or derived without grinding, as the aggregator does."""
        return self.dep.configured_params(n) or self.dep.derived_params(n, grinding=False)


def check_distributed(cfg: AuditConfig, sampling: Sampling) -> tuple[list[Finding], BudgetCurve | None]:
    """Distributed DP inside the secure sum: the parameters the run would choose, or its refusal."""

    from dp import RDPAccountant
    from protocols.distributed_dp import plan_parameters

    d, dep, mech = cfg.dp, cfg.deployment, cfg.dp.mechanism
    assert mech is not None and mech.target_epsilon is not None  # DPConfig: distributed needs target_epsilon
    if sampling.kind != "poisson":
        return [
            Finding(
                "dp.budget",
                "fail",
                "Distributed DP without a valid bound",
                "distributed DP is accounted for Poisson sampling only (its Poisson-subsampled RDP bound, "
                "dp.distributed_accounting.subsampled_rdp, proof in dp/SUBSAMPLING.md); "
                "set dp.sampling = 'poisson'",
            )
        ], None
    if not AGGREGATIONS.get(dep.aggregation).modular_sum:
        why = (
            f"the '{dep.aggregation}' aggregation computes no sum mod 2^bits, which distributed DP needs (the run's "
            "aggregator refuses it); use secagg"
        )
        return [Finding("dp.distributed", "fail", "Distributed DP cannot run as configured", why)], None
    try:
        p = plan_parameters(mech, sampling, dep.model_params, rounds=d.rounds, inner=_DeploymentFloor(dep))
    except ConfigurationError as e:
        return [Finding("dp.distributed", "fail", "Distributed DP cannot run as configured", str(e))], None
    marks = sorted({max(1, round(d.rounds * f / 10)) for f in range(1, 11)})
    acc, eps, done = RDPAccountant(), [], 0
    rdp_mech = p.rdp_mechanism(p.shares)
    for r in marks:
        acc.step(noise_multiplier=rdp_mech.noise_multiplier, sampling=sampling, count=r - done, mechanism=rdp_mech)
        done = r
        eps.append(acc.get_epsilon(mech.delta))
    final = eps[-1]
    faults = _budget_faults(cfg)
    findings = [
        Finding(
            "dp.budget",
            "fail" if final > d.max_epsilon or faults else "pass",
            _budget_title("Privacy budget (distributed DP)", "distributed")
            + (": does not hold as configured" if faults else ""),
            "".join(f"{f}; " for f in faults)
            + f"{sampling.describe()}, {p.mechanism} noise summing to std {p.sigma:.4g} (scale {p.scale:.4g}; "
            f"Gaussian-equivalent noise multiplier {p.sigma / p.l2_sensitivity:.3g}), {d.rounds} rounds: epsilon RDP "
            f"{final:.3g} at delta {mech.delta:g} (limit {d.max_epsilon:g}); PRV n/a (no bound for this mechanism); "
            + _enforced(mech)
            + f"; {_ACCOUNTING_ONLY}",
            {"epsilon": {"rdp": final}, "delta": mech.delta, "budget_against": mech.budget_against, "faults": faults},
        ),
        Finding(
            "dp.distributed",
            "pass",
            f"Distributed DP in {p.bits} bits per coordinate",
            f"the sum of up to {p.cohort} clients leaves the ring with probability <= {p.clip_probability:.2g} per "
            f"coordinate (tail bound); the bits inflate the noise {p.noise_inflation:.3g}x over unlimited bits; "
            f"each client adds 1/{p.shares} of the noise variance (the fewest honest survivors the aggregation "
            f"releases a sum of), so any released sum carries at least the accounted noise; payload "
            f"{p.upload_bytes} bytes per client ({p.padded} coordinates after padding); planned from the configuration "
            "by the run's own planner, not measured here (privagg audit --empirical measures the released noise)",
            {"bits": p.bits, "scale": p.scale, "shares": p.shares, "clip_probability": p.clip_probability},
        ),
        _server_finding(cfg, sampling, amplified=final, mechanism=rdp_mech, noise="distributed"),
        *filter(None, [_refusal_finding(cfg, sampling), _honest_finding(cfg, sampling)]),
    ]
    if not AGGREGATIONS.get(dep.aggregation).hides_updates:
        findings.append(
            Finding(
                "dp.distributed.trust",
                "warn",
                "Noise shares without a secure sum",
                f"under '{dep.aggregation}' the server sees every client's vector, which carries only "
                f"1/{p.shares} of the noise variance: the guarantee holds for the released model, "
                "not against the server",
            )
        )
    if not mech.secure_noise:
        findings.append(Finding("dp.noise", "fail", "Noise from a seeded generator", "use the secure source"))
    return findings, BudgetCurve(tuple(float(r) for r in marks), {"rdp": tuple(eps)}, mech.delta, d.max_epsilon)


def check_compatibility(dep: Deployment) -> list[Finding]:
    """Whether the robust rule needs individual updates that the aggregation hides."""
    if dep.robust_rule is None:
        return []
    from protocols.aggregation import AGGREGATORS, Aggregator

    factory = AGGREGATORS.get(dep.robust_rule, field="deployment.robust_rule")
    if not (isinstance(factory, type) and issubclass(factory, Aggregator)):
        raise ConfigurationError(f"{dep.robust_rule!r} is not an aggregator class", field="deployment.robust_rule")
    needs = factory.needs_plaintext_updates
    if needs and AGGREGATIONS.get(dep.aggregation).hides_updates:
        return [
            Finding(
                "aggregation.compatibility",
                "fail",
                f"'{dep.robust_rule}' cannot run under {dep.aggregation}",
                "it needs every individual update in the clear, which secure aggregation exists to hide; a "
                "deployment that runs it must be decrypting individual updates. Use a sum-compatible defence "
                "(client-side norm bounding + DP)",
            )
        ]
    return [
        Finding(
            "aggregation.compatibility",
            "pass",
            f"'{dep.robust_rule}' is compatible",
            ("it only needs the aggregate" if not needs else "no secure aggregation is claimed")
            + " (read from the rule's declared needs, not run here)",
        )
    ]


def run_audit(cfg: AuditConfig, *, progress: Progress | None = None) -> AuditResult:
    """Run every check; ``progress`` is told when the (slow) protocol attacks start."""
    t0 = time.perf_counter()
    agg = AGGREGATIONS.get(cfg.deployment.aggregation, field="deployment.aggregation")().audit(cfg, progress=progress)
    dp_findings, budget = check_dp(cfg)
    findings = (*agg.findings, *dp_findings, *check_compatibility(cfg.deployment), *agg.cost)
    return AuditResult(cfg, findings, agg.attacks, budget, time.perf_counter() - t0)
