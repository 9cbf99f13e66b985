"""A client's DP policy for the Flower DP mods (:mod:`.dp`, :mod:`.distributed_dp`): one policy per client.

The policy comes from the mod's arguments or from the node's own ``node_config`` (:data:`POLICY_KEYS`),
never from the run config: the server writes that one, and would set the floor its own noise is checked
against. A client without a noise floor and a share ceiling refuses every DP
round. :func:`check_shares` bounds the noise shares by what the secure-aggregation mod outside
the DP mod verified: its roster and the fewest survivors it lets a sum be released with (inside the
Paillier mod: the provisioned fewest contributions its decryptors decrypt).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.common import FitRes, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from dp.noise import GaussianGridMechanism, check_share_sigma
from privagg.errors import ConfigurationError, ProtocolAbort
from protocols.flower._guard import running_protocol
from protocols.flower._node import node_value
from protocols.flower.secagg import MIN_SURVIVORS_KEY, ROSTER_KEY

__all__ = ["DP_KEYS", "POLICY_KEYS", "check_noise_shares", "check_shares", "read_dp_settings", "trained_delta"]

#: FitIns.config keys the strategy sets and the mod reads
DP_KEYS = {
    "clip": "privagg-dp-clip",
    "z": "privagg-dp-z",
    "z_count": "privagg-dp-z-count",
    "shares": "privagg-dp-shares",
    "factor": "privagg-dp-sensitivity-factor",
    "resolution": "privagg-dp-grid-resolution",
    "adaptive": "privagg-dp-adaptive",
}

#: node_config keys of the client's DP policy (when not given to make_dp_mod)
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
    mod needs no secure aggregation. The two fields count only inside a round a privagg mod further out runs
    (:func:`._guard.running_protocol`; it sets them, the Paillier mod from the floor its decryptors enforce):
    with no such mod on the node, nobody removed what the server wrote there.
    """
    roster, floor = _count(cfg.get(ROSTER_KEY)), _count(cfg.get(MIN_SURVIVORS_KEY))
    if running_protocol() is None:
        roster = floor = None
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


def _client_policy(
    ctxt: Context,
    min_noise_multiplier: float | None,
    max_shares: int | None,
    accept_poisson: bool | None,
    max_clip: float | None,
) -> tuple[float, int, bool, float]:
    """This client's DP policy: the arguments, else its own ``node_config`` (never the server's run config);
    refuses without one."""
    z_min = node_value(ctxt, POLICY_KEYS["min_noise_multiplier"], min_noise_multiplier)
    shares = node_value(ctxt, POLICY_KEYS["max_shares"], max_shares)
    if z_min is None or shares is None:
        raise ConfigurationError(
            "this client has no DP policy: it would trust the server's noise settings; give make_dp_mod("
            "min_noise_multiplier=..., max_shares=<roster size>) or set the node's own node_config "
            f"{POLICY_KEYS['min_noise_multiplier']!r} and {POLICY_KEYS['max_shares']!r}",
            field=POLICY_KEYS["max_shares"] if z_min is not None else POLICY_KEYS["min_noise_multiplier"],
        )
    poisson = node_value(ctxt, POLICY_KEYS["accept_poisson"], accept_poisson)
    clip = node_value(ctxt, POLICY_KEYS["max_clip"], max_clip)
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


def read_dp_settings(
    cfg: Mapping[str, Any], policy: Callable[[], tuple[float, int, bool, float]]
) -> tuple[float, float, float, int, float, float, bool]:
    """The round's DP settings (:data:`DP_KEYS`: clip, z, z_count, shares, sensitivity factor, grid
    resolution, adaptive), refused (:class:`ProtocolAbort`) when malformed or outside this client's
    ``policy()`` (read after the settings parse; :func:`_client_policy`: noise floor, share ceiling,
    Poisson factor accepted, clip ceiling)."""
    try:
        clip = float(cfg[DP_KEYS["clip"]])  # type: ignore[arg-type]
        z = float(cfg[DP_KEYS["z"]])  # type: ignore[arg-type]
        z_count = float(cfg[DP_KEYS["z_count"]])  # type: ignore[arg-type]
        shares = int(cfg[DP_KEYS["shares"]])  # type: ignore[arg-type]
        factor = float(cfg[DP_KEYS["factor"]])  # type: ignore[arg-type]
        resolution = float(cfg[DP_KEYS["resolution"]])  # type: ignore[arg-type]
        adaptive = bool(cfg[DP_KEYS["adaptive"]])
    except (KeyError, TypeError, ValueError):
        raise ProtocolAbort("malformed DP settings", stage="dp", party="client") from None
    z_min, shares_max, poisson_ok, clip_max = policy()
    if not (math.isfinite(clip) and 0 < clip <= clip_max):
        raise ProtocolAbort(f"clip {clip} outside this client's policy (<= {clip_max})", stage="dp", party="client")
    if not 1 <= shares <= shares_max:
        raise ProtocolAbort(
            f"{shares} noise shares outside this client's policy (1..{shares_max})", stage="dp", party="client"
        )
    check_shares(shares, cfg)
    if factor not in ((1.0, 2.0) if poisson_ok else (2.0,)):
        raise ProtocolAbort(f"sensitivity factor {factor} outside this client's policy", stage="dp", party="client")
    if adaptive and not (math.isfinite(z_count) and z_count > 0):
        raise ProtocolAbort("adaptive clipping without count noise", stage="dp", party="client")
    joint = (z**-2 + z_count**-2) ** -0.5 if adaptive and z > 0 else z
    if not (math.isfinite(z) and z > 0 and joint >= z_min * (1 - 1e-9)):  # slack: the split and its inverse
        raise ProtocolAbort(
            f"noise multiplier {joint:.4g} below this client's policy ({z_min:g})", stage="dp", party="client"
        )
    return clip, z, z_count, shares, factor, resolution, adaptive


def check_noise_shares(mechanisms: Iterable[GaussianGridMechanism | None], shares: int) -> None:
    """Refuse (:class:`ProtocolAbort`) a split whose shares fall below :data:`dp.noise.MIN_SHARE_SIGMA` grid
    units (:func:`dp.noise.check_share_sigma`): the sum of the shares would not carry the accounted noise."""
    for mech in mechanisms:
        if mech is None:
            continue
        try:
            check_share_sigma(mech.std / mech.grid / math.sqrt(shares), shares=shares)
        except ConfigurationError as e:
            raise ProtocolAbort(str(e), stage="dp", party="client") from None


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
