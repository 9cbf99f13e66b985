"""Whether the clients of an active deployment hold a policy of their own (``secagg.ClientPolicy``).

In active mode the server may deviate, and the graph's parameters protect the clients, so they are the
clients' to check (``secagg/THREAT_MODEL.md``). A client without a policy accepts whatever degree, threshold
and roster size the server sends: the graph :func:`privagg.audit.aggregations.check_secagg` judges then holds
only while the server keeps to it, which is what active mode does not assume. The audit says so as a FAIL,
never behind a PASS of the configured graph.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privagg.audit.findings import Finding
from secagg.params import ThreatModel

if TYPE_CHECKING:
    from privagg.audit.config import Deployment

__all__ = ["check_client_policy"]


def check_client_policy(dep: Deployment) -> list[Finding]:
    """FAIL for an active deployment whose clients hold no policy (``client_policy = false``, also what clients built
    with the opt-out ``secagg.ClientPolicy.trust_server()`` are); nothing otherwise (semi-honest mode trusts the
    server and fails the threat-model check for it)."""
    if dep.threat is not ThreatModel.ACTIVE or dep.client_policy:
        return []
    detail = (
        "in active mode the server may deviate, but clients without a secagg.ClientPolicy accept whatever degree, "
        "threshold and roster size it sends: a server that sends degree 2 / threshold 2 rebuilds a client's exact "
        "input with one colluding client, one that gathers a roster of a few clients learns what their sum "
        "reveals, and one that splits the roster runs separate sub-rounds (no consistency quorum without a "
        "policy). The graph judged in secagg.parameters holds only while the server keeps to it. Give every "
        "client its own policy (SecAggClient(policy=...), run_round(client_policy=...), which an active core client "
        "requires: ClientPolicy.trust_server() is the unsafe opt-out and counts as no policy here; in Flower "
        "make_secagg_mod(policy=...) or node_config 'privagg-secagg-min-clients' and "
        "'privagg-secagg-corruption-rate', without which an active Flower node refuses to run) and set "
        "client_policy = true"
    )
    title = "Clients hold no policy: an active server chooses the graph and the roster"
    data = {"threat": dep.threat.value, "client_policy": False}
    return [Finding("secagg.client-policy", "fail", title, detail, data)]
