"""``privagg bench dp``: secure DP noise throughput (engine: :func:`privagg.bench.dp.run_bench`).

Prints the median time per sampler on the same vector length (timed in alternation), the ratio
to numpy's floating-point ``Generator.normal``, the load average, and the raw AES-256-CTR and
ChaCha20 keystream rates. Targets: secure noise for 1,000,000 coordinates in < 0.5 s and at most
5x numpy's ``Generator.normal`` in the same run.
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
    load = res.load_average
    print(
        f"DP noise for {res.dim:,} coordinates (sigma = {res.sigma_grid_units:g} grid units), "
        f"median of {res.repeats}, timed in alternation; load average {load[0]:.2f} -> {load[1]:.2f}:"
    )
    ratios = res.ratio_to_numpy_normal
    for name, sec in res.median_seconds.items():
        print(f"  {name:<56} {sec * 1e3:9.1f} ms   x{ratios[name]:.2f} vs numpy")
    print(
        f"  raw AES-256-CTR keystream: {res.aes_ctr_keystream_GBps:.2f} GB/s "
        f"(ChaCha20: {res.chacha20_keystream_GBps:.2f} GB/s; best of 7 alternating calls each)"
    )
    from privagg.bench.dp import SECURE

    seconds = "meets" if res.secure_meets_target else "MISSES"
    ratio = "meets" if res.secure_meets_ratio_target else "MISSES"
    print(f"secure noise {seconds} the < {res.target_seconds} s target")
    print(f"secure noise at x{ratios[SECURE]:.2f} numpy {ratio} the <= {res.target_ratio:g}x target")
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
