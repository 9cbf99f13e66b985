"""Attack results as report pages: sections, figures (image grids, ROC curves, PSNR curves).

Attacks return typed results and know nothing of reports; :func:`attack_figures` is a
registry keyed by result type (``functools.singledispatch``) that says how each kind of
result is drawn::

    @attack_figures.register
    def _(result: InversionResult) -> list[Figure]: ...

:func:`attack_section` renders one result (JSON data, summary, tables, its figures) and
:func:`attack_report` a whole list of them behind an overview table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import singledispatch
from pathlib import Path
from typing import Any

import numpy as np

from attacks.imprint import ImprintResult
from attacks.inversion import InversionResult
from attacks.matrix import AttackMatrix, matrix_table
from attacks.membership import MembershipResult
from attacks.metrics import RECOVERED_PSNR, roc_curve
from attacks.registry import ATTACKS, AttackResult
from attacks.runner import BatchSizeCurve, SeedStudy
from privagg.report import Figure, Report, Section
from privagg.report.attack_verdicts import (
    attack_title,
    control_clause,
    verdict,
)

__all__ = [
    "attack_figures",
    "attack_report",
    "attack_section",
    "attack_title",
    "control_clause",
    "image_grid_figure",
    "matrix_heatmap",
    "roc_figure",
    "verdict",
    "write_attack_report",
    "write_matrix_csv",
]


def image_grid_figure(
    filename: str, caption: str, rows: Sequence[tuple[str, np.ndarray]], *, titles: Sequence[str] | None = None
) -> Figure:
    """A figure of image rows (e.g. originals, reconstructions) drawn at report time."""
    rows = [(name, np.asarray(imgs)) for name, imgs in rows]

    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        ncols = max(len(imgs) for _, imgs in rows)
        fig, axes = plt.subplots(len(rows), ncols, figsize=(1.3 * ncols + 1.2, 1.4 * len(rows)), squeeze=False)
        for r, (name, imgs) in enumerate(rows):
            for c in range(ncols):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c < len(imgs):
                    img = imgs[c]
                    img = img[0] if img.ndim == 3 and img.shape[0] == 1 else np.moveaxis(img, 0, -1)
                    ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
                    if titles is not None and r == 0 and c < len(titles):
                        ax.set_title(titles[c], fontsize=7)
                else:
                    ax.axis("off")
            axes[r][0].set_ylabel(name, fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)

    return Figure(filename, caption, draw)


def roc_figure(filename: str, caption: str, curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Log-log ROC curves (name -> (scores, labels)), with the chance diagonal."""
    computed = {name: roc_curve(sc, lb) for name, (sc, lb) in curves.items()}

    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.2, 4.6))
        lo = 1e-4
        for name, c in computed.items():
            ax.plot(np.maximum(c.fpr, lo), np.maximum(c.tpr, lo), label=name)
        ax.plot([lo, 1], [lo, 1], "k--", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, 1)
        ax.set_ylim(lo, 1)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title("Membership inference ROC (log-log)")
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    return Figure(filename, caption, draw)


@singledispatch
def attack_figures(result: AttackResult) -> list[Figure]:
    """The figures a report shows for ``result`` (none unless a renderer is registered for its type)."""
    return []


@attack_figures.register
def _inversion_figures(result: InversionResult) -> list[Figure]:
    case = result.case
    return [
        image_grid_figure(
            f"inversion_{result.attack}_{case.defense}_b{case.batch_size}.png",
            f"{result.attack} against defense {case.defense}, batch size {case.batch_size}: originals (top) vs "
            f"reconstructions (bottom), PSNR {result.metrics['psnr']:.1f} dB",
            [("original", result.originals), ("reconstruction", result.reconstructions)],
            titles=[str(int(v)) for v in result.true_labels],
        )
    ]


@attack_figures.register
def _imprint_figures(result: ImprintResult) -> list[Figure]:
    case = result.case
    m = result.metrics
    return [
        image_grid_figure(
            f"{result.attack}_{case.defense}_b{case.batch_size}.png",
            f"malicious model ({result.attack}) against defense {case.defense}: the cohort's images (top) vs the "
            f"server's "
            f"reconstructions (bottom); {int(m['images_recovered'])}/{int(m['images'])} recovered at "
            f">= {RECOVERED_PSNR:.0f} dB",
            [("original", result.originals), ("reconstruction", result.reconstructions)],
            titles=[str(int(v)) for v in result.true_labels],
        )
    ]


def matrix_heatmap(m: AttackMatrix, filename: str = "attack_matrix.png") -> Figure:
    """Attacks (rows) x defenses (columns, with each defense's utility): colour = leak (fraction recovered,
    or AUC above chance scaled to [0, 1]); each cell annotated with the mean and its 95% interval."""
    import math

    def level(c: Any) -> float:
        if c.error or not math.isfinite(c.value):
            return float("nan")
        return max(0.0, min(1.0, (c.value - 0.5) * 2)) if c.metric == "auc" else max(0.0, min(1.0, c.value))

    grid = np.array([[level(m.cell(a, d)) for d in m.defenses] for a in m.attacks], dtype=float)
    unshown = set(m.not_shown())  # no leak, but the attack fails without the defense too

    def draw(path: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(1.9 * len(m.defenses) + 2.5, 0.9 * len(m.attacks) + 1.6))
        im = ax.imshow(np.ma.masked_invalid(grid), cmap="Reds", vmin=0, vmax=1, aspect="auto")
        cols = []
        for d in m.defenses:
            acc, gap = m.utility.get(d), m.utility_gap(d)
            cols.append(
                d
                + (
                    "\nutility refused"
                    if acc is None
                    else f"\nacc {acc:.2f}" + (f" ({-gap:+.0f} pts)" if gap is not None and d != "none" else "")
                )
            )
        ax.set_xticks(range(len(m.defenses)), cols, fontsize=8)
        ax.set_yticks(range(len(m.attacks)), m.attacks, fontsize=8)
        for i, a in enumerate(m.attacks):
            for j, d in enumerate(m.defenses):
                c = m.cell(a, d)
                label = "refused" if c.error else f"{c.metric.replace('fraction_recovered', 'rec')}\n{c.value:.2f}"
                if not c.error and math.isfinite(c.low):
                    label += f" [{max(c.low, 0):.2f},{min(c.high, 1):.2f}]"
                if (a, d) in unshown:
                    label += "\nnot shown"
                dark = math.isfinite(grid[i, j]) and grid[i, j] > 0.6
                ax.text(j, i, label, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        fig.colorbar(im, ax=ax, label="leak (fraction recovered; AUC: 2 x (AUC - 0.5))")
        ax.set_title(f"Attack x defense, {m.mode} mode (mean over seeds, 95% interval)")
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    return Figure(filename, "Attack x defense matrix: leak per cell, utility per defense", draw)


def write_matrix_csv(m: AttackMatrix, path: str | Path) -> Path:
    """The matrix as one flat CSV table (one row per attack x defense, utility columns beside)."""
    import csv

    header, rows = matrix_table(m)
    p = Path(path)
    with p.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return p


@attack_figures.register
def _matrix_figures(result: AttackMatrix) -> list[Figure]:
    return [matrix_heatmap(result)]


@attack_figures.register
def _seed_study_figures(result: SeedStudy) -> list[Figure]:
    return attack_figures(result.points[0]) if result.points else []


@attack_figures.register
def _membership_figures(result: MembershipResult) -> list[Figure]:
    defense, tm = result.case.defense, result.target_model
    figures = []
    if result.comparison:
        figures.append(
            roc_figure(
                f"mia_roc_all_{defense}_{tm}.png",
                f"Membership inference against the {tm} model, defense {defense}: all attacks",
                result.comparison,
            )
        )
    figures.append(
        roc_figure(
            f"mia_roc_{result.attack}_{defense}_{tm}.png",
            f"{result.attack} against the {tm} model, defense {defense}: log-log ROC",
            {result.attack: (result.scores, result.labels)},
        )
    )
    return figures


@attack_figures.register
def _curve_figures(result: BatchSizeCurve) -> list[Figure]:
    name, defense = result.attack, result.case.defense
    bs, ps, base = result.batch_sizes, result.psnr, result.random_image_psnr

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
        ax.set_title(f"{name} against defense {defense}: PSNR vs batch size")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)

    figures = [Figure(f"psnr_vs_batch_{name}_{defense}.png", f"{name}: PSNR vs victim batch size", draw)]
    return figures + [f for point in result.points for f in attack_figures(point)]


def attack_section(result: AttackResult, *, key: str | None = None) -> Section:
    """``result`` as a report section (JSON data + summary table + tables + figures)."""
    case = result.case
    k = key or f"attack-{result.attack}-{case.defense}"
    summary = [("defense", case.defense), ("threat", case.adversary.server)]
    summary += [(m, f"{v:.4g}" if isinstance(v, float) else str(v)) for m, v in result.metrics.items()]
    if result.success is not None:
        summary.append(("attack succeeded", "yes" if result.success else "no"))
    summary.append(("seconds", f"{result.seconds:.2f}"))
    data = {
        "attack": result.attack,
        "defense": case.defense,
        "case": case,
        "metrics": result.metrics,
        "success": result.success,
        "seconds": result.seconds,
        **result.data,
    }
    return Section(
        key=k,
        title=f"Attack {attack_title(result, _kind(result))}",
        data=data,
        summary=summary,
        figures=attack_figures(result),
        tables=list(result.tables),
        text=_with_threat_model(result),
    )


def _with_threat_model(result: AttackResult) -> str:
    """The result's text, led by its threat model when the text does not state it already."""
    threat = str(result.data.get("threat_model", ""))
    return result.text if not threat or threat in result.text else f"{threat} {result.text}".strip()


def attack_report(
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
        rep.add(attack_section(r, key=k if used[k] == 1 else f"{k}-{used[k]}"))
    return rep


def _headline(r: AttackResult) -> tuple[str, str]:
    m = r.metrics
    for key in ("fraction_recovered", "psnr", "psnr@b1", "tpr@1%fpr", "auc"):
        if key in m and np.isfinite(m[key]):
            return key, f"{m[key]:.4g}"
    if r.success is not None:
        return "as expected", "yes" if r.success else "no"
    if m:
        k, v = next(iter(m.items()))
        return k, f"{v:.4g}"
    return "-", "-"


def _kind(r: AttackResult) -> str:
    """The registered attack's kind ("inference", "poisoning", "protocol")."""
    return ATTACKS.get(r.attack).kind if r.attack in ATTACKS else "inference"


def write_attack_report(
    result: AttackResult, out: Path, *, name: str | None, command: str | None, timestamp: str | None
) -> tuple[Report, str, str]:
    """Write ``result``'s report (HTML + JSON, and the CSV of a matrix) into ``out``; return the report, its
    title and its one-line verdict. ``name``: the attack asked for (``None`` for a whole matrix)."""
    from privagg.report import environment_section, provenance

    kind = ATTACKS.get(result.attack).kind if result.attack in ATTACKS else "inference"
    matrix = isinstance(result, AttackMatrix)
    title, line = attack_title(result, kind), verdict(result, kind)
    top = {
        "attack": name or "matrix",
        "defense": "matrix" if matrix else result.case.defense,
        "metrics": result.metrics,
        "success": result.success,
        "verdict": line,
    }
    if matrix:
        top["mode"] = result.case.mode
    report = attack_report([result], title=f"privagg attack {title}", top=top)
    provenance(report, command=command, seed=result.case.seed, timestamp=timestamp)
    report.add(environment_section())
    report.write(out)
    if isinstance(result, AttackMatrix):
        write_matrix_csv(result, out / "attack_matrix.csv")
    return report, title, line
