"""What the secure-aggregation client mod takes from a node's configuration, and from where.

``node_config`` is the node's own (set where the SuperNode is started); ``run_config`` is written by
whoever starts the run: the server side. Whatever protects the node against the server is read from
the node's own settings (or the mod's arguments), never the run config: its threat mode
(:func:`own_threat`), its identity and PKI folder (``secagg._new_local``, :func:`node_value`), its DP policy
(``dp_policy._client_policy``) and whether it answers only inside a secure round (:func:`secure_only_from`: by
default yes, in active mode; :mod:`._guard`).
The secure-aggregation policy (:func:`policy_from`) may fill a key the
node left out from the run config: a larger assumed rate or cohort only makes the client refuse more.
"""

from __future__ import annotations

from typing import Any

from flwr.app import Context

from privagg.errors import ConfigurationError
from secagg.params import ClientPolicy, ThreatModel

__all__ = ["SECURE_ONLY_KEY", "node_flag", "node_value", "own_threat", "policy_from", "secure_only_from"]

#: a node's own config key: refuse any training message outside a secure round (and evaluate and get-parameters
#: messages, :mod:`._guard`); default on in active mode, off in semi-honest mode
SECURE_ONLY_KEY = "privagg-secure-only"


def node_value(ctxt: Context, key: str, fixed: Any = None) -> Any:
    """A setting that protects this node: the mod's argument ``fixed``, else the node's own ``node_config[key]``,
    else ``None``; never the run config (the server writes it: it would pick the node's trust root or noise floor)."""
    return fixed if fixed is not None else ctxt.node_config.get(key)


def policy_from(ctxt: Context) -> ClientPolicy | None:
    """The client's policy from its node / run configuration, key by key (``None`` when no minimum cohort is
    set): ``privagg-secagg-min-clients``, ``-dropout-rate``, ``-corruption-rate``."""

    def get(key: str) -> Any:
        return ctxt.node_config.get(key, ctxt.run_config.get(key))

    if (n := get("privagg-secagg-min-clients")) is None:
        return None
    rates = [float(get(f"privagg-secagg-{k}-rate") or 0.0) for k in ("dropout", "corruption")]
    return ClientPolicy(min_clients=int(n), dropout_rate=rates[0], corruption_rate=rates[1])


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
