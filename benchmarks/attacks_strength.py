#!/usr/bin/env python3
"""Attack strength on the settings where the literature reports near-perfect recovery (no defense), next to
each attack's ceiling on our model, so a weak attack is seen before it tests a defense.

Every row: the registered attack on sklearn digits (8x8), 10 clients, the default MLP (one hidden layer of
64 units), seeds 0..N-1; mean and 95% Student-t interval over seeds. Ceilings (what an exact attack can do
on this model, independent of implementation):

* gradient inversion, batch 1, first layer with bias: exact in closed form (Phong et al. 2017), so 100%;
* imprint (Fowl et al. 2022) with K = 64 equally likely bins and B images in one update: an image is alone
  in its bin with probability ``(1 - 1/K)^(B-1)``;
* trap weights (Boenisch et al. 2023) with K units each firing on a fraction ``1/B`` of images, units
  independent: ``1 - (1 - (1/B) (1 - 1/B)^(B-1))^K``.

* SPEAR (Dimitrov et al. 2024), exact batch inversion of the first ReLU layer: no closed-form ceiling (its
  sampling is exponential in the batch, and examples sharing their switched-off units cannot be told apart);
  it needs the inverted batch (the cohort's under a secure sum: 10 x B) below the 64 hidden units.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/attacks_strength.py [--seeds 5] [--json PATH] [--only NAME ...]``.
With ``--only`` the rows of those attacks run, and ``--json`` replaces just those rows in the record.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

K = 64  # the default MLP's hidden width: the malicious models' bins / units


def _ceiling(attack: str, b: int) -> float | None:
    if attack in ("inverting-gradients", "idlg", "dlg", "linear-leakage") and b == 1:
        return 1.0
    if attack == "imprint":
        return (1 - 1 / K) ** (b - 1)
    if attack == "trap-weights":
        p = 1 / b
        return 1 - (1 - p * (1 - p) ** (b - 1)) ** K
    return None


SETTINGS: list[tuple[str, str, int, dict[str, Any]]] = [
    ("inverting-gradients", "none", 1, {}),
    ("idlg", "none", 1, {}),
    ("dlg", "none", 1, {}),
    ("inverting-gradients", "none", 4, {}),
    ("inverting-gradients", "none", 8, {}),
    ("imprint", "none", 8, {}),
    ("imprint", "none", 32, {}),
    ("imprint", "none", 64, {}),
    ("imprint", "secagg", 8, {}),
    ("trap-weights", "none", 8, {}),
    ("trap-weights", "none", 32, {}),
    ("trap-weights", "none", 64, {}),
    ("trap-weights", "secagg", 8, {}),
    ("fishing", "none", 8, {}),
    ("fishing", "secagg", 8, {}),
    ("disaggregation", "secagg", 1, {"freeze_model": True}),
    ("update-membership", "none", 1, {}),
    ("update-membership", "secagg", 1, {}),
    ("inverting-gradients", "none", 16, {}),
    ("inverting-gradients", "none", 32, {}),
    ("inverting-gradients", "secagg", 1, {}),
    ("inverting-gradients", "dp", 1, {}),
    *[("spear", "none", b, {}) for b in (1, 4, 8, 16, 32)],
    *[("spear", "secagg", b, {}) for b in (1, 4, 8)],
    *[("spear", "dp", b, {}) for b in (1, 8)],
]


def _row_key(r: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a record row the same measurement."""
    return (r["attack"], r["defense"], r["batch"], json.dumps(r["options"]), r.get("dataset"), r.get("hidden"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--only", action="append", default=[], help="run only this attack's rows (repeatable)")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--hidden", type=int, default=64, help="the MLP's hidden width (the record's rows: 64)")
    ap.add_argument("--batches", default="", help="only these batch sizes, comma-separated")
    ap.add_argument("--defenses", default="", help="only these defenses, comma-separated")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    from attacks.metrics import leak_measure, seed_interval
    from attacks.registry import Adversary, AttackCase
    from attacks.runner import build_attack, run_attack

    rows = []
    print(f"{'attack':20} {'defense':8} {'B':>3}  {'measure':18} {'mean':>6} {'95% CI':>15} {'ceiling':>7}  s")
    for attack, defense, b, opts in SETTINGS:
        if (
            (args.only and attack not in args.only)
            or (args.batches and str(b) not in args.batches.split(","))
            or (args.defenses and defense not in args.defenses.split(","))
        ):
            continue
        base = AttackCase.create(
            num_clients=10, defense=defense, batch_size=b, dataset=args.dataset, hidden=(args.hidden,)
        )
        if not build_attack(attack, opts).supports(base):
            base = base.with_(adversary=Adversary.malicious_server())
        t0 = time.perf_counter()
        vals, metric, status = [], "", []
        for s in range(args.seeds):
            r = run_attack(attack, base.with_(seed=s), options=opts)
            lm = leak_measure(r.metrics)
            metric = lm.metric if lm else ""
            vals.append(lm.value if lm else float("nan"))
            if "spear" in r.data:
                status.append(r.data["spear"]["status"])
        mean, lo, hi = seed_interval(vals)
        ceil = _ceiling(attack, b) if defense == "none" and args.hidden == K else None
        sec = time.perf_counter() - t0
        ceil_txt = f"{ceil:.2f}" if ceil is not None else "-"
        print(
            f"{attack:20} {defense:8} {b:3}  {metric:18} {mean:6.3f} [{lo:6.3f},{hi:6.3f}] {ceil_txt:>7}  {sec:.1f}"
            + (f"  {status}" if status else ""),
            flush=True,
        )
        rows.append(
            {
                "attack": attack,
                "defense": defense,
                "batch": b,
                "options": opts,
                "metric": metric,
                "per_seed": vals,
                "mean": mean,
                "ci": [lo, hi],
                "ceiling": ceil,
                "seconds": sec,
                **({"dataset": args.dataset} if args.dataset != "digits" else {}),
                **({"hidden": args.hidden} if args.hidden != K else {}),
                **({"spear_status": status} if status else {}),
            }
        )
    if args.json:
        if args.only and args.json.exists():  # replace the rerun rows, keep the others
            old = json.loads(args.json.read_text())
            new = {_row_key(r): r for r in rows}
            kept = [new.pop(_row_key(r), r) for r in old["rows"]]
            rows = kept + list(new.values())
        args.json.write_text(json.dumps({"seeds": args.seeds, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
