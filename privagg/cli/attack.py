"""``privagg attack NAME``: run one registered attack against a defense and write its report.

Examples::

    privagg attack idlg                                  # gradient inversion, no defense
    privagg attack idlg --defense secagg --batch-sizes 1,2,4,8
    privagg attack lira-online --defense dp --json
    privagg attack protocol                              # malicious-server attacks on SecAgg
    privagg attack --list

``--config x.toml`` holds a ``[case]`` table (fields of :class:`attacks.AttackCase`:
``defense``, ``batch_size``, ``dp_epsilon``, ``dp_delta``; the federation under
``[case.run]`` — ``seed``, ``[case.run.data]`` ``dataset``/``num_clients``,
``[case.run.model]`` — ``[case.adversary]``, ``[case.options]``) and an ``[attack]`` table
(the attack's hyper-parameters). Command-line flags override the file. Everything is
seeded: the same command gives the same numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from privagg.errors import ConfigurationError

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "attack",
        help="run an attack against a defense (gradient inversion, membership, property, protocol, poisoning)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="registered attack name (see --list)")
    p.add_argument("--list", action="store_true", help="list the registered attacks and exit")
    p.add_argument("--defense", help="registered defense, e.g. secagg, dp, secagg+dp (default: none)")
    p.add_argument("--config", metavar="TOML", help="TOML file with [case] and [attack] tables")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")
    p.add_argument("--out", metavar="DIR", help="report directory (default: privagg-attack-NAME-DEFENSE)")
    p.add_argument("--seed", type=int, help="case seed (simulation randomness only)")
    p.add_argument("--num-clients", type=int, help="federation / cohort size")
    p.add_argument("--batch-size", type=int, help="victim batch size (gradient inversion)")
    p.add_argument("--epsilon", type=float, help="client-level DP epsilon for the dp defenses")
    p.add_argument("--batch-sizes", metavar="LIST", help="inversion: sweep batch sizes, e.g. 1,2,4,8 (PSNR curve)")
    p.set_defaults(func=_main)


def _batch_sizes(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ConfigurationError(f"not a list of integers: {text!r}", field="--batch-sizes") from None
    if not sizes or min(sizes) < 1:
        raise ConfigurationError("batch sizes must be >= 1", field="--batch-sizes")
    return sizes


def _main(args: argparse.Namespace) -> int:
    import torch

    from attacks import ATTACKS
    from attacks.runner import run_configured_attack
    from privagg.config import read_toml
    from privagg.report import environment_section
    from privagg.report.attacks import attack_report

    if args.list:
        for n in ATTACKS.names():
            cls = ATTACKS.get(n)
            print(f"{n:24s} {cls.kind:10s} {cls.description}")
        return 0
    if not args.name:
        raise ConfigurationError("give an attack NAME (or --list)", field="NAME", accepted=ATTACKS.names())
    torch.set_num_threads(1)  # small models: threads cost more than they give on a shared machine
    result = run_configured_attack(
        args.name,
        read_toml(args.config) if args.config else {},
        overrides={
            "defense": args.defense,
            "seed": args.seed,
            "num_clients": args.num_clients,
            "batch_size": args.batch_size,
            "dp_epsilon": args.epsilon,
        },
        batch_sizes=_batch_sizes(args.batch_sizes),
        progress=not args.json,
    )
    defense = result.case.defense
    out = Path(args.out or f"privagg-attack-{args.name}-{defense}")
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"{out} exists and is not a directory", field="--out")
    report = attack_report(
        [result],
        title=f"privagg attack {args.name} (defense {defense})",
        top={"attack": args.name, "defense": defense, "metrics": result.metrics, "success": result.success},
    )
    report.add(environment_section())
    report.write(out)
    if args.json:
        print(report.to_json())
    else:
        _print_summary(result, ATTACKS.get(result.attack).kind, out)
    return 0


def _print_summary(result: Any, kind: str, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{result.attack} against defense {result.case.defense}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in result.metrics.items():
        t.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
    if result.success is not None:
        label = "attack outcome as expected" if kind == "protocol" else "succeeded"
        t.add_row(label, "yes" if result.success else "no")
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
