"""Fishing for user data (Wen et al., "Fishing for User Data in Large-Batch Federated Learning via
Gradient Magnification", ICML 2022): a malicious server makes one image dominate the aggregate.

Threat model: a **malicious server** that changes the model's output layer (one model per round,
identical for every client, so a model-consistency check passes) over several rounds, and sees
only what the case's defense releases (under ``secagg``: the secure aggregate of the cohort).
Assumed, as in the paper: each client computes its update on the same local batch in every
round of the attack. The attack reads no real image; the images are used for scoring only.

The model (an MLP with one hidden layer ``h = ReLU(W1 x + b1)``; the deployment's current hidden
layer is kept) gets an output layer whose rows are zero except the fished class ``c``:
``logit_c = a * u . h + b``, every other logit ``0``. Then ``dL/dh = alpha(x) * a * u`` with
``alpha = p_c - [y = c]``, so an image passes gradient to the hidden layer only through
``alpha``:

* **class fishing** (``b`` very negative): ``p_c ~ 0`` for every image, ``alpha = -1`` for the
  images of class ``c`` and ``~0`` (``e^-60``) for the rest — the aggregate's hidden-layer gradient
  is the gradient of class ``c``'s images alone. The output-bias gradient gives the label
  histogram of the cohort (``n_c = -N g_c``, ``n_j = N/(C-1) - N g_j``; ``N`` = images in the
  cohort, public). A class holding one image isolates it.
* **feature fishing** (a class holding several): ``u`` is a direction separating class ``c``
  in feature space (from public data) and ``b`` a threshold ``v``, made sharp by scaling the
  hidden layer by ``k`` (ReLU is homogeneous, and the first-layer gradient does not grow with
  ``k``). Images of class ``c`` below ``v`` pass ``alpha ~ -1``, those above pass ``~0``
  (images of other classes above ``v`` would pass ``+1``); the server binary-searches ``v``
  over rounds until one image is left.

Once one image is isolated its first-layer gradient is ``delta x^T`` (and ``delta`` for the bias),
so ``x = sum_i db_i dW_i / sum_i db_i^2``; the server accepts it when the rank-one residual is
below ``consistency`` (a mix of several images is not rank one). With a convolutional model
the last step would be an optimisation-based inversion of the now single-image gradient; this
MLP has a first-layer bias, so it is read in closed form (labelled ``closed_form``).

Without a defense the server sees each client's own update, so it fishes each one apart: one class per
round, every update read with its own batch size, each update whose class holds one image yields it. (It
used to average the updates, the secure sum's view: 2% of 80 images at batch 8, the same as under secure
aggregation, seeds 0-4.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from attacks.imprint import (
    ImprintResult,
    malicious_mlp,
    malicious_round_setup,
    match_candidates,
    mlp_linears,
    scored_result,
    update_clip,
)
from attacks.metrics import RECOVERED_PSNR, psnr_per_image
from attacks.registry import Attack, AttackCase, register_attack
from attacks.scenario import RoundObservation
from privagg.errors import ConfigurationError

__all__ = ["FishingAttack", "FishingRead", "craft_fishing_model", "read_isolated", "read_round"]

#: how far below every other logit the fished class sits in a class-fishing round (p_c ~ e^-60)
_BLOCK = 60.0


@torch.no_grad()
def craft_fishing_model(
    model: nn.Module,
    base: np.ndarray,
    *,
    target: int,
    direction: np.ndarray,
    gain: float,
    offset: float,
    feature_scale: float = 1.0,
) -> None:
    """Set ``model`` (in place) to ``base`` with the hidden layer scaled by ``feature_scale`` and an
    output layer whose only non-zero row is ``target``: weight ``gain * direction``, bias ``offset``."""
    from protocols.models import set_flat_params

    lin = mlp_linears(model)
    if len(lin) != 2:
        raise ConfigurationError("the fishing attack crafts an MLP with one hidden layer", field="model")
    set_flat_params(model, base)
    first, out = lin
    first.weight.mul_(feature_scale)
    first.bias.mul_(feature_scale)  # type: ignore[union-attr]
    u = torch.as_tensor(np.asarray(direction, dtype=np.float64), dtype=out.weight.dtype)
    if u.numel() != out.in_features or not 0 <= target < out.out_features:
        raise ConfigurationError(f"direction {u.numel()}/{out.in_features}, class {target}", field="model")
    out.weight.zero_()
    out.weight[target] = gain * u
    if out.bias is not None:
        out.bias.zero_()
        out.bias[target] = offset


def read_isolated(grad_weight: np.ndarray, grad_bias: np.ndarray) -> tuple[np.ndarray, float]:
    """The image a rank-one first-layer gradient ``delta x^T`` holds, and the relative residual of that fit
    (0 when one image alone passed gradient; large for a mix, or for noise)."""
    w = np.asarray(grad_weight, dtype=np.float64)
    b = np.asarray(grad_bias, dtype=np.float64).ravel()
    nb = float(b @ b)
    nw = float(np.linalg.norm(w))
    if nb == 0.0 or nw == 0.0:
        return np.zeros(w.shape[1]), math.inf
    x = (b @ w) / nb
    return np.clip(x, 0.0, 1.0), float(np.linalg.norm(w - np.outer(b, x)) / nw)


@dataclass(frozen=True)
class FishingRead:
    """What the server reads from one round's aggregate gradient (no ground truth)."""

    counts: np.ndarray  # the label histogram the output-bias gradient implies (meaningful in a class round)
    passing: float  # -N * (output-bias gradient of the fished class): ~ images passing gradient
    image: np.ndarray
    residual: float


def read_round(grads: list[torch.Tensor], *, target: int, images: int, num_classes: int) -> FishingRead:
    """Read one round: ``grads`` in parameter order (first weight, first bias, output weight, output bias)."""
    gw, gb, _, gout = (g.double().numpy() for g in grads)
    passing = -images * float(gout[target])
    counts = images / (num_classes - 1) - images * gout
    counts[target] = passing
    image, residual = read_isolated(gw, gb)
    return FishingRead(counts=counts, passing=passing, image=image, residual=residual)


@register_attack("fishing")
class FishingAttack(Attack):
    """Fishing (Wen et al. 2022): class then feature fishing over rounds, each round's aggregate dominated by
    one image (module docstring).

    Hyper-parameters: ``rounds`` (the attack's rounds, 10: they share the DP budget), ``search_rounds`` (at
    most this many rounds of threshold search per class, 4), ``sharpness`` (how many class-score standard
    deviations one logit unit spans, 20), ``consistency`` (largest rank-one residual of an accepted image,
    0.02), ``update_scale`` (largest per-coordinate step asked of a client, as a fraction of the secure
    aggregator's clip). Case options: ``lr`` (0.1), ``target`` (client of the ``target_`` metrics, 0),
    ``first_class`` (the class fished in round 1, 0). ``success``: at least half of the cohort recovered.
    """

    kind: ClassVar[str] = "inference"
    description = "Fishing (Wen et al. 2022): the server magnifies one class / feature so one image dominates the sum"

    def __init__(
        self,
        *,
        rounds: int = 10,
        search_rounds: int = 4,
        sharpness: float = 20.0,
        consistency: float = 0.02,
        update_scale: float = 0.5,
    ) -> None:
        if rounds < 1 or search_rounds < 1:
            raise ConfigurationError("rounds and search_rounds must be >= 1", field="rounds")
        if not sharpness > 0 or not consistency > 0 or not 0 < update_scale <= 1:
            raise ConfigurationError("sharpness, consistency > 0 and update_scale in (0, 1]", field="options")
        self.rounds = int(rounds)
        self.search_rounds = int(search_rounds)
        self.sharpness = float(sharpness)
        self.consistency = float(consistency)
        self.update_scale = float(update_scale)

    def supports(self, case: AttackCase) -> bool:
        return malicious_mlp(case) and len(case.run.model.hidden) == 1

    def run(self, case: AttackCase, *, progress: bool = False) -> ImprintResult:
        from attacks.scenario import observe_round, unflatten
        from privagg.randomness import simulation_rng
        from protocols.models import get_flat_params

        t0 = time.perf_counter()
        if not self.supports(case):
            raise ConfigurationError("fishing needs a malicious server and a one-hidden-layer MLP", field="case")
        sim, lr, public = malicious_round_setup(case, rounds=self.rounds)
        model, ds = sim.model, sim.dataset
        base = sim.global_params.copy()
        first = mlp_linears(model)[0]
        classes = ds.num_classes
        images = case.cohort_size * case.batch_size  # public: the (expected) cohort and the batch size
        with torch.no_grad():
            feats = torch.relu(first(torch.as_tensor(ds.x_test.reshape(len(ds.x_test), -1), dtype=torch.float32)))
        feats_np = feats.double().numpy()
        clip = update_clip(case)

        def gain_for(u: np.ndarray) -> float:  # a client's first-layer step <= update_scale * clip
            return self.update_scale * clip * case.batch_size / (lr * float(np.max(np.abs(u))))

        log: list[dict[str, Any]] = []
        accepted: list[np.ndarray] = []
        readings: list[np.ndarray] = []
        observations: list[RoundObservation] = []

        def look(r: int) -> RoundObservation:
            """What the server sees of round ``r`` under the crafted model (the same local batch every round)."""
            seen = observe_round(
                case,
                sim,
                get_flat_params(model),
                batch_size=case.batch_size,
                stream="fishing",
                round=r,
                batch_rng=simulation_rng(case.seed, "fishing", "batches"),
            )
            observations.append(seen)
            return seen

        def fish(r: int, c: int, u: np.ndarray, *, gain: float, offset: float, scale: float) -> FishingRead:
            craft_fishing_model(model, base, target=c, direction=u, gain=gain, offset=offset, feature_scale=scale)
            seen = look(r)
            delta = np.mean(seen.observed, axis=0)  # under "none": the plain mean of the updates it sees
            read = read_round(unflatten(model, -delta / lr), target=c, images=images, num_classes=classes)
            readings.append(read.image)
            return read

        # round 1: class fishing on the first class; the output-bias gradient gives the label histogram
        ones = np.full(first.out_features, 1.0 / math.sqrt(first.out_features))
        c0 = int(case.option("first_class", 0)) % classes
        g1 = gain_for(ones)
        block = -(_BLOCK + g1 * float(np.max(feats_np @ ones)))
        if case.defense_spec.exposes_updates:  # the server reads each client's update: fish each one apart
            for r in range(1, min(self.rounds, classes) + 1):
                c = (c0 + r - 1) % classes
                craft_fishing_model(model, base, target=c, direction=ones, gain=g1, offset=block, feature_scale=1.0)
                for delta in look(r).observed:  # one client's batch behind each update
                    got = read_round(
                        unflatten(model, -delta / lr), target=c, images=case.batch_size, num_classes=classes
                    )
                    readings.append(got.image)
                    if abs(got.passing - 1.0) < 0.5 and got.residual <= self.consistency:
                        accepted.append(got.image)
                log.append({"round": r, "mode": "class, each update", "class": c, "accepted": len(accepted)})
            return self._scored(case, observations, accepted, readings, public, log, started=t0, rounds=r, counts=[])
        read = fish(1, c0, ones, gain=g1, offset=block, scale=1.0)
        counts = np.maximum(np.rint(read.counts), 0).astype(int)
        log.append({"round": 1, "mode": "class", "class": c0, "passing": read.passing, "residual": read.residual})
        if counts[c0] == 1 and read.residual <= self.consistency:
            accepted.append(read.image)
        r = 1
        singles = [j for j in range(classes) if counts[j] == 1 and j != c0]
        several = sorted((j for j in range(classes) if counts[j] >= 2), key=lambda j: counts[j])
        for j in singles:
            if r >= self.rounds:
                break
            r += 1
            read = fish(r, j, ones, gain=g1, offset=block, scale=1.0)
            log.append({"round": r, "mode": "class", "class": j, "passing": read.passing, "residual": read.residual})
            if abs(read.passing - 1.0) < 0.5 and read.residual <= self.consistency:
                accepted.append(read.image)
        for j in several:
            mask = ds.y_test == j
            if r >= self.rounds or mask.sum() < 2 or (~mask).sum() < 2:
                continue
            # the direction separating class j in feature space (public data), and its score spread
            diff = feats_np[mask].mean(0) - feats_np[~mask].mean(0)
            cov = np.cov(feats_np.T) + 1e-3 * np.eye(feats_np.shape[1])
            u = np.linalg.solve(cov, diff)
            u /= np.linalg.norm(u)
            scores = feats_np[mask] @ u
            spread = float(np.std(scores)) or 1.0
            gain = gain_for(u)
            scale = self.sharpness / (gain * spread)
            lo, hi = 0.0, 1.0  # bisection in quantiles of the public class-j scores (dense where images are)
            for _ in range(self.search_rounds):
                if r >= self.rounds:
                    break
                r += 1
                v = float(np.quantile(scores, 0.5 * (lo + hi)))
                read = fish(r, j, u, gain=gain, offset=-gain * scale * v + math.log(classes - 1), scale=scale)
                log.append(
                    {
                        "round": r,
                        "mode": "feature",
                        "class": j,
                        "threshold": v,
                        "passing": read.passing,
                        "residual": read.residual,
                    }
                )
                # one image passing (class j below v: +1; another class above v: -1) and a rank-one gradient
                if abs(abs(read.passing) - 1.0) < 0.25 and read.residual <= self.consistency:
                    accepted.append(read.image)
                    break
                if read.passing >= 0.5:  # class-j images below v (several, or one mixed with others): lower v
                    hi = 0.5 * (lo + hi)
                else:  # nobody below v (or only other classes above it): raise v
                    lo = 0.5 * (lo + hi)
        return self._scored(
            case, observations, accepted, readings, public, log, started=t0, rounds=r, counts=counts.tolist()
        )

    def _scored(
        self,
        case: AttackCase,
        observations: list[RoundObservation],
        accepted: list[np.ndarray],
        readings: list[np.ndarray],
        public: np.ndarray,
        log: list[dict[str, Any]],
        *,
        started: float,
        rounds: int,
        counts: list[int],
    ) -> ImprintResult:
        r, t0 = rounds, started
        seen = observations[-1]  # the batches are the same every round: ground truth for scoring
        shape = seen.cohort_images.shape[1:]
        claimed = np.stack(accepted).reshape((len(accepted), *shape)) if accepted else np.zeros((0, *shape))
        hits = psnr_per_image(seen.cohort_images, match_candidates(seen.cohort_images, claimed, public.mean(axis=0)))
        threat = (
            f"Threat model: malicious server; over {r} rounds it sends crafted output layers (class fishing, then "
            f"a threshold search on a class direction), each identical for every client, and observes "
            f"{seen.description} per round; clients are assumed to reuse the same local batch every round. Each "
            f"round's reading is one candidate image (closed form through the first layer); scoring matches each "
            f"real image to its best candidate, and the attack reads no real image."
        )
        return scored_result(
            self.name,
            case,
            seen,
            np.stack(readings),
            public,
            threat=threat,
            started=t0,
            metrics={
                "rounds_used": float(r),
                "images_claimed": float(len(accepted)),
                "claimed_recovered": float(np.count_nonzero(hits >= RECOVERED_PSNR)),
            },
            data={"closed_form": True, "rounds": log, "label_histogram_read": counts},
            median=False,
            tail=f"; the server claimed {len(accepted)} isolated images",
        )
