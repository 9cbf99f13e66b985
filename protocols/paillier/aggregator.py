"""``aggregator = "paillier"``: FedAvg rounds summed under packed threshold Paillier.

Per round: every client clips and quantises its update with the protocol's one
:class:`~privagg.encoding.RingEncoding` (stochastic rounding, one scale for everybody),
packs and encrypts it; the server multiplies the ciphertexts; ``threshold`` decryptors
check the signed contributions and decrypt the aggregate only; the server decodes the
(weighted) mean. Keys are made once per aggregator, at the first round.

Weighting goes through :class:`~protocols.weighting.WeightingCodec`, the codec of every
sum-only protocol: client ``i`` encodes ``[f_i clip(x_i), f_i clip]`` with
``f_i = min(n_i, max_weight) / max_weight`` in ``[0, 1]`` (``max_weight``: the option, else the
round's largest example count, public like the counts in plain FedAvg; ``f_i = 1`` with
``weighted=False``). Each summand stays in ``[-clip, clip]``, so the slot headroom for
``max_clients`` summands holds, and the server decodes the weighted mean from the weight slot,
over exactly the clients in the decrypted sum.

Each round leaves a typed :class:`PaillierRoundStats` in :attr:`PaillierAggregator.rounds`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from privagg.encoding import RingEncoding
from privagg.errors import ConfigurationError, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from protocols.aggregation import (
    AggregateResult,
    Aggregator,
    ClientUpdate,
    RoundContext,
    check_updates,
    register_aggregator,
    resolve_options,
)
from protocols.weighting import WeightingCodec

from .messages import NO_MODEL_DIGEST, model_digest
from .protocol import PHASES, PaillierConfig, PaillierSession, PaillierSetup

__all__ = ["PaillierAggregator", "PaillierOptions", "PaillierRoundStats"]


@dataclass(frozen=True)
class PaillierOptions:
    """Options of :class:`PaillierAggregator` (``[aggregation.options]`` of ``aggregator = "paillier"``).

    ``key_bits`` (2048 | 3072; smaller only with ``allow_insecure``), ``clip`` (per-coordinate
    bound), ``value_bits`` (quantisation), ``decryptors`` / ``threshold`` (``decryptors=1`` means
    one key holder with CRT decryption), ``min_clients`` (>= 2), ``max_clients`` (slot headroom;
    default the population), ``randomness`` ("fresh" | "fixed-base"), ``exponent_bits``
    (fixed-base only), ``weighted``, ``max_weight`` (public normaliser of the weights; default
    the round's largest ``num_examples``), ``proofs`` (threshold partial decryptions carry proofs
    of correctness).
    """

    key_bits: int = 2048
    clip: float = 1.0
    value_bits: int = 16
    decryptors: int = 3
    threshold: int = 2
    min_clients: int = 2
    max_clients: int | None = None
    randomness: str = "fresh"
    exponent_bits: int | None = None
    weighted: bool = True
    max_weight: float | None = None
    proofs: bool = True
    allow_insecure: bool = False

    def __post_init__(self) -> None:
        for fname, v in (("key_bits", self.key_bits), ("value_bits", self.value_bits), ("decryptors", self.decryptors)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigurationError(f"must be an integer, got {v!r}", field=fname)
        clip = self.clip
        if not (isinstance(clip, (int, float)) and np.isfinite(clip) and clip > 0):
            raise ConfigurationError(f"must be a positive finite number, got {clip!r}", field="clip")
        if self.max_clients is not None and self.max_clients < 2:
            raise ConfigurationError(f"got {self.max_clients}", field="max_clients", accepted=">= 2")
        # validate everything now (a probe layout for max(min_clients, max_clients) summands)
        probe = self.paillier_config(max(self.max_clients or 2, self.min_clients, 2))
        RingEncoding.for_sum(clip=float(clip), max_summands=probe.max_clients, value_bits=self.value_bits)
        WeightingCodec(max_weight=self.max_weight)

    def paillier_config(self, max_clients: int) -> PaillierConfig:
        """The protocol configuration for a key with slot headroom for ``max_clients``."""
        return PaillierConfig(
            key_bits=self.key_bits,
            value_bits=self.value_bits,
            max_clients=max_clients,
            decryptors=self.decryptors,
            threshold=self.threshold,
            min_clients=self.min_clients,
            randomness=self.randomness,
            exponent_bits=self.exponent_bits,
            proofs=self.proofs,
            allow_insecure=self.allow_insecure,
        )


@dataclass(frozen=True)
class PaillierRoundStats:
    """What one Paillier round cost (one per aggregated round; ``aborted`` when refused).

    ``keygen_seconds`` / ``table_seconds`` are set on the round that made the keys;
    ``error_bound`` bounds the decoded mean's error per coordinate (quantisation of the
    numerator and, weighted, of the weight slot, over the decoded ``total_weight``).
    """

    round: int
    clients: int
    dim: int
    clipped: int
    encode_seconds: float
    keygen_seconds: float | None = None
    table_seconds: float | None = None
    aborted: str | None = None
    phase_seconds: Mapping[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    bytes_up: int = 0
    bytes_per_client: float = 0.0
    bytes_to_decryptors: int = 0
    bytes_from_decryptors: int = 0
    ciphertexts_per_client: int = 0
    error_bound: float = float("nan")
    total_weight: float = float("nan")

    def metrics(self) -> dict[str, Any]:
        """The round's metrics as the FedAvg loop records them (``paillier_*`` keys)."""
        m: dict[str, Any] = {"paillier_clipped": self.clipped, "paillier_encode_seconds": self.encode_seconds}
        if self.keygen_seconds is not None:
            m["paillier_keygen_seconds"] = self.keygen_seconds
            m["paillier_table_seconds"] = self.table_seconds
        if self.aborted is not None:
            m["paillier_aborted"] = self.aborted
            return m
        for phase in PHASES:
            m[f"paillier_{phase}_seconds"] = self.phase_seconds[phase]
        m.update(
            paillier_seconds=self.seconds,
            paillier_bytes_up=self.bytes_up,
            paillier_bytes_per_client=self.bytes_per_client,
            paillier_bytes_to_decryptors=self.bytes_to_decryptors,
            paillier_bytes_from_decryptors=self.bytes_from_decryptors,
            paillier_ciphertexts_per_client=self.ciphertexts_per_client,
            paillier_error_bound=self.error_bound,
        )
        return m


@register_aggregator("paillier")
class PaillierAggregator(Aggregator):
    """Packed Paillier summation with threshold decryption as a FedAvg aggregator.

    Options: :class:`PaillierOptions` (also accepted as keywords, ``PaillierAggregator(clip=2.0)``);
    ``secrets`` is the source of key material and encryption randomness.
    """

    name = "paillier"
    needs_plaintext_updates = False
    Options: ClassVar[type[PaillierOptions]] = PaillierOptions

    def __init__(
        self, options: PaillierOptions | None = None, *, secrets: SecretSource = SYSTEM_SECRETS, **overrides: Any
    ) -> None:
        self.options = resolve_options(PaillierOptions, options, overrides)
        self.clip = float(self.options.clip)
        self.weighted = self.options.weighted
        self.codec = WeightingCodec(
            "examples" if self.weighted else "uniform", max_weight=self.options.max_weight, slot_scale=self.clip
        )
        self._secrets = secrets
        self.config: PaillierConfig | None = None
        self.setup: PaillierSetup | None = None
        self.session: PaillierSession | None = None
        self.encoding: RingEncoding | None = None
        self.rounds: list[PaillierRoundStats] = []
        self._cohort_ids: list[int] = []
        self._client_ids: list[int] = []

    @classmethod
    def from_options(cls, options: PaillierOptions) -> PaillierAggregator:
        return cls(options)

    def min_survivors(self, n: int) -> int:
        """The decryptors decrypt an aggregate of at least ``min_clients`` proven contributions."""
        return min(n, self.options.min_clients)

    def _ensure_setup(self, ctx: RoundContext, cohort: int) -> PaillierSession:
        if self.session is None:
            self._client_ids = sorted({*range(ctx.population), *self._cohort_ids})
            max_clients = self.options.max_clients or max(ctx.population, cohort, 2)
            self.config = self.options.paillier_config(max_clients)
            self.encoding = RingEncoding.for_sum(
                clip=self.clip, max_summands=max_clients, value_bits=self.config.value_bits
            )
            # the dealer provisions the population's clients (ids 0 .. population-1 and this cohort's)
            self.setup = PaillierSetup.generate(self.config, clients=self._client_ids, secrets=self._secrets)
            self.session = PaillierSession(self.setup, secrets=self._secrets)
        assert self.config is not None
        if cohort > self.config.max_clients:
            raise ConfigurationError(
                f"{cohort} clients in round {ctx.round} exceed max_clients={self.config.max_clients}: "
                "the packed slots could overflow",
                field="max_clients",
                accepted=f">= {cohort}",
            )
        return self.session

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        dim = check_updates(updates)
        first = self.session is None
        self._cohort_ids = [u.client_id for u in updates]
        session = self._ensure_setup(ctx, len(updates))
        enc = self.encoding
        assert enc is not None and self.setup is not None and self.config is not None
        t0 = time.perf_counter()
        codec = self.codec.for_round([u.num_examples for u in updates])
        clipped = 0
        ints: dict[int, np.ndarray] = {}
        for u in updates:
            x = np.asarray(u.delta, dtype=np.float64)
            if not np.all(np.isfinite(x)):
                raise ConfigurationError(f"client {u.client_id} sent NaN or infinity", field="updates")
            clipped += int(np.count_nonzero(np.abs(x) > self.clip))
            v, _ = enc.quantize(codec.encode(np.clip(x, -self.clip, self.clip), u.num_examples), ctx.rng)
            ints[u.client_id] = v
        encode_seconds = time.perf_counter() - t0
        setup_times: dict[str, Any] = (
            {"keygen_seconds": self.setup.keygen_seconds, "table_seconds": self.setup.table_seconds} if first else {}
        )
        try:
            digest = NO_MODEL_DIGEST if ctx.global_params is None else model_digest([ctx.global_params])
            out = session.run_round(ints, round=ctx.round, model_digest=digest)
        except ProtocolAbort as e:
            # the decryptors refused (e.g. fewer than min_clients): the round is skipped, nothing decrypted; or the
            # decrypted sum is one no honest clients give (an out-of-range client): the round is skipped too
            stats = PaillierRoundStats(
                round=ctx.round,
                clients=len(updates),
                dim=dim,
                clipped=clipped,
                encode_seconds=encode_seconds,
                aborted=e.reason,
                **setup_times,
            )
            self.rounds.append(stats)
            return AggregateResult(delta=np.zeros(dim), participants=(), metrics=stats.metrics())
        delta, total_weight = codec.decode(out.sums.astype(np.float64) / enc.scale)
        # per coordinate: numerator error <= E; weighted, the slot's error (<= E) moves the
        # denominator too, and |mean| <= clip, so |error| <= (E + E_slot) / total_weight
        err = enc.sum_error_bound(len(out.participants))
        stats = PaillierRoundStats(
            round=ctx.round,
            clients=len(updates),
            dim=dim,
            clipped=clipped,
            encode_seconds=encode_seconds,
            phase_seconds={phase: out.seconds[phase] for phase in PHASES},
            seconds=out.total_seconds + encode_seconds,
            bytes_up=out.bytes_client_to_server,
            bytes_per_client=out.bytes_client_to_server / len(updates),
            bytes_to_decryptors=out.bytes_server_to_decryptors,
            bytes_from_decryptors=out.bytes_decryptors_to_server,
            ciphertexts_per_client=out.ciphertexts_per_client,
            error_bound=(err + (err if codec.weighted else 0.0)) / total_weight,
            total_weight=total_weight,
            **setup_times,
        )
        self.rounds.append(stats)
        return AggregateResult(delta=delta, participants=out.participants, metrics=stats.metrics())
