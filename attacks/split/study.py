"""Leak against utility for every attack x defense of split learning, over seeds.

:data:`SPLIT_DEFENSES` names defense *configurations* (what changes in the
:class:`~protocols.split.SplitConfig`: a gradient defense of the label party, NoPeek's
loss at the clients, the U-shaped layout); :data:`SPLIT_ATTACKS` names the attacks
(``norm`` and ``direction`` label-leakage scoring, ``decoder`` inversion of the smashed data by an
honest-but-curious server, ``fsha``: feature-space hijacking by a malicious server, which runs
against the same client configuration without training the task).
:func:`run_split_study` trains once per (defense, seed) with every applicable attack
watching, and returns a :class:`SplitStudyResult`: per cell, the leak figure and the test
accuracy per seed, the accuracy lost against the undefended run of the same seed, and
Student-t intervals over seeds.

Leak figures: for the label attacks, ``leak_auc`` is the *worst epoch*'s mean per-step AUC
(the attacker may pick when to look; ``mean_auc`` over all steps is kept beside it); for the
decoder and FSHA, the median per-image PSNR and ``recovered`` (fraction at or above the threshold).
The accuracy of a cell is always the honest run's (FSHA's server trains no task).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from attacks.metrics import seed_interval
from attacks.split.fsha import fsha_attack
from attacks.split.inversion import DecoderScores, decoder_attack
from attacks.split.leakage import GradientRecorder
from privagg.errors import ConfigurationError
from privagg.registry import Registry
from protocols.datasets import load_dataset
from protocols.split.simulation import SplitConfig, SplitRunResult, client_partition, fedavg_baseline, run_split

__all__ = [
    "SPLIT_ATTACKS",
    "SPLIT_DEFENSES",
    "CellResult",
    "DefenseSetting",
    "SplitAttackSpec",
    "SplitStudyConfig",
    "SplitStudyResult",
    "interval",
    "measure_run",
    "run_split_study",
]


@dataclass(frozen=True)
class DefenseSetting:
    """A named defense configuration: the :class:`SplitConfig` fields it changes."""

    changes: Mapping[str, Any]
    description: str = ""

    def apply(self, cfg: SplitConfig) -> SplitConfig:
        return replace(cfg, **dict(self.changes))


SPLIT_DEFENSES: Registry[DefenseSetting] = Registry("split defense")
SPLIT_DEFENSES.add("none", DefenseSetting({}, "no defense"))
SPLIT_DEFENSES.add(
    "noise",
    DefenseSetting(
        {"defense": "noise", "defense_options": (("multiplier", 32.0),)},
        "isotropic Gaussian noise on the label party's gradients, expected norm 32 x the batch's median gradient norm",
    ),
)
SPLIT_DEFENSES.add(
    "max-norm",
    DefenseSetting({"defense": "max-norm"}, "noise lifting every gradient's expected norm to the batch's largest"),
)
SPLIT_DEFENSES.add(
    "marvell",
    DefenseSetting(
        {"defense": "marvell", "defense_options": (("power", 4.0),)},
        "Marvell optimised noise, power 4 x ||class mean difference||^2",
    ),
)
SPLIT_DEFENSES.add("nopeek", DefenseSetting({"nopeek": 1.0}, "NoPeek: clients add 1.0 x distance correlation"))
SPLIT_DEFENSES.add(
    "u-shaped",
    DefenseSetting(
        {"mode": "u-shaped", "cut": 3},
        "labels and head (the last layer) stay with the client; the server keeps the layers from module 3 to the head",
    ),
)


@dataclass(frozen=True)
class SplitAttackSpec:
    """What an attack needs: ``target`` labels (binary data) or images; its headline metric."""

    target: Literal["labels", "images"]
    metric: str
    description: str


SPLIT_ATTACKS: Registry[SplitAttackSpec] = Registry("split attack")
SPLIT_ATTACKS.add("norm", SplitAttackSpec("labels", "leak_auc", "gradient-norm scoring of the minority label"))
SPLIT_ATTACKS.add("direction", SplitAttackSpec("labels", "leak_auc", "cosine with one known positive's gradient"))
SPLIT_ATTACKS.add(
    "decoder", SplitAttackSpec("images", "median_psnr", "decoder trained on public data, inverts smashed data")
)
SPLIT_ATTACKS.add(
    "fsha", SplitAttackSpec("images", "median_psnr", "feature-space hijacking by a malicious server (Pasquini et al.)")
)


def interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval ``(mean, low, high)`` over the finite per-seed values (one seed: a
    zero-width interval; none: NaNs) -- :func:`attacks.metrics.seed_interval` with the study's edge cases."""
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return (float("nan"),) * 3
    if len(v) < 2:
        return v[0], v[0], v[0]
    return seed_interval(v, confidence=confidence)


@dataclass(frozen=True)
class SplitStudyConfig:
    base: SplitConfig = field(default_factory=SplitConfig)
    defenses: tuple[str, ...] = ("none", "noise", "max-norm", "marvell", "nopeek", "u-shaped")
    attacks: tuple[str, ...] = ("norm", "direction")
    seeds: tuple[int, ...] = (0, 1, 2)
    decoder_threshold_db: float = 20.0
    decoder_epochs: int = 150
    fsha_steps: int = 3000
    fsha_pilot: Literal["shared-init", "independent"] = "shared-init"
    fedavg: bool = False

    def __post_init__(self) -> None:
        for d in self.defenses:
            SPLIT_DEFENSES.get(d, field="defenses")
        for a in self.attacks:
            SPLIT_ATTACKS.get(a, field="attacks")
        if not self.seeds:
            raise ConfigurationError("need at least one seed", field="seeds")


@dataclass
class CellResult:
    attack: str
    defense: str
    metric: str
    values: list[float]
    accuracy: list[float]
    accuracy_loss: list[float]
    extra: dict[str, list[float]] = field(default_factory=dict)

    @property
    def leak(self) -> tuple[float, float, float]:
        return interval(self.values)

    @property
    def utility_loss(self) -> tuple[float, float, float]:
        return interval(self.accuracy_loss)


@dataclass
class SplitStudyResult:
    config: SplitStudyConfig
    cells: list[CellResult]
    accuracy: dict[str, list[float]]
    bytes_per_step: dict[str, float]
    fedavg_accuracy: list[float] = field(default_factory=list)
    examples: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def cell(self, attack: str, defense: str) -> CellResult:
        for c in self.cells:
            if c.attack == attack and c.defense == defense:
                return c
        raise KeyError((attack, defense))


def _epoch_worst(step_ids: list[int], aucs: list[float], steps_per_epoch: int) -> float:
    by_epoch: dict[int, list[float]] = {}
    for s, a in zip(step_ids, aucs):
        by_epoch.setdefault(s // steps_per_epoch, []).append(a)
    return max((float(np.mean(v)) for v in by_epoch.values()), default=float("nan"))


def _image_metrics(d: DecoderScores) -> dict[str, float]:
    return {
        "median_psnr": d.median_psnr,
        "recovered": d.fraction_recovered,
        "baseline_median_psnr": d.baseline_median_psnr,
        "recovered_25db": float(np.mean(d.psnr >= 25.0)),
    }


def measure_run(
    cfg: SplitConfig, attacks: tuple[str, ...], study: SplitStudyConfig
) -> tuple[SplitRunResult, dict[str, dict[str, float]], dict[str, DecoderScores]]:
    ds = load_dataset(cfg.dataset, seed=cfg.seed, test_fraction=cfg.test_fraction)
    label_attacks = [a for a in attacks if SPLIT_ATTACKS.get(a).target == "labels"]
    recorder = None
    if label_attacks:
        if ds.num_classes != 2:
            raise ConfigurationError(
                "label-leakage scoring needs binary labels", field="dataset", accepted=["breast-cancer"]
            )
        minority = int(np.argmin(np.bincount(ds.y_train, minlength=2)))
        labels = {c: ds.y_train[i] for c, i in enumerate(client_partition(ds, cfg))}
        recorder = GradientRecorder(labels, positive_class=minority, mode=cfg.mode)
    run = run_split(cfg, taps=[recorder] if recorder is not None else [], dataset=ds)
    out: dict[str, dict[str, float]] = {}
    images: dict[str, DecoderScores] = {}
    steps_per_epoch = max(1, run.bytes.steps // cfg.epochs)
    for a in attacks:
        if SPLIT_ATTACKS.get(a).target == "labels":
            assert recorder is not None
            sc = recorder.score(a)
            out[a] = {
                "leak_auc": _epoch_worst(sc.step_ids, sc.step_aucs, steps_per_epoch),
                "mean_auc": sc.mean_auc,
                "pooled_auc": sc.pooled_auc,
            }
        elif a == "fsha":
            f, _ = fsha_attack(
                cfg, steps=study.fsha_steps, threshold_db=study.decoder_threshold_db, pilot=study.fsha_pilot
            )
            out[a] = _image_metrics(f)
            images[a] = f
        else:
            d = decoder_attack(run, threshold_db=study.decoder_threshold_db, epochs=study.decoder_epochs, seed=cfg.seed)
            out[a] = _image_metrics(d)
            images[a] = d
    return run, out, images


def run_split_study(study: SplitStudyConfig) -> SplitStudyResult:
    """Train once per (defense, seed) with every attack watching; collect leak and utility."""
    acc: dict[str, list[float]] = {}
    raw: dict[tuple[str, str], list[dict[str, float]]] = {}
    bytes_per_step: dict[str, float] = {}
    examples: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for defense in study.defenses:
        setting = SPLIT_DEFENSES.get(defense)
        for seed in study.seeds:
            cfg = setting.apply(replace(study.base, seed=seed))
            run, measures, images = measure_run(cfg, study.attacks, study)
            acc.setdefault(defense, []).append(run.accuracy)
            bytes_per_step[defense] = run.bytes.per_step
            for a in study.attacks:
                raw.setdefault((a, defense), []).append(measures[a])
            for a, dec in images.items():
                examples.setdefault(f"{a}, {defense}", (dec.originals[:8], dec.reconstructions[:8]))
    reference = acc.get("none")
    cells = []
    for (a, defense), rows in raw.items():
        metric = SPLIT_ATTACKS.get(a).metric
        loss = [r - d for r, d in zip(reference, acc[defense])] if reference is not None else []
        extra = {k: [r[k] for r in rows] for k in rows[0] if k != metric}
        cells.append(CellResult(a, defense, metric, [r[metric] for r in rows], acc[defense], loss, extra))
    fed: list[float] = []
    if study.fedavg:
        fed = [fedavg_baseline(replace(study.base, seed=s)) for s in study.seeds]
    return SplitStudyResult(study, cells, acc, bytes_per_step, fed, examples)
