"""Models for the simulation, by name: logistic regression, MLP, small CNN.

Initialisation draws from an injected ``torch.Generator`` (simulation randomness), never
from torch's global RNG, so a run is reproducible from its seed alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from privagg.errors import ConfigurationError
from privagg.registry import Registry

__all__ = ["MODELS", "build_model", "get_flat_params", "num_params", "set_flat_params"]

_Builder = Callable[..., nn.Module]
MODELS: Registry[_Builder] = Registry("model")


def _init_(module: nn.Module, generator: torch.Generator | None) -> None:
    """PyTorch's default uniform init (bound 1/sqrt(fan_in)), drawn from ``generator``."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                fan_in = m.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in)
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)


@MODELS.register("logreg")
def _logreg(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


@MODELS.register("mlp")
def _mlp(input_shape: tuple[int, ...], num_classes: int, hidden: Sequence[int] = (64,)) -> nn.Module:
    if not hidden or any(h < 1 for h in hidden):
        raise ConfigurationError(f"hidden sizes must be positive, got {tuple(hidden)}", field="model.hidden")
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@MODELS.register("cnn")
def _cnn(input_shape: tuple[int, ...], num_classes: int, channels: Sequence[int] = (16, 32)) -> nn.Module:
    """Two conv blocks (3x3 conv, ReLU, 2x2 max-pool) and a linear head; 8x8 and 28x28 inputs."""
    if len(input_shape) != 3:
        raise ConfigurationError(
            f"the cnn needs image inputs (C, H, W), got shape {input_shape}", field="model.name",
            accepted=["logreg", "mlp"],
        )
    c, h, w = input_shape
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (h // 4) * (w // 4), num_classes),
    )


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    generator: torch.Generator | None = None,
    **options: Any,
) -> nn.Module:
    """Build a registered model and initialise it from ``generator``."""
    builder = MODELS.get(name, field="model.name")
    try:
        model = builder(tuple(input_shape), num_classes, **options)
    except TypeError as e:
        raise ConfigurationError(f"invalid options for model {name!r}: {e}", field="model") from None
    _init_(model, generator)
    return model


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def get_flat_params(model: nn.Module) -> np.ndarray:
    """All parameters as one flat float64 vector (the order of ``model.parameters()``)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double().numpy()


def set_flat_params(model: nn.Module, vec: np.ndarray) -> None:
    vec = np.asarray(vec)
    if vec.shape != (num_params(model),):
        raise ConfigurationError(f"expected {num_params(model)} parameters, got shape {vec.shape}", field="params")
    t = torch.from_numpy(vec.astype(np.float32, copy=False))
    i = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(t[i : i + n].view_as(p))
            i += n
