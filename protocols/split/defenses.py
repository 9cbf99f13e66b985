"""Defenses of split learning: what the label party does to the gradients it sends, and NoPeek.

A *gradient defense* runs at the label party (the server in vanilla split learning, the
client's head in the U-shaped configuration) on the per-example gradients it is about to
send across the cut, knowing the batch's labels:

- ``noise``: isotropic Gaussian noise whose expected norm is ``multiplier`` times the batch's
  median gradient norm;
- ``max-norm`` (the heuristic of Li et al., ICLR 2022, also in AIJack): each example gets
  isotropic Gaussian noise whose variance lifts its expected squared norm to the batch's
  largest, so norms no longer rank the examples;
- ``marvell`` (Li et al.'s optimised noise, binary labels): class-dependent Gaussian noise
  with the structure of their Theorem 2 — a covariance ``lambda_2 I + (lambda_1 - lambda_2) e e^T``
  per class, ``e`` the unit difference of the class means — whose four scalars minimise the
  symmetrised KL divergence between the two classes' noisy gradient distributions
  (gradients modelled as isotropic Gaussians per class) under the power budget
  ``power * ||mean_1 - mean_0||^2`` (expected squared noise norm per example). The scalar
  problem is solved numerically (SLSQP).

NoPeek (Vepakomma et al. 2020) is a client loss term: :func:`distance_correlation` between
the raw batch and its activations at the cut, weighted by ``nopeek`` in
:class:`~protocols.split.simulation.SplitConfig`.

These are empirical defenses, not differential privacy: nothing here carries a privacy
guarantee, and the figures of :mod:`attacks.split` are what they are worth. Their noise is
drawn from a ``torch.Generator`` the caller injects (simulation runs seed it from the run
seed); :func:`unpredictable_generator` seeds one from the OS CSPRNG for a deployment.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from privagg.errors import ConfigurationError
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from privagg.registry import Registry

__all__ = [
    "GRADIENT_DEFENSES",
    "GaussianNoise",
    "GradientDefense",
    "Marvell",
    "MaxNorm",
    "NoDefense",
    "build_gradient_defense",
    "distance_correlation",
    "marvell_covariances",
    "unpredictable_generator",
]


def unpredictable_generator(secrets: SecretSource = SYSTEM_SECRETS) -> torch.Generator:
    """A ``torch.Generator`` seeded with 63 bits from ``secrets`` (not a CSPRNG stream: see module doc)."""
    g = torch.Generator()
    g.manual_seed(int.from_bytes(secrets.token_bytes(8), "big") >> 1)
    return g


class GradientDefense(abc.ABC):
    """Perturbs the per-example gradients ``grad`` (shape ``(B, ...)``) given the batch's ``labels``."""

    name: ClassVar[str] = "none"

    @abc.abstractmethod
    def perturb(self, grad: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


GRADIENT_DEFENSES: Registry[Callable[..., GradientDefense]] = Registry("split gradient defense")


def _register(name: str) -> Callable[[type[GradientDefense]], type[GradientDefense]]:
    def deco(cls: type[GradientDefense]) -> type[GradientDefense]:
        cls.name = name
        GRADIENT_DEFENSES.add(name, cls)
        return cls

    return deco


def build_gradient_defense(name: str, options: dict[str, Any] | None = None) -> GradientDefense:
    factory = GRADIENT_DEFENSES.get(name, field="defense.gradient")
    try:
        return factory(**dict(options or {}))
    except TypeError as e:
        raise ConfigurationError(f"invalid options for {name!r}: {e}", field="defense.options") from None


def _flat(grad: torch.Tensor) -> torch.Tensor:
    return grad.reshape(grad.shape[0], -1)


@_register("none")
class NoDefense(GradientDefense):
    def perturb(self, grad: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return grad


@_register("noise")
@dataclass(frozen=True)
class GaussianNoise(GradientDefense):
    """Isotropic noise, expected norm ``multiplier`` x the batch's median gradient norm."""

    multiplier: float = 1.0

    def __post_init__(self) -> None:
        if not self.multiplier >= 0:
            raise ConfigurationError("must be >= 0", field="defense.options.multiplier")

    def perturb(self, grad: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        g = _flat(grad)
        sigma = self.multiplier * float(g.norm(dim=1).median()) / math.sqrt(g.shape[1])
        return grad + sigma * torch.randn(grad.shape, generator=generator, dtype=grad.dtype)


@_register("max-norm")
@dataclass(frozen=True)
class MaxNorm(GradientDefense):
    """Noise lifting every example's expected squared norm to the batch's largest."""

    def perturb(self, grad: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        g = _flat(grad)
        sq = (g * g).sum(dim=1)
        sigma = torch.sqrt(torch.clamp(sq.max() - sq, min=0.0) / g.shape[1])
        noise = torch.randn(g.shape, generator=generator, dtype=grad.dtype) * sigma[:, None]
        return (g + noise).reshape(grad.shape)


def _sum_kl(lam: np.ndarray, u: float, v: float, dist2: float, d: int) -> float:
    """Symmetrised KL (times 2, constants dropped) between N(m1, S1) and N(m0, S0) in the Marvell form."""
    a0, b0, a1, b1 = u + lam[0], u + lam[1], v + lam[2], v + lam[3]
    return float(a1 / a0 + a0 / a1 + (d - 1) * (b1 / b0 + b0 / b1) + dist2 * (1.0 / a0 + 1.0 / a1))


def marvell_covariances(
    *, u: float, v: float, dist2: float, d: int, p1: float, power: float
) -> tuple[float, float, float, float]:
    """The four Marvell scalars ``(lambda0_1, lambda0_2, lambda1_1, lambda1_2)`` (class 0 / class 1,
    along ``e`` / orthogonal) for per-class variances ``u`` (class 0) and ``v`` (class 1), squared
    mean distance ``dist2``, dimension ``d``, class-1 share ``p1`` and noise power budget ``power``."""
    from scipy.optimize import minimize

    if power <= 0 or dist2 <= 0:
        return (0.0, 0.0, 0.0, 0.0)
    u, v = max(u, 1e-12 * dist2), max(v, 1e-12 * dist2)
    p0 = 1.0 - p1
    weights = np.array([p0, p0 * (d - 1), p1, p1 * (d - 1)])
    scale = power  # optimise in units of the budget
    cons = ({"type": "ineq", "fun": lambda z: 1.0 - float(weights @ z)},)
    best: tuple[float, np.ndarray] | None = None
    starts = [
        np.array([0.5 / p0, 0, 0.5 / p1, 0]) * 0.99,
        np.array([1.0 / p0, 0, 0, 0]) * 0.99,
        np.array([0, 0, 1.0 / p1, 0]) * 0.99,
        np.zeros(4),
    ]
    for z0 in starts:
        res = minimize(
            lambda z: _sum_kl(z * scale, u, v, dist2, d),
            z0,
            method="SLSQP",
            bounds=[(0.0, None)] * 4,
            constraints=cons,
        )
        z = np.clip(res.x, 0.0, None)
        if weights @ z > 1.0:
            z = z / float(weights @ z)
        val = _sum_kl(z * scale, u, v, dist2, d)
        if best is None or val < best[0]:
            best = (val, z)
    assert best is not None
    lam = best[1] * scale
    return (float(lam[0]), float(lam[1]), float(lam[2]), float(lam[3]))


@_register("marvell")
class Marvell(GradientDefense):
    """Optimised class-dependent noise for binary labels (power budget ``power`` x ``||mean_1 - mean_0||^2``).

    Class statistics come from the batch; when a class is missing from it, the last batch's
    statistics that had both classes are reused (none yet: the batch passes unchanged).
    """

    def __init__(self, power: float = 1.0) -> None:
        if not power >= 0:
            raise ConfigurationError("must be >= 0", field="defense.options.power")
        self.power = power
        self._last: tuple[torch.Tensor, tuple[float, float, float, float]] | None = None

    def perturb(self, grad: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        g = _flat(grad).double()
        y = labels.reshape(-1)
        if int(y.max()) > 1 or int(y.min()) < 0:
            raise ConfigurationError("Marvell protects binary labels only", field="defense.gradient")
        pos, neg = y == 1, y == 0
        if pos.any() and neg.any():
            m1, m0 = g[pos].mean(0), g[neg].mean(0)
            diff = m1 - m0
            d = g.shape[1]
            u = float(((g[neg] - m0) ** 2).sum(1).mean()) / d
            v = float(((g[pos] - m1) ** 2).sum(1).mean()) / d
            dist2 = float(diff @ diff)
            lam = marvell_covariances(
                u=u, v=v, dist2=dist2, d=d, p1=float(pos.double().mean()), power=self.power * dist2
            )
            e = diff / math.sqrt(dist2) if dist2 > 0 else torch.zeros_like(diff)
            self._last = (e, lam)
        if self._last is None:
            return grad
        e, (a0, b0, a1, b1) = self._last
        xi = torch.randn(g.shape, generator=generator, dtype=torch.float64)
        along = xi @ e
        sa = torch.where(y == 1, math.sqrt(a1), math.sqrt(a0)).double()
        sb = torch.where(y == 1, math.sqrt(b1), math.sqrt(b0)).double()
        noise = sb[:, None] * xi + ((sa - sb) * along)[:, None] * e[None, :]
        return (g + noise).to(grad.dtype).reshape(grad.shape)


def distance_correlation(x: torch.Tensor, z: torch.Tensor, *, eps: float = 1e-9) -> torch.Tensor:
    """Sample distance correlation (Szekely et al. 2007) between the rows of ``x`` and ``z`` (differentiable)."""

    def centred(t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(t.shape[0], -1)
        sq = (t * t).sum(1)
        d2 = torch.clamp(sq[:, None] + sq[None, :] - 2.0 * t @ t.T, min=0.0)
        dist = torch.sqrt(d2 + eps)
        return dist - dist.mean(0, keepdim=True) - dist.mean(1, keepdim=True) + dist.mean()

    a, b = centred(x), centred(z)
    dcov2 = (a * b).mean()
    dvar = torch.sqrt((a * a).mean() * (b * b).mean())
    return torch.sqrt(torch.clamp(dcov2, min=0.0) / (dvar + eps) + eps)
