"""Malicious-model attack with trap weights (Boenisch et al., "When the Curious Abandon Honesty",
EuroS&P 2023): a first layer on which few inputs switch each unit on.

Threat model: a **malicious server** that chooses the weights it sends (one model, identical for
every client, so a model-consistency check passes). Only the first fully connected layer is
changed; the rest of the deployment's model is left as it is. Each client takes one honest FedSGD
step on its own batch and submits it through the case's defense (under ``secagg`` the real active
SecAgg+ aggregator: the server learns only the sum).

The trap layer: unit ``i`` has random weight magnitudes, half of its input weights positive and
half negative, and its negative weights multiplied by a factor ``s_i``. Pixels are
non-negative, so ``w_i . x = P_i(x) - s_i N_i(x)`` is negative for most images and the unit is
off; it switches on only when ``P_i(x) / N_i(x) > s_i``. The paper tunes one scale factor; here
``s_i`` is set from the attacker's public data so each unit fires on a chosen fraction ``rho`` of
images (``rho = 1 / B`` for ``B`` images behind one update the server reads maximises the chance that
exactly one image switches a unit on: ``B`` is one client's batch when the server sees each update
(``none``), the cohort's images when it sees only their aggregate; ``per_unit=False`` uses one factor for
all units, as in the paper). Calibrating for the cohort when the server reads each client's update alone
halved what the attack recovers (45% instead of 95% of 8-image batches, seeds 0-2).

Reading: ``dL/dW_i = sum_x g_i(x) x`` and ``dL/db_i = sum_x g_i(x)`` over the images that switch
unit ``i`` on, so ``dL/dW_i / dL/db_i`` *is* the image when one image alone switched it on (a
weighted mix otherwise). Sums over clients are sums over images: the aggregate of a secure sum
leaks every image some unit caught alone.
"""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from attacks.imprint import (
    ImprintResult,
    first_layer_reads,
    malicious_mlp,
    malicious_round_setup,
    mlp_linears,
    scored_result,
)
from attacks.registry import Attack, AttackCase, register_attack
from privagg.errors import ConfigurationError

__all__ = ["TrapWeightsAttack", "craft_trap_weights", "recover_trap_weights", "trap_scales"]


def _split_signs(k: int, d: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random magnitudes ``(k, d)`` and a sign mask with exactly ``d // 2`` negative inputs per unit."""
    magnitudes = np.abs(rng.standard_normal((k, d))) / np.sqrt(d)
    negative = np.zeros((k, d), dtype=bool)
    for i in range(k):
        negative[i, rng.permutation(d)[: d // 2]] = True
    return magnitudes, negative


def trap_scales(
    magnitudes: np.ndarray, negative: np.ndarray, public: np.ndarray, *, rate: float, per_unit: bool = True
) -> np.ndarray:
    """The negative-weight factors ``s_i``: unit ``i`` fires on a fraction ``rate`` of ``public`` images.

    A unit fires on ``x`` when ``P_i(x) / N_i(x) > s_i``, so ``s_i`` is the ``1 - rate`` quantile of
    that ratio over the public images (per unit), or of all units' ratios pooled (``per_unit=False``)."""
    if not 0 < rate < 1:
        raise ConfigurationError("must be in (0, 1)", field="rate")
    x = np.asarray(public, dtype=np.float64).reshape(len(public), -1)
    pos = x @ np.where(negative, 0.0, magnitudes).T  # (n, k)
    neg = x @ np.where(negative, magnitudes, 0.0).T
    ratio = pos / np.maximum(neg, 1e-12)
    q = np.quantile(ratio, 1.0 - rate, axis=0) if per_unit else np.full(ratio.shape[1], np.quantile(ratio, 1 - rate))
    return np.maximum(q, 1e-6)


@torch.no_grad()
def craft_trap_weights(model: nn.Module, *, magnitudes: np.ndarray, negative: np.ndarray, scales: np.ndarray) -> None:
    """Overwrite the first linear layer of ``model`` (in place) with trap weights, bias zero."""
    first = mlp_linears(model)[0]
    k, d = first.weight.shape
    if magnitudes.shape != (k, d) or negative.shape != (k, d) or np.asarray(scales).shape != (k,):
        raise ConfigurationError(f"trap weights for a ({k}, {d}) layer", field="model")
    w = np.where(negative, -magnitudes * np.asarray(scales)[:, None], magnitudes)
    first.weight.copy_(torch.as_tensor(w, dtype=first.weight.dtype))
    first.bias.zero_()  # type: ignore[union-attr]


def recover_trap_weights(grad_weight: np.ndarray, grad_bias: np.ndarray, *, tolerance: float = 1e-3) -> np.ndarray:
    """Candidate inputs from a first layer's (summed) gradient: row / bias gradient for every unit whose
    bias gradient is above ``tolerance`` times the largest (units no image switched on give nothing).
    Returns ``(M, d)`` candidates clipped to ``[0, 1]``."""
    w = np.asarray(grad_weight, dtype=np.float64)
    b = np.asarray(grad_bias, dtype=np.float64).ravel()
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    if scale == 0.0:
        return np.zeros((0, w.shape[1]))
    keep = np.abs(b) > tolerance * scale
    return np.clip(w[keep] / b[keep, None], 0.0, 1.0)


@register_attack("trap-weights")
class TrapWeightsAttack(Attack):
    """Trap weights (Boenisch et al. 2023): a malicious server sends one first layer that few inputs activate.

    Hyper-parameters: ``rate`` (the fraction of public images each unit fires on; ``None``: one over the
    images behind one observed update: a client's batch under ``none``, the cohort's under aggregation),
    ``per_unit`` (calibrate each unit's factor, or one factor for all), ``tolerance`` (see
    :func:`recover_trap_weights`). Case options: ``lr`` (the public client learning rate, 0.1), ``target``
    (the client whose images the ``target_`` metrics score, 0). ``success``: at least half of
    the cohort's images recovered (PSNR >= 25 dB).
    """

    kind: ClassVar[str] = "inference"
    description = "Trap weights (Boenisch et al. 2023): few inputs activate each first-layer unit"

    def __init__(self, *, rate: float | None = None, per_unit: bool = True, tolerance: float = 1e-3) -> None:
        if rate is not None and not 0 < rate < 1:
            raise ConfigurationError("must be in (0, 1)", field="rate")
        self.rate = rate
        self.per_unit = bool(per_unit)
        self.tolerance = float(tolerance)

    def supports(self, case: AttackCase) -> bool:
        return malicious_mlp(case)

    def run(self, case: AttackCase, *, progress: bool = False) -> ImprintResult:
        from attacks.scenario import observe_round
        from privagg.randomness import simulation_rng
        from protocols.models import get_flat_params

        t0 = time.perf_counter()
        sim, lr, public = malicious_round_setup(case)
        model = sim.model
        k, d = mlp_linears(model)[0].weight.shape
        # the images behind one update the server reads (public): one client's batch when it sees each update,
        # the (expected) cohort's when it sees only their aggregate; a unit should catch one of *those* alone
        per_update = case.defense_spec.exposes_updates
        images = case.batch_size if per_update else case.cohort_size * case.batch_size
        rate = self.rate if self.rate is not None else 1.0 / max(images, 2)
        magnitudes, negative = _split_signs(k, d, simulation_rng(case.seed, "trap-weights", "layer"))
        scales = trap_scales(magnitudes, negative, public, rate=rate, per_unit=self.per_unit)
        craft_trap_weights(model, magnitudes=magnitudes, negative=negative, scales=scales)
        seen = observe_round(case, sim, get_flat_params(model), batch_size=case.batch_size, stream="trap-weights")
        candidates = first_layer_reads(model, seen.observed, lr, recover_trap_weights, tolerance=self.tolerance)
        threat = (
            f"Threat model: malicious server; it sends one model whose {k}-unit first layer holds trap weights "
            f"(half of each unit's weights negative and scaled so that a unit fires on {rate:.1%} of public "
            f"images), identical for every client, so a model-consistency check passes; the rest of the model is "
            f"the deployment's. The server observes {seen.description}. Scoring matches each real image to its "
            f"best candidate (one-to-one); the attack itself reads no real image."
        )
        return scored_result(
            self.name,
            case,
            seen,
            candidates,
            public,
            threat=threat,
            started=t0,
            metrics={"candidates": float(len(candidates)), "units": float(k), "activation_rate": float(rate)},
            data={"per_unit_scales": self.per_unit, "secagg_threat": seen.metrics.get("secagg_threat")},
        )
