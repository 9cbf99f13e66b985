"""The audit as a library: typed configuration, registries instead of names, typed findings."""

from __future__ import annotations

import pytest

from attacks.protocol import PROTOCOL_ATTACKS, ROUND_ATTACKS
from dp import DPConfig
from privagg.audit import AGGREGATIONS, AuditConfig, AuditDP, Deployment, run_audit
from privagg.audit.aggregations import check_threat_model, upload_bytes
from privagg.audit.engine import check_compatibility, check_dp
from privagg.audit.findings import AttackRow
from privagg.errors import ConfigurationError
from secagg import ThreatModel


def _cfg(**data):  # type: ignore[no-untyped-def]
    return AuditConfig.from_mapping({"protocol_attacks": False, **data})


def test_threat_is_the_protocols_threat_model() -> None:
    assert Deployment(threat="active").threat is ThreatModel.ACTIVE  # type: ignore[arg-type]
    assert Deployment().threat is ThreatModel.SEMI_HONEST
    with pytest.raises(ConfigurationError, match="threat: invalid value 'paranoid'"):
        Deployment(threat="paranoid")  # type: ignore[arg-type]


def test_dp_table_is_a_dpconfig_plus_the_plan() -> None:
    cfg = _cfg(dp={"noise_multiplier": 1.3, "rounds": 200, "delta": 1e-6, "max_epsilon": 4.0})
    assert isinstance(cfg.dp.mechanism, DPConfig)
    assert cfg.dp.mechanism.noise_multiplier == 1.3 and cfg.dp.mechanism.delta == 1e-6
    assert (cfg.dp.rounds, cfg.dp.max_epsilon) == (200, 4.0)
    assert AuditConfig.from_mapping(cfg.to_mapping()) == cfg  # the report's config echo loads back
    # no noise multiplier (or 0): no DP
    assert _cfg().dp.mechanism is None
    assert _cfg(dp={"noise_multiplier": 0, "rounds": 10}).dp == AuditDP(rounds=10)
    assert AuditConfig.from_mapping(_cfg().to_mapping()) == _cfg()


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"noise_multiplier": -1.0}, "dp.noise_multiplier: must be finite and > 0"),
        ({"noise_multiplier": 1.0, "secure_noise": False}, "dp.seed: secure_noise = false needs an explicit seed"),
        ({"noise_multiplier": 1.0, "sampling_rate": 0.0}, "dp.sampling_rate: must be in (0, 1]"),
        ({"noise_multiplier": 1.0, "rounds": 0}, "dp.rounds: must be >= 1"),
        ({"noise_multiplier": 0, "bogus": 1}, "dp.bogus: unknown setting"),
    ],
)
def test_dp_table_errors_name_the_field(table, fragment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigurationError) as e:
        _cfg(dp=table)
    assert fragment in str(e.value)


def test_target_epsilon_is_calibrated_for_the_plan() -> None:
    cfg = _cfg(deployment={"num_clients": 100}, dp={"target_epsilon": 4.0, "rounds": 50})
    findings, budget = check_dp(cfg)
    assert findings[0].id == "dp.budget" and findings[0].severity == "pass"
    assert budget is not None and budget.epsilon["rdp"][-1] <= 4.0


def test_insecure_noise_is_flagged() -> None:
    cfg = _cfg(dp={"noise_multiplier": 1.0, "secure_noise": False, "seed": 3})
    findings, _ = check_dp(cfg)
    assert [f.id for f in findings] == ["dp.budget", "dp.server", "dp.refusal", "dp.noise"]
    assert findings[3].severity == "fail"


def test_cohorts_near_the_secure_sums_minimum_are_flagged() -> None:
    """Whether a Poisson round ran tells observers whether its cohort reached the secure sum's minimum
    (dp/refusal.py): the audit states that delta, and fails a plan whose cohorts mostly cannot run."""
    rates = {"dropout_rate": 0.1, "corruption_rate": 0.05, "threat": "active"}  # examples/audit/hardened.toml
    dp = {"noise_multiplier": 1.3, "sampling": "poisson", "sampling_rate": 0.1, "rounds": 200, "delta": 1e-5}
    few = next(f for f in check_dp(_cfg(deployment={"num_clients": 100, **rates}, dp=dp))[0] if f.id == "dp.refusal")
    assert few.severity == "fail" and few.data["min_cohort"] == 80 and few.data["expected_cohort"] == 10
    many = next(f for f in check_dp(_cfg(deployment={"num_clients": 1500, **rates}, dp=dp))[0] if f.id == "dp.refusal")
    assert many.severity == "pass" and 0 < many.data["delta_refusal"] < 1e-6
    near = next(f for f in check_dp(_cfg(deployment={"num_clients": 900, **rates}, dp=dp))[0] if f.id == "dp.refusal")
    assert near.severity == "fail" and near.data["delta_refusal"] > 1e-5  # cohorts of 90 against a minimum of 80
    plain = check_dp(_cfg(deployment={"num_clients": 100, "aggregation": "plain"}, dp=dp))[0]
    assert "dp.refusal" not in [f.id for f in plain]  # nothing refuses a cohort: nothing to bound


def test_aggregations_come_from_registries() -> None:
    assert set(AGGREGATIONS.names()) == {"secagg", "paillier", "plain"}
    assert not AGGREGATIONS.get("plain").hides_updates
    with pytest.raises(ConfigurationError, match=r"deployment\.aggregation"):
        _cfg(deployment={"aggregation": "magic"})
    with pytest.raises(ConfigurationError, match=r"deployment\.robust_rule: unknown aggregator 'magic'"):
        _cfg(deployment={"robust_rule": "magic"})
    # the rule's own class says whether it needs individual updates
    assert check_compatibility(Deployment(robust_rule="krum"))[0].severity == "fail"
    assert check_compatibility(Deployment(robust_rule="norm-bound"))[0].severity == "pass"
    assert check_compatibility(Deployment(robust_rule="krum", aggregation="plain"))[0].severity == "pass"


def test_findings_order_and_evidence() -> None:
    r = run_audit(_cfg(deployment={"num_clients": 50, "aggregation": "plain", "robust_rule": "krum"}))
    assert [f.id for f in r.findings] == ["aggregation.plain", "dp.budget", "aggregation.compatibility"]
    assert r.verdict == "fail" and r.failed and r.counts == {"pass": 1, "warn": 1, "fail": 1}
    assert r.attacks is None and r.budget is None
    r = run_audit(_cfg(deployment={"num_clients": 1000, "threat": "active"}, dp={"noise_multiplier": 1.0}))
    assert [f.id for f in r.findings] == [
        "secagg.parameters",
        "secagg.client-policy",  # active clients without a policy of their own: FAIL
        "secagg.threat-model",
        "secagg.not-covered",
        "dp.budget",
        "dp.server",
        "dp.refusal",
        "secagg.cost",
    ]
    assert r.budget is not None and set(r.budget.epsilon) == {"rdp", "prv"} and len(r.budget.rounds) == 10


def test_protocol_attacks_follow_the_deployed_threat_model() -> None:
    cfg = AuditConfig.from_mapping({"deployment": {"num_clients": 50, "threat": "active"}, "attack_clients": 4})
    r = run_audit(cfg)
    assert r.attacks is not None and {a.mode for a in r.attacks} == {"active"}
    # every attack class was run: the isolation attacks and every conformance case
    assert {a.attack for a in r.attacks} == {*PROTOCOL_ATTACKS, *ROUND_ATTACKS.names()}
    threat = next(f for f in r.findings if f.id == "secagg.threat-model")
    worked = sorted(a.attack for a in r.attacks if a.succeeded)
    # never PASS over an attack class that works: the verdict follows what happened when run
    assert threat.severity == ("fail" if worked else "pass")
    assert sorted(threat.data["succeeded"]) == worked
    assert all(w in threat.detail for w in worked)
    assert next(f for f in r.findings if f.id == "secagg.not-covered").severity == "warn"


def _row(attack: str, mode: str, worked: bool) -> AttackRow:
    return AttackRow(attack, mode, worked, "what happened", None, "server", "the promise")


def test_threat_model_verdict_follows_the_rows() -> None:
    active = _cfg(deployment={"threat": "active"})
    ok = (_row("a", "active", False), _row("b", "active", False))
    assert check_threat_model(active, ok)[0].severity == "pass"
    bad = (_row("a", "active", False), _row("b", "active", True))
    f = check_threat_model(active, bad)[0]
    assert (
        f.severity == "fail" and f.data["succeeded"] == ["b"] and "b: what happened (promised: the promise)" in f.detail
    )
    # not run: assumed, not tested -- never PASS
    f = check_threat_model(active, None)[0]
    assert f.severity == "warn" and "not tested" in f.title
    # an attack class that could not be run is not tested: never PASS
    broken = (_row("a", "active", False), AttackRow("b", "active", False, "the attack itself failed", None, ran=False))
    f = check_threat_model(active, broken)[0]
    assert f.severity == "warn" and f.data["not_run"] == ["b"] and broken[1].outcome == "NOT RUN"
    # whatever was run, something is always assumed: reported as such
    assert [g.id for g in check_threat_model(active, ok)] == ["secagg.threat-model", "secagg.not-covered"]
    assert check_threat_model(active, ok)[1].severity == "warn"


@pytest.mark.parametrize("rows", [None, (_row("a", "semi-honest", False), _row("a", "active", False))])
def test_semi_honest_offers_no_protection_against_an_active_server(rows) -> None:  # type: ignore[no-untyped-def]
    f = check_threat_model(_cfg(), rows)[0]
    assert f.severity == "fail" and "no protection against an active (malicious) server" in f.title


def test_upload_is_the_encoded_message_sizes() -> None:
    """The estimate equals what a client really uploads in a round (complete graph: every client
    reveals degree + 1 shares)."""
    import numpy as np

    from secagg import ClientPolicy, SecAggParams, run_round
    from secagg.messages import CIPHERTEXT_BYTES, DIGEST_BYTES

    for threat in ("semi-honest", "active"):
        p = SecAggParams.manual(num_clients=7, degree=6, threshold=4, threat=threat)
        dim = 1000
        rep = run_round(
            p,
            client_ids=range(7),
            inputs=lambda c: np.full(dim, c, np.uint64),
            dimension=dim,
            client_policy=ClientPolicy.trust_server(),  # message sizes only
        )
        assert rep.ok
        sizes = upload_bytes(p, dim)
        assert sizes["per_neighbour_envelope"] == 4 + DIGEST_BYTES + CIPHERTEXT_BYTES  # the codec's real size
        total = sum(v for k, v in sizes.items() if k != "per_neighbour_envelope")
        assert {rep.bytes_sent[c] for c in range(7)} == {total}, threat


def test_grinding_is_assumed_or_accounted() -> None:
    base = {"num_clients": 100, "threat": "active", "degree": 80, "threshold": 54}
    r = run_audit(_cfg(deployment=base))
    assumed = next(f for f in r.findings if f.id == "secagg.not-covered")
    assert assumed.severity == "warn" and "grinding_bits = 0" in assumed.detail
    # 2^20 retries: the same graph must now meet 2^-60, and does not
    r = run_audit(_cfg(deployment={**base, "grinding_bits": 20}))
    params = next(f for f in r.findings if f.id == "secagg.parameters")
    assert params.severity == "fail" and "raised by 20 bits" in params.detail
    with pytest.raises(ConfigurationError, match="grinding_bits"):
        _cfg(deployment={"grinding_bits": 200})


def test_a_paillier_deployment_is_reported_as_assumed_never_passed() -> None:
    """The audit runs no Paillier attack: it states the trust and the gaps as a WARN, never a PASS."""
    r = run_audit(_cfg(deployment={"num_clients": 50, "aggregation": "paillier"}))
    (f,) = [f for f in r.findings if f.id.startswith("paillier")]
    assert f.severity == "warn" and "not tested" in f.title.lower()
    assert "dealer" in f.detail and "corrupt the sum" in f.detail and r.attacks is None


def test_the_graph_is_audited_for_the_rounds_that_run() -> None:
    """With DP sampling a secure sum runs over the cohort, not the population: the graph finding (and the
    upload) are for rounds of q N clients, as each round's clients derive their graph from their roster."""
    from secagg import SecAggParams

    rates = {"dropout_rate": 0.1, "corruption_rate": 0.05, "threat": "active"}
    dp = {"noise_multiplier": 1.3, "sampling": "poisson", "sampling_rate": 0.1, "rounds": 200, "delta": 1e-5}
    r = run_audit(_cfg(deployment={"num_clients": 1500, **rates}, dp=dp))
    graph = next(f for f in r.findings if f.id == "secagg.parameters")
    cohort = SecAggParams.derive(num_clients=150, dropout_rate=0.1, corruption_rate=0.05, threat="active")
    assert graph.data["round_size"] == 150 and graph.data["degree"] == cohort.degree
    assert graph.detail.startswith("rounds of 150 clients (the sampled cohort of 1500)")
    whole = run_audit(_cfg(deployment={"num_clients": 1500, **rates}))  # no DP: every client in every round
    assert next(f for f in whole.findings if f.id == "secagg.parameters").data["round_size"] == 1500
    # a configured graph wider than the cohort is the complete graph of the cohort
    wide = run_audit(_cfg(deployment={"num_clients": 100, "degree": 14, "threshold": 10}, dp=dp))
    data = next(f for f in wide.findings if f.id == "secagg.parameters").data
    assert (data["round_size"], data["degree"], data["threshold"]) == (10, 9, 9)
