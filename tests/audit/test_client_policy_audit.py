"""The audit of an active deployment whose clients hold no policy of their own.

Before wave 7 ``privagg audit`` of an active deployment with ``client_policy = false`` and ``--no-attacks``
said WARN ("assumed, not tested") and PASSed the configured graph: nothing said that the clients accept
whatever graph and roster the server sends. Now it is a FAIL that names the consequence and the fix.
"""

from __future__ import annotations

import pytest

from privagg.audit import AuditConfig, run_audit

#: a graph that meets its targets at these rates (the parameters finding PASSes on its own)
DEPLOYMENT = {"num_clients": 1000, "threat": "active", "dropout_rate": 0.1, "corruption_rate": 0.05}


def _findings(**deployment: object) -> dict[str, object]:
    cfg = AuditConfig.from_mapping({"protocol_attacks": False, "deployment": {**DEPLOYMENT, **deployment}})
    r = run_audit(cfg)
    return {"verdict": r.verdict, **{f.id: f for f in r.findings}}


def test_active_clients_without_a_policy_fail_the_audit() -> None:
    got = _findings(client_policy=False)
    f = got["secagg.client-policy"]
    assert f.severity == "fail" and got["verdict"] == "fail"  # type: ignore[attr-defined]
    assert got["secagg.parameters"].severity == "pass"  # type: ignore[attr-defined]  # the graph itself is fine
    for words in ("degree 2 / threshold 2", "one colluding client", "roster", "privagg-secagg-min-clients"):
        assert words in f.detail  # type: ignore[attr-defined]
    assert "server chooses the graph" in f.title  # type: ignore[attr-defined]


@pytest.mark.parametrize("deployment", [{"client_policy": True}, {"threat": "semi-honest"}])
def test_no_policy_finding_where_it_does_not_apply(deployment: dict[str, object]) -> None:
    """With a client policy there is nothing to report; semi-honest mode trusts the server (and fails the
    threat-model check for that)."""
    got = _findings(**deployment)
    assert "secagg.client-policy" not in got
    if deployment.get("threat") == "semi-honest":
        assert got["secagg.threat-model"].severity == "fail"  # type: ignore[attr-defined]
    else:
        assert got["verdict"] != "fail"
