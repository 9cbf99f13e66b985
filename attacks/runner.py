"""The inference-attack runner: attack x defense evaluations, curves and reports.

``run_attack("idlg", case)`` looks the attack up in the registry (every module of the
:mod:`attacks` package registers on import; :func:`load_attacks` imports them) and runs it;
:func:`batch_size_curve` sweeps an inversion attack over batch sizes (PSNR vs batch size);
:func:`defense_matrix` runs one attack against several defenses; :func:`build_report`
turns results into a :class:`privagg.report.Report`. :data:`DEFAULT_SUITE` is the suite
``benchmarks/attack_suite.py`` times.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attacks.registry import ATTACKS, Attack, AttackCase, AttackResult, ThreatModel
from privagg.errors import ConfigurationError
from privagg.report import Figure, Report, Section

__all__ = [
    "DEFAULT_SUITE",
    "SuiteEntry",
    "batch_size_curve",
    "build_attack",
    "build_report",
    "defense_matrix",
    "load_attacks",
    "run_attack",
    "run_suite",
]

_NOT_ATTACK_MODULES = frozenset({"registry", "runner", "metrics", "scenario"})


def load_attacks() -> list[str]:
    """Import every module of the ``attacks`` package (each registers its attacks); return the names."""
    import attacks

    for mod in pkgutil.iter_modules(attacks.__path__):
        if mod.name in _NOT_ATTACK_MODULES or mod.name.startswith("_"):
            continue
        importlib.import_module(f"attacks.{mod.name}")
    return ATTACKS.names()


def build_attack(name: str, options: Mapping[str, Any] | None = None) -> Attack:
    """The registered attack ``name`` built with its hyper-parameters ``options``."""
    load_attacks()
    cls = ATTACKS.get(name, field="attack")
    try:
        return cls(**dict(options or {}))
    except TypeError as e:
        raise ConfigurationError(f"invalid options for attack {name!r}: {e}", field="attack") from None


def run_attack(
    name: str, case: AttackCase, *, options: Mapping[str, Any] | None = None, progress: bool = False
) -> AttackResult:
    attack = build_attack(name, options)
    if not attack.supports(case):
        raise ConfigurationError(
            f"attack {name!r} does not apply to this case ({case.dataset}, {case.model})", field="attack"
        )
    return attack.run(case, progress=progress)


def batch_size_curve(
    name: str,
    case: AttackCase,
    *,
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    options: Mapping[str, Any] | None = None,
) -> AttackResult:
    """PSNR / SSIM / label accuracy of an inversion attack per victim batch size, with a figure."""
    t0 = time.perf_counter()
    rows = []
    results = []
    for b in batch_sizes:
        r = run_attack(name, case.with_(batch_size=int(b)), options=options)
        results.append(r)
        rows.append(
            [int(b), r.metrics["psnr"], r.metrics["ssim"], r.metrics["label_accuracy"], r.metrics["random_image_psnr"]]
        )
    bs = [row[0] for row in rows]
    ps = [row[1] for row in rows]
    base = [row[4] for row in rows]

    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        ax.plot(bs, ps, "o-", label=f"{name} reconstruction")
        ax.plot(bs, base, "k--", lw=1, label="uniform random image")
        ax.axhline(30, color="tab:red", lw=0.8, ls=":", label="30 dB")
        ax.set_xscale("log", base=2)
        ax.set_xticks(bs, [str(b) for b in bs])
        ax.set_xlabel("victim batch size")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{name} against defense {case.defense}: PSNR vs batch size")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    metrics = {f"psnr@b{b}": p for b, p in zip(bs, ps)}
    metrics.update({f"label_accuracy@b{row[0]}": row[3] for row in rows})
    figures = [Figure(f"psnr_vs_batch_{name}_{case.defense}.png", f"{name}: PSNR vs victim batch size", draw)]
    figures += [f for r in results for f in r.figures]
    return AttackResult(
        attack=name,
        case=case,
        metrics=metrics,
        figures=figures,
        tables=[
            (
                "PSNR vs batch size",
                ["batch size", "PSNR (dB)", "SSIM", "label accuracy", "random image PSNR (dB)"],
                rows,
            )
        ],
        data={"batch_sizes": bs, "psnr": ps},
        seconds=time.perf_counter() - t0,
    )


def defense_matrix(
    name: str, case: AttackCase, defenses: Iterable[str], *, options: Mapping[str, Any] | None = None
) -> list[AttackResult]:
    """Run ``name`` once per defense (same case otherwise)."""
    return [run_attack(name, case.with_(defense=d), options=options) for d in defenses]


@dataclass(frozen=True)
class SuiteEntry:
    """One measurement of the default suite: attack, defenses, case changes, attack options, curve."""

    attack: str
    defenses: tuple[str, ...] = ("none",)
    case: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    curve: tuple[int, ...] = ()


#: The default attack suite (``benchmarks/attack_suite.py``): every inference attack family
#: against no defense and the defenses that should stop it.
DEFAULT_SUITE: tuple[SuiteEntry, ...] = (
    SuiteEntry("idlg", ("none", "secagg", "dp", "secagg+dp"), curve=(1, 2, 4, 8)),
    SuiteEntry("inverting-gradients", ("none", "secagg", "dp")),
    SuiteEntry("dlg", ("none",)),
    SuiteEntry("lira-online", ("none", "dp"), case={"num_clients": 5, "hidden": (256,)}),
    SuiteEntry(
        "lira-online",
        ("none",),
        case={"num_clients": 5, "hidden": (256,), "options": {"target_model": "client"}},
    ),
    SuiteEntry("property-inference", ("none", "secagg")),
    SuiteEntry("protocol", ("none",), case={"threat": ThreatModel.malicious_server()}),
)


def run_suite(
    entries: Sequence[SuiteEntry] = DEFAULT_SUITE, *, base: AttackCase | None = None, progress: bool = False
) -> list[AttackResult]:
    """Run the suite; membership attacks sharing a case reuse one set of trained models."""
    from attacks.membership import MembershipAttack, collect_membership_scores, roc_figure

    base = base or AttackCase()
    out: list[AttackResult] = []
    for e in entries:
        for d in e.defenses:
            case = base.with_(defense=d, **dict(e.case))
            if e.curve and d == "none":
                out.append(batch_size_curve(e.attack, case, batch_sizes=e.curve, options=e.options))
                continue
            attack = build_attack(e.attack, e.options)
            if isinstance(attack, MembershipAttack):
                t_collect = time.perf_counter()
                scores = collect_membership_scores(case)
                first = attack.run(case, scores=scores)
                first.seconds += time.perf_counter() - t_collect  # training the models is part of the attack
                first.data["includes_model_training"] = True
                group = [first]
                for other in ("lira-online", "lira-offline", "shadow-models", "loss-threshold"):
                    if other != e.attack:
                        oa = build_attack(other)
                        assert isinstance(oa, MembershipAttack)
                        group.append(oa.run(case, scores=scores))
                out.extend(group)
                tm = str(case.option("target_model", "global"))
                first.figures.insert(
                    0,
                    roc_figure(
                        f"mia_roc_all_{case.defense}_{tm}.png",
                        f"Membership inference against the {tm} model, defense {case.defense}: all attacks",
                        {r.attack: (r.raw["scores"], r.raw["labels"]) for r in group},
                    ),
                )
            else:
                out.append(attack.run(case, progress=progress))
    return out


def build_report(
    results: Sequence[AttackResult], *, title: str = "privagg attack report", top: Mapping[str, Any] | None = None
) -> Report:
    """One report: an overview table plus one section per result (figures, tables, JSON data)."""
    rep = Report(title, top=dict(top or {}))
    rows = []
    for r in results:
        key = _headline(r)
        name = r.attack + (" (client model)" if r.data.get("target_model") == "client" else "")
        rows.append([name, r.case.defense, key[0], key[1], f"{r.seconds:.1f}"])
    rep.add(
        Section(
            key="attack-overview",
            title="Overview",
            data={
                "results": [
                    {
                        "attack": r.attack,
                        "defense": r.case.defense,
                        "metrics": r.metrics,
                        "success": r.success,
                        "seconds": r.seconds,
                    }
                    for r in results
                ]
            },
            tables=[("Attacks x defenses", ["attack", "defense", "headline metric", "value", "seconds"], rows)],
        )
    )
    used: dict[str, int] = {}
    for r in results:
        k = f"attack-{r.attack}-{r.case.defense}"
        if r.data.get("target_model") == "client":
            k += "-client-model"
        used[k] = used.get(k, 0) + 1
        rep.add(r.to_section(key=k if used[k] == 1 else f"{k}-{used[k]}"))
    return rep


def _headline(r: AttackResult) -> tuple[str, str]:
    m = r.metrics
    for key in ("psnr", "psnr@b1", "tpr@1%fpr", "auc"):
        if key in m and np.isfinite(m[key]):
            return key, f"{m[key]:.4g}"
    if r.success is not None:
        return "as expected", "yes" if r.success else "no"
    if m:
        k, v = next(iter(m.items()))
        return k, f"{v:.4g}"
    return "-", "-"
