"""Gradient inversion attacks on a case: reconstruct a client's batch from what the server observes.

The attacks registered here (``dlg``, ``idlg``, ``inverting-gradients``, ``linear-leakage``)
run the algorithms of :mod:`attacks.reconstruction` on an :class:`~attacks.registry.AttackCase`:
a federation of ``num_clients`` clients each sends one FedSGD step on a batch of
``batch_size`` of its own images; the server sees the target's update (``defense="none"``)
or only what the defense releases (the secure aggregate, the DP-noised aggregate). Each
returns an :class:`InversionResult`: metrics against baselines (what knowing nothing about
the individual scores) plus the originals and reconstructions a report draws.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from attacks.metrics import psnr, ssim
from attacks.reconstruction import (
    Reconstruction,
    dlg,
    inverting_gradients,
    linear_leakage,
    match_reconstructions,
    reconstruction_metrics,
    recover_labels,
)
from attacks.registry import Attack, AttackCase, AttackResult, register_attack
from attacks.scenario import inversion_observation
from privagg.randomness import torch_generator

__all__ = [
    "DLG",
    "IDLG",
    "InversionAttack",
    "InversionResult",
    "InvertingGradients",
    "LinearLeakage",
]


@dataclass(kw_only=True)
class InversionResult(AttackResult):
    """An inversion attack's result: the target's real batch and the reconstructions
    (matched to the originals' order), with the true labels."""

    originals: np.ndarray = field(repr=False, compare=False)
    reconstructions: np.ndarray = field(repr=False, compare=False)
    true_labels: np.ndarray = field(repr=False, compare=False)


class InversionAttack(Attack):
    """Shared driver: build the FedSGD observation for the case, reconstruct, measure.

    Hyper-parameters are keyword-only constructor arguments; ``labels`` decides where the
    labels come from: ``"recover"`` (analytic, from the observed last layer), ``"known"``
    (the adversary's ``knows_labels``) or ``"optimise"`` (DLG's joint optimisation).
    """

    kind: ClassVar[str] = "inference"
    label_mode: ClassVar[str] = "recover"

    def __init__(
        self, *, iterations: int | None = None, restarts: int = 1, lr: float | None = None, tv_weight: float = 1e-4
    ) -> None:
        self.iterations = iterations
        self.restarts = restarts
        self.lr = lr
        self.tv_weight = tv_weight

    def supports(self, case: AttackCase) -> bool:
        return case.dataset in ("digits", "mnist-5k")

    def reconstruct(
        self,
        model: nn.Module,
        observed: list[torch.Tensor],
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        batch_size: int,
        labels: np.ndarray,
        generator: torch.Generator,
    ) -> Reconstruction:
        raise NotImplementedError

    def _labels(self, case: AttackCase, model: nn.Module, observed: list[torch.Tensor], true: np.ndarray) -> np.ndarray:
        if case.adversary.knows_labels:
            return np.sort(true)
        return recover_labels(model, observed, batch_size=case.batch_size)

    def run(self, case: AttackCase, *, progress: bool = False) -> InversionResult:
        t0 = time.perf_counter()
        obs = inversion_observation(case)
        observed = [torch.as_tensor(g) for g in obs.gradients]
        labels = self._labels(case, obs.model, observed, obs.labels)
        rec = self.reconstruct(
            obs.model,
            observed,
            input_shape=obs.input_shape,
            num_classes=obs.num_classes,
            batch_size=case.batch_size,
            labels=labels,
            generator=torch_generator(case.seed, "attack", self.name),
        )
        metrics = reconstruction_metrics(obs.images, rec.x, obs.labels, rec.labels)
        metrics.update(_baselines(obs.images, obs.labels, obs.dataset_images, obs.dataset_labels, case.seed))
        if len(obs.cohort_images) > len(obs.images):
            # Did the attack rebuild *someone's* image (not the target's)? Best match over the cohort.
            metrics["cohort_best_psnr"] = max(psnr(c[None], r[None]) for c in obs.cohort_images for r in rec.x)
        metrics["grad_loss"] = rec.grad_loss
        return InversionResult(
            attack=self.name,
            case=case,
            metrics=metrics,
            originals=obs.images,
            reconstructions=match_reconstructions(obs.images, rec.x),
            true_labels=obs.labels,
            data={
                "observation": obs.description,
                "recovered_labels": rec.labels,
                "true_labels": obs.labels,
                "iterations": rec.iterations,
            },
            seconds=time.perf_counter() - t0,
            text=(
                f"The server observes {obs.description}. Random-image baseline: PSNR "
                f"{metrics['random_image_psnr']:.1f} dB."
            ),
        )


@register_attack("dlg")
class DLG(InversionAttack):
    """Deep Leakage from Gradients: L2 matching, L-BFGS, labels optimised jointly.

    L-BFGS from a random start often stalls in a local minimum for batches (two images of one
    class especially); the attack restarts from fresh random inputs up to ``restarts`` times,
    stops at the first exact match (gradient distance < ``1e-8``) and keeps the best.
    """

    description = "Deep Leakage from Gradients (Zhu et al. 2019): L2 gradient matching, L-BFGS"
    label_mode = "optimise"

    def __init__(
        self, *, iterations: int | None = None, restarts: int = 8, lr: float | None = None, tv_weight: float = 0.0
    ) -> None:
        super().__init__(iterations=iterations, restarts=restarts, lr=lr, tv_weight=tv_weight)

    def _labels(self, case: AttackCase, model: nn.Module, observed: list[torch.Tensor], true: np.ndarray) -> np.ndarray:
        return np.sort(true) if case.adversary.knows_labels else np.zeros(0, dtype=np.int64)

    def reconstruct(
        self,
        model: nn.Module,
        observed: list[torch.Tensor],
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        batch_size: int,
        labels: np.ndarray,
        generator: torch.Generator,
    ) -> Reconstruction:
        best: Reconstruction | None = None
        for _ in range(max(1, self.restarts)):
            rec = dlg(
                model,
                observed,
                input_shape=input_shape,
                num_classes=num_classes,
                batch_size=batch_size,
                labels=labels if labels.size else None,
                iterations=self.iterations or 300,
                lr=self.lr or 1.0,
                generator=generator,
            )
            if best is None or rec.grad_loss < best.grad_loss:
                best = rec
            if best.grad_loss < 1e-8:
                break
        assert best is not None
        return best


@register_attack("idlg")
class IDLG(DLG):
    """iDLG: analytic label recovery from the last layer, then L2 matching with L-BFGS."""

    description = "iDLG (Zhao et al. 2020): analytic labels from the last layer + DLG on the inputs"
    label_mode = "recover"

    def _labels(self, case: AttackCase, model: nn.Module, observed: list[torch.Tensor], true: np.ndarray) -> np.ndarray:
        return InversionAttack._labels(self, case, model, observed, true)


@register_attack("inverting-gradients")
class InvertingGradients(InversionAttack):
    """Inverting Gradients: cosine distance + total variation, Adam, restarts."""

    description = "Inverting Gradients (Geiping et al. 2020): cosine + TV, signed Adam, restarts"

    def __init__(
        self, *, iterations: int | None = None, restarts: int = 2, lr: float | None = None, tv_weight: float = 1e-4
    ) -> None:
        super().__init__(iterations=iterations, restarts=restarts, lr=lr, tv_weight=tv_weight)

    def reconstruct(
        self,
        model: nn.Module,
        observed: list[torch.Tensor],
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        batch_size: int,
        labels: np.ndarray,
        generator: torch.Generator,
    ) -> Reconstruction:
        return inverting_gradients(
            model,
            observed,
            input_shape=input_shape,
            labels=labels,
            iterations=self.iterations or 400,
            lr=self.lr or 0.1,
            tv_weight=self.tv_weight,
            restarts=self.restarts,
            generator=generator,
        )


@register_attack("linear-leakage")
class LinearLeakage(InversionAttack):
    """Analytic reconstruction through the first fully connected layer (Phong et al. 2017)."""

    description = "Analytic inversion through the first linear layer: x = dW1[i] / db1[i]"

    def reconstruct(
        self,
        model: nn.Module,
        observed: list[torch.Tensor],
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        batch_size: int,
        labels: np.ndarray,
        generator: torch.Generator,
    ) -> Reconstruction:
        return linear_leakage(model, observed, input_shape=input_shape, batch_size=batch_size, labels=labels)


def _baselines(
    images: np.ndarray, labels: np.ndarray, dataset_images: np.ndarray, dataset_labels: np.ndarray, seed: int
) -> dict[str, float]:
    """What "learning nothing about this individual" scores: uniform noise, the dataset's mean
    image, a random dataset image, a random image of the same class (what knowing the label gives)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    noise = rng.random(images.shape)
    mean_img = np.broadcast_to(dataset_images.mean(axis=0), images.shape)
    picks = rng.choice(len(dataset_images), size=(64, len(images)))
    rand_psnr = [psnr(images, dataset_images[p]) for p in picks]
    same = []
    for _ in range(64):
        pick = [rng.choice(np.flatnonzero(dataset_labels == y)) for y in labels]
        cand = dataset_images[pick]
        if not any(np.array_equal(a, b) for a, b in zip(cand, images)):
            same.append(psnr(images, cand))
    return {
        "random_same_class_psnr": float(np.median(same)) if same else float("nan"),
        "random_image_psnr": psnr(images, noise),
        "random_image_ssim": ssim(images, noise) if min(images.shape[-2:]) >= 3 else float("nan"),
        "mean_image_psnr": psnr(images, mean_img),
        "random_dataset_image_psnr": float(np.median(rand_psnr)),
    }
