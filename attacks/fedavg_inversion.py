"""Multi-step FedAvg inversion: rebuild a client's images from its model *difference*.

FedAvg clients do not send a gradient: they take ``local_steps`` SGD steps and send the
change of their weights. Geiping et al. (2020, sec. 6, "Inverting Gradients") invert that
difference by simulating the local steps inside the attacker's objective: dummy images
(and labels) are trained for the same number of steps, at the same public learning rate
and batch size, from the same global model, and the dummy update is pulled toward the
observed one (cosine distance + total variation, signed Adam in ``[0, 1]``).

Threat model: honest-but-curious server that knows the architecture, the public training
configuration (learning rate, local steps, batch size) and, without a defense, each
client's own update. Under secure / DP aggregation it sees only the cohort's mean update and
simulates *every* client's local training (one dummy set per client) — the exact
observation, not a single-client surrogate.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from attacks.inversion import InversionResult
from attacks.metrics import RECOVERED_PSNR, image_recovery_metrics
from attacks.reconstruction import (
    _total_variation,
    match_reconstructions,
    match_subset,
    recover_labels,
    signed_descent,
)
from attacks.registry import Attack, AttackCase, register_attack
from privagg.errors import ConfigurationError

__all__ = ["FedAvgInversion", "invert_fedavg_update", "simulate_local_steps"]


def simulate_local_steps(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float,
    steps: int,
    batch_size: int,
    create_graph: bool = True,
) -> dict[str, torch.Tensor]:
    """``steps`` plain SGD steps of mean cross-entropy from ``params`` on ``(x, y)``, differentiably.

    Batches go through ``x`` in order, wrapping around (when ``len(x)`` equals the batch size
    or ``steps * batch_size``, the client's own shuffling does not change the result).
    Returns ``final - params`` per parameter name.
    """
    names = list(params)
    cur = dict(params)
    n = len(x)
    for s in range(steps):
        idx = torch.arange(s * batch_size, (s + 1) * batch_size) % n
        out = functional_call(model, cur, (x[idx],))
        loss = nn.functional.cross_entropy(out, y[idx])
        grads = torch.autograd.grad(loss, [cur[k] for k in names], create_graph=create_graph)
        cur = {k: cur[k] - lr * g for k, g in zip(names, grads)}
    return {k: cur[k] - params[k] for k in names}


def _cosine(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    dot = torch.stack([(x * y).sum() for x, y in zip(a, b)]).sum()
    na = torch.stack([(x * x).sum() for x in a]).sum()
    nb = torch.stack([(y * y).sum() for y in b]).sum()
    return 1.0 - dot / (torch.sqrt(na) * torch.sqrt(nb) + 1e-12)


def invert_fedavg_update(
    model: nn.Module,
    observed: Sequence[torch.Tensor],
    *,
    input_shape: tuple[int, ...],
    labels: np.ndarray,
    clients: int,
    lr: float,
    steps: int,
    batch_size: int,
    iterations: int = 300,
    step_size: float = 0.1,
    tv_weight: float = 1e-4,
    restarts: int = 1,
    generator: torch.Generator,
) -> tuple[np.ndarray, float]:
    """Dummy images whose simulated local training (``clients`` clients, their mean) matches ``observed``.

    ``labels``: ``clients * images_per_client`` labels, client-major. Returns the images and
    the final cosine distance of the best restart.
    """
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if len(y) % clients:
        raise ConfigurationError(f"{len(y)} labels for {clients} clients", field="labels")
    per = len(y) // clients
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    obs = [torch.as_tensor(o, dtype=torch.float32) for o in observed]
    best: tuple[np.ndarray, float] | None = None
    for _ in range(max(1, restarts)):
        x = torch.rand((len(y), *input_shape), generator=generator).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=step_size)
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=[int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)], gamma=0.1
        )

        def objective(xv: torch.Tensor, graph: bool) -> torch.Tensor:
            total: list[torch.Tensor] | None = None
            for c in range(clients):
                sl = slice(c * per, (c + 1) * per)
                d = simulate_local_steps(
                    model, params, xv[sl], y[sl], lr=lr, steps=steps, batch_size=batch_size, create_graph=graph
                )
                vals = list(d.values())
                total = vals if total is None else [t + v for t, v in zip(total, vals)]
            assert total is not None
            return _cosine([t / clients for t in total], obs)

        signed_descent(x, lambda v: objective(v, True) + tv_weight * _total_variation(v), opt, sched, iterations)
        xd = x.detach().requires_grad_(True)
        final = float(objective(xd, False).detach())
        if best is None or final < best[1]:
            best = (x.detach().numpy(), final)
    assert best is not None
    return best


@register_attack("fedavg-inversion")
class FedAvgInversion(Attack):
    """Invert multi-step FedAvg updates by simulating the local steps (Geiping et al. 2020, sec. 6).

    Hyper-parameters: ``iterations`` (300), ``restarts`` (1), ``step_size`` (0.1),
    ``tv_weight`` (1e-4). Case options: ``local_steps`` (5), ``lr`` (0.1, the public client
    rate), ``images`` per client (``case.batch_size``: every step sees the whole batch),
    ``target`` (0). ``case.batch_size`` is the local batch.
    """

    kind: ClassVar[str] = "inference"
    description = "Multi-step FedAvg inversion (Geiping et al. 2020): simulate the local steps in the objective"

    def __init__(
        self, *, iterations: int = 300, restarts: int = 1, step_size: float = 0.1, tv_weight: float = 1e-4
    ) -> None:
        self.iterations = int(iterations)
        self.restarts = int(restarts)
        self.step_size = float(step_size)
        self.tv_weight = float(tv_weight)

    def supports(self, case: AttackCase) -> bool:
        return case.dataset in ("digits", "mnist-5k")

    def run(self, case: AttackCase, *, progress: bool = False) -> InversionResult:
        from attacks.scenario import make_run_config, observe_round, unflatten
        from privagg.randomness import torch_generator
        from protocols.fedavg import FedAvgSimulation
        from protocols.models import set_flat_params
        from protocols.training import TrainConfig, local_steps_trainer

        t0 = time.perf_counter()
        steps = int(case.option("local_steps", 5))
        lr = float(case.option("lr", 0.1))
        images = int(case.option("images", case.batch_size))
        if steps < 1 or images < 1:
            raise ConfigurationError("local_steps and images must be >= 1", field="options")
        train = TrainConfig(epochs=1, batch_size=case.batch_size, lr=lr)
        cfg = make_run_config(case, train=train, dp_clip=float(case.option("dp_clip", 1.0)))
        sim = FedAvgSimulation(cfg, local_trainer=local_steps_trainer(steps))
        gp = sim.global_params.copy()
        round_ = observe_round(case, sim, gp, batch_size=images, stream="fedavg-inversion")
        model = sim.model
        set_flat_params(model, gp)
        exposed = case.defense_spec.exposes_updates
        target = int(case.option("target", 0))
        observed_vec = round_.observed[round_.members.index(target)] if exposed else round_.observed[0]
        observed = unflatten(model, np.asarray(observed_vec))
        clients = 1 if exposed else len(round_.members)
        mine = round_.owners == target
        originals = round_.cohort_images[mine] if exposed else round_.cohort_images
        true_labels = round_.cohort_labels[mine] if exposed else round_.cohort_labels
        if case.adversary.knows_labels:
            labels = true_labels.copy()  # client-major, as the dummy sets are
        else:  # treat the update as one averaged gradient of every image (an approximation over steps)
            labels = recover_labels(model, [-o / (lr * steps) for o in observed], batch_size=len(originals))
        x, loss = invert_fedavg_update(
            model,
            observed,
            input_shape=tuple(sim.dataset.input_shape),
            labels=labels,
            clients=clients,
            lr=lr,
            steps=steps,
            batch_size=case.batch_size,
            iterations=self.iterations,
            step_size=self.step_size,
            tv_weight=self.tv_weight,
            restarts=self.restarts,
            generator=torch_generator(case.seed, "attack", self.name),
        )
        from attacks.metrics import label_accuracy

        matched = match_reconstructions(originals, x)
        metrics: dict[str, Any] = image_recovery_metrics(originals, matched)
        t_img = round_.cohort_images[mine]
        metrics.update(image_recovery_metrics(t_img, match_subset(t_img, x), prefix="target_"))
        metrics["psnr"] = metrics["psnr_median"]
        metrics["label_accuracy"] = label_accuracy(true_labels, labels)
        metrics["update_cosine_distance"] = loss
        threat = (
            f"Threat model: honest-but-curious server; knows the architecture and the public training "
            f"configuration ({steps} local SGD steps, batch {case.batch_size}, lr {lr}). It observes "
            f"{round_.description if not exposed else f'client {target} model difference after {steps} steps'}"
            + ("" if exposed else f" and simulates all {clients} clients' local training")
            + "."
        )
        return InversionResult(
            attack=self.name,
            case=case,
            metrics=metrics,
            originals=originals,
            reconstructions=matched,
            true_labels=true_labels,
            data={"threat_model": threat, "observation": round_.description, "closed_form": False},
            seconds=time.perf_counter() - t0,
            text=(
                f"{threat} Median PSNR {metrics['psnr_median']:.1f} dB, {int(metrics['images_recovered'])}/"
                f"{len(originals)} images recovered (PSNR >= {RECOVERED_PSNR:.0f} dB), label accuracy "
                f"{metrics['label_accuracy']:.2f}."
            ),
        )
