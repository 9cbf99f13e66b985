"""Secure aggregation (SecAgg+) as a FedAvg aggregator: the server sees only the sum.

Per round: each update is clipped and fixed-point encoded (:class:`privagg.encoding.RingEncoding`,
stochastic rounding from the round's simulation rng), the in-memory SecAgg+ driver runs a
full round between the sampled clients and a server (optionally with simulated dropouts),
and the decoded (weighted) mean of the survivors is returned. The weighted mean travels
inside the sum through :class:`~protocols.weighting.WeightingCodec` (``[f x, f c]`` with
``f = num_examples / max_weight`` and ``c`` = clip; ``f = 1`` when unweighted), so the sum
carries both ``sum f x`` and ``sum f`` over exactly the survivors.

Each round leaves a typed :class:`SecAggRoundStats` in :attr:`SecAggAggregator.rounds`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519

from privagg.digest import model_digest
from privagg.encoding import RingEncoding
from privagg.errors import ConfigurationError
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from protocols.aggregation import (
    AggregateResult,
    Aggregator,
    ClientUpdate,
    ModularSum,
    RoundContext,
    check_updates,
    register_aggregator,
    resolve_options,
)
from protocols.weighting import WeightingCodec
from secagg import ClientPolicy, DropStage, RoundReport, SecAggParams, ThreatModel, make_identities, run_round
from secagg.messages import DIGEST_BYTES
from secagg.params import smallest_cohort

__all__ = ["SecAggAggregator", "SecAggOptions", "SecAggRoundStats"]

_MAX_COHORT_SEARCH = 1 << 16  # min_cohort gives up past this many clients


def _round_digest(ctx: RoundContext) -> bytes:
    """The digest of the global model this round's clients trained on: it binds the session (and, in
    active mode, every signature) to that model, so a server cannot reuse the round for another one."""
    if ctx.global_params is None:
        return bytes(DIGEST_BYTES)
    return model_digest([np.asarray(ctx.global_params)])


@dataclass(frozen=True)
class SecAggOptions:
    """Options of :class:`SecAggAggregator` (``[aggregation.options]`` of ``aggregator = "secagg"``).

    ``threat`` ("active" | "semi-honest"), ``clip`` (per-coordinate bound), ``value_bits``
    (fixed-point bits per coordinate), ``dropout_rate`` (simulated fraction of clients that drop
    at ``drop_stage``; also the rate the parameters are derived for), ``drop_stage``,
    ``corruption_rate`` (for the derivation), ``degree``/``threshold`` (overrides of the derived
    values), ``weighted`` (by ``num_examples``), ``max_weight`` (public normaliser of the
    weights; default: the round's largest ``num_examples``), ``min_clients`` (active mode with
    derived parameters: each client holds a :class:`secagg.ClientPolicy` of this minimum cohort
    and the rates above, derives the graph itself and refuses a weaker setup or a smaller roster;
    with a ``degree``/``threshold`` override the clients accept the override, weaker or not),
    ``workers`` (the simulated clients run in that many forked processes, :func:`secagg.run_round`:
    every client still does all of its own work, the cores share it).
    """

    threat: str = "active"
    clip: float = 1.0
    value_bits: int = 16
    dropout_rate: float = 0.0
    drop_stage: str = "masked_input"
    corruption_rate: float = 0.0
    degree: int | None = None
    threshold: int | None = None
    weighted: bool = True
    max_weight: float | None = None
    min_clients: int = 3
    workers: int = 1

    def __post_init__(self) -> None:
        ThreatModel.parse(self.threat)
        DropStage.parse(self.drop_stage)
        clip = self.clip
        if not (isinstance(clip, (int, float)) and np.isfinite(clip) and clip > 0):
            raise ConfigurationError(f"got {clip!r}", field="clip", accepted="a positive number")
        if not (isinstance(self.value_bits, int) and 2 <= self.value_bits <= 48):
            raise ConfigurationError(f"got {self.value_bits!r}", field="value_bits", accepted="2..48")
        for fname, v in (("dropout_rate", self.dropout_rate), ("corruption_rate", self.corruption_rate)):
            if not (isinstance(v, (int, float)) and 0.0 <= v < 1.0):
                raise ConfigurationError(f"got {v!r}", field=fname, accepted="0 <= rate < 1")
        if (self.degree is None) != (self.threshold is None):
            raise ConfigurationError(
                "give both degree and threshold, or neither (derived)",
                field="degree" if self.degree is None else "threshold",
            )
        if not (isinstance(self.min_clients, int) and self.min_clients >= 2):
            raise ConfigurationError(f"got {self.min_clients!r}", field="min_clients", accepted="an integer >= 2")
        for fname, iv in (("degree", self.degree), ("threshold", self.threshold)):
            if iv is not None and not (isinstance(iv, int) and iv >= 1):
                raise ConfigurationError(f"got {iv!r}", field=fname, accepted="a positive integer")
        if not (isinstance(self.workers, int) and self.workers >= 1):
            raise ConfigurationError(f"got {self.workers!r}", field="workers", accepted="an integer >= 1")
        mw = self.max_weight
        if mw is not None and not (isinstance(mw, (int, float)) and mw > 0):
            raise ConfigurationError(f"got {mw!r}", field="max_weight", accepted="a positive number")


@dataclass(frozen=True)
class SecAggRoundStats:
    """What one secure-aggregation round cost and who took part (one per aggregated round)."""

    round: int
    clients: int
    threat: str
    degree: int
    threshold: int
    modulus_bits: int
    survivors: int
    dropped: int
    clipped: int
    client_upload_bytes: float
    expansion: float
    server_bytes_sent: int
    total_bytes: int
    round_seconds: float
    stage_seconds: Mapping[str, float] = field(default_factory=dict)
    server_peak_bytes: int = 0

    def metrics(self) -> dict[str, Any]:
        """The round's metrics as the FedAvg loop records them (``secagg_*`` keys)."""
        return {
            "secagg_threat": self.threat,
            "secagg_degree": self.degree,
            "secagg_threshold": self.threshold,
            "secagg_modulus_bits": self.modulus_bits,
            "secagg_survivors": self.survivors,
            "secagg_dropped": self.dropped,
            "secagg_clipped": self.clipped,
            "secagg_client_upload_bytes": self.client_upload_bytes,
            "secagg_expansion": self.expansion,
            "secagg_server_bytes_sent": self.server_bytes_sent,
            "secagg_total_bytes": self.total_bytes,
            "secagg_round_seconds": self.round_seconds,
            "secagg_stage_seconds": dict(self.stage_seconds),
            "secagg_server_peak_bytes": self.server_peak_bytes,
        }


@register_aggregator("secagg")
class SecAggAggregator(Aggregator):
    """FedAvg mean computed under SecAgg+ (``threat="active"`` by default).

    Options: :class:`SecAggOptions` (also accepted as keywords, ``SecAggAggregator(clip=2.0)``);
    ``secrets`` is the source of the clients' key material.
    """

    name = "secagg"
    needs_plaintext_updates = False
    Options: ClassVar[type[SecAggOptions]] = SecAggOptions

    def __init__(
        self, options: SecAggOptions | None = None, *, secrets: SecretSource = SYSTEM_SECRETS, **overrides: Any
    ) -> None:
        opts = resolve_options(SecAggOptions, options, overrides)
        self.options = opts
        self.threat = ThreatModel.parse(opts.threat)
        self.drop_stage = DropStage.parse(opts.drop_stage)
        self.clip = float(opts.clip)
        self.codec = WeightingCodec(
            "examples" if opts.weighted else "uniform", max_weight=opts.max_weight, slot_scale=self.clip
        )
        # derived parameters: the one derivation the honest clients hold too (``ClientPolicy.required``)
        self._policy: ClientPolicy | None = None
        if opts.degree is None:
            dropout, corruption = opts.dropout_rate, opts.corruption_rate
            self._policy = ClientPolicy(min_clients=opts.min_clients, dropout_rate=dropout, corruption_rate=corruption)
        self._secrets = secrets
        self._identity_keys: dict[int, ed25519.Ed25519PrivateKey] = {}
        self._directory: dict[int, bytes] = {}
        self.rounds: list[SecAggRoundStats] = []
        self._min_cohort: int | None = None

    @classmethod
    def from_options(cls, options: SecAggOptions) -> SecAggAggregator:
        return cls(options)

    # ------------------------------------------------------------------ parameters
    def client_policy(self) -> ClientPolicy | None:
        """What each client accepts (active mode, derived parameters): see :class:`SecAggOptions`."""
        return self._policy if self.threat is ThreatModel.ACTIVE else None

    def min_survivors(self, n: int) -> int:
        """The fewest survivors whose sum a round of ``n`` clients can release: the round's parameters'
        own bound (:meth:`secagg.SecAggParams.min_survivors`). Assumes the whole cohort got past key
        advertisement (the roster is the cohort)."""
        if n < 3:
            return n
        return self.params_for(n).min_survivors(n)

    def min_cohort(self) -> int:
        """The smallest cohort a round runs for: 3 clients, the clients' policy minimum (active mode), and the
        smallest population the derivation finds parameters for at the configured rates (searched once,
        assuming a larger cohort is never harder to secure; :meth:`cohort_fault` still checks each cohort)."""
        if self._min_cohort is None:
            policy = self.client_policy()
            start = max(3, policy.min_clients if policy is not None else 3)
            m = smallest_cohort(self.params_for, start=start, limit=_MAX_COHORT_SEARCH)
            if m is None:
                raise ConfigurationError(
                    f"no cohort of up to {_MAX_COHORT_SEARCH} clients has secure-aggregation parameters at "
                    f"dropout {self.options.dropout_rate:g} and corruption {self.options.corruption_rate:g}",
                    field="aggregation.options.dropout_rate",
                )
            self._min_cohort = m
        return self._min_cohort

    def _derivable(self, n: int) -> bool:
        try:
            self.params_for(n)
        except ConfigurationError:
            return False
        return True

    def cohort_fault(self, n: int) -> str | None:
        """A cohort below :meth:`min_cohort`, or one the derivation finds no parameters for, is refused (the
        clients would refuse its roster); the reason names the minimum, never the cohort's size."""
        m = self.min_cohort()
        if n >= m and self._derivable(n):
            return None
        rates = (
            f" at dropout {self.options.dropout_rate:g} and corruption {self.options.corruption_rate:g}"
            if self._policy is not None
            else ""
        )
        return f"a cohort below secure aggregation's minimum of {m} clients{rates}"

    def params_for(self, n: int) -> SecAggParams:
        """The round's parameters for a cohort of ``n`` clients."""
        opts = self.options
        if opts.degree is not None and opts.threshold is not None:
            k, t = opts.degree, opts.threshold
            if k >= n - 1:  # a small cohort: the complete graph
                k, t = n - 1, min(t, n - 1)
            return SecAggParams.manual(
                num_clients=n, degree=k, threshold=t, threat=self.threat, value_bits=opts.value_bits
            )
        assert self._policy is not None  # no override: derived
        return self._policy.required(n, self.threat, opts.value_bits)

    def ring_params(self, n: int, bits: int) -> SecAggParams:
        """The round's graph for ``n`` clients over the ring ``Z_{2^bits}``: a *modular* ring (distributed
        DP: every input is any ring element and the sum wraps by design), the graph as for a sum."""
        return self.params_for(n).over_ring(bits)

    def modular_sum(self, vectors: Mapping[int, np.ndarray], *, bits: int, ctx: RoundContext) -> ModularSum:
        """The secure sum mod ``2**bits`` of the clients' ring vectors (SecAgg+, bit-packed ``bits`` per value)."""
        ids = sorted(int(c) for c in vectors)
        n = len(ids)
        if n < 3:
            raise ConfigurationError("secure aggregation needs at least 3 clients in a round", field="updates")
        params = self.ring_params(n, bits)
        dim = int(np.asarray(vectors[ids[0]]).size)
        inputs = {c: np.asarray(vectors[c], dtype=np.uint64) for c in ids}
        rep, stats = self._secure_round(params, ids, inputs, dim=dim, ctx=ctx, clipped=0, plain_bytes=dim * bits / 8)
        return ModularSum(
            sum=np.asarray(rep.sum, dtype=np.uint64) & np.uint64((1 << bits) - 1),
            participants=tuple(rep.survivors),
            secure=True,
            upload_bytes=stats.client_upload_bytes,
            metrics=stats.metrics(),
        )

    def _secure_round(
        self,
        params: SecAggParams,
        ids: Sequence[int],
        inputs: Mapping[int, np.ndarray],
        *,
        dim: int,
        ctx: RoundContext,
        clipped: int,
        plain_bytes: float,
    ) -> tuple[RoundReport, SecAggRoundStats]:
        """One SecAgg+ round over the real parties (dropouts drawn from the round's generator, the
        session bound to the round's model), its abort raised, its costs recorded."""
        n_drop = round(self.options.dropout_rate * len(ids))
        dropped = sorted(int(c) for c in ctx.rng.choice(ids, size=n_drop, replace=False)) if n_drop else []
        identities = self._identities(ids) if self.threat is ThreatModel.ACTIVE else None
        rep = run_round(
            params,
            client_ids=list(ids),
            inputs=inputs,
            dimension=dim,
            round=ctx.round,
            model_digest=_round_digest(ctx),
            dropouts={self.drop_stage: dropped},
            identities=identities,
            secrets=self._secrets,
            # no policy (semi-honest, or a degree/threshold override the clients accept: SecAggOptions), said out loud
            client_policy=self.client_policy() or ClientPolicy.trust_server(),
            workers=min(self.options.workers, max(1, len(ids) // 8)),  # a tiny cohort is not worth a fork
        )
        if rep.abort is not None or rep.sum is None:
            raise rep.abort or ConfigurationError("secure aggregation produced no result", field="updates")
        uploads = [rep.bytes_sent[c] for c in rep.survivors]
        stats = SecAggRoundStats(
            round=ctx.round,
            clients=len(ids),
            threat=self.threat.value,
            degree=params.degree,
            threshold=params.threshold,
            modulus_bits=params.modulus_bits,
            survivors=len(rep.survivors),
            dropped=len(rep.dropped),
            clipped=clipped,
            client_upload_bytes=float(np.mean(uploads)) if uploads else 0.0,
            expansion=(float(np.mean(uploads)) / plain_bytes) if uploads else 0.0,
            server_bytes_sent=rep.bytes_sent["server"],
            total_bytes=sum(rep.bytes_sent.values()),
            round_seconds=rep.round_seconds,
            stage_seconds=dict(rep.stage_seconds),
            server_peak_bytes=rep.server_peak_bytes,
        )
        self.rounds.append(stats)
        return rep, stats

    def _identities(self, ids: Sequence[int]) -> tuple[dict[int, ed25519.Ed25519PrivateKey], dict[int, bytes]]:
        new = [c for c in ids if c not in self._identity_keys]
        if new:
            keys, directory = make_identities(new, secrets=self._secrets)
            self._identity_keys.update(keys)
            self._directory.update(directory)
        return self._identity_keys, self._directory

    # ------------------------------------------------------------------ aggregation
    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        dim = check_updates(updates)
        n = len(updates)
        if n < 3:
            raise ConfigurationError("secure aggregation needs at least 3 clients in a round", field="updates")
        params = self.params_for(n)
        value_bits = self.options.value_bits
        enc = RingEncoding(clip=self.clip, value_bits=value_bits, max_summands=n, modulus_bits=params.modulus_bits)
        by_id = {u.client_id: u for u in updates}
        ids = sorted(by_id)
        codec = self.codec.for_round([u.num_examples for u in updates])
        clipped = 0
        encoded: dict[int, np.ndarray] = {}
        for c in ids:
            x = np.asarray(by_id[c].delta, dtype=np.float64)
            if not np.all(np.isfinite(x)):
                raise ConfigurationError(f"client {c} sent NaN or infinity", field="updates")
            clipped += int(np.count_nonzero(np.abs(x) > self.clip))
            vec = codec.encode(np.clip(x, -self.clip, self.clip), by_id[c].num_examples)
            ints, _ = enc.quantize(vec, ctx.rng)
            encoded[c] = enc.to_ring(ints)
        plain = dim * value_bits / 8
        rep, stats = self._secure_round(params, ids, encoded, dim=dim + 1, ctx=ctx, clipped=clipped, plain_bytes=plain)
        assert rep.sum is not None  # _secure_round raised otherwise
        delta, _ = codec.decode(enc.decode(rep.sum))
        return AggregateResult(delta=delta, participants=rep.survivors, metrics=stats.metrics())
