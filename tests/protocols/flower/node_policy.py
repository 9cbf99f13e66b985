"""The secure-aggregation policy the Flower tests give their active nodes when the test is not about it.

An active node refuses to run without a :class:`secagg.ClientPolicy` of its own (``protocols.flower._node.own_policy``).
Tests of other properties (dropouts, DP, state, plain messages) give their nodes :data:`TEST_POLICY` through
:func:`active_secagg_mod`: it assumes no client colludes with the server (``corruption_rate = 0``), so it accepts
every structurally valid graph and any roster of two or more; what it still adds over no policy is the
consistency quorum (signatures of more than half the roster before a reveal). It is a test setting, not a
recommendation: ``test_node_policy.py`` shows what a node's real policy refuses.
"""

from __future__ import annotations

from typing import Any

from protocols.flower import make_secagg_mod
from secagg.params import ClientPolicy, ThreatModel

__all__ = ["TEST_POLICY", "TEST_POLICY_CONFIG", "active_secagg_mod", "policy_for"]

#: no colluders assumed, any roster of two or more: the loosest policy a node can hold
TEST_POLICY = ClientPolicy(min_clients=2, dropout_rate=0.0, corruption_rate=0.0)
#: the same policy as a node's own ``node_config`` keys (for apps that read it there, e.g. ``privagg_secagg_mod``)
TEST_POLICY_CONFIG: dict[str, int | float] = {"privagg-secagg-min-clients": 2, "privagg-secagg-corruption-rate": 0.0}


def active_secagg_mod(**kw: Any) -> Any:
    """``make_secagg_mod(threat="active", policy=TEST_POLICY, **kw)`` (any argument may be overridden)."""
    return make_secagg_mod(**{"threat": "active", "policy": TEST_POLICY, **kw})


def policy_for(threat: ThreatModel | str | None) -> ClientPolicy | None:
    """:data:`TEST_POLICY` for an active node (``None``: the mod's default mode, active), ``None`` for a
    semi-honest one (which runs without a policy, as before)."""
    active = threat is None or ThreatModel.parse(threat) is ThreatModel.ACTIVE
    return TEST_POLICY if active else None
