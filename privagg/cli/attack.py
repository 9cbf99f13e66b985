"""``privagg attack NAME``: run one registered attack against a defense and write its report.

Examples::

    privagg attack idlg                                  # gradient inversion, no defense
    privagg attack idlg --defense secagg --batch-sizes 1,2,4,8
    privagg attack lira-online --defense dp --json
    privagg attack protocol                              # malicious-server attacks on SecAgg
    privagg attack --list

``--config x.toml`` holds a ``[case]`` table (fields of :class:`attacks.AttackCase`:
``dataset``, ``num_clients``, ``batch_size``, ``seed``, ``dp_epsilon``, ``[case.threat]``,
``[case.options]``) and an ``[attack]`` table (the attack's hyper-parameters). Command-line
flags override the file. Everything is seeded: the same command gives the same numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from privagg.errors import ConfigurationError

__all__ = ["add_parser", "case_from_args"]

_DEFENSES = ("none", "secagg", "dp", "secagg+dp", "paillier")


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "attack",
        help="run an attack against a defense (gradient inversion, membership, property, protocol, poisoning)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="registered attack name (see --list)")
    p.add_argument("--list", action="store_true", help="list the registered attacks and exit")
    p.add_argument("--defense", choices=_DEFENSES, help="defense configuration (default: none)")
    p.add_argument("--config", metavar="TOML", help="TOML file with [case] and [attack] tables")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")
    p.add_argument("--out", metavar="DIR", help="report directory (default: privagg-attack-NAME-DEFENSE)")
    p.add_argument("--seed", type=int, help="case seed (simulation randomness only)")
    p.add_argument("--num-clients", type=int, help="federation / cohort size")
    p.add_argument("--batch-size", type=int, help="victim batch size (gradient inversion)")
    p.add_argument("--epsilon", type=float, help="client-level DP epsilon for the dp defenses")
    p.add_argument("--batch-sizes", metavar="LIST", help="inversion: sweep batch sizes, e.g. 1,2,4,8 (PSNR curve)")
    p.set_defaults(func=_main)


def case_from_args(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The :class:`attacks.AttackCase` and attack options from ``--config`` and flags."""
    from attacks.registry import AttackCase
    from privagg.config import load_config, read_toml

    data: dict[str, Any] = read_toml(args.config) if args.config else {}
    unknown = set(data) - {"case", "attack"}
    if unknown:
        raise ConfigurationError(f"unknown table(s) {sorted(unknown)}", field="config", accepted=["case", "attack"])
    case_data = dict(data.get("case", {}))
    for flag, key in (
        ("defense", "defense"),
        ("seed", "seed"),
        ("num_clients", "num_clients"),
        ("batch_size", "batch_size"),
        ("epsilon", "dp_epsilon"),
    ):
        v = getattr(args, flag, None)
        if v is not None:
            case_data[key] = v
    case = load_config(AttackCase, case_data, path="case")
    options = dict(data.get("attack", {}))
    return case, options


def _main(args: argparse.Namespace) -> int:
    import torch

    from attacks.runner import batch_size_curve, build_report, load_attacks, run_attack
    from privagg.report import environment_section

    names = load_attacks()
    if args.list:
        from attacks.registry import ATTACKS

        for n in names:
            cls = ATTACKS.get(n)
            print(f"{n:24s} {cls.kind:10s} {cls.description}")
        return 0
    if not args.name:
        raise ConfigurationError("give an attack NAME (or --list)", field="NAME", accepted=names)
    torch.set_num_threads(1)  # small models: threads cost more than they give on a shared machine
    case, options = case_from_args(args)
    if args.batch_sizes:
        try:
            sizes = tuple(int(s) for s in args.batch_sizes.split(","))
        except ValueError:
            raise ConfigurationError(f"not a list of integers: {args.batch_sizes!r}", field="--batch-sizes") from None
        if not sizes or min(sizes) < 1:
            raise ConfigurationError("batch sizes must be >= 1", field="--batch-sizes")
        result = batch_size_curve(args.name, case, batch_sizes=sizes, options=options)
    else:
        result = run_attack(args.name, case, options=options, progress=not args.json)
    out = Path(args.out or f"privagg-attack-{args.name}-{case.defense}")
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"{out} exists and is not a directory", field="--out")
    report = build_report(
        [result],
        title=f"privagg attack {args.name} (defense {case.defense})",
        top={"attack": args.name, "defense": case.defense, "metrics": result.metrics, "success": result.success},
    )
    report.add(environment_section())
    report.write(out)
    if args.json:
        print(report.to_json())
    else:
        _print_summary(result, out)
    return 0


def _print_summary(result: Any, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{result.attack} against defense {result.case.defense}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in result.metrics.items():
        t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    if result.success is not None:
        t.add_row(
            "attack outcome as expected" if result.attack == "protocol" else "succeeded",
            "yes" if result.success else "no",
        )
    console = Console(file=sys.stderr)
    console.print(t)
    for caption, header, rows in result.tables:
        tt = Table(title=caption)
        for h in header:
            tt.add_column(str(h))
        for r in rows:
            tt.add_row(*[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r])
        console.print(tt)
    console.print(f"report: {out / 'report.html'} ({result.seconds:.1f} s)")
