"""``privagg bench dp``: secure DP noise throughput, measured side by side in one run.

Compares, on the same vector length: the secure discrete Gaussian (AES-256-CTR keyed by a fresh
``os.urandom`` seed, exact integer support), the full grid mechanism (snap + secure noise), the
same sampler on a seeded numpy stream (simulation mode), numpy's floating-point
``Generator.normal`` (insecure baseline, for scale) and the raw AES-CTR keystream.
Prints medians and ratios; the target is secure noise for 1,000,000 coordinates in < 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["add_parser", "run_bench"]


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_bench(*, dim: int = 1_000_000, sigma: float = 1e6, repeats: int = 7) -> dict[str, Any]:
    import numpy as np

    from dp.noise import GaussianGridMechanism, InsecureNoiseWarning, SecureNoise, SeededNoise
    from privagg.randomness import aes_ctr_keystream_rate

    secure = SecureNoise()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        seeded = SeededNoise(0)
    mech = GaussianGridMechanism.create(sensitivity=1.0, noise_multiplier=1.0, dim=dim)
    x = np.random.default_rng(0).normal(size=dim) * 1e-3
    rng = np.random.default_rng(0)
    secure.discrete_gaussian(sigma, 1000)  # warm-up (imports, OpenSSL init)
    rows = {
        "secure discrete Gaussian (AES-CTR, fresh urandom seed)": _median_seconds(
            lambda: secure.discrete_gaussian(sigma, dim), repeats
        ),
        "grid mechanism: snap + secure noise": _median_seconds(lambda: mech.release(x, secure), repeats),
        "same sampler, seeded numpy stream (simulation)": _median_seconds(
            lambda: seeded.discrete_gaussian(sigma, dim), repeats
        ),
        "numpy Generator.normal (insecure float baseline)": _median_seconds(lambda: rng.normal(size=dim), repeats),
    }
    base = rows["numpy Generator.normal (insecure float baseline)"]
    return {
        "dim": dim,
        "sigma_grid_units": sigma,
        "repeats": repeats,
        "median_seconds": rows,
        "ratio_to_numpy_normal": {k: v / base for k, v in rows.items()},
        "aes_ctr_keystream_GBps": aes_ctr_keystream_rate(1 << 24, 3),
        "target_seconds": 0.5,
        "secure_meets_target": rows["secure discrete Gaussian (AES-CTR, fresh urandom seed)"] < 0.5,
    }


def _cmd(args: argparse.Namespace) -> int:
    from privagg.errors import ConfigurationError

    if args.dim < 1 or args.repeats < 1 or not args.sigma > 0:
        raise ConfigurationError("dim and repeats must be >= 1, sigma > 0", field="bench")
    out = run_bench(dim=args.dim, sigma=args.sigma, repeats=args.repeats)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"DP noise for {out['dim']:,} coordinates (sigma = {out['sigma_grid_units']:g} grid units), "
        f"median of {out['repeats']}:"
    )
    for name, sec in out["median_seconds"].items():
        print(f"  {name:<56} {sec * 1e3:9.1f} ms   x{out['ratio_to_numpy_normal'][name]:.2f} vs numpy")
    print(f"  raw AES-256-CTR keystream: {out['aes_ctr_keystream_GBps']:.2f} GB/s")
    verdict = "meets" if out["secure_meets_target"] else "MISSES"
    print(f"secure noise {verdict} the < {out['target_seconds']} s target")
    return 0


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("dp", help="secure DP noise throughput")
    p.add_argument("--dim", type=int, default=1_000_000, help="coordinates per draw (default 1,000,000)")
    p.add_argument("--sigma", type=float, default=1e6, help="noise std in grid units (default 1e6)")
    p.add_argument("--repeats", type=int, default=7, help="repetitions; medians are reported (default 7)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd)
