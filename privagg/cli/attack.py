"""``privagg attack NAME``: run one registered attack against a defense and write its report.

Examples::

    privagg attack idlg                                  # gradient inversion, no defense
    privagg attack idlg --defense secagg --batch-sizes 1,2,4,8
    privagg attack lira-online --defense dp --json
    privagg attack protocol                              # malicious-server attacks on SecAgg
    privagg attack imprint --defense secagg --seeds 0,1,2 # malicious model through SecAgg, 3 seeds
    privagg attack fishing --defense distributed-dp       # trap-weights, fishing: the other malicious models
    privagg attack --matrix                              # attack x defense matrix (HTML, CSV, heatmap)
    privagg attack --matrix --population 0.03,200        # the same, DP calibrated for 1,000 Poisson-sampled clients
    privagg attack --list

``--config x.toml`` holds a ``[case]`` table (fields of :class:`attacks.AttackCase`:
``defense``, ``batch_size``, ``dp_epsilon``, ``dp_delta``; the federation under
``[case.run]`` — ``seed``, ``[case.run.data]`` ``dataset``/``num_clients``,
``[case.run.model]`` — ``[case.adversary]``, ``[case.options]``) and an ``[attack]`` table
(the attack's hyper-parameters). Flags override the file. Everything is seeded.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from privagg.cli._console import names_help
from privagg.errors import ConfigurationError

__all__ = ["add_parser", "catalog", "defenses"]


def catalog() -> dict[str, Any]:
    """``attacks/catalog.json`` (:func:`attacks.registry.catalog`), found by its import spec: no attack code runs."""
    spec = importlib.util.find_spec("attacks")
    assert spec is not None and spec.submodule_search_locations, "the attacks package is not installed"
    data: dict[str, Any] = json.loads((Path(spec.submodule_search_locations[0]) / "catalog.json").read_text("utf-8"))
    return data


def defenses() -> list[str]:
    """The registered defense names (from the catalogue: no torch for ``--help``)."""
    return [str(n) for n in catalog()["defenses"]]


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "attack",
        help="run an attack against a defense (gradient inversion, membership, property, protocol, poisoning)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="registered attack name (see --list)")
    p.add_argument("--list", action="store_true", help="list the registered attacks and exit")
    p.add_argument("--defense", action=names_help("defense (default none): {names}", "privagg.cli.attack:defenses"))
    p.add_argument("--config", metavar="TOML", help="TOML file with [case] and [attack] tables")
    p.add_argument("--json", action="store_true", help="print report.json to stdout")
    p.add_argument("--out", metavar="DIR", help="report directory (default: privagg-attack-NAME-DEFENSE)")
    p.add_argument("--seed", type=int, help="case seed (simulation randomness only)")
    p.add_argument("--num-clients", type=int, help="federation / cohort size")
    p.add_argument("--batch-size", type=int, help="victim batch size (gradient inversion)")
    p.add_argument("--epsilon", type=float, help="client-level DP epsilon for the dp defenses")
    p.add_argument("--batch-sizes", metavar="LIST", help="inversion: sweep batch sizes, e.g. 1,2,4,8 (PSNR curve)")
    p.add_argument("--seeds", metavar="LIST", help="repeat over seeds, e.g. 0,1,2: mean and 95%% interval")
    p.add_argument("--matrix", action="store_true", help="attack x defense matrix with utility (NAME: one attack)")
    p.add_argument("--population", metavar="RATE,ROUNDS", help="population mode (DP as deployed): Poisson rate, rounds")
    p.set_defaults(func=_main)


def _ints(text: str | None, field: str, low: int) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        values = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ConfigurationError(f"not a list of integers: {text!r}", field=field) from None
    if not values or min(values) < low:
        raise ConfigurationError(f"values must be >= {low}", field=field)
    return values


def _main(args: argparse.Namespace) -> int:
    if args.list:  # from the catalogue: listing imports no attack (and no torch)
        for n, kind, description in catalog()["attacks"]:
            print(f"{n:24s} {kind:10s} {description}")
        return 0
    import torch

    from attacks import ATTACKS
    from attacks.runner import run_configured_attack
    from privagg.cli import command_line, utc_now
    from privagg.config import read_toml
    from privagg.report.attacks import write_attack_report

    if not args.name and not args.matrix:
        raise ConfigurationError("give an attack NAME (or --list, --matrix)", field="NAME", accepted=ATTACKS.names())
    started = utc_now()
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
            "population": args.population,
        },
        batch_sizes=_ints(args.batch_sizes, "--batch-sizes", 1),
        seeds=_ints(args.seeds, "--seeds", 0),
        matrix=args.matrix,
        progress=not args.json,
    )
    defense = "matrix" if args.matrix else result.case.defense
    out = Path(args.out or f"privagg-attack-{args.name or 'all'}-{defense}")
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"{out} exists and is not a directory", field="--out")
    report, title, line = write_attack_report(
        result, out, name=args.name, command=command_line(args), timestamp=started
    )
    if args.json:
        print(report.to_json())
    else:
        kind = ATTACKS.get(result.attack).kind if result.attack in ATTACKS else "inference"
        _print_summary(result, kind, title, line, out)
    return 0


def _print_summary(result: Any, kind: str, title: str, line: str, out: Path) -> None:
    from rich.console import Console

    from privagg.cli._console import print_table

    rows: list[list[Any]] = [[k, v] for k, v in result.metrics.items()]
    if result.success is not None:
        rows.append(["attack outcome as expected" if kind == "protocol" else "succeeded", result.success])
    console = Console(file=sys.stderr)
    print_table(
        console, title, ["metric", "value"], [[k, "yes" if v is True else "no" if v is False else v] for k, v in rows]
    )
    for caption, header, table_rows in result.tables:
        print_table(console, caption, header, table_rows)
    console.print(f"report: {out / 'report.html'} ({result.seconds:.1f} s)", markup=False, highlight=False)
    console.file.flush()
    print(line, file=sys.stderr)  # one line, never wrapped: the last thing a user reads
