"""What the secure-aggregation client mod takes from a node's configuration, and from where.

``node_config`` is the node's own (set where the SuperNode is started); ``run_config`` is written by
whoever starts the run: the server side. Whatever protects the node against the server is read from
the node's own settings (or the mod's arguments), never the run config: its threat mode
(:func:`own_threat`), its identity and PKI folder (``secagg._new_local``, :func:`node_value`), its DP policy
(``dp_policy._client_policy``) and whether it answers only inside a secure round (:func:`secure_only_from`: by
default yes, in active mode; :mod:`._guard`).
The secure-aggregation policy (:func:`own_policy`) is the node's too: an active node takes its minimum cohort
and assumed corruption rate only from its own settings and refuses a round without them (else it would accept
the server's degree, threshold and roster size). Only the assumed dropout rate may come from the run config
when the node left it out: a larger one only makes the client refuse more (``SecAggParams.derive`` meets
condition 2 whatever the dropout rate and condition 3 at ``dropout + corruption``, so a graph accepted at a
larger dropout rate is accepted at a smaller; ``tests/protocols/flower/test_node_policy.py`` holds the property).
"""

from __future__ import annotations

from typing import Any

from flwr.app import Context

from privagg.errors import ConfigurationError
from secagg.params import ClientPolicy, ThreatModel

__all__ = [
    "CORRUPTION_RATE_KEY",
    "DROPOUT_RATE_KEY",
    "MIN_CLIENTS_KEY",
    "POLICY_BITS_KEYS",
    "SECURE_ONLY_KEY",
    "node_flag",
    "node_value",
    "own_policy",
    "own_threat",
    "policy_from",
    "secure_only_from",
]

#: a node's own config key: refuse any training message outside a secure round (and evaluate and get-parameters
#: messages, :mod:`._guard`); default on in active mode, off in semi-honest mode
SECURE_ONLY_KEY = "privagg-secure-only"
#: a node's own secure-aggregation policy (:class:`secagg.ClientPolicy`): the smallest cohort and roster it joins,
#: and the fraction of every roster it assumes colludes with the server (active mode: both from ``node_config``)
MIN_CLIENTS_KEY = "privagg-secagg-min-clients"
CORRUPTION_RATE_KEY = "privagg-secagg-corruption-rate"
#: the dropout rate the node derives its graph for (node config, else run config: a larger one only adds refusals)
DROPOUT_RATE_KEY = "privagg-secagg-dropout-rate"
#: the policy's security / failure / grinding bits (:class:`secagg.ClientPolicy`), by field name; active mode:
#: only from the node's own ``node_config`` (unset: the policy's defaults)
POLICY_BITS_KEYS = {
    "security_bits": "privagg-secagg-security-bits",
    "failure_bits": "privagg-secagg-failure-bits",
    "grinding_bits": "privagg-secagg-grinding-bits",
}
_RANGES = {MIN_CLIENTS_KEY: "an integer >= 2", CORRUPTION_RATE_KEY: "0 <= rate < 1"}


def node_value(ctxt: Context, key: str, fixed: Any = None) -> Any:
    """A setting that protects this node: the mod's argument ``fixed``, else the node's own ``node_config[key]``,
    else ``None``; never the run config (the server writes it: it would pick the node's trust root or noise floor)."""
    return fixed if fixed is not None else ctxt.node_config.get(key)


def policy_from(ctxt: Context, threat: ThreatModel = ThreatModel.ACTIVE) -> ClientPolicy | None:
    """The client's secure-aggregation policy from its configuration, key by key (``None``: none).

    Active mode: :data:`MIN_CLIENTS_KEY` and :data:`CORRUPTION_RATE_KEY` only from the node's own
    ``node_config`` (``None`` unless both are set: the run config is the server's); :data:`DROPOUT_RATE_KEY`
    from the node, else the run config, else 0 (the smallest rate: a run config can only raise it, which only
    adds refusals). Semi-honest mode (the server is trusted): each key from the node, else the run config, as
    before (``None`` when no minimum cohort is set)."""
    own = ctxt.node_config

    def get(key: str) -> Any:
        return own.get(key, ctxt.run_config.get(key))

    if threat is ThreatModel.ACTIVE:
        n, corruption = own.get(MIN_CLIENTS_KEY), own.get(CORRUPTION_RATE_KEY)
        if corruption is None:
            return None
    else:
        n, corruption = get(MIN_CLIENTS_KEY), get(CORRUPTION_RATE_KEY)
    if n is None:
        return None
    dropout = get(DROPOUT_RATE_KEY)
    bits_from = own.get if threat is ThreatModel.ACTIVE else get
    bits = {f: _number(v, k, int) for f, k in POLICY_BITS_KEYS.items() if (v := bits_from(k)) is not None}
    return ClientPolicy(
        min_clients=_number(n, MIN_CLIENTS_KEY, int),
        dropout_rate=_number(dropout or 0.0, DROPOUT_RATE_KEY, float),
        corruption_rate=_number(corruption or 0.0, CORRUPTION_RATE_KEY, float),
        **bits,
    )


def _number(value: Any, key: str, kind: type[int] | type[float]) -> Any:
    """``value`` of config ``key`` as an int or float; a :class:`ConfigurationError` naming the key otherwise."""
    try:
        got = kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"not a number: {value!r}", field=key, accepted=kind.__name__) from None
    if kind is int and got != float(value):
        raise ConfigurationError(f"not an integer: {value!r}", field=key, accepted="int")
    return got


def own_policy(ctxt: Context, fixed: ClientPolicy | None, threat: ThreatModel) -> ClientPolicy | None:
    """The policy this node's client holds: the mod's ``fixed``, else :func:`policy_from`. An active node with
    neither refuses (:class:`ConfigurationError` naming the keys): without a policy of its own it would accept
    the server's degree, threshold and roster size (a weak graph lets the server and a colluder rebuild an
    input). A semi-honest node may run without one (its server is trusted)."""
    if not isinstance(fixed, ClientPolicy | None):  # the core's ClientPolicy.trust_server(): not for a node
        raise ConfigurationError(
            f"a node's policy must be a ClientPolicy, got {fixed!r}: the core's opt-out (accept the server's "
            "degree, threshold and roster size) is for attack demonstrations, not for a deployed node",
            field="policy",
            accepted="ClientPolicy(min_clients=..., dropout_rate=..., corruption_rate=...)",
        )
    policy = fixed if fixed is not None else policy_from(ctxt, threat)
    if policy is None and threat is ThreatModel.ACTIVE:
        missing = [k for k in (MIN_CLIENTS_KEY, CORRUPTION_RATE_KEY) if ctxt.node_config.get(k) is None]
        raise ConfigurationError(
            "an active node needs a secure-aggregation policy of its own, or it accepts whatever degree, threshold "
            f"and roster size the server sends: set node_config {' and '.join(repr(k) for k in missing)} "
            f"(optionally {DROPOUT_RATE_KEY!r}) or make_secagg_mod(policy=ClientPolicy(...)); the run config "
            "(the server's) is not read for them",
            field=missing[0],
            accepted=" and ".join(f"node_config {k} ({_RANGES[k]})" for k in missing),
        )
    return policy


def own_threat(ctxt: Context, fixed: ThreatModel | None) -> ThreatModel:
    """The mode this node requires: the mod's, else its ``node_config["privagg-threat"]``, else active; never the
    run config's (the server's: it would downgrade the node to semi-honest, no protection against that server)."""
    own = ctxt.node_config.get("privagg-threat")
    return fixed or (ThreatModel.parse(str(own)) if own is not None else ThreatModel.ACTIVE)


def node_flag(ctxt: Context, key: str) -> bool | None:
    """A yes/no setting of the node's own ``node_config[key]`` (a bool, or true / 1 / yes, false / 0 / no;
    ``None``: unset); anything else is a :class:`ConfigurationError` (a typo must not flip a protection)."""
    own = ctxt.node_config.get(key)
    if own is None or isinstance(own, bool):
        return own
    word = str(own).strip().lower()
    if word in ("true", "1", "yes"):
        return True
    if word in ("false", "0", "no"):
        return False
    raise ConfigurationError(f"not a yes/no setting: {own!r}", field=key, accepted="true | false")


def secure_only_from(ctxt: Context, fixed: bool | None, threat: ThreatModel) -> bool:
    """Whether this node answers only inside a secure round (:mod:`._guard`): the mod's argument, else its own
    ``node_config[SECURE_ONLY_KEY]``, else whether its own mode ``threat`` is active. The run config cannot
    turn it off (the server would ask the node for its update in the clear)."""
    if fixed is not None:
        return fixed
    own = node_flag(ctxt, SECURE_ONLY_KEY)
    return own if own is not None else threat is ThreatModel.ACTIVE
