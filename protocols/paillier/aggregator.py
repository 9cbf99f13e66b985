"""``aggregator = "paillier"``: FedAvg rounds summed under packed threshold Paillier.

Per round: every client clips and quantises its update with the protocol's one
:class:`~privagg.encoding.RingEncoding` (stochastic rounding, one scale for everybody),
packs and encrypts it; the server multiplies the ciphertexts; ``threshold`` decryptors
check the signed contributions and decrypt the aggregate only; the server decodes the
(weighted) mean. Keys are made once per aggregator, at the first round.

Weighting: with ``weighted=True`` the example counts are public to the server (as in plain
FedAvg); client ``i`` encodes ``w_i * clip(x_i)`` with ``w_i = n_i / sum(n)`` so the decrypted
sum *is* the weighted mean (each summand stays in ``[-clip, clip]``, so the slot headroom
for ``max_clients`` summands still holds). With ``weighted=False`` clients encode
``clip(x_i)`` and the server divides the sum by the number of participants.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from privagg.encoding import RingEncoding
from privagg.errors import ConfigurationError, ProtocolAbort
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from privagg.report import Section
from protocols.aggregation import (
    AggregateResult,
    Aggregator,
    ClientUpdate,
    RoundContext,
    check_updates,
    register_aggregator,
)

from .messages import NO_MODEL_DIGEST, model_digest
from .protocol import PHASES, PaillierConfig, PaillierSession, PaillierSetup

__all__ = ["PaillierAggregator"]


@register_aggregator("paillier")
class PaillierAggregator(Aggregator):
    """Packed Paillier summation with threshold decryption as a FedAvg aggregator.

    Options: ``key_bits`` (2048 | 3072; smaller only with ``allow_insecure``), ``clip``
    (per-coordinate bound), ``value_bits`` (quantisation), ``decryptors`` / ``threshold``
    (``decryptors=1`` means one key holder with CRT decryption), ``min_clients`` (>= 2),
    ``max_clients`` (slot headroom; default the population), ``randomness``
    ("fresh" | "fixed-base"), ``exponent_bits`` (fixed-base only), ``weighted``, ``proofs``
    (threshold partial decryptions carry proofs of correctness).
    """

    name = "paillier"
    needs_plaintext_updates = False

    def __init__(
        self,
        *,
        key_bits: int = 2048,
        clip: float = 1.0,
        value_bits: int = 16,
        decryptors: int = 3,
        threshold: int = 2,
        min_clients: int = 2,
        max_clients: int | None = None,
        randomness: str = "fresh",
        exponent_bits: int | None = None,
        weighted: bool = True,
        proofs: bool = True,
        allow_insecure: bool = False,
        secrets: SecretSource = SYSTEM_SECRETS,
    ) -> None:
        for fname, v in (("key_bits", key_bits), ("value_bits", value_bits), ("decryptors", decryptors)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigurationError(f"must be an integer, got {v!r}", field=fname)
        if not (isinstance(clip, (int, float)) and np.isfinite(clip) and clip > 0):
            raise ConfigurationError(f"must be a positive finite number, got {clip!r}", field="clip")
        if max_clients is not None and max_clients < 2:
            raise ConfigurationError(f"got {max_clients}", field="max_clients", accepted=">= 2")
        self.clip = float(clip)
        self.weighted = bool(weighted)
        self._secrets = secrets
        self._max_clients = max_clients
        self._options: dict[str, Any] = dict(
            key_bits=key_bits,
            value_bits=value_bits,
            decryptors=decryptors,
            threshold=threshold,
            min_clients=min_clients,
            randomness=randomness,
            exponent_bits=exponent_bits,
            proofs=proofs,
            allow_insecure=allow_insecure,
        )
        # validate everything now (a probe layout for max(min_clients, max_clients) summands)
        probe = PaillierConfig(max_clients=max(max_clients or 2, min_clients, 2), **self._options)
        RingEncoding.for_sum(clip=self.clip, max_summands=probe.max_clients, value_bits=value_bits)
        self.config: PaillierConfig | None = None
        self.setup: PaillierSetup | None = None
        self.session: PaillierSession | None = None
        self.encoding: RingEncoding | None = None
        self._rounds: list[dict[str, Any]] = []

    def _ensure_setup(self, ctx: RoundContext, cohort: int) -> PaillierSession:
        if self.session is None:
            max_clients = self._max_clients or max(ctx.population, cohort, 2)
            self.config = PaillierConfig(max_clients=max_clients, **self._options)
            self.encoding = RingEncoding.for_sum(
                clip=self.clip, max_summands=max_clients, value_bits=self.config.value_bits
            )
            self.setup = PaillierSetup.generate(self.config, secrets=self._secrets)
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
        session = self._ensure_setup(ctx, len(updates))
        enc = self.encoding
        assert enc is not None and self.setup is not None and self.config is not None
        t0 = time.perf_counter()
        if self.weighted:
            w = np.array([u.num_examples for u in updates], dtype=np.float64)
            if w.sum() <= 0:
                raise ConfigurationError("all clients report zero examples", field="updates")
            w = w / w.sum()
        else:
            w = np.ones(len(updates))
        clipped = 0
        ints: dict[int, np.ndarray] = {}
        for u, wi in zip(updates, w):
            x = np.asarray(u.delta, dtype=np.float64)
            if not np.all(np.isfinite(x)):
                raise ConfigurationError(f"client {u.client_id} sent NaN or infinity", field="updates")
            clipped += int(np.count_nonzero(np.abs(x) > self.clip))
            v, _ = enc.quantize(np.clip(x, -self.clip, self.clip) * wi, ctx.rng)
            ints[u.client_id] = v
        encode_seconds = time.perf_counter() - t0
        metrics: dict[str, Any] = {
            "paillier_clipped": clipped,
            "paillier_encode_seconds": encode_seconds,
        }
        if first:
            metrics["paillier_keygen_seconds"] = self.setup.keygen_seconds
            metrics["paillier_table_seconds"] = self.setup.table_seconds
        try:
            digest = NO_MODEL_DIGEST if ctx.global_params is None else model_digest([ctx.global_params])
            out = session.run_round(ints, round=ctx.round, model_digest=digest)
        except ProtocolAbort as e:
            # the decryptors refused (e.g. fewer than min_clients): the round is skipped, nothing decrypted
            metrics["paillier_aborted"] = e.reason
            self._rounds.append({"round": ctx.round, "aborted": e.reason})
            return AggregateResult(delta=np.zeros(dim), participants=(), metrics=metrics)
        total = out.sums.astype(np.float64) / enc.scale
        delta = total if self.weighted else total / len(updates)
        for phase in PHASES:
            metrics[f"paillier_{phase}_seconds"] = out.seconds[phase]
        metrics.update(
            paillier_seconds=out.total_seconds + encode_seconds,
            paillier_bytes_up=out.bytes_client_to_server,
            paillier_bytes_per_client=out.bytes_client_to_server / len(updates),
            paillier_bytes_to_decryptors=out.bytes_server_to_decryptors,
            paillier_bytes_from_decryptors=out.bytes_decryptors_to_server,
            paillier_ciphertexts_per_client=out.ciphertexts_per_client,
            paillier_error_bound=enc.sum_error_bound(len(updates)) / (1 if self.weighted else len(updates)),
        )
        self._rounds.append({"round": ctx.round, "clients": len(updates), "dim": dim, **metrics})
        return AggregateResult(delta=delta, participants=out.participants, metrics=metrics)

    def report_sections(self) -> list[Section]:
        if self.config is None or self.setup is None:
            return []
        cfg = self.config
        done = [r for r in self._rounds if "aborted" not in r]
        aborted = [r for r in self._rounds if "aborted" in r]

        def med(key: str) -> float:
            vals = [float(r[key]) for r in done if key in r]
            return statistics.median(vals) if vals else float("nan")

        layout = cfg.layout
        decrypt_desc = (
            "one key holder (CRT decryption)"
            if cfg.decryptors == 1
            else f"threshold {cfg.threshold}-of-{cfg.decryptors} (Damgård–Jurik/Shoup, trusted dealer)"
        )
        rand_desc = cfg.randomness
        if cfg.randomness == "fixed-base":
            rand_desc += f" ({cfg.effective_exponent_bits}-bit exponents)"
        summary = [
            ("key", f"{cfg.key_bits}-bit Paillier, {decrypt_desc}"),
            ("randomness", rand_desc),
            (
                "packing",
                f"{layout.slots} slots x {layout.slot_bits} bits, {cfg.value_bits}-bit values, "
                f"headroom for {cfg.max_clients} clients",
            ),
            ("key generation (once)", f"{self.setup.keygen_seconds:.2f} s"),
            ("rounds decrypted / refused", f"{len(done)} / {len(aborted)}"),
            ("median seconds per round (all parties, one core)", f"{med('paillier_seconds'):.3f}"),
            ("median upload per client per round", f"{med('paillier_bytes_per_client') / 1e3:.1f} kB"),
        ]
        if done:
            dim = done[0]["dim"]
            summary.append(("upload expansion vs float32", f"{med('paillier_bytes_per_client') / (4 * dim):.2f}x"))
        rows = [[phase, f"{med(f'paillier_{phase}_seconds'):.4f}"] for phase in PHASES]
        rows.insert(0, ["encode (clip + quantise)", f"{med('paillier_encode_seconds'):.4f}"])
        proofs = (
            "partial decryptions carry batch proofs of correctness (a cheating decryptor is detected)"
            if cfg.proofs and cfg.decryptors > 1
            else "partial decryptions carry no correctness proofs"
        )
        text = (
            "The server sees only ciphertexts; the decryptors decrypt only an aggregate of at least "
            f"{cfg.min_clients} distinct clients whose Ed25519-signed contributions they re-multiply, once per "
            f"round. Assumptions: the threshold key comes from a trusted dealer who erases p, q; {proofs}; "
            "clients are not range-checked (a malicious client can corrupt, not read, the sum)."
        )
        if cfg.randomness == "fixed-base":
            text += " Randomness h_s^x with a public fixed base (DJN variant): rests on an assumption beyond DCR."
        return [
            Section(
                key="paillier",
                title="Paillier aggregation cost",
                data={"config": {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}, "rounds": self._rounds},
                summary=summary,
                tables=[("Median seconds per phase and round", ["phase", "seconds"], rows)],
                text=text,
            )
        ]
