#!/usr/bin/env python3
"""Issue 16's figures: each attack against exactly what the server observes, over seeds, with intervals.

Sections (``--only`` picks some; all run on sklearn's digits, 10-client cohort, seeded):

* ``inversion``: iDLG and Inverting Gradients (batch 1 per client) against ``none`` (the
  target's own update: the closed-form batch-1 case), ``secagg`` and ``dp`` (the aggregate,
  inverted as one batch of the cohort's size): cohort and target median PSNR, fraction
  recovered (PSNR >= 25 dB);
* ``imprint``: the malicious imprint model (Robbing the Fed) through the real active SecAgg
  aggregator, and under central DP (``dp``), client DP (``secagg+dp``) and distributed DP
  (``distributed-dp``, the default configuration) at epsilon 8;
* ``malicious``: the other malicious-model attacks, trap weights (Boenisch et al. 2023) and
  fishing (Wen et al. 2022), against every defense of the matrix;
* ``noise-margin``: the image attacks against distributed DP (default configuration) as epsilon
  grows (8, 64, 512, 4096): how far the 0% at epsilon 8 is from a leak;
* ``multistep``: multi-step FedAvg inversion (5 local steps, batch 8, no defense);
* ``disaggregation``: a target's per-round updates from secure aggregates over rounds (Lam et al.),
  with the model frozen (a malicious server resends it) and training;
* ``property``: property inference (600 targets: AUC half-width <= 0.05) beside the released
  model's utility; ``update-membership``: loss-drop membership inference on updates;
  ``cocktail``: the ICA core of the Cocktail Party Attack; ``membership``: LiRA online beside the
  target model's utility.

Every row: mean over seeds and a 95% Student-t interval. Usage:
``python benchmarks/attacks_truthful.py [--seeds 3] [--only inversion,imprint] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from typing import Any

KEYS = {
    "inversion": ("psnr_median", "fraction_recovered", "target_psnr_median", "target_fraction_recovered"),
    "imprint": ("fraction_recovered", "psnr_median", "target_fraction_recovered"),
    "multistep": ("psnr_median", "ssim_median", "fraction_recovered", "label_accuracy"),
    "trap-weights": ("fraction_recovered", "psnr_median", "target_fraction_recovered", "candidates"),
    "fishing": ("fraction_recovered", "psnr_median", "images_claimed", "claimed_recovered", "rounds_used"),
    "update-membership": ("auc", "auc_ci_halfwidth", "model_test_accuracy"),
}


def _study(name: str, case: Any, seeds: list[int], keys: tuple[str, ...], options: Any = None) -> dict[str, Any]:
    from attacks.runner import seed_study

    st = seed_study(name, case, seeds=seeds, options=options)
    row = {"attack": name, "defense": case.defense, "seconds": round(st.seconds, 1)}
    for k in keys:
        row[k] = [round(st.metrics[f"{k}{suffix}"], 3) for suffix in ("", "_seeds_ci_low", "_seeds_ci_high")]
        row[f"{k}_per_seed"] = [round(v, 3) for v in st.per_seed[k]]
    row["threat_model"] = st.data.get("threat_model", "")
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--only",
        default="inversion,imprint,malicious,noise-margin,multistep,disaggregation,property,update-membership,cocktail,"
        "membership",
    )
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)
    from attacks.registry import Adversary, AttackCase

    seeds = list(range(a.seeds))
    only = set(a.only.split(","))
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    if "inversion" in only:
        for name in ("idlg", "inverting-gradients"):
            for defense in ("none", "secagg", "dp"):
                case = AttackCase.create(num_clients=10, defense=defense)
                rows.append(_study(name, case, seeds, KEYS["inversion"]))
                print(json.dumps(rows[-1]), flush=True)
    if "imprint" in only:
        for defense in ("none", "secagg", "dp", "secagg+dp", "distributed-dp"):
            case = AttackCase.create(num_clients=10, defense=defense, adversary=Adversary.malicious_server())
            rows.append(_study("imprint", case, seeds, KEYS["imprint"]))
            print(json.dumps(rows[-1]), flush=True)
    if "malicious" in only:
        for name in ("trap-weights", "fishing"):
            for defense in ("none", "secagg", "dp", "secagg+dp", "distributed-dp"):
                case = AttackCase.create(num_clients=10, defense=defense, adversary=Adversary.malicious_server())
                rows.append(_study(name, case, seeds, KEYS[name]))
                print(json.dumps(rows[-1]), flush=True)
    if "noise-margin" in only:
        for eps in (8.0, 64.0, 512.0, 4096.0):
            for name in ("inverting-gradients", "imprint", "trap-weights", "fishing"):
                adversary = Adversary() if name == "inverting-gradients" else Adversary.malicious_server()
                case = AttackCase.create(num_clients=10, defense="distributed-dp", dp_epsilon=eps, adversary=adversary)
                margin: tuple[str, ...] = ("fraction_recovered", "psnr_median")
                if name != "inverting-gradients":  # the attacks that report the round's DP metrics
                    margin += ("dp_noise_multiplier",)
                rows.append(_study(name, case, seeds, margin))
                rows[-1]["dp_epsilon"] = eps
                print(json.dumps(rows[-1]), flush=True)
    if "multistep" in only:
        case = AttackCase.create(num_clients=10, defense="none", batch_size=8)
        rows.append(_study("fedavg-inversion", case, seeds, KEYS["multistep"]))
        print(json.dumps(rows[-1]), flush=True)
    if "disaggregation" in only:
        for freeze in (True, False):
            for rounds in (5, 10, 15, 20, 40, 80):
                adversary = Adversary.malicious_server() if freeze else Adversary()
                case = AttackCase.create(
                    num_clients=10, defense="secagg", adversary=adversary, options={"rounds": rounds}
                )
                keys: tuple[str, ...] = (
                    "fraction_recovered",
                    "identifiable",
                    "relative_error_median",
                    "target_image_psnr",
                )
                rows.append(_study("disaggregation", case, seeds, keys, options={"freeze_model": freeze}))
                rows[-1].update(rounds=rounds, freeze_model=freeze)
                print(json.dumps(rows[-1]), flush=True)
    if "property" in only:
        for defense in ("none", "secagg", "dp"):
            case = AttackCase.create(num_clients=10, defense=defense)
            keys = ("auc", "auc_ci_halfwidth", "model_test_accuracy")
            if defense != "none":
                keys += ("released_model_accuracy", "undefended_test_accuracy", "utility_gap_points")
            rows.append(_study("property-inference", case, seeds, keys))
            print(json.dumps(rows[-1]), flush=True)
    if "update-membership" in only:
        for defense in ("none", "secagg", "dp"):
            case = AttackCase.create(num_clients=10, defense=defense)
            keys = KEYS["update-membership"]
            if defense != "none":
                keys += ("released_model_accuracy", "undefended_test_accuracy", "utility_gap_points")
            rows.append(_study("update-membership", case, seeds, keys))
            print(json.dumps(rows[-1]), flush=True)
    if "cocktail" in only:
        for defense in ("none", "secagg"):
            case = AttackCase.create(num_clients=10, defense=defense, batch_size=4 if defense == "none" else 1)
            rows.append(_study("cocktail-party", case, seeds, KEYS["inversion"]))
            print(json.dumps(rows[-1]), flush=True)
    if "membership" in only:
        for defense in ("none", "dp"):
            case = AttackCase.create(num_clients=5, hidden=(256,), defense=defense)
            keys = ("auc", "tpr@1%fpr", "model_train_accuracy", "model_test_accuracy")
            if defense != "none":
                keys += ("undefended_test_accuracy", "utility_gap_points")
            rows.append(_study("lira-online", case, seeds, keys))
            print(json.dumps(rows[-1]), flush=True)
    out = {
        "seeds": seeds,
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
        "load_before": load0,
        "load_after": os.getloadavg(),
    }
    text = json.dumps(out, indent=1)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
