"""Local training and evaluation of torch models on numpy data (CPU, no DataLoader)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from privagg.errors import ConfigurationError

__all__ = [
    "LocalTrainer",
    "LossHook",
    "StepHook",
    "TrainConfig",
    "batch_order",
    "evaluate",
    "local_steps_trainer",
    "per_class_accuracy",
    "predict_logits",
    "train_local",
    "train_steps",
]


@dataclass(frozen=True)
class TrainConfig:
    """Client-side training: ``epochs`` passes of mini-batch ``optimizer`` at rate ``lr``."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigurationError(f"must be >= 1, got {self.epochs}", field="epochs")
        if self.batch_size < 1:
            raise ConfigurationError(f"must be >= 1, got {self.batch_size}", field="batch_size")
        if not self.lr > 0:
            raise ConfigurationError(f"must be > 0, got {self.lr}", field="lr")
        if not 0 <= self.momentum < 1:
            raise ConfigurationError(f"must be in [0, 1), got {self.momentum}", field="momentum")
        if self.weight_decay < 0:
            raise ConfigurationError(f"must be >= 0, got {self.weight_decay}", field="weight_decay")

    def make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)


LossHook = Callable[[nn.Module, torch.Tensor], torch.Tensor]
"""``loss(model, cross_entropy) -> loss``: what the step minimises (default: the cross-entropy)."""
StepHook = Callable[[nn.Module], None]
"""``after_step(model)``: runs after every optimiser step (e.g. a projection)."""
LocalTrainer = Callable[..., None]
"""Anything called like :func:`train_local` (``FedAvgSimulation(local_trainer=...)``)."""


def batch_order(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Mini-batch indices forever: one fresh permutation of ``range(n)`` per epoch, drawn when needed."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]


def train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    loss: LossHook | None = None,
    after_step: StepHook | None = None,
) -> int:
    """The one local training loop: a cross-entropy step per batch, with hooks; returns the step count."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    steps = 0
    for xb, yb in batches:
        optimizer.zero_grad(set_to_none=True)
        value = loss_fn(model(xb), yb)
        if loss is not None:
            value = loss(model, value)
        value.backward()
        optimizer.step()
        if after_step is not None:
            after_step(model)
        steps += 1
    return steps


def train_local(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    *,
    generator: torch.Generator | None,
    steps: int | None = None,
    loss: LossHook | None = None,
    after_step: StepHook | None = None,
) -> None:
    """Train ``model`` in place with cross-entropy; batch order drawn from ``generator``.

    ``cfg.epochs`` passes over the data, or exactly ``steps`` mini-batch steps when given
    (a fresh permutation whenever one is used up; ``steps=1`` with plain SGD is FedSGD).
    ``loss`` and ``after_step`` are the hooks of :func:`train_steps` (poisoned clients use them).
    """
    if len(x) == 0:
        return
    if steps is not None and steps < 1:
        raise ConfigurationError(f"must be >= 1, got {steps}", field="local_steps")
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    n = len(xt)
    total = steps if steps is not None else cfg.epochs * -(-n // cfg.batch_size)
    opt = cfg.make_optimizer([p for p in model.parameters() if p.requires_grad])
    order = itertools.islice(batch_order(n, cfg.batch_size, generator), total)
    train_steps(model, opt, ((xt[b], yt[b]) for b in order), loss=loss, after_step=after_step)


def local_steps_trainer(steps: int) -> LocalTrainer:
    """A local trainer taking exactly ``steps`` mini-batch steps (``steps=1``: FedSGD)."""
    if steps < 1:
        raise ConfigurationError(f"must be >= 1, got {steps}", field="local_steps")
    return functools.partial(train_local, steps=steps)


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, *, batch_size: int = 1024) -> np.ndarray:
    model.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    out = [model(xt[i : i + batch_size]) for i in range(0, len(xt), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024) -> tuple[float, float]:
    """Accuracy (0..1) and mean cross-entropy loss."""
    logits = torch.from_numpy(predict_logits(model, x, batch_size=batch_size))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    loss = float(nn.functional.cross_entropy(logits, yt))
    acc = float((logits.argmax(1) == yt).double().mean())
    return acc, loss


def per_class_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """Accuracy on each class (NaN for classes absent from ``y``)."""
    pred = predict_logits(model, x).argmax(1)
    acc = np.full(num_classes, np.nan)
    for c in range(num_classes):
        m = y == c
        if m.any():
            acc[c] = float((pred[m] == c).mean())
    return acc
