#!/usr/bin/env python3
"""The attack x defense matrix in population mode, run in batches and merged into one report.

Population mode (``attacks.matrix``): digits split among 1,000 clients, Poisson sampling with rate q
(default 0.03: expected cohort 30) for R rounds (default 200), client-level DP calibrated for (q, R,
epsilon 8, delta 1e-5); each attack cell sees one round of that deployment, the utility column trains the
whole deployment on every seed. One command gives the same numbers in one process::

    privagg attack --matrix --population 0.03,200 --seeds 0,1,2 --out benchmarks/results/attack_matrix_population

On a shared machine the same matrix runs as parts (each a few minutes, any order, in parallel if you like)::

    python benchmarks/attack_matrix_population.py part cells-1 --attacks imprint,inverting-gradients
    python benchmarks/attack_matrix_population.py part util-1 --utility none,dp,secagg
    python benchmarks/attack_matrix_population.py merge      # -> benchmarks/results/attack_matrix_population/

A part pickles its :class:`attacks.matrix.AttackMatrix` into ``--parts`` (default
``/tmp/privagg-attack-matrix-parts``); ``merge`` joins every part there (:func:`attacks.matrix.merge_matrices`)
and writes the HTML, JSON, CSV and heatmap through the same writer as ``privagg attack``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
import warnings
from pathlib import Path

DEFAULT_PARTS = Path("/tmp/privagg-attack-matrix-parts")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "attack_matrix_population"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("part", "merge"))
    ap.add_argument("name", nargs="?", default="", help="part name (its pickle file)")
    ap.add_argument("--attacks", default="", help="attacks of this part (comma-separated)")
    ap.add_argument("--defenses", default="", help="defenses of this part's cells (default: the matrix's)")
    ap.add_argument("--utility", default="", help="defenses whose utility this part measures (comma-separated)")
    ap.add_argument("--population", default="0.03,200", help="RATE,ROUNDS")
    ap.add_argument("--clients", type=int, default=0, help="population size (default attacks.matrix's)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--parts", type=Path, default=DEFAULT_PARTS)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    warnings.simplefilter("ignore", UserWarning)
    import torch

    from attacks.matrix import MATRIX_DEFENSES, POPULATION_CLIENTS, attack_matrix, merge_matrices, population_case
    from attacks.registry import Population

    torch.set_num_threads(1)
    if args.action == "merge":
        from privagg.cli import utc_now
        from privagg.report.attacks import write_attack_report

        parts = [pickle.loads(p.read_bytes()) for p in sorted(args.parts.glob("*.pkl"))]
        merged = merge_matrices(parts)
        cmd = "python benchmarks/attack_matrix_population.py merge  # parts: " + ", ".join(
            f"{p.data['part']}" for p in parts
        )
        _, _, line = write_attack_report(merged, args.out, name=None, command=cmd, timestamp=utc_now())
        print(line)
        return 0
    if not args.name:
        ap.error("a part needs a name")
    base = population_case(
        clients=args.clients or POPULATION_CLIENTS, population=Population.parse(args.population, field="--population")
    )
    seeds = tuple(int(s) for s in args.seeds.split(","))
    t0 = time.perf_counter()
    attacks = [a for a in args.attacks.split(",") if a]
    defenses = [d for d in args.defenses.split(",") if d] or list(MATRIX_DEFENSES)
    part = attack_matrix(attacks, defenses, base=base, seeds=seeds, utility=False)
    util = [d for d in args.utility.split(",") if d]
    if util:
        from attacks.matrix import measure_utility

        measure_utility(part, util)
    part.data["part"] = f"{args.name} (attacks {attacks}, utility {util}, {time.perf_counter() - t0:.0f} s)"
    args.parts.mkdir(parents=True, exist_ok=True)
    (args.parts / f"{args.name}.pkl").write_bytes(pickle.dumps(part))
    print(part.data["part"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
