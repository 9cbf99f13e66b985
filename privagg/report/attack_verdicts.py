"""One-line verdicts and titles of attack results (what :func:`privagg.report.attacks.write_attack_report`
prints and stores).

A verdict names its metric and what it means. A result without a leak under a defense is read against its
positive control (:func:`attacks.runner.with_control`: the same attack, seeds and options without the
defense, or under the secure sum alone for a noised secure sum): the defense *stopped* the attack only when
the control leaks; otherwise the verdict says NOT SHOWN (the attack does not succeed without the defense
either, or no control ran), never "does not leak" alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from attacks.matrix import AttackMatrix
from attacks.metrics import DISTINGUISHING_AUC, RECOVERED_PSNR, leak_measure
from attacks.registry import DEFENSES, AttackResult, control_defense
from attacks.runner import BatchSizeCurve, SeedStudy

__all__ = [
    "DISTINGUISHING_AUC",
    "RECOGNISABLE_PSNR",
    "UTILITY_TOLERANCE_POINTS",
    "attack_title",
    "control_clause",
    "verdict",
]

#: PSNR (dB) from which a reconstructed image is taken as recognisable (= recovered, one criterion)
RECOGNISABLE_PSNR = RECOVERED_PSNR
#: a defense is only called effective when the defended model's accuracy stays this close to the undefended one
UTILITY_TOLERANCE_POINTS = 5.0


def _configurations(r: AttackResult) -> list[str]:
    """The configurations a protocol attack ran against (metric keys ``attack/configuration``)."""
    seen: dict[str, None] = {}
    for k in r.metrics:
        if "/" in k:
            seen[k.split("/", 1)[1]] = None
    return list(seen)


def attack_title(r: AttackResult, kind: str) -> str:
    """What ran: a protocol attack names the SecAgg configurations it attacked, others the defense."""
    if isinstance(r, AttackMatrix):
        return f"matrix: {', '.join(r.attacks)} x {', '.join(r.defenses)}"
    if kind == "protocol":
        configs = _configurations(r)
        return f"{r.attack}: malicious server against secure aggregation ({', '.join(configs) or 'no configuration'})"
    return f"{r.attack} against defense {r.case.defense}"


def verdict(r: AttackResult, kind: str) -> str:
    """One line: did the attack work, by which metric, and what that metric means."""
    if isinstance(r, AttackMatrix):
        ran = [c for c in r.cells if c.leaks is not None]
        leaking = sum(1 for c in ran if c.leaks)
        good = sorted({_view(d) for a in r.attacks for d in r.defenses if r.effective(a, d)})
        unshown = r.not_shown()
        blind = (
            f"; {len(unshown)} cells without a leak are NOT SHOWN: the attack does not succeed without the "
            f"defense either (or its control did not run): {', '.join(f'{a} x {d}' for a, d in unshown)}"
            if unshown
            else ""
        )
        return (
            f"verdict: {leaking} of {len(ran)} attack x defense cells leak ({len(r.cells) - len(ran)} refused)"
            f"{blind}; "
            f"defenses effective against some attack at <= {UTILITY_TOLERANCE_POINTS:.0f} points utility cost: "
            f"{', '.join(good) or 'none'} [{r.mode} mode]"
        )
    m = {k: v for k, v in r.metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)}
    if kind == "protocol":
        per: dict[str, list[float]] = {}
        for k, v in m.items():
            if "/" in k:
                per.setdefault(k.split("/", 1)[1], []).append(v)
        if per:
            parts = ", ".join(f"{c} {int(sum(v))}/{len(v)}" for c, v in per.items())
            expected = "" if r.success is None else (" - as expected" if r.success else " - NOT as expected")
            return f"verdict: target's update isolated in {parts} attack runs{expected} (1 = isolated, 0 = stopped)"
    if isinstance(r, BatchSizeCurve) and r.psnr:
        worst = max(r.psnr)
        leak = "recognisable" if worst >= RECOGNISABLE_PSNR else "not recognisable"
        return (
            f"verdict: best median reconstruction PSNR {worst:.1f} dB over batch sizes {r.batch_sizes}: images "
            f"{leak} (>= {RECOGNISABLE_PSNR:.0f} dB counts as recovered){control_clause(r)}"
        )
    if "identifiable" in m and "fraction_recovered" in m:
        got = round(m["fraction_recovered"] * m.get("target_rounds", 0))
        image = m.get("target_image_psnr", float("nan"))
        state = "LEAKS" if m["fraction_recovered"] > 0 or image >= RECOVERED_PSNR else "does not leak"
        shown = f"; target's image from the estimate {image:.1f} dB" if np.isfinite(image) else ""
        return (
            f"verdict: target's update recovered in {got}/{int(m.get('target_rounds', 0))} of its rounds from "
            f"{int(m.get('rounds', 0))} aggregates ({'identifiable' if m['identifiable'] else 'not identifiable'}; "
            f"within 10% relative error){shown}: {state}{control_clause(r)}"
        )
    if "fraction_recovered" in m and "images" in m:
        seeds = ""
        if isinstance(r, SeedStudy) and "fraction_recovered_seeds_ci_low" in m:
            lo, hi = max(0.0, m["fraction_recovered_seeds_ci_low"]), min(1.0, m["fraction_recovered_seeds_ci_high"])
            seeds = f" (mean of {len(r.seeds)} seeds, 95% CI {lo:.0%}..{hi:.0%})"
        state = "LEAKS: the server recovered images" if m["fraction_recovered"] > 0 else "does not leak"
        target = ""
        if "target_fraction_recovered" in m and m.get("images", 0) != m.get("target_images", 0):
            target = f"; the target's: {m['target_fraction_recovered']:.0%}"
        closed = " [closed-form batch-1 case]" if r.data.get("closed_form") else ""
        return (
            f"verdict: {m['fraction_recovered']:.0%} of {int(m['images'])} images recovered{seeds}, median PSNR "
            f"{m.get('psnr_median', float('nan')):.1f} dB{target}: {state} (>= {RECOVERED_PSNR:.0f} dB counts "
            f"as recovered){closed}{control_clause(r)}"
        )
    if "psnr" in m:
        leak = (
            "recognisable: the server recovered the images" if m["psnr"] >= RECOGNISABLE_PSNR else ("not recognisable")
        )
        base = f", random image {m['random_image_psnr']:.1f} dB" if "random_image_psnr" in m else ""
        return (
            f"verdict: median reconstruction PSNR {m['psnr']:.1f} dB{base}: {leak} "
            f"(>= {RECOGNISABLE_PSNR:.0f} dB counts as recovered){control_clause(r)}"
        )
    if "auc" in m:
        told = "better than chance" if m["auc"] >= DISTINGUISHING_AUC else "near chance"
        ci = f" [95% CI {m['auc_ci_low']:.2f}..{m['auc_ci_high']:.2f}]" if "auc_ci_low" in m else ""
        extra = f", TPR at 1% FPR {m['tpr@1%fpr']:.3f}" if "tpr@1%fpr" in m else ""
        model = ""
        if "model_test_accuracy" in m:
            model = f"; target model test accuracy {m['model_test_accuracy']:.2f}"
            if m["model_test_accuracy"] < 0.5:
                model += " (a weak model leaks little: weigh the AUC against its utility)"
        if "utility_gap_points" in m:
            gap = m["utility_gap_points"]
            model += f"; undefended {m['undefended_test_accuracy']:.2f}, utility cost {gap:.1f} points"
            if m["auc"] < DISTINGUISHING_AUC and gap > UTILITY_TOLERANCE_POINTS:
                model += f": NOT an effective defense (costs more than {UTILITY_TOLERANCE_POINTS:.0f} points)"
            elif m["auc"] < DISTINGUISHING_AUC and _control_leaked(r):
                model += f": defense {r.case.defense} effective (within {UTILITY_TOLERANCE_POINTS:.0f} points)"
        return (
            f"verdict: attack AUC {m['auc']:.2f}{ci} ({told}; 0.5 = chance, 1 = always right){extra}{model}"
            f"{control_clause(r)}"
        )
    if "attack_success_rate" in m:
        asr = m["attack_success_rate"]
        return (
            f"verdict: backdoor success rate {asr:.2f} ({'succeeded' if asr >= 0.5 else 'failed'}: share of "
            f"triggered inputs given the attacker's label, >= 0.5 counts as success); model accuracy "
            f"{m.get('accuracy', float('nan')):.2f}"
        )
    if kind == "poisoning" and "accuracy" in m:
        return f"verdict: model accuracy under attack {m['accuracy']:.2f} (the attack aims to lower it)"
    if r.success is not None:
        return f"verdict: attack {'succeeded' if r.success else 'failed'} against its stated goal"
    return "verdict: no verdict metric for this attack (see the metrics above)"


def _view(defense: str) -> str:
    """A defense's name, marked when it only protects against observers of the release (central DP)."""
    return f"{defense} (observers only, not the server)" if DEFENSES.get(defense).observer_only else defense


def _control_leaked(r: AttackResult) -> bool:
    ctrl = r.data.get("control")
    return isinstance(ctrl, Mapping) and bool(ctrl.get("leaks")) and not ctrl.get("error")


def control_clause(r: AttackResult) -> str:
    """What a result without a leak shows about its defense: stopped (the positive control, the same attack and
    seeds without the defense, leaks: ``result.data["control"]``, :func:`attacks.runner.with_control`) or NOT
    SHOWN (the control did not leak, did not run, or is missing). ``""`` when the result leaks."""
    measure = leak_measure(r.metrics)
    if measure is None or measure.leaks:
        return ""
    defense = r.case.defense
    name = control_defense(defense)
    if not name:
        return "; no defense here: the attack itself fails on this case"
    ctrl = r.data.get("control")
    if not isinstance(ctrl, Mapping):
        return f"; NOT SHOWN that {defense} stops it: no positive control ran (the attack and seeds under {name})"
    if ctrl.get("error"):
        return f"; NOT SHOWN that {defense} stops it: its positive control under {name} did not run ({ctrl['error']})"
    value = f"{ctrl['metric']} {float(ctrl['value']):.3g}"
    if ctrl.get("leaks"):
        observers = (
            f" - for observers of the released model only: the server sees every update before it noises their "
            f"aggregate, so against the server {defense} is {name}, where the attack leaks"
            if r.case.defense_spec.observer_only
            else ""
        )
        return f"; stopped by {defense}: the same attack and seeds leak under {name} ({value}){observers}"
    return (
        f"; NOT SHOWN: the attack does not succeed without the defense either ({name}: {value}), so this says "
        f"nothing about {defense}"
    )
