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
    """With the attacks run, the verdict is what happened: the threat model PASSes because every protocol
    attack class held, and the malicious-model check PASSes because the noise is in the sum."""
    cfg = tmp_path / "hardened.toml"
    cfg.write_text("attack_clients = 4\n" + (EXAMPLES / "hardened.toml").read_text())
    rc = main(["audit", "--config", str(cfg), "--strict", "--json", "--out", str(tmp_path / "o")])
    d = json.loads(capsys.readouterr().out)
    rows = d["sections"]["protocol_attacks"]["rows"]
    worked = sorted(r[0] for r in rows if r[3] in ("ATTACK WORKED", "CRASHED"))
    findings = {f["id"]: f for f in d["sections"]["findings"]["findings"]}
    assert {r[2] for r in rows} == {"active"}
    # every attack class held (issue 12: the inconsistent dealer is excluded, the round completes)
    assert worked == [] and findings["secagg.threat-model"]["severity"] == "pass"
    # the example's clients add the DP noise inside the secure sum: a crafted model reads nothing (issue 16)
    malicious = findings["secagg.malicious-model"]
    assert malicious["severity"] == "pass" and max(malicious["data"]["fractions"]) == 0.0
    assert rc == 0 and d["verdict"] != "fail"


def test_central_noise_leaves_the_malicious_model_free(tmp_path, capsys):
    """The same deployment with central DP noise: every protocol attack class still holds, but the server
    sees the un-noised sum, so one crafted model sent to every client reads their images: FAIL, exit 1."""
    cfg = tmp_path / "central.toml"
    text = (EXAMPLES / "hardened.toml").read_text().replace('noise = "client"', 'noise = "central"')
    assert 'noise = "central"' in text
    cfg.write_text("attack_clients = 4\n" + text)
    rc = main(["audit", "--config", str(cfg), "--strict", "--json", "--out", str(tmp_path / "o")])
    d = json.loads(capsys.readouterr().out)
    findings = {f["id"]: f for f in d["sections"]["findings"]["findings"]}
    assert findings["secagg.threat-model"]["severity"] == "pass"
    malicious = findings["secagg.malicious-model"]
    assert malicious["severity"] == "fail" and min(malicious["data"]["fractions"]) >= 0.5
    assert "no noise in the sum" in malicious["detail"]
    assert rc == 1 and d["verdict"] == "fail"


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


_SMALL_RUN = """
[model]
hidden = [16]
[federation]
rounds = 6
sampling = "poisson"
sampling_rate = 0.5
[dp]
noise_multiplier = 2.0
"""


@pytest.mark.filterwarnings("ignore::dp.noise.InsecureNoiseWarning")
def test_a_release_with_less_noise_fails_the_noise_check_and_the_strict_exit(tmp_path, capsys, monkeypatch):
    """The canary bounds cannot see 0.8 of the charged noise; the noise check run beside them does."""
    from privagg.audit import canaries
    from tests.audit.planted import planted_aggregator

    cfg = tmp_path / "run.toml"
    cfg.write_text(_SMALL_RUN + "secure_noise = false\nseed = 7\nreproducible_cohorts = true\n")
    monkeypatch.setattr(canaries, "build_dp_aggregator", lambda run: planted_aggregator(run, "noise-x0.8"))
    rc = main(["audit", "--empirical", "--config", str(cfg), "--canaries", "200", "--strict", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 1 and lines[0].startswith("NOT SHOWN (no violation shown)")
    assert lines[1].startswith("noise check: FAIL: the release carries less noise than the ledger charges")
    d = json.loads((tmp_path / "report.json").read_text())
    assert d["noise_check"]["failed"] is True and d["sections"]["noise-check"]["update"]["estimate"] < 0.85
    assert d["failed"] is True and d["flagged"] is False  # the JSON says what the exit code says (HEAD: no "failed")


def test_empirical_audit_prints_one_verdict_and_writes_the_plot(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(_SMALL_RUN)
    out = tmp_path / "e"
    rc = main(["audit", "--empirical", "--config", str(cfg), "--canaries", "200", "--strict", "--out", str(out)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(lines) == 2
    assert lines[0].startswith("NOT SHOWN (no violation shown): empirical epsilon >= ") and "accounted" in lines[0]
    assert "not evidence of privacy" in lines[0]
    assert lines[1].startswith("noise check: PASS (measured): the release carries at least the charged noise")
    d = json.loads((out / "report.json").read_text())
    assert d["noise_check"]["failed"] is False and d["failed"] is False and "noise-check" in d["sections"]
    sec = d["sections"]["empirical"]
    assert d["flagged"] is False and sec["game"] == "add/remove"
    assert {b["method"] for b in sec["white_box"]} == {"gaussian-fit", "threshold", "one-run"}
    assert len(sec["curve"]["rounds"]) == len(sec["curve"]["accounted"]) >= 3
    assert (out / "empirical_epsilon.png").exists() and (out / "report.html").exists()


def test_empirical_audit_refuses_a_run_without_dp(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text("[federation]\nrounds = 2\n")
    assert main(["audit", "--empirical", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "dp: the run has no [dp] table" in capsys.readouterr().err
