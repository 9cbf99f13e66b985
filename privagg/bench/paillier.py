"""Paillier bench engine: packed threshold Paillier (ours) vs plain python-paillier, side by side.

Both sides sum the *same* ``clients`` x ``params`` float vectors (uniform in
``[-clip, clip]``, seeded). Ours runs the whole protocol through the real parties
(:class:`protocols.paillier.PaillierSession`: quantise, offline randomness, pack, encrypt,
sign, encode; server decode + multiply; decryptors verify + decrypt; combine + unpack) for
each variant; python-paillier encrypts every value as its own ``EncryptedNumber`` (default
encoding), adds them per coordinate and decrypts the sums. When plain phe would take longer
than ``phe_budget`` seconds, it runs on the first ``S`` values of every client and the
per-value encrypt/add/decrypt times are extrapolated to the full size (the result says so).
Key generation is timed separately and excluded from both throughputs (it is once per key);
the fixed-base table is per-key setup too and is shown with and without.
``values_per_second`` = ``clients * params`` / seconds, one core; all times are CPU seconds
of this process (``time.process_time``), robust to a shared machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from privagg.encoding import RingEncoding
from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng
from protocols.paillier import PaillierConfig, PaillierSession, PaillierSetup, ThresholdKeyShare

from .timing import JsonResult, middle, timed

__all__ = ["PaillierVariantResult", "PheResult", "PaillierBenchResult", "ProgressHook", "run_bench", "NOTES"]

#: ``progress(what, done, total)``: called before each step (``what`` is about to run, ``done`` of
#: ``total`` steps are finished) and once at the end (``done == total``)
ProgressHook = Callable[[str, int, int], None]


class _Steps:
    """Counts the bench's steps for a progress hook (key setup, each round, the ceiling; phe likewise)."""

    def __init__(self, total: int, hook: ProgressHook | None) -> None:
        self.total, self.done, self.hook, self._started = total, 0, hook, False

    def __call__(self, what: str) -> None:
        if self._started:
            self.done += 1
        self._started = True
        if self.hook is not None:
            self.hook(what, self.done, self.total)

    def finish(self) -> None:
        self.done = self.total
        if self.hook is not None:
            self.hook("done", self.total, self.total)


# CPU time of this process: the machine may be shared, and both sides run on one core
_clock = time.process_time

#: the other randomness/decryption variants run beside the headline one (randomness, decryptors, threshold)
_VARIANTS = (("fresh", 1, 1), ("fresh", 3, 2), ("fixed-base", 1, 1), ("fixed-base", 3, 2))

NOTES = (
    "values_per_second: clients*params / CPU seconds of every party on one core, randomness precomputation "
    "included; key generation excluded for both (once per key); the fixed-base table (once per key, "
    "public) is excluded from values_per_second and included in values_per_second_incl_table",
    "fresh randomness: textbook r^n (DCR only); fixed-base: DJN h_s^x with key_bits/2-bit exponents "
    "(an assumption beyond DCR)",
    "threshold variants: t decryptors each exponentiate every aggregate ciphertext by a ~2*key_bits-bit "
    "share (no CRT possible) and, with proofs, prove it (batched); timings are summed over decryptors",
    "every client proves plaintext knowledge of each ciphertext (online: one commitment per contribution, by "
    "the fixed-base table for fixed-base randomness); the t decryptors that decrypt verify the proofs "
    "(batched, one multi-exponentiation each) and endorse the set, the rest of the quorum (all 3 for 2-of-3) "
    "endorse it shown those t endorsements; the server screens the proofs only if a decryptor refuses",
    "fixed-base table window: 10 for 2048-bit keys unless --window says otherwise (~54 MB public table, 103 "
    "multiplications per obfuscator; 9: ~30 MB, 114); the threshold key's verification base v has its own "
    "small table of powers (v^(2^(6j)), ~0.4 MB), used by every partial-decryption proof and check",
    "ceiling_seconds: the t partial decryptions (one CRT decryption for k=1) per aggregate ciphertext alone; "
    "ceiling_speedup_vs_phe = phe total / ceiling; fraction_of_ceiling = ceiling / our total",
    "parallel_decryptors_seconds: the same CPU seconds with the decryptors in parallel (per batch of requests "
    "-- first-wave endorsements, second-wave endorsements, partial decryptions -- the longest answer instead "
    "of their sum)",
)


@dataclass(frozen=True, slots=True)
class PaillierVariantResult(JsonResult):
    """One variant of ours (the median run by total time of ``repeats``)."""

    variant: str
    correct: bool
    values_per_second: float
    values_per_second_incl_table: float
    online_values_per_second: float
    offline_seconds: float
    online_seconds: float
    encrypt_seconds: float
    aggregate_seconds: float
    decrypt_seconds: float
    total_seconds: float
    phase_seconds: Mapping[str, float]
    bytes_per_value: float
    bytes_to_decryptors: int
    keygen_seconds: float
    table_seconds: float
    slots_per_ciphertext: int
    slot_bits: int
    ciphertexts_per_client: int
    exponent_bits: int | None
    max_abs_error: float
    repeats: int
    all_total_seconds: tuple[float, ...]
    error_bound: float
    ceiling_seconds: float  # the decryptors' irreducible work: t partial (or 1 CRT) decryptions per ciphertext
    parallel_decryptors_seconds: float  # total_seconds with the decryptors working in parallel

    def compared(self, phe: PheResult) -> dict[str, Any]:
        """:meth:`to_dict` with the ratios to python-paillier."""
        return {
            **self.to_dict(),
            "ceiling_speedup_vs_phe": phe.total_seconds / self.ceiling_seconds,
            "fraction_of_ceiling": self.ceiling_seconds / self.total_seconds,
            "speedup_vs_phe_parallel_decryptors": phe.total_seconds / self.parallel_decryptors_seconds,
            "speedup_vs_phe": self.values_per_second / phe.values_per_second,
            "speedup_vs_phe_incl_table": self.values_per_second_incl_table / phe.values_per_second,
            "bytes_ratio_vs_phe": phe.bytes_per_value / self.bytes_per_value,
        }


@dataclass(frozen=True, slots=True)
class PheResult(JsonResult):
    """Plain python-paillier on the same vectors (extrapolated from ``sampled_values_per_client``)."""

    correct: bool
    values_per_second: float
    encrypt_seconds: float
    aggregate_seconds: float
    decrypt_seconds: float
    total_seconds: float
    sampled_values_per_client: int
    extrapolated: bool
    bytes_per_value: int
    keygen_seconds: float
    repeats: int


@dataclass(frozen=True, slots=True)
class PaillierBenchResult(JsonResult):
    """The headline variant (``variants[0]``) and the others, against python-paillier."""

    clients: int
    params: int
    key_bits: int
    value_bits: int
    repeats: int
    proofs: bool
    variants: tuple[PaillierVariantResult, ...]
    phe: PheResult

    @property
    def correct(self) -> bool:
        return self.variants[0].correct and self.phe.correct

    def to_dict(self) -> dict[str, Any]:
        head, base = self.variants[0].compared(self.phe), self.phe
        return {
            "clients": self.clients,
            "params": self.params,
            "key_bits": self.key_bits,
            "value_bits": self.value_bits,
            "variant": head["variant"],
            "repeats": self.repeats,
            "proofs": self.proofs,
            "correct": self.correct,
            "values_per_second": head["values_per_second"],
            "online_values_per_second": head["online_values_per_second"],
            "offline_seconds": head["offline_seconds"],
            "online_seconds": head["online_seconds"],
            "phe_values_per_second": base.values_per_second,
            "speedup_vs_phe": head["speedup_vs_phe"],
            "bytes_per_value": head["bytes_per_value"],
            "phe_bytes_per_value": base.bytes_per_value,
            "bytes_ratio_vs_phe": head["bytes_ratio_vs_phe"],
            "encrypt_seconds": head["encrypt_seconds"],
            "aggregate_seconds": head["aggregate_seconds"],
            "decrypt_seconds": head["decrypt_seconds"],
            "phe_encrypt_seconds": base.encrypt_seconds,
            "phe_aggregate_seconds": base.aggregate_seconds,
            "phe_decrypt_seconds": base.decrypt_seconds,
            "phe_extrapolated": base.extrapolated,
            "phe_sampled_values_per_client": base.sampled_values_per_client,
            "phe_correct": base.correct,
            "variants": [v.compared(base) for v in self.variants],
            "phe": base.to_dict(),
            "notes": list(NOTES),
        }


def run_bench(
    *,
    clients: int,
    params: int,
    key_bits: int = 2048,
    value_bits: int = 16,
    clip: float = 1.0,
    randomness: str = "fixed-base",
    exponent_bits: int | None = None,
    window: int | None = None,
    decryptors: int = 1,
    threshold: int = 1,
    variants: str = "all",
    phe_budget: float = 30.0,
    seed: int = 0,
    allow_insecure: bool = False,
    repeats: int = 1,
    proofs: bool = True,
    progress: ProgressHook | None = None,
) -> PaillierBenchResult:
    """Run ours (the headline variant, then with ``variants="all"`` the others) and python-paillier.

    ``progress``: told before each step (per variant: key setup, each repeat, the ceiling; then
    python-paillier's key and repeats), for a progress bar with a time estimate.
    """
    if clients < 2:
        raise ConfigurationError(f"got {clients}", field="--clients", accepted=">= 2")
    if params < 1:
        raise ConfigurationError(f"got {params}", field="--params", accepted=">= 1")
    if repeats < 1:
        raise ConfigurationError(f"got {repeats}", field="--repeats", accepted=">= 1")
    if not phe_budget > 0:
        raise ConfigurationError(f"got {phe_budget}", field="--phe-budget", accepted="> 0")
    if variants not in ("all", "headline"):
        raise ConfigurationError(f"got {variants!r}", field="--variants", accepted="all, headline")
    x = simulation_rng(seed, "bench-paillier", "vectors").uniform(-clip, clip, size=(clients, params))
    plan = [(randomness, decryptors, threshold)]
    if variants == "all":
        plan += [v for v in _VARIANTS if v != plan[0]]
    steps = _Steps(len(plan) * (repeats + 2) + repeats + 1, progress)
    ours = tuple(
        _run_ours(
            PaillierConfig(
                key_bits=key_bits,
                value_bits=value_bits,
                max_clients=max(clients, 2),
                decryptors=k,
                threshold=t,
                min_clients=min(2, clients),
                randomness=r,
                exponent_bits=exponent_bits,
                window=window,
                proofs=proofs,
                allow_insecure=allow_insecure,
            ),
            x=x,
            clip=clip,
            seed=seed,
            repeats=repeats,
            step=steps,
        )
        for r, k, t in plan
    )
    base = _run_phe(x=x, key_bits=key_bits, budget=phe_budget, repeats=repeats, step=steps)
    steps.finish()
    return PaillierBenchResult(
        clients=clients,
        params=params,
        key_bits=key_bits,
        value_bits=value_bits,
        repeats=repeats,
        proofs=proofs,
        variants=ours,
        phe=base,
    )


def _variant_name(cfg: PaillierConfig) -> str:
    dec = "crt" if cfg.decryptors == 1 else f"threshold-{cfg.threshold}of{cfg.decryptors}"
    return f"{cfg.randomness}+{dec}"


def _run_ours(
    cfg: PaillierConfig, *, x: np.ndarray, clip: float, seed: int, repeats: int, step: Callable[[str], None]
) -> PaillierVariantResult:
    n_clients, m = x.shape
    name = _variant_name(cfg)
    step(f"{name}: keys and tables")
    setup = PaillierSetup.generate(cfg, clock=_clock)
    session = PaillierSession(setup, clock=_clock)
    enc = RingEncoding.for_sum(clip=clip, max_summands=cfg.max_clients, value_bits=cfg.value_bits)
    rng = simulation_rng(seed, "bench-paillier", "rounding")
    bound = enc.sum_error_bound(n_clients)
    runs = []
    correct = True
    for rep in range(repeats):
        step(f"{name}: round {rep + 1} of {repeats}")
        ints, quantise = timed(lambda: {c: enc.quantize(x[c], rng)[0] for c in range(n_clients)}, clock=_clock)
        out = session.run_round(ints)
        exact = np.sum(np.stack(list(ints.values())), axis=0)
        err = float(np.max(np.abs(out.sums / enc.scale - x.sum(axis=0))))
        correct = correct and bool(np.array_equal(out.sums, exact)) and err <= bound
        runs.append((quantise + out.total_seconds, quantise, out, err))
    total, quantise, out, err = middle(runs, key=lambda run: run[0])
    s = out.seconds
    # the ceiling: only the decryptions every aggregate ciphertext needs (t partial, or one CRT, decryptions)
    step(f"{name}: ceiling")
    pk = setup.public_key
    probe = [pk.encrypt(j + 1) for j in range(out.ciphertexts_per_client)]
    holders = setup.decryption_keys[: cfg.threshold] if setup.threshold_key is not None else setup.decryption_keys[:1]
    ceiling = timed(
        lambda: [
            k.partial_decrypt(c) if isinstance(k, ThresholdKeyShare) else k.decrypt(c) for k in holders for c in probe
        ],
        clock=_clock,
    )[1]
    values = n_clients * m
    return PaillierVariantResult(
        variant=name,
        correct=correct,
        values_per_second=values / total,
        values_per_second_incl_table=values / (total + setup.table_seconds),
        online_values_per_second=values / (total - s["offline"]),
        offline_seconds=s["offline"],
        online_seconds=total - s["offline"],
        encrypt_seconds=quantise + s["offline"] + s["encrypt"],
        aggregate_seconds=s["aggregate"],
        decrypt_seconds=s["verify"] + s["decrypt"] + s["combine"],
        total_seconds=total,
        phase_seconds={"quantise": quantise, **s},
        bytes_per_value=out.bytes_client_to_server / values,
        bytes_to_decryptors=out.bytes_server_to_decryptors,
        keygen_seconds=setup.keygen_seconds,
        table_seconds=setup.table_seconds,
        slots_per_ciphertext=cfg.layout.slots,
        slot_bits=cfg.layout.slot_bits,
        ciphertexts_per_client=out.ciphertexts_per_client,
        exponent_bits=cfg.effective_exponent_bits if cfg.randomness == "fixed-base" else None,
        max_abs_error=err,
        repeats=repeats,
        all_total_seconds=tuple(sorted(run[0] for run in runs)),
        error_bound=bound,
        ceiling_seconds=ceiling,
        parallel_decryptors_seconds=total
        - out.extra["decryptors_serial_seconds"]
        + out.extra["decryptors_parallel_seconds"],
    )


def _run_phe(*, x: np.ndarray, key_bits: int, budget: float, repeats: int, step: Callable[[str], None]) -> PheResult:
    import phe

    n_clients, m = x.shape
    step("python-paillier: keys")
    (pk, sk), keygen = timed(lambda: phe.generate_paillier_keypair(n_length=key_bits), clock=_clock)
    # probe the per-value encryption cost, then pick the subsample that fits the budget
    [pk.encrypt(float(v)) for v in x[0, :3]]
    per = timed(lambda: [pk.encrypt(float(v)) for v in x[0, :5]], clock=_clock)[1] / 5
    per_repeat = budget / repeats
    est_total = per * n_clients * m * 1.15
    sample = m if est_total <= per_repeat else max(5, min(m, int(per_repeat / (per * n_clients * 1.15))))
    scale = m / sample
    correct = True
    runs = []
    for rep in range(repeats):
        step(f"python-paillier: run {rep + 1} of {repeats}")
        xs = x[:, rep * sample % m :][:, :sample]
        if xs.shape[1] < sample:
            xs = x[:, :sample]
        dec, t_enc, t_add, t_dec = _phe_sum(pk, sk, xs)
        correct = correct and bool(np.allclose(dec, xs.sum(axis=0), rtol=1e-9, atol=1e-9))
        runs.append((t_enc * scale + t_add * scale + t_dec * scale, t_enc * scale, t_add * scale, t_dec * scale))
    total, encrypt, aggregate, decrypt = middle(runs, key=lambda run: run[0])
    return PheResult(
        correct=correct,
        values_per_second=n_clients * m / total,
        encrypt_seconds=encrypt,
        aggregate_seconds=aggregate,
        decrypt_seconds=decrypt,
        total_seconds=total,
        sampled_values_per_client=sample,
        extrapolated=sample < m,
        bytes_per_value=(pk.nsquare.bit_length() + 7) // 8 + 4,  # ciphertext + a 32-bit exponent per EncryptedNumber
        keygen_seconds=keygen,
        repeats=repeats,
    )


def _phe_sum(pk: Any, sk: Any, xs: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """python-paillier: encrypt every value, add per coordinate, decrypt; the sums and the three times."""
    cts, t_enc = timed(lambda: [[pk.encrypt(float(v)) for v in row] for row in xs], clock=_clock)
    sums, t_add = timed(lambda: [sum(col[1:], col[0]) for col in zip(*cts)], clock=_clock)
    dec, t_dec = timed(lambda: np.array([sk.decrypt(s) for s in sums]), clock=_clock)
    return dec, t_enc, t_add, t_dec
