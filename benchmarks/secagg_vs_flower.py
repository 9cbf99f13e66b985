#!/usr/bin/env python3
"""privagg SecAgg+ vs Flower 1.41's own SecAgg+, side by side in one run, and our other figures.

    python benchmarks/secagg_vs_flower.py                     # N=100, M=1e5, 10% dropout (Flower's case)
    python benchmarks/secagg_vs_flower.py --scenario large    # N=1000, M=1e6, 30% dropout, active, derived graph
    python benchmarks/secagg_vs_flower.py --scenario expansion  # N=1024, M=2^20 upload expansion
    python benchmarks/secagg_vs_flower.py --scenario all
    python benchmarks/secagg_vs_flower.py --scenario verifier # Ed25519 verify: libsodium vs OpenSSL, A/B

Flower runs through ``../shared/peers/flower_secaggplus.py --engine inproc`` (its unmodified
``SecAggPlusWorkflow`` + ``secaggplus_mod``, all clients in one process, one core), in a
subprocess *between* our repetitions so both see the same machine load. Ours runs the same
setting (N clients, M parameters, 10% of clients dropping after sharing keys, 14 neighbours and
threshold 10 = Flower's num_shares 15 counting the client itself) in semi-honest mode (Flower's
threat model) and active mode, plus the parameters :meth:`SecAggParams.derive` picks. Medians
of ``--repeat`` rounds; ratios are Flower's median round time over ours.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from privagg.bench.secagg import SecAggBenchResult, combine_runs, run_bench
from privagg.bench.timing import median
from secagg import ClientPolicy, crypto

#: the loosest policy a client can hold: no colluder assumed, any roster of two or more (it still adds the
#: consistency quorum before a reveal)
LOOSEST = ClientPolicy(min_clients=2, dropout_rate=0.0, corruption_rate=0.0)

# ../shared/peers beside the repository (override with PRIVAGG_FLOWER_HARNESS)
FLOWER = Path(
    os.environ.get(
        "PRIVAGG_FLOWER_HARNESS", Path(__file__).resolve().parents[2] / "shared" / "peers" / "flower_secaggplus.py"
    )
)


def _flower(n: int, m: int, dropout: float, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "flower.json"
        cmd = [sys.executable, str(FLOWER), "--engine", "inproc", "--clients", str(n), "--params", str(m)]
        cmd += ["--dropout", str(dropout), "--repeat", str(repeat), "--json", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if not out.exists():
            raise RuntimeError(f"Flower harness failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        data = json.loads(out.read_text())
    s = data["summary"]
    return {
        "round_seconds_median": s["round_s_median"],
        "rounds": [r["round_s"] for r in data["rounds"] if not r["warmup"]],
        "rounds_ok": s["rounds_ok"],
        "stage_seconds_median": s["stage_wall_s_median"],
        "num_shares": data["config"]["num_shares"],
        "threshold": data["config"]["threshold"],
    }


def _summary(runs: list[SecAggBenchResult], *, memory: bool = False) -> dict[str, Any]:
    """Several of our rounds: median and every round time, all correct, the last round's other figures."""
    both = combine_runs(runs)
    last = both.to_dict()
    keys: tuple[str, ...] = ("degree", "threshold", "modulus_bits", "stage_seconds", "client_upload_bytes")
    keys += (
        ("expansion", "server_peak_bytes", "server_peak_over_vector", "server_peak_by_stage", "memory_method")
        if memory
        else ("expansion",)
    )
    keys += ("prg_gbps", "mask_add_gbps", "aes_ctr_gbps", "prg_over_aes", "mask_add_over_aes")
    return {
        "round_seconds_median": both.round_seconds,
        "rounds": list(both.round_seconds_all),
        "correct": both.correct,
        **{k: last[k] for k in keys},
    }


def scenario_flower(repeat: int) -> dict[str, Any]:
    """Interleaved: each repetition runs every variant of ours and one Flower round back to back,
    so slow drifts of the machine's load hit all of them alike; ratios are medians of the
    per-repetition ratios (and the ratio of medians is reported too)."""
    n, m, drop = 100, 100_000, 0.1
    # timing runs without the memory probe (tracemalloc slows the steps it traces)
    common: dict[str, Any] = {
        "clients": n,
        "params": m,
        "dropout": drop,
        "drop_stage": "masked_input",
        "measure_memory": False,
    }
    variants: dict[str, dict[str, Any]] = {
        "ours_semi_honest": {"threat": "semi-honest", "degree": 14, "threshold": 10},
        "ours_active": {"threat": "active", "degree": 14, "threshold": 10},
        # as every active Flower node now runs: a policy of its own (the loosest: no colluder assumed, any
        # roster of two or more), which adds the consistency quorum (signatures of over half the roster)
        "ours_active_policy": {"threat": "active", "degree": 14, "threshold": 10, "client_policy": LOOSEST},
        "ours_semi_honest_derived": {"threat": "semi-honest", "corruption": 0.0},
        "ours_active_derived": {"threat": "active", "corruption": 0.0},
    }
    res: dict[str, Any] = {"setting": {**common, "degree": 14, "threshold": 10}, "load_before": os.getloadavg()}
    runs: dict[str, list[SecAggBenchResult]] = {k: [] for k in variants}
    flower: list[dict[str, Any]] = []
    paired: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(repeat):
        mine = {k: run_bench(seed=i, **common, **v) for k, v in list(variants.items())[:3]}
        f = _flower(n, m, drop, 1)
        mine.update({k: run_bench(seed=i, **common, **v) for k, v in list(variants.items())[3:]})
        flower.append(f)
        for k, r in mine.items():
            runs[k].append(r)
            paired[k].append(f["round_seconds_median"] / r.round_seconds)
    for k in variants:
        res[k] = _summary(runs[k])
    fr = [f["round_seconds_median"] for f in flower]
    res["flower"] = {
        "round_seconds_median": median(fr),
        "rounds": fr,
        "rounds_ok": sum(f["rounds_ok"] for f in flower),
        "stage_seconds": flower[-1]["stage_seconds_median"],
        "num_shares": flower[-1]["num_shares"],
        "threshold": flower[-1]["threshold"],
    }
    res["load_after"] = os.getloadavg()
    res["ratios"] = {k: median(v) for k, v in paired.items()}
    res["ratio_of_medians"] = {
        k: res["flower"]["round_seconds_median"] / res[k]["round_seconds_median"] for k in variants
    }
    return res


def scenario_large(*, degree: int | None, threshold: int | None, workers: int) -> dict[str, Any]:
    # the setting is the derived graph (the default): derive() asks for degree 212, threshold 107
    # here (2t > k + 1 with 30% dropouts at 2^-20 failure); --degree 100 --threshold 51 (the earlier
    # figure) fails a round with probability ~2% (union bound over 1000 clients of P[Bin(100, 0.7) < 51])
    kw: dict[str, Any] = {
        "clients": 1000,
        "params": 1_000_000,
        "dropout": 0.3,
        "drop_stage": "masked_input",
        "threat": "active",
        "degree": degree,
        "threshold": threshold,
        "workers": workers,
    }
    # every client holds a policy, as every active Flower node now must: the loosest adds the consistency quorum
    res: dict[str, Any] = {"setting": {**kw, "client_policy": "loosest"}, "load_before": os.getloadavg()}
    res["ours_active"] = _summary([run_bench(**kw, client_policy=LOOSEST)], memory=True)
    res["load_after"] = os.getloadavg()
    return res


def scenario_expansion(workers: int) -> dict[str, Any]:
    # Flower's default neighbourhood for 1024 clients (num_shares 21 incl. the client, threshold 14)
    kw: dict[str, Any] = {
        "clients": 1024,
        "params": 1 << 20,
        "dropout": 0.0,
        "threat": "active",
        "degree": 20,
        "threshold": 14,
        "measure_memory": False,
        "workers": workers,
    }
    res: dict[str, Any] = {"setting": kw}
    r = run_bench(**kw).to_dict()
    res["upload"] = {
        k: r[k] for k in ("degree", "threshold", "modulus_bits", "client_upload_bytes", "expansion", "round_seconds")
    }
    res["upload"]["information_limit"] = r["modulus_bits"] / 16
    return res


def _openssl_verify(public_key: bytes, signature: bytes, payload: bytes) -> bool:
    """The verifier ``secagg.crypto.verify`` used before libsodium (OpenSSL; laxer, see its docstring)."""
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@contextmanager
def _verifier(fn: Callable[[bytes, bytes, bytes], bool]) -> Iterator[None]:
    """Every caller (``advertisement_fault``, ``signed_by_sender``, ``consistency``) looks ``verify`` up
    in ``secagg.crypto`` at call time, so replacing it there swaps the verifier of the whole round."""
    saved = crypto.verify
    crypto.verify = fn  # type: ignore[assignment]
    try:
        yield
    finally:
        crypto.verify = saved  # type: ignore[assignment]


def scenario_verifier(repeat: int) -> dict[str, Any]:
    """Our active round in Flower's case (N=100, M=1e5, 10% dropping, k 14 / t 10), the Ed25519
    verifier swapped between OpenSSL (before) and libsodium (now), alternating; then one round with
    every verification timed, for the share of the round it takes."""
    kw: dict[str, Any] = {
        "clients": 100,
        "params": 100_000,
        "dropout": 0.1,
        "drop_stage": "masked_input",
        "measure_memory": False,
        "threat": "active",
        "degree": 14,
        "threshold": 10,
    }
    arms: dict[str, Callable[[bytes, bytes, bytes], bool]] = {"openssl": _openssl_verify, "libsodium": crypto.verify}
    times: dict[str, list[float]] = {k: [] for k in arms}
    failed: list[dict[str, Any]] = []
    res: dict[str, Any] = {"setting": kw, "load_before": os.getloadavg()}
    run_bench(seed=10_000, **kw)  # warm-up
    for i in range(repeat):
        for name in arms if i % 2 == 0 else reversed(list(arms)):
            with _verifier(arms[name]):
                r = run_bench(seed=i, **kw)
            if not r.correct:  # reported, never hidden: its time is still in the list
                failed.append({"verifier": name, "seed": i, "aborted": r.aborted, "survivors": r.survivors})
            times[name].append(r.round_seconds)
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    pk, payload = key.public_key().public_bytes_raw(), bytes(202)  # an advertisement payload's length
    sig = crypto.sign(key, payload)
    per_call: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(5):  # alternating batches of 2,000 verifications
        for name, fn in arms.items():
            t0 = time.perf_counter()
            for _ in range(2000):
                fn(pk, sig, payload)
            per_call[name].append((time.perf_counter() - t0) / 2000)
    spent = [0.0, 0]
    plain = crypto.verify

    def timed(public_key: bytes, signature: bytes, payload: bytes) -> bool:
        t = time.perf_counter()
        ok = plain(public_key, signature, payload)
        spent[0] += time.perf_counter() - t
        spent[1] += 1
        return ok

    with _verifier(timed):
        r = run_bench(seed=repeat, **kw)
    res.update(
        rounds=times,
        medians={k: median(v) for k, v in times.items()},
        verify_us={k: 1e6 * median(v) for k, v in per_call.items()},
        paired_speedup=median([a / b for a, b in zip(times["openssl"], times["libsodium"], strict=True)]),
        verifications=spent[1],
        verify_seconds=spent[0],
        verify_share=spent[0] / r.round_seconds,
        instrumented_round_seconds=r.round_seconds,
        failed_rounds=failed,
        load_after=os.getloadavg(),
    )
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", choices=("flower", "large", "expansion", "verifier", "all"), default="flower")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--degree", type=int, default=0, help="large scenario: neighbours (0 = derived)")
    ap.add_argument("--threshold", type=int, default=0, help="large scenario: threshold (0 = derived)")
    ap.add_argument("--workers", type=int, default=2, help="large/expansion scenarios: client processes")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {}
    if args.scenario in ("flower", "all"):
        out["flower"] = r = scenario_flower(args.repeat)
        print(f"# N=100 M=1e5 10% dropping after key sharing; load {r['load_before']} -> {r['load_after']}")
        print(f"Flower SecAgg+ (num_shares 15, t 10)      median {r['flower']['round_seconds_median']:.3f} s")
        for k in r["ratios"]:  # every variant, in the order they ran
            o = r[k]
            print(
                f"privagg {k[5:]:<22} (k {o['degree']:>3}, t {o['threshold']:>3}) "
                f"median {o['round_seconds_median']:.3f} s  -> {r['ratios'][k]:.1f}x faster (paired median; "
                f"{r['ratio_of_medians'][k]:.1f}x ratio of medians)  correct={o['correct']}"
            )
        o = r["ours_semi_honest"]
        print(
            f"mask PRG {o['prg_gbps']:.2f} GB/s, mask add {o['mask_add_gbps']:.2f} GB/s vs raw AES-256 keystream "
            f"{o['aes_ctr_gbps']:.2f} GB/s ({100 * o['prg_over_aes']:.0f}% / {100 * o['mask_add_over_aes']:.0f}%)"
        )
    if args.scenario in ("large", "all"):
        out["large"] = r = scenario_large(
            degree=args.degree or None, threshold=args.threshold or None, workers=args.workers
        )
        o = r["ours_active"]
        print(f"# N=1000 M=1e6 30% dropout, active; load {r['load_before']} -> {r['load_after']}")
        print(
            f"round {o['round_seconds_median']:.1f} s (k {o['degree']}, t {o['threshold']}), correct={o['correct']}, "
            f"server peak {o['server_peak_bytes'] / 1e6:.1f} MB = {o['server_peak_over_vector']:.2f}x "
            "one float64 vector"
        )
        print("stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in o["stage_seconds"].items()))
        vec = 8 * r["setting"]["params"]
        print(
            "server peak by stage: "
            + ", ".join(f"{k} {b / 1e6:.1f} MB = {b / vec:.2f}x" for k, b in o["server_peak_by_stage"].items())
            + f" (one float64 vector; {o['memory_method']})"
        )
    if args.scenario in ("expansion", "all"):
        out["expansion"] = r = scenario_expansion(args.workers)
        u = r["upload"]
        print(
            f"# N=1024 M=2^20: upload {u['client_upload_bytes']:.0f} B/client = {u['expansion']:.3f}x the 16-bit "
            f"plaintext (ring {u['modulus_bits']} bits; limit {u['information_limit']:.3f}x), "
            f"k {u['degree']}, t {u['threshold']}"
        )
    if args.scenario == "verifier":
        out["verifier"] = r = scenario_verifier(args.repeat)
        print(f"# active, N=100 M=1e5 10% dropping, k 14 t 10; load {r['load_before']} -> {r['load_after']}")
        for k, v in r["medians"].items():
            print(f"verify by {k:<9} round median {v:.3f} s  rounds {', '.join(f'{x:.3f}' for x in r['rounds'][k])}")
        print(
            f"paired speed-up {r['paired_speedup']:.2f}x; libsodium round: {r['verifications']} verifications, "
            f"{r['verify_seconds']:.3f} s = {100 * r['verify_share']:.0f}% of {r['instrumented_round_seconds']:.3f} s"
        )
        print("one verification: " + ", ".join(f"{k} {v:.1f} us" for k, v in r["verify_us"].items()))
        print(f"rounds not correct: {r['failed_rounds'] or 'none'}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
