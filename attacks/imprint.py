"""Malicious-model attack: an imprint first layer that survives secure aggregation.

Threat model: a **malicious server** (it chooses the model it sends; Fowl et al. 2022,
"Robbing the Fed"). It sends *one* crafted model, identical for every client, so a
model-consistency check (every client got the same digest) passes. Each client takes one
honest FedSGD step on its own batch and submits its update through the case's defense —
under ``secagg`` the real active SecAgg+ aggregator, so the server learns only the sum.

The crafted MLP (the deployment's own architecture; no layer is added):

* first linear layer, ``K`` = its width: unit ``i`` computes ``ReLU(a * (m . x - t_i))``
  with one direction ``m`` for all units (mean brightness, or a random unit direction) and
  thresholds ``t_0 < t_1 < ... < t_{K-1}`` at the quantiles of ``m . x`` on the attacker's
  public data, so every bin is equally likely to catch an image;
* every later linear layer has identical columns (hidden layers a positive constant, the
  output layer ``+-c`` by class), so ``dL/dh_i`` is one number ``g(x)`` per image, the
  same for every bin the image switches on.

An image with ``t_j < m . x <= t_{j+1}`` switches on units ``0..j``, so the difference of
adjacent rows of the first-layer gradient is ``sum g(x) x`` over the images in bin ``j``;
divided by the bias-gradient difference it is *the image* whenever it sat alone in its bin.
Sums over clients are sums over images, so the aggregate leaks every isolated image of the
cohort — secure aggregation hides *whose* image it is, not the image.

:func:`malicious_model_exposure` is the audit's entry point: the attack over several seeds
for a deployment's defense, with the verdict.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from attacks.metrics import RECOVERED_PSNR, image_recovery_metrics, psnr_per_image, seed_interval
from attacks.registry import Adversary, Attack, AttackCase, AttackResult, register_attack
from privagg.errors import ConfigurationError

if TYPE_CHECKING:
    from attacks.scenario import RoundObservation
    from protocols.fedavg import FedAvgSimulation

__all__ = [
    "ImprintAttack",
    "ImprintResult",
    "MaliciousModelExposure",
    "client_noise_case",
    "craft_imprint_model",
    "imprint_thresholds",
    "malicious_model_exposure",
    "match_candidates",
    "mlp_linears",
    "recover_imprint",
]

Statistic = Literal["brightness", "random"]


def imprint_thresholds(values: np.ndarray, bins: int) -> np.ndarray:
    """``bins`` increasing thresholds: the first below every value, the rest at the ``i/bins``
    quantiles of ``values`` (the attacker's public data), so bins are equally likely."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if bins < 2:
        raise ConfigurationError("an imprint layer needs at least 2 bins", field="bins")
    if v.size < bins:
        raise ConfigurationError(f"{v.size} public examples for {bins} bins", field="bins")
    qs = np.quantile(v, np.arange(1, bins) / bins)
    lowest = float(v.min()) - 1.0 - abs(float(v.min()))
    t = np.r_[lowest, qs]
    # ties in the public data (discrete pixel values) would make equal thresholds: spread them
    for i in range(1, bins):
        if t[i] <= t[i - 1]:
            t[i] = t[i - 1] + 1e-6 * max(1.0, abs(float(t[i - 1])))  # above float32 resolution
    return t


def mlp_linears(model: nn.Module) -> list[nn.Linear]:
    """The linear layers of an MLP whose first layer has a bias (what a crafted first layer needs), else refused."""
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    others = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if len(lin) < 2 or others or lin[0].bias is None:
        raise ConfigurationError(
            "the imprint attack crafts an MLP (at least one hidden linear layer with bias)", field="model"
        )
    return lin


@torch.no_grad()
def craft_imprint_model(
    model: nn.Module, *, direction: np.ndarray, thresholds: np.ndarray, output_gain: float, slope: float = 1e-3
) -> None:
    """Overwrite ``model``'s weights (in place) with the imprint model described in the module docstring.

    ``direction`` (the input statistic ``m``), ``thresholds`` (one per first-layer unit,
    increasing), ``output_gain`` (``c``: the output layer's ``+-c`` columns set the size of
    the per-image gradient), ``slope`` (``a``: small, so the logits stay near zero and
    ``g(x)`` is near ``-+c`` for every image).
    """
    lin = mlp_linears(model)
    first = lin[0]
    k, d = first.weight.shape
    m = torch.as_tensor(np.asarray(direction, dtype=np.float64).ravel(), dtype=first.weight.dtype)
    t = torch.as_tensor(np.asarray(thresholds, dtype=np.float64), dtype=first.weight.dtype)
    if m.numel() != d or t.numel() != k:
        raise ConfigurationError(f"direction {m.numel()}/{d}, thresholds {t.numel()}/{k}", field="model")
    first.weight.copy_(slope * m.expand(k, d))
    first.bias.copy_(-slope * t)  # type: ignore[union-attr]
    for layer in lin[1:-1]:  # hidden layers pass the sum of the bins on, identically
        layer.weight.fill_(1.0 / layer.in_features)
        if layer.bias is not None:
            layer.bias.zero_()
    out = lin[-1]
    signs = torch.tensor([1.0 if j % 2 == 0 else -1.0 for j in range(out.out_features)], dtype=out.weight.dtype)
    out.weight.copy_((output_gain * signs)[:, None].expand_as(out.weight))
    if out.bias is not None:
        out.bias.zero_()


def recover_imprint(grad_weight: np.ndarray, grad_bias: np.ndarray, *, tolerance: float = 1e-3) -> np.ndarray:
    """Images from an imprint layer's (summed) gradient: adjacent-bin differences, row / bias.

    Bins are in threshold order; a bin whose bias difference is below ``tolerance`` times the
    largest caught no image and yields nothing. Returns ``(M, d)`` candidates in ``[0, 1]``.
    """
    w = np.asarray(grad_weight, dtype=np.float64)
    b = np.asarray(grad_bias, dtype=np.float64).ravel()
    dw = np.vstack([w[:-1] - w[1:], w[-1:]])
    db = np.r_[b[:-1] - b[1:], b[-1:]]
    scale = float(np.max(np.abs(db))) if db.size else 0.0
    if scale == 0.0:
        return np.zeros((0, w.shape[1]))
    keep = np.abs(db) > tolerance * scale
    return np.clip(dw[keep] / db[keep, None], 0.0, 1.0)


def match_candidates(originals: np.ndarray, candidates: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Scoring only: one candidate per original (one-to-one, least MSE); originals left over get
    ``fallback``. The attacker does not know which candidate is whose: an image counts as recovered
    when some candidate of the attack matches it, as in the papers."""
    o = originals.reshape(len(originals), -1)
    c = np.vstack([candidates.reshape(len(candidates), o.shape[1]), np.repeat(fallback.reshape(1, -1), len(o), axis=0)])
    cost = ((o[:, None, :] - c[None, :, :]) ** 2).mean(-1)
    rows, cols = linear_sum_assignment(cost)
    out = np.empty_like(o)
    out[rows] = c[cols]
    return out.reshape(originals.shape)


@dataclass(kw_only=True)
class ImprintResult(AttackResult):
    """The cohort's real images and the reconstruction matched to each (the report's grid)."""

    originals: np.ndarray = field(repr=False, compare=False)
    reconstructions: np.ndarray = field(repr=False, compare=False)
    true_labels: np.ndarray = field(repr=False, compare=False)


def malicious_mlp(case: AttackCase) -> bool:
    """The case the malicious-model attacks apply to: an MLP the server may craft (a malicious server)."""
    return case.run.model.name == "mlp" and case.adversary.server == "malicious"


def malicious_round_setup(case: AttackCase, *, rounds: int = 1) -> tuple[FedAvgSimulation, float, np.ndarray]:
    """What every malicious-model attack starts from: the case's simulation (one local SGD epoch at the
    case's ``lr``), that ``lr``, and the attacker's public images (the test split, flattened)."""
    from attacks.scenario import make_run_config
    from protocols.fedavg import FedAvgSimulation
    from protocols.training import TrainConfig

    if case.adversary.server != "malicious":
        raise ConfigurationError("crafting the model needs a malicious server", field="adversary.server")
    lr = float(case.option("lr", 0.1))
    train = TrainConfig(epochs=1, batch_size=case.batch_size, lr=lr)
    sim = FedAvgSimulation(
        make_run_config(case, train=train, rounds=rounds, dp_clip=float(case.option("dp_clip", 1.0)))
    )
    x = sim.dataset.x_test
    return sim, lr, x.reshape(len(x), -1).astype(np.float64)


def update_clip(case: AttackCase) -> float:
    """The per-coordinate bound a client's update is clipped to before the secure sum (1 without one)."""
    from attacks.scenario import aggregation_options

    return float(aggregation_options(case).get("clip", 1.0)) if case.uses_secure_aggregation else 1.0


def first_layer_reads(
    model: nn.Module,
    observed: Sequence[np.ndarray],
    lr: float,
    recover: Callable[..., np.ndarray],
    *,
    tolerance: float,
) -> np.ndarray:
    """The candidates ``recover`` reads from the first layer's weight and bias gradients of each observed
    update (an update is ``-lr`` times the gradient of the round's loss), stacked."""
    from attacks.scenario import unflatten

    first = mlp_linears(model)[0]
    iw = next(i for i, p in enumerate(model.parameters()) if p is first.weight)
    ib = next(i for i, p in enumerate(model.parameters()) if p is first.bias)
    grads = (unflatten(model, -np.asarray(delta) / lr) for delta in observed)
    return np.vstack([recover(g[iw].numpy(), g[ib].numpy(), tolerance=tolerance) for g in grads])


def scored_result(
    attack: str,
    case: AttackCase,
    seen: RoundObservation,
    candidates: np.ndarray,
    public: np.ndarray,
    *,
    threat: str,
    started: float,
    metrics: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    median: bool = True,
    tail: str = "",
) -> ImprintResult:
    """Scoring of a malicious-model attack (the attack itself reads no real image): each real image of the
    observed cohort matched one-to-one to its best candidate, recovery over the cohort and the target,
    the observation's own figures, then ``metrics``; ``data`` and ``tail`` (after the recovery sentence
    and, with ``median``, the median PSNR) add what the attack states of itself."""
    originals = seen.cohort_images
    matched = match_candidates(
        originals, candidates.reshape((len(candidates), *originals.shape[1:])), public.mean(axis=0)
    )
    out: dict[str, Any] = image_recovery_metrics(originals, matched)
    mine = seen.owners == int(case.option("target", 0))
    out.update(image_recovery_metrics(originals[mine], matched[mine], prefix="target_"))
    out.update({key: v for key, v in seen.metrics.items() if isinstance(v, (int, float))})
    out.update(metrics or {})
    return ImprintResult(
        attack=attack,
        case=case,
        metrics=out,
        originals=originals,
        reconstructions=matched,
        true_labels=seen.cohort_labels,
        success=bool(out["fraction_recovered"] >= 0.5),
        data={
            "threat_model": threat,
            "observation": seen.description,
            "per_image_psnr": psnr_per_image(originals, matched).round(2).tolist(),
            "recovered_criterion": f"PSNR >= {RECOVERED_PSNR:.0f} dB",
            **(data or {}),
        },
        seconds=time.perf_counter() - started,
        text=(
            f"{threat} Recovered {int(out['images_recovered'])}/{int(out['images'])} images of the cohort "
            f"(PSNR >= {RECOVERED_PSNR:.0f} dB)"
            + (f"; median PSNR {out['psnr_median']:.1f} dB" if median else "")
            + f"{tail}."
        ),
    )


@register_attack("imprint")
class ImprintAttack(Attack):
    """Robbing the Fed: a malicious server sends every client one crafted imprint model.

    Hyper-parameters: ``statistic`` (``"brightness"`` or ``"random"``: the direction the
    bins cut), ``update_scale`` (largest per-coordinate step the crafted model asks of a
    client, as a fraction of the secure aggregator's clip, so nothing is clipped),
    ``tolerance`` (see :func:`recover_imprint`). Case options: ``lr`` (the public client
    learning rate, 0.1). Images per client: ``case.batch_size``; the cohort: every client.
    ``success``: at least half of the cohort's images recovered (PSNR >= 25 dB).
    """

    kind: ClassVar[str] = "inference"
    description = "Malicious imprint model (Fowl et al. 2022, Robbing the Fed): bins isolate images in the sum"

    def __init__(
        self, *, statistic: Statistic = "brightness", update_scale: float = 0.5, tolerance: float = 1e-3
    ) -> None:
        if statistic not in ("brightness", "random"):
            raise ConfigurationError(
                f"unknown statistic {statistic!r}", field="statistic", accepted=["brightness", "random"]
            )
        if not 0 < update_scale <= 1:
            raise ConfigurationError("must be in (0, 1]", field="update_scale")
        self.statistic = statistic
        self.update_scale = float(update_scale)
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
        first = mlp_linears(model)[0]
        d = first.in_features
        if self.statistic == "brightness":
            direction = np.full(d, 1.0 / d)
        else:
            direction = simulation_rng(case.seed, "imprint", "direction").standard_normal(d)
            direction /= np.linalg.norm(direction)
        thresholds = imprint_thresholds(public @ direction, first.out_features)
        gain = self.update_scale * update_clip(case) / lr  # one SGD step moves a pixel weight by <= update_scale * clip
        craft_imprint_model(model, direction=direction, thresholds=thresholds, output_gain=gain)
        round_ = observe_round(case, sim, get_flat_params(model), batch_size=case.batch_size, stream="imprint")
        cand = first_layer_reads(model, round_.observed, lr, recover_imprint, tolerance=self.tolerance)
        threat = (
            f"Threat model: malicious server; it sends one crafted model (the deployment's {first.out_features}-unit "
            f"first layer as {first.out_features} {self.statistic} bins from public-data quantiles), identical for "
            f"every client, so a model-consistency check passes. The server observes {round_.description}."
        )
        return scored_result(
            self.name,
            case,
            round_,
            cand,
            public,
            threat=threat,
            started=t0,
            metrics={"candidates": float(len(cand)), "bins": float(first.out_features)},
            data={"statistic": self.statistic, "secagg_threat": round_.metrics.get("secagg_threat")},
        )


@dataclass(frozen=True)
class MaliciousModelExposure:
    """The imprint attack over seeds against one defense: what an audit reports.

    ``fractions``: per seed, the fraction of the cohort's images recovered (PSNR >= 25 dB);
    ``interval``: mean and 95% Student-t interval over seeds.
    """

    defense: str
    num_clients: int
    batch_size: int
    seeds: tuple[int, ...]
    fractions: tuple[float, ...]
    median_psnr: tuple[float, ...]
    interval: tuple[float, float, float]
    #: the positive control run when the defense shows no leak (:func:`attacks.registry.control_defense`):
    #: the same attack and seeds without the defense (or under the secure sum alone), per-seed fractions
    control_defense: str = ""
    control_fractions: tuple[float, ...] = ()

    @property
    def leaks(self) -> bool:
        """Images leak when on average at least one in ten is recovered."""
        return self.interval[0] >= 0.1

    @property
    def stopped(self) -> bool | None:
        """The defense stopped the attack: no leak, and the same attack and seeds leak in the positive control.
        ``False``: it leaks; ``None``: not shown (no control ran, or the control did not leak either)."""
        if self.leaks:
            return False
        if not self.control_fractions:
            return None
        return True if float(np.mean(self.control_fractions)) >= 0.1 else None

    def verdict(self) -> str:
        m, lo, hi = self.interval
        lo, hi = max(lo, 0.0), min(hi, 1.0)  # a fraction: the t-interval is clipped to [0, 1]
        state = "LEAKS" if self.leaks else "does not leak"
        line = (
            f"malicious model (imprint) against {self.defense}: {m:.0%} of {self.num_clients} clients' images "
            f"recovered at >= {RECOVERED_PSNR:.0f} dB (95% CI {lo:.0%}..{hi:.0%}, {len(self.seeds)} seeds): {state}"
        )
        if self.leaks:
            return line
        ctrl = float(np.mean(self.control_fractions)) if self.control_fractions else float("nan")
        if self.stopped:
            return f"{line}; stopped by {self.defense}: the same attack and seeds recover {ctrl:.0%} under " + (
                f"{self.control_defense}"
            )
        if not self.control_fractions:
            return f"{line}; NOT SHOWN that {self.defense} stops it: no positive control ran"
        return (
            f"{line}; NOT SHOWN: the attack does not succeed without the defense either ({self.control_defense}: "
            f"{ctrl:.0%}), so this says nothing about {self.defense}"
        )


def client_noise_case(noise_multiplier: float, sensitivity_factor: float) -> tuple[dict[str, Any], str]:
    """The ``secagg+dp`` attack case's options that put a deployment's per-round client noise in the sum.

    The deployment's noise std in the sum, in clip norms, is ``noise_multiplier * sensitivity_factor`` (1 under
    Poisson sampling, 2 under fixed-size cohorts); the case gets the multiplier giving the same std under its own
    sampling. Returns the options for :func:`malicious_model_exposure` and the sentence that says so.
    """
    from attacks.registry import DEFENSES

    std = noise_multiplier * sensitivity_factor
    case_factor = 1.0 if DEFENSES.get("secagg+dp").sampling == "poisson" else 2.0
    how = (
        f"with the deployment's per-round noise in the sum (std {std:.3g} clip norms: noise multiplier "
        f"{noise_multiplier:.3g} x sensitivity factor {sensitivity_factor:g}) on the attack case's model and "
        "cohort of 10"
    )
    return {"dp": {"noise_multiplier": std / case_factor, "target_epsilon": None}}, how


def malicious_model_exposure(
    defense: str = "secagg",
    *,
    num_clients: int = 10,
    batch_size: int = 1,
    seeds: tuple[int, ...] = (0, 1, 2),
    dp_epsilon: float = 8.0,
    options: dict[str, Any] | None = None,
) -> MaliciousModelExposure:
    """Run :class:`ImprintAttack` on digits for ``defense`` over ``seeds`` (the audit's check).

    Secure aggregation alone does not stop it: the crafted model is the same for everyone. When ``defense``
    shows no leak, the same attack runs on the same seeds under its positive control
    (:func:`attacks.registry.control_defense`): :attr:`MaliciousModelExposure.stopped` says whether the
    defense stopped it or the attack failed without the defense too (not shown).
    """
    if len(seeds) < 2:
        raise ConfigurationError("give at least 2 seeds (an interval)", field="seeds")
    from attacks.registry import control_defense

    def measure(d: str) -> tuple[list[float], list[float]]:
        fr, med = [], []
        for s in seeds:
            case = AttackCase.create(
                dataset="digits",
                num_clients=num_clients,
                seed=s,
                defense=d,
                batch_size=batch_size,
                dp_epsilon=dp_epsilon,
                adversary=Adversary.malicious_server(),
                options=dict(options or {}),
            )
            r = ImprintAttack().run(case)
            fr.append(float(r.metrics["fraction_recovered"]))
            med.append(float(r.metrics["psnr_median"]))
        return fr, med

    fr, med = measure(defense)
    out = MaliciousModelExposure(
        defense=defense,
        num_clients=num_clients,
        batch_size=batch_size,
        seeds=tuple(seeds),
        fractions=tuple(fr),
        median_psnr=tuple(med),
        interval=seed_interval(fr),
    )
    control = control_defense(defense)
    if out.leaks or not control:
        return out
    # no leak: the positive control (same attack, seeds and options without the defense's protection)
    ctrl, _ = measure(control)
    return replace(out, control_defense=control, control_fractions=tuple(ctrl))
