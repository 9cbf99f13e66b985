"""Gradient-inversion algorithms: rebuild a batch from a model and an observed gradient.

Pure functions on a torch model and the gradient an attacker observes (no federation, no
case; :mod:`attacks.inversion` runs them as registered attacks):

* :func:`recover_labels` — analytic label recovery from the last layer (iDLG, Zhao et al.
  2020, extended to batches: negative entries of the output-bias gradient mark the classes
  present, their magnitudes estimate the counts).
* :func:`dlg` — Deep Leakage from Gradients (Zhu et al. 2019): L2 gradient matching with
  L-BFGS, labels optimised jointly (``labels=None``) or fixed (iDLG).
* :func:`inverting_gradients` — Geiping et al. 2020: cosine gradient distance + total
  variation, signed Adam in the box [0, 1], several restarts, best by gradient distance.
* :func:`linear_leakage` — the analytic reconstruction through a first fully connected layer
  with bias (Phong et al. 2017): ``x = dL/dW1[i] / dL/db1[i]``.

:func:`reconstruction_metrics` scores a reconstruction against the real batch (after
:func:`match_reconstructions`: the attacker does not know the batch order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from attacks.metrics import label_accuracy, mse, psnr, ssim
from privagg.errors import ConfigurationError

__all__ = [
    "Reconstruction",
    "cocktail_party",
    "first_layer_gradient",
    "dlg",
    "inverting_gradients",
    "linear_leakage",
    "match_reconstructions",
    "match_subset",
    "model_gradients",
    "recover_labels",
    "reconstruction_metrics",
]


@dataclass(frozen=True)
class Reconstruction:
    """Reconstructed inputs ``x`` (numpy, like the inputs), recovered labels, final gradient loss."""

    x: np.ndarray
    labels: np.ndarray
    grad_loss: float
    iterations: int


def model_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, create_graph: bool = False
) -> list[torch.Tensor]:
    """Gradients of the mean cross-entropy of ``model`` on ``(x, y)`` w.r.t. every parameter.

    ``y`` holds class indices (int) or per-example class distributions (float, soft labels).
    """
    params = [p for p in model.parameters()]
    out = model(x)
    if y.dtype.is_floating_point:
        loss = torch.mean(torch.sum(-y * torch.log_softmax(out, dim=-1), dim=-1))
    else:
        loss = nn.functional.cross_entropy(out, y)
    return list(torch.autograd.grad(loss, params, create_graph=create_graph))


def _last_linear(model: nn.Module) -> nn.Linear:
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not lin:
        raise ConfigurationError("label recovery needs a model ending in a linear layer", field="model")
    return lin[-1]


def _param_index(model: nn.Module, p: torch.Tensor) -> int:
    for i, q in enumerate(model.parameters()):
        if q is p:
            return i
    raise ConfigurationError("parameter not in model", field="model")


def recover_labels(
    model: nn.Module, grads: Sequence[torch.Tensor], *, batch_size: int, mean_probs: torch.Tensor | None = None
) -> np.ndarray:
    """Labels of the batch from the last layer's gradient (iDLG; batched count estimate).

    For cross-entropy, the output-bias gradient is ``mean_i(p_i - onehot(y_i))``: a class
    in the batch pulls its entry down by ``1/B`` per example. ``B * (mean_probs - g)``
    estimates the per-class counts; labels are handed out greedily by largest remaining
    count. ``mean_probs`` (the model's average softmax, default uniform) is what the
    attacker assumes the victim's predictions average to. Without an output bias, the row
    sums of the last weight gradient are used (non-negative features after ReLU).
    """
    last = _last_linear(model)
    k = last.out_features
    if last.bias is not None:
        g = grads[_param_index(model, last.bias)].detach().double()
    else:
        g = grads[_param_index(model, last.weight)].detach().double().sum(dim=1)
    if batch_size == 1:
        return np.array([int(torch.argmin(g))])
    p = torch.full((k,), 1.0 / k, dtype=torch.float64) if mean_probs is None else mean_probs.double()
    remaining = batch_size * (p - g) if last.bias is not None else -g / g.abs().max().clamp_min(1e-12) * batch_size
    labels = []
    for _ in range(batch_size):
        c = int(torch.argmax(remaining))
        labels.append(c)
        remaining[c] -= 1.0
    return np.sort(np.array(labels, dtype=np.int64))


def _grad_l2(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum(((x - y) ** 2).sum() for x, y in zip(a, b))  # type: ignore[return-value]


def _grad_cosine(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    dot = torch.stack([(x * y).sum() for x, y in zip(a, b)]).sum()
    na = torch.stack([(x * x).sum() for x in a]).sum()
    nb = torch.stack([(y * y).sum() for y in b]).sum()
    return 1.0 - dot / (torch.sqrt(na) * torch.sqrt(nb) + 1e-12)


def signed_descent(
    x: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor],
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    iterations: int,
) -> None:
    """Inverting Gradients' optimiser loop on the images ``x``: signed gradients of ``loss(x)``, one
    scheduler step per iteration, pixels kept in ``[0, 1]``."""
    for _ in range(iterations):
        opt.zero_grad()
        loss(x).backward()
        assert x.grad is not None
        x.grad.sign_()
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 4:
        return x.new_zeros(())
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return dx + dy


def _as_tensors(grads: Sequence[torch.Tensor] | Sequence[np.ndarray]) -> list[torch.Tensor]:
    return [torch.as_tensor(g, dtype=torch.float32).detach() for g in grads]


def dlg(
    model: nn.Module,
    observed: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int = 1,
    labels: np.ndarray | None = None,
    iterations: int = 200,
    lr: float = 1.0,
    generator: torch.Generator,
    init: torch.Tensor | None = None,
) -> Reconstruction:
    """DLG: minimise ``||grad(x', y') - observed||^2`` over dummy data (and labels) with L-BFGS.

    With ``labels`` given (iDLG) only the inputs are optimised; otherwise dummy soft labels
    are optimised too (the original DLG).
    """
    g_obs = _as_tensors(observed)
    if init is None:
        init = torch.rand((batch_size, *input_shape), generator=generator)
    x = init.clone().requires_grad_(True)
    variables = [x]
    y_fixed: torch.Tensor | None = None
    y_logits: torch.Tensor | None = None
    if labels is not None:
        y_fixed = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    else:
        y_logits = torch.randn((batch_size, num_classes), generator=generator).requires_grad_(True)
        variables.append(y_logits)
    opt = torch.optim.LBFGS(
        variables,
        lr=lr,
        max_iter=iterations,
        history_size=100,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
    )
    count = [0]

    def closure() -> torch.Tensor:
        opt.zero_grad()
        y = y_fixed if y_fixed is not None else torch.softmax(y_logits, dim=-1)  # type: ignore[arg-type]
        g = model_gradients(model, x, y, create_graph=True)
        loss = _grad_l2(g, g_obs)
        loss.backward()
        count[0] += 1
        return loss

    opt.step(closure)
    with torch.no_grad():
        y = y_fixed if y_fixed is not None else torch.softmax(y_logits, dim=-1)  # type: ignore[arg-type]
    final = float(_grad_l2(model_gradients(model, x.detach(), y), g_obs))
    rec_labels = y_fixed.numpy() if y_fixed is not None else torch.argmax(y_logits, dim=-1).detach().numpy()  # type: ignore[arg-type]
    xr = x.detach().clamp(0.0, 1.0).numpy()
    return Reconstruction(
        x=xr,
        labels=np.asarray(rec_labels),
        grad_loss=final if np.isfinite(final) else float("inf"),
        iterations=count[0],
    )


def inverting_gradients(
    model: nn.Module,
    observed: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, ...],
    labels: np.ndarray,
    iterations: int = 600,
    lr: float = 0.1,
    tv_weight: float = 1e-4,
    restarts: int = 2,
    generator: torch.Generator,
) -> Reconstruction:
    """Inverting Gradients: cosine gradient distance + TV prior, signed Adam in [0, 1], restarts.

    Learning rate decays by 10x at 3/8, 5/8 and 7/8 of the iterations (Geiping et al.).
    The restart with the smallest final gradient distance wins.
    """
    g_obs = _as_tensors(observed)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    best: Reconstruction | None = None
    for _ in range(max(1, restarts)):
        x = torch.rand((len(y), *input_shape), generator=generator).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        signed_descent(
            x,
            lambda v: (
                _grad_cosine(model_gradients(model, v, y, create_graph=True), g_obs) + tv_weight * _total_variation(v)
            ),
            opt,
            sched,
            iterations,
        )
        final = float(_grad_cosine(model_gradients(model, x.detach(), y), g_obs))
        rec = Reconstruction(x=x.detach().numpy(), labels=y.numpy(), grad_loss=final, iterations=iterations)
        if best is None or rec.grad_loss < best.grad_loss:
            best = rec
    assert best is not None
    return best


def linear_leakage(
    model: nn.Module,
    observed: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, ...],
    batch_size: int = 1,
    labels: np.ndarray,
) -> Reconstruction:
    """Analytic inversion through the first linear layer (with bias): ``x = dW1[i] / db1[i]``.

    Each hidden unit ``i`` with a non-zero bias gradient yields a candidate input (exact
    when one example activated it). Candidates are taken from the units with the largest
    bias gradients; for a batch, candidates are clustered greedily so that distinct
    examples come out.
    """
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    first = lin[0] if lin else None
    if first is None or first.bias is None:
        raise ConfigurationError("linear leakage needs a first linear layer with bias", field="model")
    gw = observed[_param_index(model, first.weight)]
    gb = observed[_param_index(model, first.bias)]
    gw_t = torch.as_tensor(gw, dtype=torch.float64)
    gb_t = torch.as_tensor(gb, dtype=torch.float64)
    order = torch.argsort(gb_t.abs(), descending=True)
    candidates: list[np.ndarray] = []
    scale = float(gb_t.abs().max()) if gb_t.numel() else 0.0
    for i in order.tolist():
        if scale == 0.0 or abs(float(gb_t[i])) < 1e-6 * scale:
            break
        cand = (gw_t[i] / gb_t[i]).numpy()
        if any(np.max(np.abs(cand - c)) < 1e-3 for c in candidates):
            continue
        candidates.append(cand)
        if len(candidates) == batch_size:
            break
    while len(candidates) < batch_size:
        candidates.append(np.full(int(np.prod(input_shape)), 0.5))
    x = np.clip(np.stack(candidates).reshape((batch_size, *input_shape)), 0.0, 1.0)
    return Reconstruction(x=x.astype(np.float32), labels=np.asarray(labels), grad_loss=float("nan"), iterations=0)


def first_layer_gradient(model: nn.Module, observed: Sequence[torch.Tensor]) -> np.ndarray:
    """The observed gradient of the model's first linear layer's weight, ``(units, inputs)``."""
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not lin:
        raise ConfigurationError("needs a first fully connected layer", field="model")
    return torch.as_tensor(observed[_param_index(model, lin[0].weight)]).double().numpy()


def cocktail_party(grad_weight: np.ndarray, batch_size: int, *, seed: int) -> np.ndarray:
    """Cocktail Party Attack: FastICA on the rows of a first-layer weight gradient, ``batch_size``
    sources, each signed (dark background: median pixel nearer the minimum) and scaled to ``[0, 1]``.
    Returns ``(batch_size, inputs)``."""
    from sklearn.decomposition import FastICA

    g = np.asarray(grad_weight, dtype=np.float64)
    if g.shape[0] < batch_size:
        raise ConfigurationError(f"{g.shape[0]} hidden units cannot unmix {batch_size} images", field="batch_size")
    if batch_size == 1:  # one image: every row is a multiple of it
        sources = g[[int(np.argmax(np.abs(g).sum(1)))]].T
    else:
        ica = FastICA(n_components=batch_size, whiten="unit-variance", random_state=seed, max_iter=2000, tol=1e-5)
        sources = ica.fit_transform(g.T)  # pixels are the samples, hidden units the mixtures
    out = []
    for s in sources.T:
        if np.median(s) - s.min() > s.max() - np.median(s):
            s = -s
        out.append((s - s.min()) / max(float(s.max() - s.min()), 1e-12))
    return np.stack(out)


def match_reconstructions(originals: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Best one-to-one assignment of reconstructions to originals (by MSE; order is unknown)."""
    from scipy.optimize import linear_sum_assignment

    o = originals.reshape(len(originals), -1)
    r = recon.reshape(len(recon), -1)
    cost = ((o[:, None, :] - r[None, :, :]) ** 2).mean(-1)
    rows, cols = linear_sum_assignment(cost)
    out = np.empty_like(recon)
    out[rows] = recon[cols]
    return out


def match_subset(originals: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """For each original, its reconstruction under the best one-to-one assignment (by MSE) into a
    possibly larger set ``recon`` (a target's images among a cohort's reconstructions)."""
    from scipy.optimize import linear_sum_assignment

    o = originals.reshape(len(originals), -1)
    r = recon.reshape(len(recon), -1)
    if len(r) < len(o):
        raise ConfigurationError(f"{len(r)} reconstructions for {len(o)} images", field="reconstructions")
    cost = ((o[:, None, :] - r[None, :, :]) ** 2).mean(-1)
    rows, cols = linear_sum_assignment(cost)
    out = np.empty_like(originals)
    out[rows] = recon[cols]
    return out


def reconstruction_metrics(
    originals: np.ndarray, recon: np.ndarray, true_labels: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """MSE, median PSNR and SSIM over the images (after matching order) and label accuracy."""
    matched = match_reconstructions(originals, recon)
    return {
        "mse": mse(originals, matched),
        "psnr": psnr(originals, matched),
        "ssim": ssim(originals, matched) if originals.ndim == 4 and min(originals.shape[-2:]) >= 3 else float("nan"),
        "label_accuracy": label_accuracy(true_labels, labels),
    }
