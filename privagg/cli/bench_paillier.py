"""``privagg bench paillier``: packed threshold Paillier vs plain python-paillier, side by side.

Both sides sum the same seeded ``--clients`` x ``--params`` float vectors; ours runs the
whole protocol for each variant, python-paillier encrypts every value on its own (subsampled
and extrapolated when it would take longer than ``--phe-budget`` seconds). Key generation is
excluded from both throughputs; the fixed-base table is shown with and without. All times
are CPU seconds of this process, one core; a progress bar with a time estimate goes to stderr
when it is a terminal (``--no-progress``: none). The engine: :mod:`privagg.bench.paillier`.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

from privagg.cli.bench import engine_kwargs

__all__ = ["add_parser"]

#: the columns of the side-by-side variants table
_COLUMNS = (
    "variant",
    "correct",
    "values_per_second",
    "speedup_vs_phe",
    "speedup_vs_phe_incl_table",
    "ceiling_speedup_vs_phe",
    "fraction_of_ceiling",
    "online_values_per_second",
    "encrypt_seconds",
    "aggregate_seconds",
    "decrypt_seconds",
    "bytes_per_value",
    "keygen_seconds",
    "table_seconds",
)


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
    p.add_argument("--clip", type=float, default=1.0, help="input values are drawn from [-clip, clip] (default 1.0)")
    p.add_argument(
        "--randomness",
        choices=("fresh", "fixed-base"),
        default="fixed-base",
        help="headline variant's randomness (default fixed-base; the library default is fresh)",
    )
    p.add_argument("--exponent-bits", type=int, default=None, help="fixed-base exponent bits (default key_bits/2)")
    p.add_argument("--window", type=int, default=None, help="fixed-base table window (default 10 at 2048 bits)")
    p.add_argument("--decryptors", type=int, default=1, help="headline variant's decryptors k (default 1: CRT)")
    p.add_argument("--threshold", type=int, default=1, help="headline variant's threshold t (default 1)")
    p.add_argument(
        "--variants",
        choices=("all", "headline"),
        default="all",
        help="also run the other randomness/decryption variants side by side (default all)",
    )
    p.add_argument(
        "--no-proofs",
        dest="proofs",
        action="store_false",
        help="threshold variants without proofs of correct partial decryption",
    )
    p.add_argument("--phe-budget", type=float, default=30.0, help="seconds plain phe may take before subsampling")
    p.add_argument("--repeats", type=int, default=1, help="repeat each measurement, report medians (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input vectors (default 0)")
    p.add_argument("--allow-insecure", action="store_true", help="accept key sizes below 2048 (smoke tests)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (none either when stderr is not a terminal)",
    )
    p.set_defaults(func=_cmd)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v == 0 or not math.isfinite(v):
            return str(v)
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}"
    return str(v)


@contextlib.contextmanager
def _progress(show: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar with a time estimate on stderr (``None`` when not shown)."""
    if not show:
        yield None
        return
    import rich.progress as rp
    from rich.console import Console

    columns = (rp.TextColumn("{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(), rp.TimeElapsedColumn())
    with rp.Progress(*columns, rp.TextColumn("left"), rp.TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task("bench paillier", total=None)

        def hook(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        yield hook


def _cmd(args: argparse.Namespace) -> int:
    from privagg.bench.paillier import run_bench

    with _progress(args.progress and sys.stderr.isatty()) as hook:
        res = run_bench(**{**engine_kwargs(run_bench, args), "progress": hook})
    if args.json:
        print(res.to_json())
        return 0 if res.correct else 1
    r = res.to_dict()
    print(
        f"privagg bench paillier: N={r['clients']} clients x M={r['params']} values, {r['key_bits']}-bit keys; "
        f"headline {r['variant']} ({r['variant'].split('+')[0]} randomness)"
    )
    keys = [k for k in r if k not in ("variants", "phe", "notes")]
    width = max(len(k) for k in keys)
    for k in keys:
        print(f"  {k:<{width}}  {_fmt(r[k])}")
    if res.phe.extrapolated:
        print(
            f"  (python-paillier ran on {res.phe.sampled_values_per_client} values per client; "
            "its times are extrapolated to the full size)"
        )
    print("\n  variants, side by side (same vectors, same run):")
    print("  " + " | ".join(_COLUMNS))
    for v in r["variants"]:
        print("  " + " | ".join(_fmt(v[c]) for c in _COLUMNS))
    print("\n  notes:")
    for n in r["notes"]:
        print(f"  - {n}")
    print(f"  medians of {res.repeats} repeat(s); phe key generation {res.phe.keygen_seconds:.2f} s")
    return 0 if res.correct else 1
