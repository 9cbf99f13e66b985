"""``privagg bench dp``: secure DP noise throughput (engine: :func:`privagg.bench.dp.run_bench`).

Prints the median time per sampler on the same vector length, the ratio to numpy's
floating-point ``Generator.normal`` and the raw AES-CTR keystream rate; the target is secure
noise for 1,000,000 coordinates in < 0.5 s.
"""

from __future__ import annotations

import argparse
from typing import Any

from privagg.cli.bench import engine_kwargs

__all__ = ["add_parser"]


def _cmd(args: argparse.Namespace) -> int:
    from privagg.bench.dp import run_bench

    res = run_bench(**engine_kwargs(run_bench, args))
    if args.json:
        print(res.to_json())
        return 0
    print(
        f"DP noise for {res.dim:,} coordinates (sigma = {res.sigma_grid_units:g} grid units), median of {res.repeats}:"
    )
    ratios = res.ratio_to_numpy_normal
    for name, sec in res.median_seconds.items():
        print(f"  {name:<56} {sec * 1e3:9.1f} ms   x{ratios[name]:.2f} vs numpy")
    print(f"  raw AES-256-CTR keystream: {res.aes_ctr_keystream_GBps:.2f} GB/s")
    verdict = "meets" if res.secure_meets_target else "MISSES"
    print(f"secure noise {verdict} the < {res.target_seconds} s target")
    return 0


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "dp",
        help="secure DP noise throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dim", type=int, default=1_000_000, help="coordinates per draw (default 1,000,000)")
    p.add_argument("--sigma", type=float, default=1e6, help="noise std in grid units (default 1e6)")
    p.add_argument("--repeats", type=int, default=7, help="repetitions; medians are reported (default 7)")
    p.add_argument("--exact", action="store_true", help="also time the exact integer-only CKS sampler (slower)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd)
