"""A client's DP policy for the Flower DP mods (:mod:`.dp`, :mod:`.distributed_dp`): one policy per client.

The policy comes from the mod's arguments or from ``node_config`` / ``run_config``
(:data:`POLICY_KEYS`); a client without a noise floor and a share ceiling refuses every DP
round. :func:`check_shares` bounds the noise shares by what the secure-aggregation mod outside
the DP mod verified: its roster and the fewest survivors it lets a sum be released with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.common import FitRes, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from privagg.errors import ConfigurationError, ProtocolAbort
from protocols.flower.secagg import MIN_SURVIVORS_KEY, ROSTER_KEY

__all__ = ["POLICY_KEYS", "check_shares", "trained_delta"]

#: node_config / run_config keys of the client's DP policy (when not given to make_dp_mod)
POLICY_KEYS = {
    "min_noise_multiplier": "privagg-dp-min-noise-multiplier",
    "max_shares": "privagg-dp-max-shares",
    "accept_poisson": "privagg-dp-accept-poisson",
    "max_clip": "privagg-dp-max-clip",
}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def check_shares(shares: int, cfg: Mapping[str, Any]) -> None:
    """Refuse noise shares a sum the secure aggregation may release would not all carry.

    A share is ``std / sqrt(shares)``, so the full noise needs ``shares`` honest clients in the sum.
    The secure-aggregation mod (outside the DP mod) sets, from the graph *this client* derived and
    the roster it verified, the fewest survivors it lets a sum be released with
    (``MIN_SURVIVORS_KEY``; at most the roster, ``ROSTER_KEY``). A server asking for more shares
    could split the noise over the roster and then force dropouts down to that floor: the sum
    would carry ``std sqrt(floor / shares)``. Up to ``shares = 1`` (a client's own full noise) the
    mod needs no secure aggregation.
    """
    roster, floor = _count(cfg.get(ROSTER_KEY)), _count(cfg.get(MIN_SURVIVORS_KEY))
    if shares <= 1:
        return
    if roster is None or floor is None or not 1 <= floor <= roster:
        raise ProtocolAbort(
            f"{shares} noise shares without a verified roster and survivor floor (roster {cfg.get(ROSTER_KEY)!r}, "
            f"floor {cfg.get(MIN_SURVIVORS_KEY)!r}; client noise shares need privagg's secure aggregation mod "
            "outside the DP mod)",
            stage="dp",
            party="client",
        )
    if shares > floor:
        raise ProtocolAbort(
            f"{shares} noise shares but the secure aggregation may release a sum of {floor} survivors "
            f"(roster {roster}): a sum could carry std * sqrt({floor}/{shares}) of the noise",
            stage="dp",
            party="client",
        )


def _policy_value(ctxt: Context, key: str) -> Any:
    for src in (ctxt.node_config, ctxt.run_config):
        if key in src:
            return src[key]
    return None


def _client_policy(
    ctxt: Context,
    min_noise_multiplier: float | None,
    max_shares: int | None,
    accept_poisson: bool | None,
    max_clip: float | None,
) -> tuple[float, int, bool, float]:
    """This client's DP policy: the arguments, else ``node_config`` / ``run_config``; refuses without one."""
    z_min = min_noise_multiplier
    if z_min is None:
        z_min = _policy_value(ctxt, POLICY_KEYS["min_noise_multiplier"])
    shares = max_shares if max_shares is not None else _policy_value(ctxt, POLICY_KEYS["max_shares"])
    if z_min is None or shares is None:
        raise ConfigurationError(
            "this client has no DP policy: it would trust the server's noise settings; give make_dp_mod("
            "min_noise_multiplier=..., max_shares=<roster size>) or set node_config / run_config "
            f"{POLICY_KEYS['min_noise_multiplier']!r} and {POLICY_KEYS['max_shares']!r}",
            field=POLICY_KEYS["max_shares"] if z_min is not None else POLICY_KEYS["min_noise_multiplier"],
        )
    poisson = accept_poisson if accept_poisson is not None else _policy_value(ctxt, POLICY_KEYS["accept_poisson"])
    clip = max_clip if max_clip is not None else _policy_value(ctxt, POLICY_KEYS["max_clip"])
    try:
        policy = (float(z_min), int(shares), bool(poisson), math.inf if clip is None else float(clip))
    except (TypeError, ValueError):
        raise ConfigurationError("malformed DP policy", field=POLICY_KEYS["min_noise_multiplier"]) from None
    if not (policy[0] > 0 and math.isfinite(policy[0])) or policy[1] < 1 or not policy[3] > 0:
        raise ConfigurationError(
            "the DP policy needs min_noise_multiplier > 0, max_shares >= 1, max_clip > 0",
            field=POLICY_KEYS["min_noise_multiplier"],
        )
    return policy


def trained_delta(out: Message, global_arrays: list[np.ndarray]) -> tuple[FitRes, np.ndarray]:
    """The user's fit result and its update against the global model, flattened in float64 (both client
    DP mods clip or encode it); a trained model of another shape aborts the client."""
    fitres = compat.recorddict_to_fitres(out.content, keep_input=True)
    new_arrays = parameters_to_ndarrays(fitres.parameters)
    if [a.shape for a in new_arrays] != [a.shape for a in global_arrays]:
        raise ProtocolAbort("the trained model has another shape than the global model", stage="dp", party="client")
    g = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in global_arrays])
    x = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in new_arrays])
    return fitres, x - g
