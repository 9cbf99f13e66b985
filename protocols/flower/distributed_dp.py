"""Distributed DP inside privagg's secure aggregation, over Flower: a client mod and a fit workflow.

The mechanism is :mod:`dp.distributed` (each client clips, rotates, scales, rounds, adds its
integer noise share and reduces mod ``2^bits``; the secure sum runs mod ``2^bits``; the server
unscales and rotates back), the round logic the in-memory one of
:class:`protocols.distributed_dp.DistributedDPRounds` (``open_round`` / ``close_round``: plan,
budget, ledger, withholding, decoding). This module only moves it over Flower::

    # ClientApp: the distributed-DP mod *inside* the secure-aggregation mod
    ClientApp(client_fn=client_fn, mods=[privagg_secagg_mod, make_distributed_dp_mod(min_noise_multiplier=0.5)])
    # ServerApp
    wf = PrivAggDistributedDPWorkflow(SecAggWorkflowConfig(...), dp=DPConfig(noise="distributed", ...),
                                      sampling=Sampling.poisson(rate=q, population=N), rounds=R)
    DefaultWorkflow(fit_workflow=wf)(grid, context)

:class:`PrivAggDistributedDPWorkflow` is :class:`~.secagg.PrivAggSecAggWorkflow` over a *modular*
ring (``SecAggParams.over_ring``: the graph of the workflow's configuration, the width
of the plan's ``bits``). Before a round it plans it (:func:`dp.distributed.choose_parameters` at
the first round; ``t``, the fewest honest noise shares any sum the secure aggregation may
release holds; the budget checked for a sum of ``t`` honest shares) and adds the plan to every
``FitIns.config`` (:data:`DDP_KEYS`: the parameters, ``t``, the public rotation seed and the
round). After the secure sum it records the round in the :class:`~dp.ledger.PrivacyLedger`
with the survivors' honest shares (at most ``t``), withholds a sum of fewer than ``t`` honest
shares (:class:`~privagg.errors.ProtocolAbort`, recorded first), and only then decodes, adds the
mean update (fixed denominator ``q W``) to the global model and hands it to the strategy.

The strategy must draw each round's cohort by Poisson sampling at the ``sampling`` rate (the
accounting assumes it; the workflow cannot check it). ``Sampling.poisson(rate=1.0, ...)`` with a
strategy that selects every client is exact. A round whose strategy selects nobody (an empty
Poisson cohort) is released all the same, as in the in-memory path: the server draws the ``t``
noise shares itself and the noised model is released and accounted (the privacy of Poisson
sampling counts the empty sample as one of the outcomes; aborting on it would reveal it). A cohort
the secure sum refuses (one client: its sum would be its input; no secure parameters; no honest noise share
guaranteed) is refused before anything is sent, nothing released, and still charged
(:meth:`~protocols.distributed_dp.DistributedDPRounds.refuse`: the plan's mechanism at its ``t`` shares;
``refused`` in the ledger entry). After every round it records, the workflow states its guarantee as the
in-memory run's report does (:meth:`~PrivAggDistributedDPWorkflow.guarantee`, :mod:`dp.guarantee`): logged,
and in the round's metrics (``dp_guarantee``, ...).

:func:`make_distributed_dp_mod` runs on the client inside the secure-aggregation mod. Its
policy bounds what the server may ask, whatever it sends: the round's noise multiplier
``sigma / (f l2)`` (``l2``: the rounding bound the *client* computes from the clip, scale,
padding and ``beta``; ``f = 1`` only if ``accept_poisson``, else 2: replace-one neighbours) at
least ``min_noise_multiplier``; at most ``max_shares`` shares, and never more than the fewest
survivors the secure-aggregation mod lets a sum be released with (``MIN_SURVIVORS_KEY``, from
the graph the client derived over the roster it verified: a share is ``sigma / sqrt(t)``, so a
server that split the noise over more clients could force dropouts down to that floor and
release less noise than accounted; :func:`.dp_policy.check_shares`) less the colluders the node
assumes of its roster (``corruption_rate``, :func:`.dp_policy.own_corruption_rate`: a colluder adds
no share); a rounding ``beta`` at most :data:`dp.distributed.MAX_BETA` (above it whether the client's
rounding gives up would depend on its update); a clip at most ``max_clip``; a discrete
Gaussian share parameter of at least :data:`dp.noise.MIN_SHARE_SIGMA` (:func:`dp.noise.check_share_sigma`,
the floor the server's plan uses); a scale that keeps one clipped update inside the ring. A node
answers each round number once, in increasing order, and at most ``max_rounds`` rounds of a run
when its own policy sets it (:func:`.dp_policy.answer_round`): a replayed round would be a second
release of its update under one charge, and the cap bounds its epsilon against a server whose
ledger it cannot see (the count lives in the node's state of the run: a new run starts anew). It then
encodes the delta ``fit - global`` with uniform weight 1, its noise from :class:`IntegerNoise` (the OS CSPRNG),
and hands the ring vector to the secure-aggregation mod (``RING_RECORD``). One DP policy per client: the keys
of :mod:`.dp` (:data:`~.dp.POLICY_KEYS`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import ConfigRecord, Context, Message
from flwr.app.message_type import MessageType
from flwr.common import FitIns, FitRes, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

from dp.accounting import Sampling
from dp.config import DPConfig
from dp.distributed import (
    MAX_BITS,
    MECHANISMS,
    MIN_BITS,
    DistributedDPParams,
    check_beta,
    check_share,
    rounded_l1_bound,
    rounded_l2_bound,
)
from dp.distributed_encoding import DistributedEncoder, IntegerNoise
from dp.guarantee import LedgerGuarantee, announce, ledger_guarantee
from dp.ledger import PrivacyLedger
from dp.noise import check_share_sigma
from dp.rotation import RandomizedHadamard, padded_dim
from privagg.digest import model_digest
from privagg.errors import ConfigurationError, PrivacyBudgetExceeded, ProtocolAbort
from privagg.randomness import SEED_BYTES, SYSTEM_SECRETS, SecretSource
from protocols.distributed_dp import DistributedDPRounds, OpenRound
from secagg.params import SecAggParams, smallest_cohort

from ._fit_round import FitRound, Summed
from ._node import node_value
from .config import SecAggWorkflowConfig
from .dp_policy import (
    ANSWERED_RECORD,
    POLICY_KEYS,
    _client_policy,
    answer_round,
    check_shares,
    own_corruption_rate,
    trained_delta,
)
from .secagg import MIN_SURVIVORS_KEY, RING_RECORD, ROSTER_KEY, PrivAggSecAggWorkflow, SecAggRoundRecord

__all__ = [
    "DDP_KEYS",
    "DistributedDPRoundRecord",
    "PrivAggDistributedDPWorkflow",
    "make_distributed_dp_mod",
    "privagg_distributed_dp_mod",
]

log = logging.getLogger("privagg.flower")

#: FitIns.config keys the workflow sets and the mod reads
DDP_KEYS = {
    "params": "privagg-ddp-params",  # JSON of the run's DistributedDPParams (the client recomputes l2 itself)
    "shares": "privagg-ddp-shares",  # t: the honest shares every released sum holds (each sigma / sqrt(t))
    "seed": "privagg-ddp-rotation-seed",  # the public rotation seed (32 bytes)
    "round": "privagg-ddp-round",  # the round of the rotation
}
_PARAM_FIELDS = {f.name for f in dataclasses.fields(DistributedDPParams)}


# ---------------------------------------------------------------------------------- server
class _Selected:
    """The strategy with this round's cohort already drawn: ``configure_fit`` hands it back (a Poisson
    strategy asked twice would draw a second cohort); everything else is the strategy's."""

    def __init__(self, strategy: Any, pairs: list[tuple[Any, FitIns]]) -> None:
        self._strategy, self._pairs = strategy, pairs

    def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> list[tuple[Any, FitIns]]:
        return self._pairs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._strategy, name)


@dataclass
class DistributedDPRoundRecord(SecAggRoundRecord):
    """What one round did: the secure-aggregation record, the DP plan and the released metrics."""

    plan: DistributedDPParams | None = None
    shares: int = 0  # t
    dp_metrics: dict[str, Any] = field(default_factory=dict)


class PrivAggDistributedDPWorkflow(PrivAggSecAggWorkflow):
    """Distributed DP in privagg SecAgg+ as a Flower ``fit_workflow`` (see the module docstring).

    ``config``: the secure aggregation (its graph; ``clipping_range`` and ``value_bits`` are
    unused: the ring is the plan's; active mode needs its ``pki``, or ``screen_senders=False``, as
    :class:`~.secagg.PrivAggSecAggWorkflow`); ``dp``: a ``DPConfig(noise="distributed", ...)``;
    ``sampling``: ``Sampling.poisson(rate=q, population=N)``; ``rounds``: the run's rounds the
    parameters are calibrated for. The clients draw every noise share; the server draws none.
    """

    PROTOCOL = "distributed DP in secure aggregation"

    def __init__(
        self,
        config: SecAggWorkflowConfig | None = None,
        *,
        dp: DPConfig,
        sampling: Sampling,
        rounds: int,
        round_hook: Callable[[DistributedDPRoundRecord], None] | None = None,
        secrets: SecretSource = SYSTEM_SECRETS,
        screen_senders: bool = True,
    ) -> None:
        super().__init__(config, round_hook=round_hook, secrets=secrets, screen_senders=screen_senders)  # type: ignore[arg-type]
        if sampling.kind != "poisson" or sampling.population is None:
            raise ConfigurationError(
                "distributed DP is accounted for Poisson sampling of a known population",
                field="sampling",
                accepted="Sampling.poisson(rate=..., population=...)",
            )
        dp.check_population(sampling.population)
        if dp.weighting != "uniform":  # every client mod weighs its update 1 (MAX_WEIGHT)
            raise ConfigurationError("the Flower mod weighs every client 1", field="dp.weighting", accepted=["uniform"])
        self.sampling = sampling
        self.dp = DistributedDPRounds(dp, population=sampling.population, rounds=rounds, secrets=secrets)
        self._current: OpenRound | None = None
        self._min_cohort: int | None = None

    @property
    def ledger(self) -> PrivacyLedger:
        return self.dp.ledger

    def _new_record(self, round: int) -> DistributedDPRoundRecord:
        return DistributedDPRoundRecord(round=round)

    def min_cohort(self) -> int:
        """The smallest cohort this workflow runs (:meth:`_cohort_fault` is ``None``; a larger cohort is assumed
        never harder to secure); ``N + 1`` when none of the population does."""
        if self._min_cohort is None:
            n = int(self.sampling.population or 0)

            def runs(k: int) -> None:
                if self._cohort_fault(k) is not None:
                    raise ConfigurationError("refused", field="cohort")

            found = smallest_cohort(runs, start=2, limit=n) if n >= 2 else None
            self._min_cohort = n + 1 if found is None else found
        return self._min_cohort

    def guarantee(self, *, accountants: Sequence[str] | None = None) -> LedgerGuarantee:
        """What the rounds so far guarantee: the statement of the in-memory run's report, from this ledger
        (:func:`dp.guarantee.ledger_guarantee`; an empty Poisson cohort releases the noise shares)."""
        return ledger_guarantee(
            self.ledger,
            noise="distributed",
            accountant=str(self.dp.config.accountant),
            population=self.sampling.population,
            min_cohort=self.min_cohort(),
            empty_released=True,
            cohorts="drawn by the strategy (Poisson at the stated rate, assumed)",
            secure_noise=True,
            accountants=accountants,
        )

    def _stated(self, server_round: int) -> dict[str, Any]:
        """The guarantee after ``server_round`` as round metrics, logged (:func:`dp.guarantee.announce`)."""
        return dict(announce(self.guarantee(accountants=(str(self.dp.config.accountant),)), log, server_round))

    def min_survivors(self, n: int) -> int:
        """The fewest survivors whose sum a round of ``n`` clients can release: the one rule,
        :meth:`secagg.SecAggParams.min_survivors`, on the graph of this round (the clients' mod derives
        the same graph and bounds the noise shares it accepts by the same number)."""
        return self.config.params_for(n).min_survivors(n) if n >= 1 else 0

    def params_for(self, num_clients: int) -> SecAggParams:
        """The configured graph over the modular ring of the round's plan."""
        if self._current is None:  # pragma: no cover - _configure opens the round first
            raise ProtocolAbort("no distributed-DP plan for this round", stage="setup", party="server")
        return self.config.params_for(num_clients).over_ring(self._current.params.bits)

    def _configure(self, grid: Any, context: LegacyContext, rec: DistributedDPRoundRecord) -> FitRound:  # type: ignore[override]
        self._current = None
        parameters = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        pairs = context.strategy.configure_fit(rec.round, parameters, context.client_manager)
        if not pairs:  # an empty Poisson cohort is released (the server's noise alone) and accounted
            arrays = parameters_to_ndarrays(parameters)
            fit = FitRound(round=rec.round, fitins={}, proxies={}, arrays=arrays, digest=model_digest(arrays))
        else:
            strategy = context.strategy
            context.strategy = cast(
                Any, _Selected(strategy, pairs)
            )  # the template asks for the cohort: this one, not a new draw
            try:
                fit = super()._configure(grid, context, rec)
            finally:
                context.strategy = strategy
            fault = self._cohort_fault(len(fit.nodes))
            if fault is not None:
                self._refuse_charged(fit, rec, fault)
        try:
            roster = tuple(int(n) for n in fit.nodes)  # for a budget against the server (dp.budget_against)
            opened = self.dp.open_round(
                len(fit.nodes), round=rec.round, sampling=self.sampling, dim=fit.size, inner=self, roster=roster
            )
        except (ConfigurationError, PrivacyBudgetExceeded) as e:
            raise ProtocolAbort(f"round not started: {e}", stage="dp-plan", party="server") from None
        self._current = opened
        rec.plan, rec.shares = opened.params, opened.shares
        extra: dict[str, Scalar] = {
            DDP_KEYS["params"]: json.dumps(dataclasses.asdict(opened.params), sort_keys=True),
            DDP_KEYS["shares"]: int(opened.shares),
            DDP_KEYS["seed"]: bytes(self.dp.rotation_seed),
            DDP_KEYS["round"]: int(rec.round),
        }
        fitins = {nid: FitIns(fi.parameters, {**fi.config, **extra}) for nid, fi in fit.fitins.items()}
        if not fitins:
            return fit
        config = next(iter(fitins.values())).config  # one config for all (the template refused otherwise)
        digest = model_digest(fit.arrays, config=config)
        return dataclasses.replace(fit, fitins=fitins, digest=digest)

    def _cohort_fault(self, n: int) -> str | None:
        """A cohort the secure sum refuses (one client; no secure parameters; a sum that may hold no honest
        noise share). Checked in :meth:`_configure`, before the round's plan is opened."""
        if n < 2:
            return "secure aggregation needs at least 2 clients"
        try:
            self.config.params_for(n)
        except ConfigurationError as e:
            return f"no secure parameters for this cohort: {e}"
        if self.dp.honest_min(self, n) < 1:
            return "a sum of this cohort may hold no honest noise share"
        return None

    def _refuse_charged(self, fit: FitRound, rec: DistributedDPRoundRecord, reason: str) -> None:
        """A Poisson cohort the secure sum refuses: nothing is sent or released, the model stays, and the round
        is charged all the same (the sample was drawn; the accounting composes every round, whoever was
        sampled, as for an empty cohort: the plan's mechanism at its ``t`` shares), after the budget check."""
        rec.refused = reason
        try:
            metrics = self.dp.refuse(
                len(fit.nodes),
                round=rec.round,
                sampling=self.sampling,
                dim=fit.size,
                inner=self,
                roster=tuple(int(n) for n in fit.nodes),
                reason=reason,
            )
        except (ConfigurationError, PrivacyBudgetExceeded) as e:
            raise ProtocolAbort(f"round not started: {e}", stage="dp-plan", party="server") from None
        rec.dp_metrics = {**metrics, **self._stated(rec.round)}
        raise ProtocolAbort(f"round refused (charged): {reason}", stage="configure", party="server")

    def _sum(self, grid: Any, context: LegacyContext, fit: FitRound, rec: SecAggRoundRecord) -> Summed:
        if fit.nodes:
            return super()._sum(grid, context, fit, rec)
        assert self._current is not None
        return Summed(total=self.dp.empty_ring(self._current), included=(), fit_results={})

    def _dimension(self, fit: FitRound, params: SecAggParams) -> int:
        assert self._current is not None
        return self._current.params.padded

    def _decode_sum(self, ring_sum: np.ndarray, params: SecAggParams) -> np.ndarray:
        return np.asarray(ring_sum, dtype=np.uint64) & np.uint64((1 << params.modulus_bits) - 1)

    def _finish(  # type: ignore[override]
        self, context: LegacyContext, fit: FitRound, rec: DistributedDPRoundRecord, summed: Summed
    ) -> None:
        opened, self._current = self._current, None
        if opened is None:  # pragma: no cover - _configure opened it
            raise ProtocolAbort("no distributed-DP plan for this round", stage="dp-finish", party="server")
        t0 = time.perf_counter()
        # recorded in the ledger first; a sum of fewer honest shares than promised is then withheld (raises)
        result = self.dp.close_round(
            opened,
            summed.total,
            sampling=self.sampling,
            survivors=len(summed.included) if fit.nodes else self.dp.empty_survivors(opened),
            participants=tuple(summed.included),
            roster=tuple(int(n) for n in fit.nodes),  # the nodes the round was sent to (() when empty)
            upload_bytes=rec.bytes_up / max(len(fit.nodes), 1),
            secure=True,
            seconds=rec.server_seconds,
        )
        rec.server_seconds += time.perf_counter() - t0
        rec.dp_metrics = {**result.metrics, **self._stated(rec.round)}
        flat = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in fit.arrays])
        rec.aggregate = fit.unflatten(flat + result.delta)
        rec.total_weight = math.nan  # not released: under Poisson sampling it would reveal the cohort
        params = ndarrays_to_parameters(rec.aggregate)
        results = []
        for node in summed.included:
            fr = summed.fit_results[node]
            results.append((fit.proxies[node], FitRes(fr.status, params, fr.num_examples, fr.metrics)))
        included = set(summed.included)
        failures: list[BaseException] = [Exception(f"node {n} dropped") for n in fit.nodes if n not in included]
        _, metrics = context.strategy.aggregate_fit(rec.round, results, failures)  # type: ignore[arg-type]
        # the released model is the decoded one (a strategy's own averaging of it is not used)
        context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(params, True)
        released = {k: v for k, v in rec.dp_metrics.items() if isinstance(v, (bool, int, float, str))}
        context.history.add_metrics_distributed_fit(server_round=rec.round, metrics={**metrics, **released})


# ---------------------------------------------------------------------------------- client
def _round_plan(
    cfg: Mapping[str, Any], dim: int, policy: tuple[float, int, bool, float], *, corruption_rate: float = 0.0
) -> tuple[DistributedDPParams, RandomizedHadamard]:
    """The round's parameters as this client sees them (its own ``l2``), checked against its policy, the
    roster and survivor floor the secure-aggregation mod set in ``cfg`` less the colluders ``corruption_rate``
    assumes (:func:`.dp_policy.check_shares`), and the rounding's ``beta`` (:func:`dp.distributed.check_beta`)."""
    z_min, shares_max, poisson_ok, clip_max = policy
    try:
        raw = json.loads(str(cfg[DDP_KEYS["params"]]))
        shares, seed, rnd = cfg[DDP_KEYS["shares"]], cfg[DDP_KEYS["seed"]], cfg[DDP_KEYS["round"]]
        if not (isinstance(raw, dict) and set(raw) == _PARAM_FIELDS):
            raise ValueError("fields")
        if not (isinstance(shares, int) and isinstance(rnd, int) and isinstance(seed, bytes)):
            raise ValueError("types")
        mechanism, bits = str(raw["mechanism"]), int(raw["bits"])
        clip, scale, beta, sigma = (float(raw[k]) for k in ("clip", "scale", "beta", "sigma"))
    except (KeyError, TypeError, ValueError):
        raise ProtocolAbort("malformed distributed-DP settings", stage="dp", party="client") from None
    if mechanism not in MECHANISMS or not MIN_BITS <= bits <= MAX_BITS or len(seed) != SEED_BYTES or rnd < 0:
        raise ProtocolAbort("distributed-DP settings out of range", stage="dp", party="client")
    if not all(math.isfinite(v) for v in (clip, scale, sigma)) or not (scale > 0 and sigma > 0 and 0 <= beta < 1):
        raise ProtocolAbort("distributed-DP settings out of range", stage="dp", party="client")
    if clip * scale > float(1 << bits) * (1 + 1e-9):  # the plan's own range (choose_parameters: s <= 2^b / c)
        raise ProtocolAbort(
            f"scale {scale:g} puts one clipped update ({clip * scale:.4g} units) beyond the {bits}-bit ring",
            stage="dp",
            party="client",
        )
    try:  # near beta = 1 whether this client's rounding gives up (a visible dropout) would depend on its update
        check_beta(beta)
        check_share(mechanism, sigma / math.sqrt(max(shares, 1)), bits)  # a share its sampler can draw
    except ConfigurationError as e:
        raise ProtocolAbort(str(e), stage="dp", party="client") from None
    if raw["dim"] != dim:
        raise ProtocolAbort(f"the plan is for dimension {raw['dim']}, the model has {dim}", stage="dp", party="client")
    if not 0 < clip <= clip_max:
        raise ProtocolAbort(f"clip {clip} outside this client's policy (<= {clip_max})", stage="dp", party="client")
    if not 1 <= shares <= shares_max:
        raise ProtocolAbort(
            f"{shares} noise shares outside this client's policy (1..{shares_max})", stage="dp", party="client"
        )
    if ROSTER_KEY not in cfg or MIN_SURVIVORS_KEY not in cfg:  # even one share: the ring needs the secure sum
        raise ProtocolAbort(
            "no verified roster (the distributed-DP mod runs inside privagg's secure-aggregation mod)",
            stage="dp",
            party="client",
        )
    check_shares(shares, cfg, corruption_rate=corruption_rate)
    padded = padded_dim(dim)
    l2 = rounded_l2_bound(clip * scale, padded, beta)  # this client's own bound: never the server's number
    factor = 1.0 if poisson_ok else 2.0
    if not sigma / (factor * l2) >= z_min * (1 - 1e-9):
        raise ProtocolAbort(
            f"noise multiplier {sigma / (factor * l2):.4g} below this client's policy ({z_min:g})",
            stage="dp",
            party="client",
        )
    if mechanism == "dgauss":
        try:
            check_share_sigma(sigma / math.sqrt(shares), shares=shares, split_only=False)  # the plan's floor
        except ConfigurationError as e:
            raise ProtocolAbort(str(e), stage="dp", party="client") from None
    fields = {**raw, "padded": padded, "l2_sensitivity": l2, "l1_sensitivity": rounded_l1_bound(l2, padded)}
    params = DistributedDPParams(**{**fields, "shares": shares, "mechanism": mechanism, "bits": bits})
    return params, RandomizedHadamard(dim, seed, rnd)


def make_distributed_dp_mod(
    *,
    min_noise_multiplier: float | None = None,
    max_shares: int | None = None,
    accept_poisson: bool | None = None,
    max_clip: float | None = None,
    noise: Callable[[Context], IntegerNoise] | None = None,
    corruption_rate: float | None = None,
    max_rounds: int | None = None,
) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """The client mod (see the module docstring); the policy as :func:`.dp.make_dp_mod`'s.

    ``noise(context)`` gives the round's :class:`IntegerNoise` (default: a fresh secure one;
    a seeded one is for reproducible simulations only). ``corruption_rate``: the share of the roster this node
    assumes colludes (:func:`.dp_policy.own_corruption_rate`): the noise shares are bounded by honest survivors.
    ``max_rounds`` (else the node's own ``node_config["privagg-dp-max-rounds"]``; unset: no cap): the most
    rounds of a run this node answers (:func:`.dp_policy.answer_round`; with its noise floor, a bound on its
    epsilon against the server, whatever the server's ledger says). Each round number is answered once.
    """

    def mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN or "fitins.config" not in msg.content.config_records:
            return call_next(msg, ctxt)
        cfg = msg.content.config_records["fitins.config"]
        if DDP_KEYS["params"] not in cfg:
            return call_next(msg, ctxt)
        policy = _client_policy(ctxt, min_noise_multiplier, max_shares, accept_poisson, max_clip)
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        global_arrays = parameters_to_ndarrays(fitins.parameters)
        dim = int(sum(a.size for a in global_arrays))
        params, rotation = _round_plan(cfg, dim, policy, corruption_rate=own_corruption_rate(ctxt, corruption_rate))
        answered = answer_round(ctxt, rotation.round, node_value(ctxt, POLICY_KEYS["max_rounds"], max_rounds))
        out = call_next(msg, ctxt)
        if out.has_error():
            return out
        fitres, delta = trained_delta(out, global_arrays)
        source = noise(ctxt) if noise is not None else IntegerNoise()
        ring = DistributedEncoder(params=params, rotation=rotation).encode(delta, source, weight=1.0)
        ctxt.state[ANSWERED_RECORD] = answered  # before the vector leaves: a second answer is refused
        metrics = dict(fitres.metrics)
        metrics["privagg-dp"] = True
        content = compat.fitres_to_recorddict(
            FitRes(fitres.status, ndarrays_to_parameters([cast(np.ndarray, ring)]), 1, metrics), keep_input=True
        )
        for name, rec in out.content.config_records.items():  # keep what other mods added
            if name not in content.config_records:
                content.config_records[name] = rec
        content.config_records[RING_RECORD] = ConfigRecord({"bits": params.bits})
        return Message(content, reply_to=msg)

    return mod


#: the client mod with its policy read from the node's node_config (:data:`.dp.POLICY_KEYS`); no policy: refuses
privagg_distributed_dp_mod = make_distributed_dp_mod()
