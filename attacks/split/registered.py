"""Split-learning attacks in the attack registry: ``split-norm``, ``-direction``, ``-decoder``, ``-fsha``.

An :class:`~attacks.registry.AttackCase` maps onto a split-learning run: its dataset, seed,
MLP widths and number of clients (one: a single client; more: SplitFed-style parallel
clients). The case's ``defense`` must be ``"none"`` (the aggregator defenses do not apply
to split learning); the split defense is ``options["split_defense"]`` (a name in
:data:`attacks.split.study.SPLIT_DEFENSES`), and ``options`` may set ``cut``, ``epochs``,
``mode``, ``optimizer``, ``lr``, ``batch_size`` and ``nopeek`` (FSHA's success depends on the
client's optimiser). The result's metrics are the study's: leak AUC (worst epoch), mean AUC
and test accuracy, or median PSNR, fraction recovered and the no-knowledge baseline.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import ClassVar

from attacks.registry import Attack, AttackCase, AttackResult, register_attack
from attacks.split.study import SPLIT_ATTACKS, SPLIT_DEFENSES, SplitStudyConfig, measure_run
from protocols.split.simulation import SplitConfig

__all__ = ["SplitAttack", "SplitDecoder", "SplitDirection", "SplitFSHA", "SplitNorm", "split_config"]

_BINARY = ("breast-cancer",)
_IMAGES = ("digits", "mnist-5k")


def split_config(case: AttackCase) -> SplitConfig:
    """The split-learning run a case describes (before its split defense)."""
    n = case.num_clients
    base = SplitConfig(
        dataset=case.dataset,
        hidden=tuple(case.run.model.hidden),
        seed=case.seed,
        num_clients=n,
        topology="single" if n == 1 else "splitfed",
    )
    keys = ("cut", "epochs", "mode", "optimizer", "lr", "batch_size", "nopeek")
    changes = {k: case.options[k] for k in keys if k in case.options}
    return replace(base, **changes)


class SplitAttack(Attack):
    kind: ClassVar[str] = "inference"
    split_attack: ClassVar[str] = "norm"

    def __init__(self, *, threshold_db: float = 20.0, decoder_epochs: int = 150, fsha_steps: int = 3000) -> None:
        self.threshold_db = threshold_db
        self.decoder_epochs = decoder_epochs
        self.fsha_steps = fsha_steps

    def supports(self, case: AttackCase) -> bool:
        wanted = _BINARY if SPLIT_ATTACKS.get(self.split_attack).target == "labels" else _IMAGES
        return case.defense == "none" and case.dataset in wanted

    def run(self, case: AttackCase, *, progress: bool = False) -> AttackResult:
        t0 = time.perf_counter()
        defense = str(case.option("split_defense", "none"))
        cfg = SPLIT_DEFENSES.get(defense, field="options.split_defense").apply(split_config(case))
        study = SplitStudyConfig(
            base=cfg,
            defenses=(defense,),
            attacks=(self.split_attack,),
            seeds=(cfg.seed,),
            decoder_threshold_db=self.threshold_db,
            decoder_epochs=self.decoder_epochs,
            fsha_steps=self.fsha_steps,
        )
        run, measures, _ = measure_run(cfg, (self.split_attack,), study)
        metrics = {**measures[self.split_attack], "accuracy": run.accuracy, "bytes_per_step": run.bytes.per_step}
        text = (
            f"split learning ({cfg.mode}, {cfg.topology}, cut {cfg.cut}) on {cfg.dataset}, "
            f"split defense {defense}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        )
        return AttackResult(
            self.name,
            case,
            metrics=metrics,
            data={"split_config": cfg.__dict__},
            seconds=time.perf_counter() - t0,
            text=text,
        )


@register_attack("split-norm")
class SplitNorm(SplitAttack):
    description = "split learning: label leakage by cut-gradient norm (Li et al. 2022)"
    split_attack = "norm"


@register_attack("split-direction")
class SplitDirection(SplitAttack):
    description = "split learning: label leakage by cut-gradient direction (Li et al. 2022)"
    split_attack = "direction"


@register_attack("split-decoder")
class SplitDecoder(SplitAttack):
    description = "split learning: a decoder trained on public data inverts the smashed data"
    split_attack = "decoder"


@register_attack("split-fsha")
class SplitFSHA(SplitAttack):
    description = "split learning: feature-space hijacking by a malicious server (Pasquini et al. 2021)"
    split_attack = "fsha"
