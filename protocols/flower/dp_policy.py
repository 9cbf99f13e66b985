"""A client's DP policy for the Flower DP mods (:mod:`.dp`, :mod:`.distributed_dp`): one policy per client.

The policy comes from the mod's arguments or from the node's own ``node_config`` (:data:`POLICY_KEYS`),
never from the run config: the server writes that one, and would set the floor its own noise is checked
against. A client without a noise floor and a share ceiling refuses every DP
round. :func:`check_shares` bounds the noise shares by what the secure-aggregation mod outside
the DP mod verified: its roster and the fewest survivors it lets a sum be released with (inside the
Paillier mod: the provisioned fewest contributions its decryptors decrypt), less the clients of that roster
the node itself assumes collude with the server (:func:`own_corruption_rate`: a colluder's share is no noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.common import FitRes, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from dp.noise import GaussianGridMechanism, check_share_sigma
from privagg.errors import ConfigurationError, ProtocolAbort
from protocols.flower._guard import running_protocol
from protocols.flower._node import CORRUPTION_RATE_KEY, node_value
from protocols.flower.secagg import COLLUDERS_KEY, MIN_SURVIVORS_KEY, ROSTER_KEY
from secagg.params import colluders  # of a roster, at a corruption rate: what a ClientPolicy assumes

__all__ = [
    "ANSWERED_RECORD",
    "COLLUDERS_KEY",
    "DP_KEYS",
    "NOISED_RECORD",
    "POLICY_KEYS",
    "answer_round",
    "check_noise_shares",
    "check_shares",
    "colluders",
    "own_corruption_rate",
    "read_dp_settings",
    "trained_delta",
]

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
    "corruption_rate": "privagg-dp-corruption-rate",
    "max_rounds": "privagg-dp-max-rounds",  # the most DP rounds of a run the node answers (unset: no cap)
}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def own_corruption_rate(ctxt: Context, fixed: float | None = None) -> float:
    """The fraction of every roster this node assumes colludes with the server, for its noise shares: the larger
    of the mod's ``fixed`` (else its own ``node_config[POLICY_KEYS["corruption_rate"]]``) and its secure-aggregation
    policy's ``node_config["privagg-secagg-corruption-rate"]``; 0 when neither is set. Never the run config."""
    rates = [node_value(ctxt, POLICY_KEYS["corruption_rate"], fixed), ctxt.node_config.get(CORRUPTION_RATE_KEY)]
    try:
        got = [float(r) for r in rates if r is not None]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigurationError("malformed corruption rate", field=POLICY_KEYS["corruption_rate"]) from None
    if not all(0.0 <= r < 1.0 for r in got):
        raise ConfigurationError(f"corruption rates {got} outside [0, 1)", field=POLICY_KEYS["corruption_rate"])
    return max(got, default=0.0)


def check_shares(shares: int, cfg: Mapping[str, Any], *, corruption_rate: float = 0.0) -> None:
    """Refuse noise shares a sum the secure aggregation may release would not all carry.

    A share is ``std / sqrt(shares)``, so the full noise needs ``shares`` honest clients in the sum.
    The secure-aggregation mod (outside the DP mod) sets, from the graph *this client* derived and
    the roster it verified, the fewest survivors it lets a sum be released with
    (``MIN_SURVIVORS_KEY``; at most the roster, ``ROSTER_KEY``). A server asking for more shares
    could split the noise over the roster and then force dropouts down to that floor: the sum
    would carry ``std sqrt(floor / shares)``. Of those survivors, up to :func:`colluders` of the roster
    (``corruption_rate``: this node's own assumption; or :data:`COLLUDERS_KEY`, if the secure-aggregation mod
    set more) may collude with the server and add no noise, so
    the shares are bounded by the honest survivors, ``floor - colluders`` (at least 1: this client's own
    share is in every sum that holds its update). Up to ``shares = 1`` (a client's own full noise) the
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
    published = _count(cfg.get(COLLUDERS_KEY)) or 0  # a server-written value only adds refusals (the max)
    bad = max(colluders(corruption_rate, roster), published)
    honest = max(1, floor - bad)
    if shares > honest:
        why = f", of whom {bad} may collude (this client's corruption rate {corruption_rate:g})" if bad else ""
        raise ProtocolAbort(
            f"{shares} noise shares but the secure aggregation may release a sum of {floor} survivors "
            f"(roster {roster}){why}: at most {honest} honest shares, a sum could carry "
            f"std * sqrt({honest}/{shares}) of the noise",
            stage="dp",
            party="client",
        )


#: ``Context.state`` records of the rounds this node answered in the run (``last``, ``count``): distributed DP,
#: client noise (:func:`answer_round`)
ANSWERED_RECORD, NOISED_RECORD = "privagg-ddp-answered", "privagg-dp-answered"


def answer_round(ctxt: Context, rnd: int | None, max_rounds: Any, *, record: str = ANSWERED_RECORD) -> ConfigRecord:
    """The node's ``record`` after answering round ``rnd``, or a refusal: a round number at or below one this node
    already answered (a replayed round would be a second release of it: fresh noise, a second participation the
    round's charge does not cover), or more rounds than ``max_rounds`` (the node's own cap:
    ``POLICY_KEYS["max_rounds"]``). ``rnd = None`` (no round number in the message): the cap only."""
    rec = ctxt.state.get(record)
    last, count = (rec.get("last"), rec.get("count")) if isinstance(rec, ConfigRecord) else (-1, 0)
    if not (isinstance(last, int) and isinstance(count, int)):  # pragma: no cover - only the mods write it
        raise ProtocolAbort("unreadable record of the rounds answered", stage="dp", party="client")
    if rnd is not None and rnd <= last:
        raise ProtocolAbort(
            f"round {rnd} again: this node already answered round {last} of this run (a replayed round "
            "would release its update a second time under one charge)",
            stage="dp",
            party="client",
        )
    if max_rounds is not None:
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise ConfigurationError(f"not a positive integer: {max_rounds!r}", field=POLICY_KEYS["max_rounds"])
        if count >= max_rounds:
            raise ProtocolAbort(
                f"this node already answered {count} DP rounds of this run, its cap ({POLICY_KEYS['max_rounds']})",
                stage="dp",
                party="client",
            )
    return ConfigRecord({"last": last if rnd is None else rnd, "count": count + 1})


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
    cfg: Mapping[str, Any],
    policy: Callable[[], tuple[float, int, bool, float]],
    corruption: Callable[[], float] = lambda: 0.0,
) -> tuple[float, float, float, int, float, float, bool]:
    """The round's DP settings (:data:`DP_KEYS`: clip, z, z_count, shares, sensitivity factor, grid
    resolution, adaptive), refused (:class:`ProtocolAbort`) when malformed or outside this client's
    ``policy()`` (read after the settings parse; :func:`_client_policy`: noise floor, share ceiling,
    Poisson factor accepted, clip ceiling; ``corruption()``: the colluders' share of a roster, :func:`check_shares`)."""
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
    check_shares(shares, cfg, corruption_rate=corruption())
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
