"""``privagg bench paillier``: packed threshold Paillier vs plain python-paillier, side by side.

Both sides sum the *same* ``--clients`` x ``--params`` float vectors (uniform in
``[-clip, clip]``, seeded). Ours runs the whole protocol (quantise, offline randomness,
pack, encrypt, sign, encode; server decode + multiply; decryptors verify + decrypt;
combine + unpack) for each variant; python-paillier encrypts every value as its own
``EncryptedNumber`` (default encoding), adds them per coordinate and decrypts the sums. When
plain phe would take longer than ``--phe-budget`` seconds, it runs on the first ``S`` values
of every client and the per-value encrypt/add/decrypt times are extrapolated to the full
size (the output says so). Key generation is timed separately and excluded from both
throughputs (it is once per key); the fixed-base table is per-key setup too and is shown
with and without. ``values_per_second`` = ``clients * params`` / seconds, one core; all
times are CPU seconds of this process (``time.process_time``), robust to a shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from privagg.encoding import RingEncoding
from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng

__all__ = ["add_parser", "run_bench", "BenchResult"]

# CPU time of this process: the machine may be shared, and both sides run on one core
_clock = time.process_time


@dataclass
class BenchResult:
    rows: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(self.rows, indent=2, default=float)


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "paillier",
        help="packed Paillier (ours) vs python-paillier on the same vectors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--clients", type=int, default=10, help="number of clients N (default 10)")
    p.add_argument("--params", type=int, default=10_000, help="values per client M (default 10000)")
    p.add_argument("--key-bits", type=int, default=2048, help="2048 (default) or 3072")
    p.add_argument("--value-bits", type=int, default=16, help="quantisation bits per value (default 16)")
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument(
        "--randomness",
        choices=("fresh", "fixed-base"),
        default="fixed-base",
        help="headline variant's randomness (default fixed-base; the library default is fresh)",
    )
    p.add_argument("--exponent-bits", type=int, default=None, help="fixed-base exponent bits (default key_bits/2)")
    p.add_argument("--decryptors", type=int, default=1, help="headline variant's decryptors k (default 1: CRT)")
    p.add_argument("--threshold", type=int, default=1, help="headline variant's threshold t (default 1)")
    p.add_argument(
        "--variants",
        choices=("all", "headline"),
        default="all",
        help="also run the other randomness/decryption variants side by side (default all)",
    )
    p.add_argument(
        "--no-proofs", action="store_true", help="threshold variants without proofs of correct partial decryption"
    )
    p.add_argument("--phe-budget", type=float, default=30.0, help="seconds plain phe may take before subsampling")
    p.add_argument("--repeats", type=int, default=1, help="repeat each measurement, report medians (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--allow-insecure", action="store_true", help="accept key sizes below 2048 (smoke tests)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_main)


def _variant_name(randomness: str, decryptors: int, threshold: int) -> str:
    dec = "crt" if decryptors == 1 else f"threshold-{threshold}of{decryptors}"
    return f"{randomness}+{dec}"


def _run_ours(
    *,
    x: np.ndarray,
    clip: float,
    key_bits: int,
    value_bits: int,
    randomness: str,
    exponent_bits: int | None,
    decryptors: int,
    threshold: int,
    allow_insecure: bool,
    seed: int,
    repeats: int,
    proofs: bool,
) -> dict[str, Any]:
    from protocols.paillier import PaillierConfig, PaillierSession, PaillierSetup

    n_clients, m = x.shape
    cfg = PaillierConfig(
        key_bits=key_bits,
        value_bits=value_bits,
        max_clients=max(n_clients, 2),
        decryptors=decryptors,
        threshold=threshold,
        min_clients=min(2, n_clients),
        randomness=randomness,
        exponent_bits=exponent_bits,
        proofs=proofs,
        allow_insecure=allow_insecure,
    )
    setup = PaillierSetup.generate(cfg, clock=_clock)
    session = PaillierSession(setup, clock=_clock)
    enc = RingEncoding.for_sum(clip=clip, max_summands=cfg.max_clients, value_bits=value_bits)
    rng = simulation_rng(seed, "bench-paillier", "rounding")
    bound = enc.sum_error_bound(n_clients)
    runs = []
    correct = True
    for _ in range(repeats):
        t0 = _clock()
        ints = {c: enc.quantize(x[c], rng)[0] for c in range(n_clients)}
        quantise = _clock() - t0
        out = session.run_round(ints)
        exact = np.sum(np.stack(list(ints.values())), axis=0)
        decoded = out.sums / enc.scale
        err = float(np.max(np.abs(decoded - x.sum(axis=0))))
        correct = correct and bool(np.array_equal(out.sums, exact)) and err <= bound
        runs.append((quantise + out.total_seconds, quantise, out, err))
    runs.sort(key=lambda t: t[0])
    total, quantise, out, err = runs[len(runs) // 2]  # the median run by total time
    s = out.seconds
    values = n_clients * m
    encrypt = quantise + s["offline"] + s["encrypt"]
    decrypt = s["verify"] + s["decrypt"] + s["combine"]
    with_setup = total + setup.table_seconds
    return {
        "variant": _variant_name(randomness, decryptors, threshold),
        "correct": correct,
        "values_per_second": values / total,
        "values_per_second_incl_table": values / with_setup,
        "online_values_per_second": values / (total - s["offline"]),
        "offline_seconds": s["offline"],
        "online_seconds": total - s["offline"],
        "encrypt_seconds": encrypt,
        "aggregate_seconds": s["aggregate"],
        "decrypt_seconds": decrypt,
        "total_seconds": total,
        "phase_seconds": {"quantise": quantise, **s},
        "bytes_per_value": out.bytes_client_to_server / values,
        "bytes_to_decryptors": out.bytes_server_to_decryptors,
        "keygen_seconds": setup.keygen_seconds,
        "table_seconds": setup.table_seconds,
        "slots_per_ciphertext": cfg.layout.slots,
        "slot_bits": cfg.layout.slot_bits,
        "ciphertexts_per_client": out.ciphertexts_per_client,
        "exponent_bits": cfg.effective_exponent_bits if randomness == "fixed-base" else None,
        "max_abs_error": err,
        "repeats": repeats,
        "all_total_seconds": sorted(t[0] for t in runs),
        "error_bound": bound,
    }


def _run_phe(*, x: np.ndarray, key_bits: int, budget: float, repeats: int) -> dict[str, Any]:
    import phe

    n_clients, m = x.shape
    t0 = _clock()
    pk, sk = phe.generate_paillier_keypair(n_length=key_bits)
    keygen = _clock() - t0
    # probe the per-value encryption cost, then pick the subsample that fits the budget
    [pk.encrypt(float(v)) for v in x[0, :3]]
    t0 = _clock()
    [pk.encrypt(float(v)) for v in x[0, :5]]
    per = (_clock() - t0) / 5
    per_repeat = budget / repeats
    est_total = per * n_clients * m * 1.15
    sample = m if est_total <= per_repeat else max(5, min(m, int(per_repeat / (per * n_clients * 1.15))))
    correct = True
    runs = []
    for rep in range(repeats):
        xs = x[:, rep * sample % m :][:, :sample]
        if xs.shape[1] < sample:
            xs = x[:, :sample]
        t0 = _clock()
        cts = [[pk.encrypt(float(v)) for v in row] for row in xs]
        t_enc = _clock() - t0
        t0 = _clock()
        sums = list(cts[0])
        for row in cts[1:]:
            sums = [a + b for a, b in zip(sums, row)]
        t_add = _clock() - t0
        t0 = _clock()
        dec = np.array([sk.decrypt(s) for s in sums])
        t_dec = _clock() - t0
        correct = correct and bool(np.allclose(dec, xs.sum(axis=0), rtol=1e-9, atol=1e-9))
        scale = m / sample
        runs.append((t_enc * scale + t_add * scale + t_dec * scale, t_enc * scale, t_add * scale, t_dec * scale))
    runs.sort()
    total, encrypt, aggregate, decrypt = runs[len(runs) // 2]
    ct_bytes = (pk.nsquare.bit_length() + 7) // 8
    return {
        "correct": correct,
        "values_per_second": n_clients * m / total,
        "encrypt_seconds": encrypt,
        "aggregate_seconds": aggregate,
        "decrypt_seconds": decrypt,
        "total_seconds": total,
        "sampled_values_per_client": sample,
        "extrapolated": sample < m,
        "bytes_per_value": ct_bytes + 4,  # ciphertext + a 32-bit exponent per EncryptedNumber
        "keygen_seconds": keygen,
        "repeats": repeats,
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
    decryptors: int = 1,
    threshold: int = 1,
    variants: str = "all",
    phe_budget: float = 30.0,
    seed: int = 0,
    allow_insecure: bool = False,
    repeats: int = 1,
    proofs: bool = True,
) -> BenchResult:
    """Run ours (one or several variants) and python-paillier on the same vectors."""
    if clients < 2:
        raise ConfigurationError(f"got {clients}", field="--clients", accepted=">= 2")
    if params < 1:
        raise ConfigurationError(f"got {params}", field="--params", accepted=">= 1")
    if repeats < 1:
        raise ConfigurationError(f"got {repeats}", field="--repeats", accepted=">= 1")
    if not phe_budget > 0:
        raise ConfigurationError(f"got {phe_budget}", field="--phe-budget", accepted="> 0")
    x = simulation_rng(seed, "bench-paillier", "vectors").uniform(-clip, clip, size=(clients, params))
    common = dict(
        x=x,
        clip=clip,
        key_bits=key_bits,
        value_bits=value_bits,
        exponent_bits=exponent_bits,
        allow_insecure=allow_insecure,
        seed=seed,
        repeats=repeats,
        proofs=proofs,
    )
    plan = [(randomness, decryptors, threshold)]
    if variants == "all":
        for combo in (("fresh", 1, 1), ("fresh", 3, 2), ("fixed-base", 1, 1), ("fixed-base", 3, 2)):
            if combo not in plan:
                plan.append(combo)
    results = [
        _run_ours(randomness=r, decryptors=k, threshold=t, **common)  # type: ignore[arg-type]
        for r, k, t in plan
    ]
    base = _run_phe(x=x, key_bits=key_bits, budget=phe_budget, repeats=repeats)
    head = results[0]
    for r in results:
        r["speedup_vs_phe"] = r["values_per_second"] / base["values_per_second"]
        r["speedup_vs_phe_incl_table"] = r["values_per_second_incl_table"] / base["values_per_second"]
        r["bytes_ratio_vs_phe"] = base["bytes_per_value"] / r["bytes_per_value"]
    rows: dict[str, Any] = {
        "clients": clients,
        "params": params,
        "key_bits": key_bits,
        "value_bits": value_bits,
        "variant": head["variant"],
        "repeats": repeats,
        "proofs": proofs,
        "correct": bool(head["correct"] and base["correct"]),
        "values_per_second": head["values_per_second"],
        "online_values_per_second": head["online_values_per_second"],
        "offline_seconds": head["offline_seconds"],
        "online_seconds": head["online_seconds"],
        "phe_values_per_second": base["values_per_second"],
        "speedup_vs_phe": head["speedup_vs_phe"],
        "bytes_per_value": head["bytes_per_value"],
        "phe_bytes_per_value": base["bytes_per_value"],
        "bytes_ratio_vs_phe": head["bytes_ratio_vs_phe"],
        "encrypt_seconds": head["encrypt_seconds"],
        "aggregate_seconds": head["aggregate_seconds"],
        "decrypt_seconds": head["decrypt_seconds"],
        "phe_encrypt_seconds": base["encrypt_seconds"],
        "phe_aggregate_seconds": base["aggregate_seconds"],
        "phe_decrypt_seconds": base["decrypt_seconds"],
        "phe_extrapolated": base["extrapolated"],
        "phe_sampled_values_per_client": base["sampled_values_per_client"],
        "phe_correct": base["correct"],
        "variants": results,
        "phe": base,
        "notes": [
            "values_per_second: clients*params / CPU seconds of every party on one core, randomness precomputation "
            "included; key generation excluded for both (once per key); the fixed-base table (once per key, "
            "public) is excluded from values_per_second and included in values_per_second_incl_table",
            "fresh randomness: textbook r^n (DCR only); fixed-base: DJN h_s^x with key_bits/2-bit exponents "
            "(an assumption beyond DCR)",
            "threshold variants: t decryptors each exponentiate every aggregate ciphertext by a ~2*key_bits-bit "
            "share (no CRT possible) and, with proofs, prove it (batched); timings are summed over decryptors",
        ],
    }
    return BenchResult(rows)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0 or not math.isfinite(v):
            return str(v)
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}"
    return str(v)


def _main(args: argparse.Namespace) -> int:
    res = run_bench(
        clients=args.clients,
        params=args.params,
        key_bits=args.key_bits,
        value_bits=args.value_bits,
        clip=args.clip,
        randomness=args.randomness,
        exponent_bits=args.exponent_bits,
        decryptors=args.decryptors,
        threshold=args.threshold,
        variants=args.variants,
        phe_budget=args.phe_budget,
        seed=args.seed,
        allow_insecure=args.allow_insecure,
        repeats=args.repeats,
        proofs=not args.no_proofs,
    )
    r = res.rows
    if args.json:
        print(res.to_json())
        return 0 if r["correct"] else 1
    out = sys.stdout
    print(
        f"privagg bench paillier: N={r['clients']} clients x M={r['params']} values, {r['key_bits']}-bit keys", file=out
    )
    keys = [k for k in r if k not in ("variants", "phe", "notes")]
    width = max(len(k) for k in keys)
    for k in keys:
        print(f"  {k:<{width}}  {_fmt(r[k])}", file=out)
    if r["phe_extrapolated"]:
        print(
            f"  (python-paillier ran on {r['phe_sampled_values_per_client']} values per client; "
            "its times are extrapolated to the full size)",
            file=out,
        )
    cols = [
        "variant",
        "correct",
        "values_per_second",
        "speedup_vs_phe",
        "speedup_vs_phe_incl_table",
        "online_values_per_second",
        "encrypt_seconds",
        "aggregate_seconds",
        "decrypt_seconds",
        "bytes_per_value",
        "keygen_seconds",
        "table_seconds",
    ]
    print("\n  variants, side by side (same vectors, same run):", file=out)
    print("  " + " | ".join(cols), file=out)
    for v in r["variants"]:
        print("  " + " | ".join(_fmt(v[c]) for c in cols), file=out)
    print("\n  notes:", file=out)
    for n in r["notes"]:
        print(f"  - {n}", file=out)
    print(f"  medians of {r['repeats']} repeat(s); phe key generation {r['phe']['keygen_seconds']:.2f} s", file=out)
    return 0 if r["correct"] else 1
