"""Local training and evaluation of torch models on numpy data (CPU, no DataLoader)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from privagg.errors import ConfigurationError

__all__ = ["TrainConfig", "evaluate", "per_class_accuracy", "predict_logits", "train_local"]


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


def train_local(
    model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, *, generator: torch.Generator | None
) -> None:
    """Train ``model`` in place with cross-entropy; batch order drawn from ``generator``."""
    if len(x) == 0:
        return
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    opt = cfg.make_optimizer([p for p in model.parameters() if p.requires_grad])
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    n = len(xt)
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, cfg.batch_size):
            b = order[start : start + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[b]), yt[b])
            loss.backward()
            opt.step()


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
