"""Client-level DP in Flower, composing with secure aggregation: a client mod and a strategy wrapper.

The mechanism is privagg's DP-FedAvg (:mod:`protocols.dp_fedavg`) split across the wire:

* :class:`PrivAggDPStrategy` wraps any legacy Flower ``Strategy`` (e.g. ``FedAvg``). Before a
  round it checks the privacy budget (a round that would exceed it is not started: no
  client is selected), then adds the round's DP settings to every ``FitIns.config``: the
  clip ``C`` (fixed, or the adaptive clip of Andrew et al. 2021), the update noise
  multiplier, the number ``t`` of noise shares (``ceil(honest_fraction * cohort)``, or fewer:
  the fewest honest clients a sum the workflow may release holds, see ``min_survivors``), the
  sensitivity factor of the sampling scheme and the grid resolution. After the round it
  turns the securely aggregated mean of the *noised, clipped deltas* back into their sum,
  divides by the fixed denominator ``q * W`` (McMahan et al. 2018), updates the model,
  records the round in the :class:`~dp.ledger.PrivacyLedger` (RDP and PRV) and moves the
  adaptive clip from the noised unclipped count. If fewer than ``t`` honest clients survived,
  the accounted noise multiplier is reduced to ``z sqrt(survivors / t)``; if none did, the
  aggregate is withheld. Planning and finishing a round is :class:`dp.rounds.DPRounds`, the
  same code as :class:`~protocols.dp_fedavg.DPFedAvg`'s; this module only moves it over Flower.
* :func:`make_dp_mod` runs on the client, *inside* the secure-aggregation mod
  (``mods=[privagg_secagg_mod, privagg_dp_mod]``): it computes the delta ``fit - global``,
  clips it to L2 norm ``C``, and adds its share of discrete Gaussian noise on a fine grid
  (``std / sqrt(t)``, CSPRNG-backed :class:`~dp.noise.SecureNoise`), so the secure sum of
  ``t`` honest clients carries the full noise and the server never sees an un-noised
  update. With adaptive clipping the client also contributes its noised clip bit
  ``1[||delta|| <= C] - 1/2`` as one extra coordinate, summed by the same secure aggregation.

The strategy checks the budget before the secure sum against the worst case it could release:
``min_survivors`` (the fewest survivors the secure-aggregation workflow completes with,
``SecAggParams.min_survivors``; default the whole cohort) gives the fewest honest noise shares, and the noise
is split into that many shares (:meth:`dp.rounds.DPRounds.plan`), so every sum the workflow may
release carries the accounted noise (more when more survive: ``dp_noise_std_survivors``). A round that
released anything is recorded in the ledger, even if it is then withheld (fewer survivors than
``min_survivors``). An empty cohort (a Poisson-sampling strategy that selected nobody) releases
the server's noise alone, accounted, and the next round starts from that noised model. An
aggregate that reached the server but cannot be used (other shapes than the model, non-finite
values) is recorded and withheld with a typed abort; the adaptive clip then holds. A round's
plan lives from ``configure_fit`` to its own ``aggregate_fit`` only: it is dropped when that
call starts, and a plan whose secure sum aborted (no ``aggregate_fit``) is dropped by the next
``configure_fit``, so no later round is finished with it. A cohort the fit workflow refuses before
sending anything (a Poisson cohort of one client: no secure sum of one input) is charged like an
empty one (:meth:`PrivAggDPStrategy.refuse_fit`, which the workflow calls), nothing released.
After every round it records, the strategy states its guarantee as the in-memory run's report does
(:meth:`PrivAggDPStrategy.guarantee`, :mod:`dp.guarantee`: against the server, and against observers
at ``delta`` + what whether Poisson rounds ran costs): logged, and in the round's metrics.

A malicious server could ask for little noise: a huge ``shares`` (each client adds ``std / sqrt(shares)``),
the Poisson factor 1 (half the noise of replace-one), a tiny clip-count noise, a huge clip. The mod enforces
the client's own policy and aborts otherwise: ``min_noise_multiplier`` (of the joint release, the clip count
included), ``max_shares``, and never more shares than the fewest survivors the secure-aggregation mod lets a sum be
released with (``MIN_SURVIVORS_KEY``, from the graph this client derived itself: a server that split the noise
over the whole roster could force dropouts down to that floor and release less noise than accounted;
:func:`check_shares`) less the colluders of its roster it assumes (``corruption_rate``, or its secure-aggregation
corruption rate: a colluder adds no share), ``accept_poisson`` (only then the factor 1), ``max_clip`` and
``max_rounds`` (the rounds of a run it answers). The strategy must therefore plan for that floor: pass
``min_survivors=lambda n: config.params_for(n).min_survivors(n)`` (``config``: the secure-aggregation
workflow's :class:`~.config.SecAggWorkflowConfig`) and an ``honest_fraction`` that matches the nodes'.
The policy comes from the arguments or the node's own ``node_config`` (:data:`POLICY_KEYS`; never the server's
run config); a client without a noise floor and a share ceiling refuses every DP round.
Weights are uniform (each client reports ``num_examples = 1``); use the secure-aggregation
workflow with ``weighting="uniform"``.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import FitIns, FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.strategy import Strategy

from dp.accounting import Sampling
from dp.clipping import clip_l2
from dp.config import DPConfig
from dp.guarantee import LedgerGuarantee, announce, ledger_guarantee
from dp.noise import NoiseSampler, SecureNoise
from dp.rounds import DPRounds, DPRoundsDriver, RoundPlan, count_mechanism, update_mechanism
from privagg.errors import ConfigurationError, PrivacyBudgetExceeded, ProtocolAbort
from protocols.flower._node import node_value
from protocols.flower.dp_policy import (
    DP_KEYS,
    NOISED_RECORD,
    POLICY_KEYS,
    _client_policy,
    answer_round,
    check_noise_shares,
    check_shares,
    own_corruption_rate,
    read_dp_settings,
    trained_delta,
)
from secagg.params import smallest_cohort

__all__ = ["PrivAggDPStrategy", "make_dp_mod", "privagg_dp_mod", "check_shares", "DP_KEYS", "POLICY_KEYS"]

log = logging.getLogger("privagg.flower")


# ---------------------------------------------------------------------------------- server
class PrivAggDPStrategy(DPRoundsDriver, Strategy):  # type: ignore[misc]
    """Client-level DP-FedAvg around a legacy Flower strategy (see the module docstring).

    ``sampling`` states how cohorts are drawn for the accountant; by default each round is
    ``Sampling.fixed(sample_size=cohort, population=available clients)`` (replace-one
    neighbours, sensitivity ``2 C``). ``adaptive`` turns on adaptive clipping starting at
    ``clip_norm``. ``min_survivors`` (an int, or a function of the cohort size) is the fewest
    survivors the secure aggregation completes a round with; the budget is checked for the
    noise of that worst case before the round starts (default: the whole cohort). Clients refuse
    more shares than the floor of the secure aggregation they run (:func:`check_shares`): give it
    that floor, ``min_survivors=lambda n: config.params_for(n).min_survivors(n)``.
    ``ledger_path``: the ledger is written there after every recorded round and resumed from it
    when the server app starts again. ``min_cohort``: the smallest cohort the fit workflow runs, for
    the guarantee statement (:meth:`guarantee`; what whether a Poisson round ran costs observers);
    default: the smallest ``n >= 2`` that ``min_survivors`` finds a graph for (privagg's
    secure-aggregation workflow refuses a cohort of one, and one without secure parameters).
    """

    def __init__(
        self,
        strategy: Strategy,
        *,
        noise_multiplier: float,
        clip_norm: float,
        delta: float = 1e-5,
        budget_epsilon: float | None = None,
        accountant: str = "rdp",
        sampling: Sampling | None = None,
        population: int | None = None,
        honest_fraction: float = 1.0,
        adaptive: bool = False,
        target_quantile: float = 0.5,
        clip_learning_rate: float = 0.2,
        count_noise_std: float | None = None,
        grid_resolution: float = 1000.0,
        min_survivors: int | Callable[[int], int] | None = None,
        min_cohort: int | None = None,
        allow_large_delta: bool = False,
        ledger_path: str | None = None,
    ) -> None:
        super().__init__()
        config = DPConfig(  # validates every setting (errors name the keyword)
            noise_multiplier=noise_multiplier,
            delta=delta,
            budget_epsilon=budget_epsilon,
            clip_norm=clip_norm,
            noise="client",
            honest_fraction=honest_fraction,
            adaptive_clipping=adaptive,
            target_quantile=target_quantile,
            clip_learning_rate=clip_learning_rate,
            count_noise_std=count_noise_std,
            accountant=accountant,  # type: ignore[arg-type]
            grid_resolution=grid_resolution,
            allow_large_delta=allow_large_delta,
            ledger_path=ledger_path,
        )
        config.check_population(population)
        self.config = config
        self.min_survivors = min_survivors
        if min_cohort is not None and min_cohort < 1:
            raise ConfigurationError(f"must be >= 1, got {min_cohort}", field="min_cohort")
        self._min_cohort = min_cohort
        self._pending: list[np.ndarray] | None = None  # the model an empty round released
        self.inner = strategy
        self.noise_multiplier = float(noise_multiplier)
        self.clip_norm = float(clip_norm)
        self.honest_fraction = honest_fraction
        self.sampling = sampling
        self.population = population
        self.grid_resolution = grid_resolution
        self.dp_rounds = DPRounds.from_config(config)  # secure_noise unknown: the clients draw the noise
        self._round: dict[str, Any] = {}
        self.last_parameters: list[np.ndarray] | None = None  # the model this wrapper released last

    def __repr__(self) -> str:
        return f"PrivAggDPStrategy({self.inner!r}, z={self.noise_multiplier}, clip={self.clip_norm})"

    @property
    def clip(self) -> float:
        """The clip norm of the next round (adaptive or fixed)."""
        return self.dp_rounds.clip

    def _sampling_for(self, cohort: int, available: int) -> Sampling:
        if self.sampling is not None:
            return self.sampling
        return Sampling.fixed(sample_size=cohort, population=max(self.population or available, cohort))

    def initialize_parameters(self, client_manager: Any) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def min_cohort(self) -> int:
        """The smallest cohort the fit workflow runs (``min_cohort``, or derived: see the class docstring)."""
        if self._min_cohort is None:
            ms, n = self.min_survivors, self._population()
            found = smallest_cohort(ms, start=2, limit=n) if callable(ms) and n else 2
            self._min_cohort = (n or 0) + 1 if found is None else found  # None: no cohort runs, all refused
        return self._min_cohort

    def _population(self) -> int | None:
        return self.population or (self.sampling.population if self.sampling is not None else None)

    def guarantee(self, *, accountants: Sequence[str] | None = None) -> LedgerGuarantee:
        """What the rounds so far guarantee: the statement of the in-memory run's report, from this ledger
        (:func:`dp.guarantee.ledger_guarantee`; the clients draw their noise shares from the CSPRNG,
        :class:`~dp.noise.SecureNoise`)."""
        return ledger_guarantee(
            self.ledger,
            noise=str(self.config.noise),
            accountant=str(self.config.accountant),
            population=self._population(),
            min_cohort=self.min_cohort(),
            empty_released=self.sampling is not None and self.sampling.kind == "poisson",  # the server's noise
            cohorts=self.dp_rounds.cohorts,
            secure_noise=True,
            accountants=accountants,
        )

    def _stated(self, server_round: int) -> dict[str, Scalar]:
        """The guarantee after ``server_round`` as round metrics, logged (:func:`dp.guarantee.announce`)."""
        return dict(announce(self.guarantee(accountants=(str(self.config.accountant),)), log, server_round))

    def _floor(self, cohort: int) -> int | None:
        ms = self.min_survivors
        if ms is None:
            return None
        try:
            return min(cohort, int(ms(cohort) if callable(ms) else ms))
        except ConfigurationError:  # no secure graph for this cohort: the fit workflow refuses it (refuse_fit)
            return cohort

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> list[tuple[Any, FitIns]]:
        self._round = {}  # a round whose secure sum aborted never reached aggregate_fit: drop its plan
        if self._pending is not None:  # the previous round was empty: its noised model is the global one
            parameters = ndarrays_to_parameters(self._pending)
            self._pending = None
        pairs = self.inner.configure_fit(server_round, parameters, client_manager)
        n = len(pairs)
        arrays = parameters_to_ndarrays(parameters)
        dim = sum(int(np.asarray(a).size) for a in arrays)
        if not pairs:
            if self.sampling is not None and self.sampling.kind == "poisson":
                self._empty_round(server_round, arrays, dim)
            return []
        self.config.check_population(client_manager.num_available() if self.population is None else None)
        sampling = self._sampling_for(n, client_manager.num_available())
        try:
            plan = self.dp_rounds.plan(
                noise_multiplier=self.noise_multiplier,
                sampling=sampling,
                cohort=n,
                dim=dim,
                min_survivors=self._floor(n),
                roster=tuple(_client_key(proxy) for proxy, _ in pairs),  # for a budget against the server
            )
        except (PrivacyBudgetExceeded, ProtocolAbort) as e:
            log.warning("round %s not started: %s", server_round, e)
            return []
        sent = parameters
        if self.clipper is not None:  # a slot for the clip bit, summed with the update
            sent = ndarrays_to_parameters([*arrays, np.zeros(1, dtype=np.float64)])
        extra: dict[str, Scalar] = {
            DP_KEYS["clip"]: float(plan.clip),
            DP_KEYS["z"]: float(plan.update_noise_multiplier),
            DP_KEYS["z_count"]: float(plan.count_noise_multiplier),
            DP_KEYS["shares"]: int(plan.shares),
            DP_KEYS["factor"]: float(sampling.sensitivity_factor),
            DP_KEYS["resolution"]: float(self.grid_resolution),
            DP_KEYS["adaptive"]: self.clipper is not None,
        }
        self._round = {
            "round": server_round,
            "global": [np.asarray(a, dtype=np.float64) for a in arrays],
            "dtypes": [a.dtype for a in arrays],
            "plan": plan,
            "roster": tuple(_client_key(proxy) for proxy, _ in pairs),
        }
        return [(proxy, FitIns(sent, {**fi.config, **extra})) for proxy, fi in pairs]

    def _empty_round(self, server_round: int, arrays: list[np.ndarray], dim: int) -> None:
        """An empty Poisson cohort: release the server's noise alone on the model, and account it."""
        assert self.sampling is not None
        try:
            plan = self.dp_rounds.plan(
                noise_multiplier=self.noise_multiplier, sampling=self.sampling, cohort=0, dim=dim, roster=()
            )
        except PrivacyBudgetExceeded as e:
            log.warning("round %s not started: %s", server_round, e)
            return
        sampler = SecureNoise()
        noise = plan.mechanism.release(np.zeros(dim), sampler)
        if plan.count_mechanism is not None:
            count = float(plan.count_mechanism.release(np.zeros(1), sampler)[0])
        else:
            count = math.nan
        outcome = self.dp_rounds.finish(
            plan, round=server_round, survivors=0, noised_count=count, noise_shares=0, roster=()
        )
        new, off = [], 0
        for a in arrays:
            g = np.asarray(a, dtype=np.float64)
            new.append((g + noise[off : off + g.size].reshape(g.shape) / outcome.denominator).astype(a.dtype))
            off += g.size
        self._pending = new
        self.last_parameters = new
        self._stated(server_round)

    def refuse_fit(self, server_round: int, reason: str) -> dict[str, Scalar]:
        """The fit workflow refused this round's cohort before sending anything (e.g. a Poisson cohort of one
        client: no secure sum of one input). Nothing is released and the model stays; the round is charged
        all the same, as an empty cohort's release is (the sample was drawn, and the accounting composes every
        round whoever was sampled), with ``refused`` in the ledger entry. Returns the round's DP metrics."""
        st, self._round = self._round, {}
        if not st or st["round"] != server_round:  # not a round this wrapper planned: nothing to charge
            return {}
        planned: RoundPlan = st["plan"]
        dim = sum(int(g.size) for g in st["global"])
        try:
            plan = self.dp_rounds.plan(
                noise_multiplier=self.noise_multiplier,
                sampling=planned.sampling,
                cohort=0,
                dim=dim,
                roster=st["roster"],
            )
        except PrivacyBudgetExceeded as e:  # pragma: no cover - the round's own plan passed the same check
            log.warning("round %s not charged: %s", server_round, e)
            return {}
        outcome = self.dp_rounds.finish(plan, round=server_round, survivors=0, roster=st["roster"], refused=reason)
        metrics = {k: v for k, v in outcome.metrics.items() if isinstance(v, (bool, int, float, str))}
        return {**metrics, **self._stated(server_round)}

    def aggregate_fit(
        self, server_round: int, results: list[tuple[Any, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        st, self._round = self._round, {}  # cleared first: whatever happens below, no later round sees it
        if not st or st["round"] != server_round:  # not a round this wrapper planned: nothing of ours to finish
            if results:
                log.warning("round %s: results for a round without a DP plan ignored", server_round)
            return None, {}
        plan: RoundPlan = st["plan"]
        if not results:  # nothing was summed, nothing released
            return None, {}
        survivors = len(results)
        mean = self._read_aggregate(results[0][1].parameters, st["global"])  # the same in every result
        count_sum = math.nan
        if mean is not None and self.clipper is not None:
            count_sum = float(mean[-1][0]) * survivors
            mean = mean[:-1]
        # the server holds the sum: it is recorded even when it cannot be used (withheld below)
        outcome = self.dp_rounds.finish(
            plan,
            round=server_round,
            survivors=survivors,
            noised_count=count_sum,
            noise_shares=plan.shares,
            roster=st["roster"],  # the cohort the round was sent to (an upper bound on who took part)
        )
        stated = self._stated(server_round)  # recorded: stated even when withheld below
        if mean is None:
            raise ProtocolAbort(
                f"the secure aggregate does not have the model's shapes: recorded at noise multiplier "
                f"{outcome.noise_multiplier_effective:.4g}; aggregate withheld",
                stage="dp-finish",
                party="server",
            )
        new = [
            (g + m * survivors / outcome.denominator).astype(dt)
            for g, m, dt in zip(st["global"], mean, st["dtypes"], strict=True)
        ]
        self.last_parameters = new
        metrics: dict[str, Scalar] = {
            k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
            for k, v in outcome.metrics.items()
        }
        if plan.sampling.kind == "fixed":  # Poisson: the number of survivors reveals presence
            metrics["dp_participants"] = survivors
        metrics.update(stated)
        return ndarrays_to_parameters(new), metrics

    def _read_aggregate(self, parameters: Parameters, global_arrays: list[np.ndarray]) -> list[np.ndarray] | None:
        """The aggregate as float64 arrays of the model's shapes (plus the clip-count slot); ``None`` if not."""
        try:
            arrays = [np.asarray(a, dtype=np.float64) for a in parameters_to_ndarrays(parameters)]
        except Exception:  # any decoding failure of bytes the server did not produce itself
            return None
        shapes = [g.shape for g in global_arrays] + ([(1,)] if self.clipper is not None else [])
        if [a.shape for a in arrays] != shapes or not all(np.all(np.isfinite(a)) for a in arrays):
            return None
        return arrays

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: Any) -> Any:
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round: int, results: Any, failures: Any) -> Any:
        return self.inner.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters) -> Any:
        return self.inner.evaluate(server_round, parameters)


# ---------------------------------------------------------------------------------- client
def make_dp_mod(
    *,
    min_noise_multiplier: float | None = None,
    max_shares: int | None = None,
    accept_poisson: bool | None = None,
    max_clip: float | None = None,
    noise_sampler: NoiseSampler | None = None,
    corruption_rate: float | None = None,
    max_rounds: int | None = None,
) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """The client mod: clip the delta, add this client's noise share. Its own policy, whatever the server asks
    (module docstring): ``min_noise_multiplier`` (updates and clip count jointly), ``max_shares``, the Poisson
    factor 1 only if ``accept_poisson``, ``max_clip``, shares bounded by the survivor floor less the colluders
    ``corruption_rate`` assumes (:func:`.dp_policy.own_corruption_rate`), at most ``max_rounds`` rounds of a run
    (:func:`.dp_policy.answer_round`). Unset: the node's own ``node_config`` (:data:`POLICY_KEYS`; never the
    run config); without a noise floor and a share ceiling the client refuses.
    """
    sampler_override = noise_sampler

    def mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN or "fitins.config" not in msg.content.config_records:
            return call_next(msg, ctxt)
        cfg = msg.content.config_records["fitins.config"]
        if DP_KEYS["clip"] not in cfg:
            return call_next(msg, ctxt)
        clip, z, z_count, shares, factor, resolution, adaptive = read_dp_settings(
            cfg,
            lambda: _client_policy(ctxt, min_noise_multiplier, max_shares, accept_poisson, max_clip),
            lambda: own_corruption_rate(ctxt, corruption_rate),
        )
        answered = answer_round(
            ctxt, None, node_value(ctxt, POLICY_KEYS["max_rounds"], max_rounds), record=NOISED_RECORD
        )
        sampler = sampler_override if sampler_override is not None else SecureNoise()

        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        global_arrays = parameters_to_ndarrays(fitins.parameters)
        if adaptive:
            if not global_arrays or global_arrays[-1].shape != (1,):
                raise ProtocolAbort("no clip-bit slot in the parameters", stage="dp", party="client")
            global_arrays = global_arrays[:-1]
            inner_content = RecordDict(dict(msg.content.items()))
            inner_content.array_records["fitins.parameters"] = compat.parameters_to_arrayrecord(
                ndarrays_to_parameters(global_arrays), True
            )
            msg.content = inner_content  # the user's fit sees the model without the clip-bit slot
        dim = sum(int(a.size) for a in global_arrays)
        mech = update_mechanism(
            clip=clip, sensitivity_factor=factor, noise_multiplier=z, dim=dim, resolution=resolution
        )
        count_mech = None
        if adaptive:
            count_mech = count_mechanism(sensitivity_factor=factor, noise_multiplier=z_count, resolution=resolution)
        check_noise_shares((mech, count_mech), shares)  # before training: every share above the floor
        out = call_next(msg, ctxt)
        if out.has_error():
            return out
        fitres, delta = trained_delta(out, global_arrays)
        clipped, norm = clip_l2(delta, clip)
        noised = mech.release(clipped, sampler, shares=shares)
        pieces: list[np.ndarray] = []
        off = 0
        for a in global_arrays:
            pieces.append(noised[off : off + a.size].reshape(a.shape))
            off += a.size
        if count_mech is not None:
            bit = np.array([float(norm <= clip) - 0.5])
            pieces.append(count_mech.release(bit, sampler, shares=shares))
        metrics = dict(fitres.metrics)
        metrics["privagg-dp"] = True
        ctxt.state[NOISED_RECORD] = answered  # before the noised update leaves: counted against the cap
        res = FitRes(fitres.status, ndarrays_to_parameters(pieces), 1, metrics)
        content = compat.fitres_to_recorddict(res, keep_input=True)
        for name, rec in out.content.config_records.items():  # keep what other mods added
            if name not in content.config_records:
                content.config_records[name] = rec
        return Message(content, reply_to=msg)

    return mod


#: the client mod with its policy read from the node's node_config (:data:`POLICY_KEYS`); no policy: refuses
privagg_dp_mod = make_dp_mod()


def _client_key(proxy: Any) -> int:
    """The integer the ledger counts a client's rounds under (its Flower node id; a non-numeric id is
    hashed, and a collision only merges two clients' counts: the server-view bound stays an upper bound)."""
    node = getattr(proxy, "node_id", None)
    if isinstance(node, int):
        return node
    cid = str(getattr(proxy, "cid", node))
    return int(cid) if cid.isdigit() else zlib.crc32(cid.encode())
