import json
from pathlib import Path

import pytest

from privagg.audit import FLOWER_DEFAULTS, AuditConfig, run_audit
from privagg.cli import main
from privagg.report.audit import audit_report

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "audit"


def _ids(findings, severity):
    return {f.id for f in findings if f.severity == severity}


def test_flower_defaults_fail_and_attacks_are_really_run():
    cfg = AuditConfig.from_mapping({**FLOWER_DEFAULTS, "attack_clients": 5})
    result = run_audit(cfg)
    findings = result.findings
    report = audit_report(result)
    fails = _ids(findings, "fail")
    # 14 neighbours / threshold 10 at 5% corruption misses 2^-40; semi-honest mode offers no
    # protection against an active server (the attacks run against real state machines)
    assert {"secagg.parameters", "secagg.threat-model"} <= fails
    threat = next(f for f in findings if f.id == "secagg.threat-model")
    assert "no protection against an active (malicious) server" in threat.title
    assert "model-inconsistency" in threat.data["succeeded"]
    rows = report.to_dict()["sections"]["protocol_attacks"]["rows"]
    # every row says what happened when it was run; none says PASS
    assert {r[3] for r in rows} <= {"stopped", "held", "ATTACK WORKED", "CRASHED"}
    assert {r[2] for r in rows} == {"semi-honest", "active"}
    assert "dp.budget" in _ids(findings, "warn")


def test_hardened_example_without_attacks_is_not_a_pass(tmp_path, capsys):
    """--no-attacks: the active threat model is assumed, not tested -- a WARN, never PASS."""
    out = tmp_path / "audit"
    rc = main(
        ["audit", "--config", str(EXAMPLES / "hardened.toml"), "--no-attacks", "--strict", "--json", "--out", str(out)]
    )
    assert rc == 0  # --strict fails on FAIL only
    d = json.loads(capsys.readouterr().out)
    assert d["verdict"] == "warn"
    assert d["command"].startswith("privagg audit --config ") and d["timestamp"].endswith("+00:00")
    found = {f["id"]: f for f in d["sections"]["findings"]["findings"]}
    assert found["secagg.threat-model"]["severity"] == "warn"
    assert "not tested" in found["secagg.threat-model"]["title"]
    assert found["secagg.not-covered"]["severity"] == "warn"
    eps = found["dp.budget"]["data"]["epsilon"]
    assert 0 < eps["prv"] <= eps["rdp"] <= 8.0
    assert (out / "epsilon.png").exists() and (out / "report.html").exists()


def test_hardened_example_reports_what_the_attacks_did(tmp_path, capsys):
    """With the attacks run, the verdict is what happened: FAIL (exit 1 under --strict) while an
    attack class works, naming each one; PASS for the threat model only when every class held."""
    cfg = tmp_path / "hardened.toml"
    cfg.write_text("attack_clients = 4\n" + (EXAMPLES / "hardened.toml").read_text())
    rc = main(["audit", "--config", str(cfg), "--strict", "--json", "--out", str(tmp_path / "o")])
    d = json.loads(capsys.readouterr().out)
    rows = d["sections"]["protocol_attacks"]["rows"]
    worked = sorted(r[0] for r in rows if r[3] in ("ATTACK WORKED", "CRASHED"))
    threat = next(f for f in d["sections"]["findings"]["findings"] if f["id"] == "secagg.threat-model")
    assert {r[2] for r in rows} == {"active"}
    if worked:
        assert rc == 1 and d["verdict"] == "fail" and threat["severity"] == "fail"
        assert sorted(threat["data"]["succeeded"]) == worked
    else:
        assert rc == 0 and threat["severity"] == "pass"


def test_strict_exit_code_and_incompatible_robust_rule(tmp_path, capsys):
    cfg = tmp_path / "d.toml"
    cfg.write_text('[deployment]\nnum_clients = 50\nthreat = "active"\nrobust_rule = "krum"\n')
    rc = main(["audit", "--config", str(cfg), "--no-attacks", "--strict", "--out", str(tmp_path / "o")])
    assert rc == 1
    out = capsys.readouterr().out
    assert "[FAIL] 'krum' cannot run under secagg" in out


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('[deployment]\nthreat = "paranoid"\n', "deployment.threat: invalid value 'paranoid'"),
        ("[deployment]\ndegree = 10\n", "deployment.threshold: give both degree and threshold"),
        ("[dp]\nsampling_rate = 2.0\n", "dp.sampling_rate: must be in (0, 1]"),
        ("[deploy]\n", "deploy: unknown setting"),
    ],
)
def test_bad_config_exit_2(tmp_path, capsys, toml, fragment):
    cfg = tmp_path / "d.toml"
    cfg.write_text(toml)
    assert main(["audit", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
