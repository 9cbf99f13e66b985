"""One DP-FedAvg round with distributed DP inside the secure sum (``[dp] noise = "distributed"``).

:class:`DistributedDPRounds` is the server side that :class:`protocols.dp_fedavg.DPFedAvg` runs
when its :class:`~dp.config.DPConfig` asks for distributed noise (:mod:`dp.distributed`):

1. once, at the first round: the run's parameters from (epsilon, delta, rounds, q, cohort,
   dimension, bits) by :func:`dp.distributed.choose_parameters`, or a refusal naming the bits
   that work. The ring is sized for the largest cohort Poisson sampling plausibly draws
   (``qN + 4 sqrt(qN(1-q))``), with the noise split as for the expected cohort ``qN``;
2. each round, before anything is computed: ``t``, the fewest honest shares the inner protocol
   guarantees for this cohort (its ``min_survivors`` less the clients that may be dishonest,
   ``floor((1 - h) n)``; refused when a sum could hold none), and the budget checked for a sum
   holding exactly ``t`` honest shares of ``sigma / sqrt(t)``: at least the planned noise;
3. each client encodes (clip, rotate, scale, conditional rounding, its share ``sigma / sqrt(t)``,
   mod ``2^b``), the inner aggregator computes the sum mod ``2^b``
   (:meth:`~protocols.aggregation.Aggregator.modular_sum`: SecAgg+ over the ``b``-bit ring, or a
   plain sum with ``mean``, where the server sees every vector);
4. the round is recorded in the ledger whatever happened (with its cohort, for the guarantee
   against the server, :mod:`dp.server_view`), with the honest survivors' shares
   counted up to ``t`` (the effective noise after dropouts: the planned noise, or less when fewer
   than ``t`` honest shares reached the sum; counting more than ``t`` would let epsilon reveal the
   cohort size); a sum of fewer honest shares than promised is then withheld
   (:class:`ProtocolAbort`). The noise the sum really carries (every survivor's share) is kept
   operator-side in :attr:`DistributedDPRounds.stats`, never in the metrics;
5. the server centres, unscales and rotates back, and divides by the fixed denominator ``q W``.

:meth:`~DistributedDPRounds.run` is the in-memory driver; :meth:`~DistributedDPRounds.open_round`
(steps 1-2) and :meth:`~DistributedDPRounds.close_round` (steps 4-5) are the same round for a
driver that runs the clients and the secure sum itself (:mod:`protocols.flower.distributed_dp`).

An empty Poisson cohort releases the server's noise alone (``t`` shares of the plan), accounted.
No exact count is published: under Poisson sampling the metrics hold no cohort size or survivors.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dp.accounting import Sampling
from dp.clipping import MAX_WEIGHT
from dp.config import DPConfig
from dp.distributed import DistributedDPParams, choose_parameters
from dp.distributed_accounting import RDPMechanism
from dp.distributed_encoding import DistributedEncoder, IntegerNoise
from dp.ledger import LedgerEntry, PrivacyBudget, PrivacyLedger
from dp.rounds import WITHHELD
from privagg.errors import ConfigurationError, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from protocols.aggregation import AggregateResult, Aggregator, ClientUpdate, RoundContext

__all__ = [
    "DistributedDPRounds",
    "DistributedRoundStats",
    "OpenRound",
    "SurvivorFloor",
    "dishonest_clients",
    "plan_parameters",
]

_EPS = 1e-9


@dataclass(frozen=True)
class DistributedRoundStats:
    """Operator-side record of one round (upload, time, true noise): not a DP output, never in the metrics."""

    round: int
    upload_bytes: float
    secure: bool
    seconds: float
    noise_std: float  # the noise the sum really carries (every survivor's share), value units


class SurvivorFloor(Protocol):
    """What the plan needs of the secure sum: the fewest survivors it releases a sum of (an
    :class:`~protocols.aggregation.Aggregator`, or a Flower workflow)."""

    def min_survivors(self, n: int) -> int: ...


@dataclass(frozen=True)
class OpenRound:
    """One round between :meth:`DistributedDPRounds.open_round` and :meth:`~DistributedDPRounds.close_round`."""

    round: int
    cohort: int  # clients whose vectors may enter the sum
    params: DistributedDPParams
    shares: int  # t: the honest noise shares every released sum is guaranteed to hold
    encoder: DistributedEncoder


def dishonest_clients(config: DPConfig, cohort: int) -> int:
    """The most dishonest clients in a cohort of ``cohort`` (``honest_fraction`` of the configuration)."""
    return math.floor((1.0 - config.honest_fraction) * cohort + _EPS)


def plan_parameters(
    config: DPConfig, sampling: Sampling, dim: int, *, rounds: int | None, inner: SurvivorFloor
) -> DistributedDPParams:
    """The parameters a run chooses (the audit asks the same question): the ring sized for a cohort
    4 standard deviations above the expected one, the noise split over the fewest honest survivors
    ``inner`` releases a sum of for the expected cohort; refused with the bits that work."""
    if sampling.kind != "poisson":
        raise ConfigurationError(
            "distributed DP is accounted for Poisson sampling only",
            field="federation.sampling",
            accepted=["poisson"],
        )
    if rounds is None or sampling.population is None:
        raise ConfigurationError("distributed DP needs the number of rounds and the population", field="dp.rounds")
    n_exp = sampling.rate * sampling.population
    spread = 4.0 * math.sqrt(n_exp * (1.0 - sampling.rate))
    cohort = max(1, min(sampling.population, math.ceil(n_exp + spread)))
    # the noise split is re-derived every round from that round's cohort; the plan assumes the expected one
    typical = max(1, round(n_exp))
    shares = max(1, min(int(inner.min_survivors(typical)) - dishonest_clients(config, typical), cohort))
    assert config.target_epsilon is not None  # DPConfig: distributed DP needs target_epsilon
    return choose_parameters(
        mechanism=config.mechanism,
        bits=config.bits,
        clip=config.clip_norm,
        dim=dim,
        epsilon=config.target_epsilon,
        delta=config.delta,
        rounds=rounds,
        sampling_rate=sampling.rate,
        cohort=cohort,
        shares=shares,
        beta=config.beta,
        clip_probability=config.clip_probability,
        max_inflation=config.max_noise_inflation,
    )


class DistributedDPRounds:
    """The distributed-DP server state of a run: parameters, rotation seed, ledger (module docstring)."""

    def __init__(
        self,
        config: DPConfig,
        *,
        population: int | None,
        rounds: int | None,
        secrets: SecretSource = SYSTEM_SECRETS,
        noise: IntegerNoise | None = None,
    ) -> None:
        if config.noise != "distributed":
            raise ConfigurationError("not a distributed-DP configuration", field="dp.noise")
        self.config = config
        self.population = population
        self.rounds = rounds
        budget = (
            PrivacyBudget(epsilon=config.budget, delta=config.delta, against=config.budget_against)
            if config.budget
            else None
        )
        # RDP from each mechanism's own bound; the PRV accountant has none for these rounds (reads nan)
        self.ledger = PrivacyLedger(delta=config.delta, accountants=("rdp", "prv"), budget=budget)
        if config.ledger_path is not None and os.path.exists(config.ledger_path):
            self.ledger.load(config.ledger_path)  # a restarted server keeps composing what it released
        if noise is None:
            noise = IntegerNoise(exact=config.exact_sampler) if config.secure_noise else IntegerNoise(seed=config.seed)
        self.noise = noise
        #: the public seed of the rotations (every client and the server share it; no secret)
        if config.secure_noise or config.seed is None:
            self.rotation_seed = secrets.token_bytes(32)
        else:  # an insecure simulation seeded for reproducibility: the (public) rotations follow the seed too
            self.rotation_seed = hashlib.sha256(
                b"privagg-rotation" + config.seed.to_bytes(16, "big", signed=True)
            ).digest()
        self.params: DistributedDPParams | None = None
        self.stats: list[DistributedRoundStats] = []

    def dishonest(self, cohort: int) -> int:
        return dishonest_clients(self.config, cohort)

    def honest_min(self, inner: SurvivorFloor, cohort: int) -> int:
        """The fewest honest noise shares in a sum the inner protocol releases for ``cohort`` clients."""
        return int(inner.min_survivors(cohort)) - self.dishonest(cohort)

    def plan(self, sampling: Sampling, dim: int, inner: SurvivorFloor) -> DistributedDPParams:
        """The run's parameters (chosen at the first round by :func:`plan_parameters`)."""
        if self.params is not None:
            if self.params.dim != dim:
                raise ConfigurationError(f"update length changed from {self.params.dim} to {dim}", field="updates")
            return self.params
        self.params = plan_parameters(self.config, sampling, dim, rounds=self.rounds, inner=inner)
        return self.params

    def run(
        self,
        updates: Sequence[ClientUpdate],
        weights: np.ndarray,
        ctx: RoundContext,
        *,
        sampling: Sampling,
        dim: int,
        inner: Aggregator,
    ) -> AggregateResult:
        n = len(updates)
        roster = [u.client_id for u in updates]
        opened = self.open_round(n, round=ctx.round, sampling=sampling, dim=dim, inner=inner, roster=roster)
        p, t, encoder = opened.params, opened.shares, opened.encoder
        start = time.perf_counter()
        if n == 0:  # an empty cohort: the server's noise alone, t shares as planned
            ring = self.empty_ring(opened)
            participants: tuple[int, ...] = ()
            upload, secure, survivors = 0.0, True, self.empty_survivors(opened)
        else:
            vectors = {
                u.client_id: encoder.encode(u.delta, self.noise, weight=float(w), shares=t)
                for u, w in zip(updates, weights, strict=True)
            }
            released = inner.modular_sum(vectors, bits=p.bits, ctx=ctx)
            ring, participants = released.sum, tuple(released.participants)
            upload, secure = released.upload_bytes, released.secure
            survivors = len(set(participants) & set(vectors))
        seconds = time.perf_counter() - start
        return self.close_round(
            opened,
            ring,
            sampling=sampling,
            survivors=survivors,
            participants=participants,
            roster=roster,  # the whole cohort, survivors or not (an upper bound)
            upload_bytes=upload,
            secure=secure,
            seconds=seconds,
        )

    def empty_ring(self, opened: OpenRound) -> np.ndarray:
        """The ring vector of an empty Poisson cohort: ``t`` noise shares drawn by the server, nothing else.
        Poisson sampling's privacy needs the empty sample released like any other (and accounted)."""
        p, t = opened.params, opened.shares
        noise = sum(
            (self.noise.share(p.mechanism, p.sigma / math.sqrt(t), p.padded, self.noise.words()) for _ in range(t)),
            np.zeros(p.padded, dtype=np.int64),
        )
        ring: np.ndarray = noise.astype(np.uint64) & np.uint64(p.modulus - 1)
        return ring

    def empty_survivors(self, opened: OpenRound) -> int:
        """The survivors :meth:`close_round` is told for an empty cohort: the server's ``t`` honest shares."""
        return opened.shares + self.dishonest(0)

    def refuse(
        self,
        n: int,
        *,
        round: int,
        sampling: Sampling,
        dim: int,
        inner: SurvivorFloor,
        roster: Sequence[int] | None,
        reason: str,
    ) -> dict[str, Any]:
        """Charge a round whose cohort the secure sum refuses (nothing released): the plan's mechanism at its
        ``t`` shares, as an empty cohort's release is charged, after the budget check; returns its metrics."""
        p = self.plan(sampling, dim, inner)
        mech = p.rdp_mechanism(p.shares, p.shares)
        self.ledger.check(noise_multiplier=mech.noise_multiplier, sampling=sampling, mechanism=mech, roster=roster)
        noise_std = p.effective_noise_std(p.shares, p.shares)
        cohort: int | str = WITHHELD if sampling.kind == "poisson" else n
        entry = self._charge(round, p, mech, noise_std, sampling, roster, cohort=cohort, participants=0, refused=reason)
        return self._metrics(entry, p, mech)

    def _charge(
        self,
        round: int,
        p: DistributedDPParams,
        mech: RDPMechanism | None,
        noise_std: float,
        sampling: Sampling,
        roster: Sequence[int] | None,
        **info: Any,
    ) -> LedgerEntry:
        """Record one round of the plan ``p`` at ``mech`` (``None``: released without a guarantee) in the
        ledger, with what it withholds, and keep the ledger durable."""
        entry = self.ledger.record(
            round=round,
            noise_multiplier=mech.noise_multiplier if mech is not None else 0.0,
            sampling=sampling,
            mechanism=mech,
            roster=roster,
            noise_mechanism=p.mechanism,
            bits=p.bits,
            clip_norm=p.clip,
            clipped_fraction=WITHHELD,
            noise_std=noise_std,
            sensitivity=p.l2_sensitivity / p.scale,
            **info,
        )
        if self.config.ledger_path is not None:
            self.ledger.save(self.config.ledger_path)
        return entry

    def _metrics(self, entry: LedgerEntry, p: DistributedDPParams, mech: RDPMechanism | None) -> dict[str, Any]:
        """The DP metrics every round reports, released or refused."""
        return {
            "dp_epsilon_rdp": entry.epsilon.get("rdp", math.nan),
            "dp_epsilon_prv": math.nan,
            "dp_delta": self.ledger.delta,
            "dp_noise": "distributed",
            "dp_mechanism": p.mechanism,
            "dp_bits": p.bits,
            "dp_noise_multiplier": p.sigma / p.l2_sensitivity,
            "dp_noise_multiplier_effective": mech.noise_multiplier if mech is not None else 0.0,
        }

    def open_round(
        self,
        n: int,
        *,
        round: int,
        sampling: Sampling,
        dim: int,
        inner: SurvivorFloor,
        roster: Sequence[int] | None = None,
    ) -> OpenRound:
        """Before anything is computed: the plan, ``t`` (refused when a sum could hold no honest share),
        the budget checked for a sum of exactly ``t`` honest shares (``roster``: the cohort, for a budget
        enforced against the server; ``None``: counted for every client), the round's encoder."""
        p = self.plan(sampling, dim, inner)
        t = p.shares if n == 0 else self.honest_min(inner, n)
        if t < 1:
            raise ProtocolAbort(
                f"the inner aggregation may release a sum of {inner.min_survivors(n)} survivors, up to "
                f"{self.dishonest(n)} of them dishonest: no honest noise share guaranteed",
                stage="dp-plan",
                party="server",
            )
        planned = p.rdp_mechanism(t, t)
        z = planned.noise_multiplier
        self.ledger.check(noise_multiplier=z, sampling=sampling, mechanism=planned, roster=roster)
        encoder = DistributedEncoder.for_round(p, seed=self.rotation_seed, round=round)
        return OpenRound(round=round, cohort=n, params=p, shares=t, encoder=encoder)

    def close_round(
        self,
        opened: OpenRound,
        ring: np.ndarray,
        *,
        sampling: Sampling,
        survivors: int,
        participants: tuple[int, ...] = (),
        roster: Sequence[int] | None = None,
        upload_bytes: float = 0.0,
        secure: bool = True,
        seconds: float = 0.0,
    ) -> AggregateResult:
        """After the secure sum of ``survivors`` clients' vectors: record, withhold or decode (steps 4-5).

        ``roster``: the round's cohort (client ids), kept in the ledger (never published) for the guarantee
        against the server (:mod:`dp.server_view`); ``None``: unknown, counted for every client."""
        p, t, n, encoder = opened.params, opened.shares, opened.cohort, opened.encoder
        honest = survivors - self.dishonest(n)
        true_std = p.effective_noise_std(max(honest, 0) + self.dishonest(n), t)
        self.stats.append(DistributedRoundStats(opened.round, upload_bytes, secure, seconds, true_std))

        # accounted: the honest shares, at most t (more would reveal the cohort size through epsilon)
        counted = min(honest, t)
        mech = p.rdp_mechanism(counted, t) if counted >= 1 else None
        noise_std = p.effective_noise_std(counted, t) if counted >= 1 else 0.0
        entry = self._charge(
            opened.round, p, mech, noise_std, sampling, roster, cohort="withheld", participants="withheld"
        )
        if honest < t:
            raise ProtocolAbort(
                f"the inner aggregation released a sum with fewer honest noise shares than it allows ({t}): "
                "recorded; aggregate withheld",
                stage="dp-noise",
                party="server",
            )
        total_weight = self.config.total_weight or (sampling.population or n) * MAX_WEIGHT
        denominator = sampling.rate * total_weight
        delta = encoder.decode(ring) / denominator
        metrics: dict[str, Any] = {
            **self._metrics(entry, p, mech),
            "dp_scale": p.scale,
            "dp_clip_norm": p.clip,
            "dp_noise_std_planned": p.noise_std_value,
            "dp_noise_std": noise_std,
            "dp_noise_std_on_mean": noise_std / denominator,
            "dp_noise_inflation": p.noise_inflation,
            "dp_ring_overflow_bound": p.overflow_bound(p.cohort),  # the plan's cohort: the true one is not public
            "dp_upload_bytes": p.upload_bytes,
            "dp_secure_sum": secure,
            "dp_denominator": denominator,
        }
        if sampling.population is not None:
            metrics["dp_delta_times_population"] = self.ledger.delta * sampling.population
        return AggregateResult(delta=delta, participants=participants, metrics=metrics)
