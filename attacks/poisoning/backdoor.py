"""Backdoor attacks: a pixel-pattern trigger relabelled to ``target_label`` (model replacement,
constrain-and-scale, the distributed backdoor), and their attack success rate.

A malicious client trains on poisoned data with the one local trainer
(:func:`protocols.training.train_local`): plain SGD at the attack's rate for its own number of
epochs, its loss and after-step projection as the trainer's hooks.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from attacks.poisoning.base import PoisoningAttack
from attacks.registry import register_attack
from privagg.errors import ConfigurationError
from privagg.randomness import torch_generator
from protocols.aggregation import ClientUpdate, RoundContext
from protocols.models import get_flat_params, set_flat_params
from protocols.robust import RobustAggregator, ServerPolicy
from protocols.training import predict_logits, train_local

if TYPE_CHECKING:
    from typing import Self

    from protocols.fedavg import FedAvgSimulation

__all__ = [
    "BackdoorAttack",
    "ConstrainAndScale",
    "DistributedBackdoor",
    "ModelReplacement",
    "align_to",
    "apply_trigger",
    "clamp_inside",
    "clean_trigger_rate",
    "focus_on",
    "trigger_groups",
]


def trigger_groups(input_shape: tuple[int, ...], parts: int = 4) -> list[list[tuple[int, int]]]:
    """The pixel-pattern trigger of an image shape, split into ``parts`` local triggers (DBA).

    Four horizontal bars of length ``max(2, W // 7)`` in the top-left corner, two rows apart
    (8x8 digits: rows 0 and 2, columns 0-1 and 3-4). The global trigger is their union.
    """
    if len(input_shape) != 3:
        raise ConfigurationError(
            f"pixel triggers need images (C, H, W), got input shape {input_shape}", field="dataset"
        )
    _, h, w = input_shape
    bar = max(2, w // 7)
    if 2 * bar + 1 > w or h < 3:
        raise ConfigurationError(f"image {h}x{w} too small for the trigger", field="dataset")
    bars = [[(row, col0 + k) for k in range(bar)] for row in (0, 2) for col0 in (0, bar + 1)]
    if parts < 1:
        raise ConfigurationError("must be >= 1", field="parts")
    groups: list[list[tuple[int, int]]] = [[] for _ in range(min(parts, len(bars)))]
    for j, b in enumerate(bars):
        groups[j % len(groups)].extend(b)
    return groups


def apply_trigger(x: np.ndarray, pixels: Sequence[tuple[int, int]], value: float = 1.0) -> np.ndarray:
    """A copy of image batch ``x`` (N, C, H, W) with ``pixels`` set to ``value`` in every channel."""
    out = np.array(x, dtype=np.float32, copy=True)
    for r, c in pixels:
        out[:, :, r, c] = value
    return out


class BackdoorAttack(PoisoningAttack):
    """Shared machinery of the backdoors: poisoned local data, boosting, success rate.

    A malicious client replaces ``poison_fraction`` of its local samples by triggered copies
    labelled ``target_label`` (the rest stays clean so the main task survives), trains
    ``local_epochs`` epochs from the global model, and scales its delta by ``boost``
    (``None``: model replacement, the inverse of the attackers' share of the aggregate, see
    :meth:`boost_for`).
    """

    is_backdoor = True
    local_trigger: ClassVar[bool] = False

    def __init__(
        self,
        *,
        target_label: int = 0,
        poison_fraction: float = 0.5,
        local_epochs: int = 5,
        lr: float | None = None,
        boost: float | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if not 0 < poison_fraction <= 1:
            raise ConfigurationError("must be in (0, 1]", field="poison_fraction")
        if local_epochs < 1:
            raise ConfigurationError("must be >= 1", field="local_epochs")
        if boost is not None and not boost > 0:
            raise ConfigurationError("must be > 0", field="boost")
        self.target_label, self.poison_fraction = target_label, poison_fraction
        self.local_epochs, self.lr, self.boost = local_epochs, lr, boost
        self.groups: list[list[tuple[int, int]]] = []

    def _setup(self, sim: FedAvgSimulation) -> None:
        ds = sim.dataset
        if ds.kind != "image":
            raise ConfigurationError(f"{self.name} needs an image dataset, {ds.name} is {ds.kind}", field="dataset")
        if not 0 <= self.target_label < ds.num_classes:
            raise ConfigurationError(
                f"not a class of {ds.name}", field="target_label", accepted=f"0..{ds.num_classes - 1}"
            )
        self.groups = trigger_groups(ds.input_shape, 4)

    @property
    def global_trigger(self) -> list[tuple[int, int]]:
        return [p for g in self.groups for p in g]

    def trigger_for(self, rank: int) -> list[tuple[int, int]]:
        """The trigger attacker number ``rank`` stamps (DBA: its local part; else the global one)."""
        if self.local_trigger:
            return self.groups[rank % len(self.groups)]
        return self.global_trigger

    def poisoned_data(
        self, x: np.ndarray, y: np.ndarray, pixels: Sequence[tuple[int, int]], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(y)
        k = max(1, round(self.poison_fraction * n))
        idx = rng.choice(n, size=min(k, n), replace=False)
        xp, yp = np.array(x, copy=True), np.array(y, copy=True)
        xp[idx] = apply_trigger(x[idx], pixels)
        yp[idx] = self.target_label
        return xp, yp

    def boost_for(self, updates: list[ClientUpdate], mal: list[int], sim: FedAvgSimulation) -> float:
        """The scale ``gamma`` of the malicious deltas (model replacement: the inverse of their weight).

        An omniscient attacker facing an example-weighted mean knows every client's weight and
        uses ``sum(all weights) / sum(attackers' weights)``; otherwise it assumes equal weights,
        ``n / c`` (the paper's ``n / eta`` with server rate ``eta = 1``).
        """
        if self.boost is not None:
            return self.boost
        if self.adversary.omniscient and bool(getattr(sim.aggregator, "weighted", False)):
            w = np.array([u.num_examples for u in updates], dtype=np.float64)
            wm = float(w[mal].sum())
            if wm > 0:
                return float(w.sum()) / wm
        return len(updates) / max(len(mal), 1)

    def train_poisoned(
        self, sim: FedAvgSimulation, cid: int, gp: np.ndarray, x: np.ndarray, y: np.ndarray, r: int, *, gamma: float
    ) -> np.ndarray:
        """Local training on poisoned data; returns the (unscaled) delta.

        ``local_epochs`` epochs of plain SGD (no momentum, no weight decay) at ``lr`` (default:
        the clients' rate) with the clients' batch size, batch order from the attack's own stream.
        """
        model = copy.deepcopy(sim.model)
        set_flat_params(model, gp)
        base = sim.config.train
        cfg = replace(
            base,
            epochs=self.local_epochs,
            lr=self.lr if self.lr is not None else base.lr,
            optimizer="sgd",
            momentum=0.0,
            weight_decay=0.0,
        )
        ref = [p.detach().clone() for p in model.parameters()]
        train_local(
            model,
            x,
            y,
            cfg,
            generator=torch_generator(self.seed, "attack", self.name, cid, r),
            loss=lambda m, ce: self.loss(m, ce, ref),
            after_step=lambda m: self.after_step(m, ref, gamma),
        )
        return get_flat_params(model) - gp

    def loss(self, model: torch.nn.Module, ce: torch.Tensor, ref: list[torch.Tensor]) -> torch.Tensor:
        return ce

    def after_step(self, model: torch.nn.Module, ref: list[torch.Tensor], gamma: float) -> None:
        """Hook after each optimiser step (constrain-and-scale projects here)."""

    def craft(
        self, updates: list[ClientUpdate], mal: list[int], ctx: RoundContext, sim: FedAvgSimulation
    ) -> dict[int, np.ndarray | ClientUpdate]:
        assert ctx.global_params is not None
        gamma = self.boost_for(updates, mal, sim)
        ranks = {cid: k for k, cid in enumerate(sorted(self.malicious))}
        out: dict[int, np.ndarray | ClientUpdate] = {}
        for i in mal:
            cid = updates[i].client_id
            x, y = sim.client_data(cid)
            xp, yp = self.poisoned_data(x, y, self.trigger_for(ranks[cid]), self.rng(ctx, cid))
            out[i] = gamma * self.train_poisoned(sim, cid, ctx.global_params, xp, yp, ctx.round, gamma=gamma)
        return out

    def details(self) -> dict[str, Any]:
        return {"target_label": self.target_label}

    def success(self, sim: FedAvgSimulation) -> float | None:
        """Share of triggered test images (true label != target) classified as ``target_label``."""
        ds = sim.dataset
        keep = ds.y_test != self.target_label
        xt = apply_trigger(ds.x_test[keep], self.global_trigger)
        set_flat_params(sim.model, sim.global_params)
        pred = predict_logits(sim.model, xt).argmax(axis=1)
        return float(np.mean(pred == self.target_label)) if len(pred) else 0.0


@register_attack("model-replacement")
class ModelReplacement(BackdoorAttack):
    """Backdoor by model replacement (Bagdasaryan et al. 2020): train on poisoned data, scale by ``n/eta``.

    Default boost: ``n / (number of attackers in the round)``, so the attackers' models
    replace the global one under FedAvg.

    Omniscient attackers know the defense and every honest update of the round. Against a
    robust rule (any :class:`~protocols.robust.RobustAggregator`, stacks included) a boosted
    update is an outlier by norm, which clipping, nearest-neighbour mixing and distance-based
    selection single out; so they boost no further than the honest updates' median norm
    (:meth:`stealth_norm`), the largest norm no norm-based screening can tell from an honest
    one. Against a plain mean they keep the replacement boost. An explicit ``boost`` wins.
    """

    description = "backdoor with model replacement (Bagdasaryan et al. 2020)"
    reads_benign_updates = True

    def __init__(
        self, *, decorrelate: float = 0.0, align: float = 0.0, inside: bool = False, focus: float = 0.0, **kw: Any
    ) -> None:
        """``decorrelate``: each attacker adds fresh Gaussian noise of ``decorrelate`` times its
        update's norm every round, so colluders look less alike (against similarity screening).

        ``align`` (in ``[0, 1)``; 0: off): each attacker turns its update towards the consensus
        of the benign updates it knows (:meth:`~attacks.poisoning.PoisoningAttack.reference`:
        every honest update if omniscient, else the attackers' own genuine ones), the
        coordinate-wise median of their unit directions, until its cosine to it is at least
        ``align``; the norm is kept (:func:`align_to`). The adaptive attacker of a screen that
        spares updates which agree with the consensus: what it adds is benign, the backdoor
        stays.

        ``inside``: last, each attacker clamps every coordinate of its update into the range a
        coordinate-wise trim by the number of attackers keeps among the benign updates it knows
        (:func:`clamp_inside`): the adaptive attacker of a trimmed mean (``fltrust-trim``).

        ``focus`` (in ``[0, 1)``; 0: off): after aligning, each attacker keeps its update only on
        the ``focus`` share of coordinates where the mean of the benign updates it knows moves
        most, and sends that mean everywhere else (:func:`focus_on`); ``inside`` then clamps only
        the other coordinates. Those coordinates estimate where a clean root update moves most,
        which ``fltrust-trim`` averages untrimmed (its ``untrimmed_share``): the adaptive attacker
        of that exception. Omniscient, it estimates them from every honest update of the round;
        with partial knowledge, from the attackers' own genuine updates."""
        super().__init__(**kw)
        if not 0 <= focus < 1:
            raise ConfigurationError(f"must be in [0, 1), got {focus!r}", field="focus")
        self.focus = float(focus)
        if not isinstance(inside, bool):
            raise ConfigurationError(f"must be true or false, got {inside!r}", field="inside")
        self.inside = inside
        if decorrelate < 0:
            raise ConfigurationError("must be >= 0", field="decorrelate")
        if not 0 <= align < 1:
            raise ConfigurationError(f"must be in [0, 1), got {align!r}", field="align")
        self.decorrelate = float(decorrelate)
        self.align = float(align)

    def stealth_norm(self, updates: list[ClientUpdate], mal: list[int], sim: FedAvgSimulation) -> float | None:
        """The norm the attackers keep to (the honest median norm), or ``None``: no cap.

        ``None`` unless the attackers are omniscient, no ``boost`` was fixed and the server runs a robust rule.
        """
        if self.boost is not None or not self.adversary.omniscient:
            return None
        if not isinstance(sim.aggregator, RobustAggregator):
            return None
        bad = set(mal)
        honest = [np.linalg.norm(u.delta) for j, u in enumerate(updates) if j not in bad]
        return float(np.median(honest)) if honest else None

    def craft(
        self, updates: list[ClientUpdate], mal: list[int], ctx: RoundContext, sim: FedAvgSimulation
    ) -> dict[int, np.ndarray | ClientUpdate]:
        out = super().craft(updates, mal, ctx, sim)
        if self.decorrelate > 0:
            for i, d in list(out.items()):
                v = np.asarray(d, dtype=np.float64)
                noise = self.rng(ctx, "decorrelate", updates[i].client_id).standard_normal(v.shape)
                scale = self.decorrelate * float(np.linalg.norm(v)) / max(float(np.linalg.norm(noise)), 1e-300)
                out[i] = v + scale * noise
        if self.align > 0:
            known = self.reference(updates, mal)
            units = known / np.maximum(np.linalg.norm(known, axis=1), 1e-300)[:, None]
            consensus = np.median(units, axis=0)
            for i, d in list(out.items()):
                out[i] = align_to(np.asarray(d, dtype=np.float64), consensus, self.align)
        vouched: np.ndarray | None = None
        if self.focus > 0:
            benign = self.reference(updates, mal).mean(axis=0)
            for i, d in list(out.items()):
                out[i], vouched = focus_on(np.asarray(d, dtype=np.float64), benign, self.focus)
        cap = self.stealth_norm(updates, mal, sim)
        if cap is not None:
            for i, d in list(out.items()):
                v = np.asarray(d, dtype=np.float64)
                nrm = float(np.linalg.norm(v))
                out[i] = v * (cap / nrm) if nrm > cap > 0 else v
        if self.inside:
            known = self.reference(updates, mal)
            for i, d in list(out.items()):
                v = np.asarray(d, dtype=np.float64)
                clamped = clamp_inside(v, known, len(mal))
                out[i] = clamped if vouched is None else np.where(vouched, v, clamped)
        return out


@register_attack("constrain-and-scale")
class ConstrainAndScale(BackdoorAttack):
    """Constrain-and-scale (Bagdasaryan et al. 2020): evade anomaly detection, then scale.

    The training loss is ``alpha * L_class + (1 - alpha) * L_ano`` with the anomaly term the
    squared distance to the global model; when the attacker assumes a norm bound
    (``norm_bound``, e.g. the server's clipping ``M``) it also projects its model after every
    step so that the *boosted* update has norm at most ``norm_bound`` (Sun et al.'s
    projected variant), and the boost is ``min(gamma, norm_bound / ||delta||)``.
    """

    description = "backdoor, constrain-and-scale (Bagdasaryan et al. 2020)"

    def __init__(self, *, alpha: float = 0.7, norm_bound: float | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        if not 0 < alpha <= 1:
            raise ConfigurationError("must be in (0, 1]", field="alpha")
        if norm_bound is not None and not norm_bound > 0:
            raise ConfigurationError("must be > 0", field="norm_bound")
        self.alpha, self.norm_bound = alpha, norm_bound

    @classmethod
    def from_policy(cls, options: Mapping[str, Any], policy: ServerPolicy) -> Self:
        """The attacker assumes the server's clipping bound ``M`` unless ``norm_bound`` is given."""
        return super().from_policy(policy.fill(options, "norm_bound"), policy)

    def loss(self, model: torch.nn.Module, ce: torch.Tensor, ref: list[torch.Tensor]) -> torch.Tensor:
        if self.alpha >= 1:
            return ce
        ano = torch.stack([((p - q) ** 2).sum() for p, q in zip(model.parameters(), ref)]).sum()
        return self.alpha * ce + (1 - self.alpha) * ano

    def after_step(self, model: torch.nn.Module, ref: list[torch.Tensor], gamma: float) -> None:
        if self.norm_bound is None:
            return
        radius = self.norm_bound / gamma
        with torch.no_grad():
            diffs = [p - q for p, q in zip(model.parameters(), ref)]
            nrm = float(torch.sqrt(torch.stack([(d**2).sum() for d in diffs]).sum()))
            if nrm > radius:
                for p, q, d in zip(model.parameters(), ref, diffs):
                    p.copy_(q + d * (radius / nrm))


@register_attack("dba")
class DistributedBackdoor(BackdoorAttack):
    """Distributed backdoor attack (Xie et al. 2020): the global trigger split among the attackers.

    Attacker ``k`` (in client-id order) stamps only local trigger ``k mod 4``; success is
    measured with the full global trigger, which no single attacker ever used.
    """

    description = "distributed backdoor attack (Xie et al. 2020)"
    local_trigger = True


def align_to(v: np.ndarray, direction: np.ndarray, cosine: float) -> np.ndarray:
    """``v`` turned towards ``direction`` until its cosine to it is ``cosine``, at ``v``'s norm.

    Adds the least multiple ``beta`` of the unit ``direction`` to the unit ``v`` that reaches
    the cosine (``beta = t sqrt((1 - c^2) / (1 - t^2)) - c`` for a start cosine ``c`` and the
    target ``t``), then rescales to ``||v||``. ``v`` is returned unchanged when it is already
    at least that aligned, or when either vector is zero.
    """
    if not 0 <= cosine < 1:
        raise ConfigurationError(f"must be in [0, 1), got {cosine!r}", field="align")
    nv, nd = float(np.linalg.norm(v)), float(np.linalg.norm(direction))
    if nv == 0 or nd == 0:
        return v
    u, m = v / nv, direction / nd
    c = float(np.clip(u @ m, -1.0, 1.0))
    if c >= cosine:
        return v
    beta = cosine * np.sqrt(max(1.0 - c * c, 0.0) / (1.0 - cosine * cosine)) - c
    w = u + beta * m
    return w * (nv / float(np.linalg.norm(w)))


def focus_on(v: np.ndarray, benign: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
    """``v`` on the ``share`` of coordinates where ``|benign|`` is largest (at least one), ``benign``
    elsewhere; and the mask of those coordinates. Ties at the threshold are all kept."""
    if not 0 < share <= 1:
        raise ConfigurationError(f"must be in (0, 1], got {share!r}", field="focus")
    a = np.abs(np.asarray(benign, dtype=np.float64))
    k = max(1, round(share * a.size))
    top = a >= np.partition(a, a.size - k)[a.size - k]
    return np.where(top, v, benign), top


def clamp_inside(v: np.ndarray, known: np.ndarray, trim: int) -> np.ndarray:
    """``v`` with every coordinate clamped between the ``(t+1)``-th smallest and ``(t+1)``-th largest
    value of that coordinate among the rows of ``known``, ``t = min(trim, (len(known)-1)//2)``: the
    values a coordinate-wise trim of ``trim`` keeps when the honest updates are ``known``."""
    srt = np.sort(np.asarray(known, dtype=np.float64), axis=0)
    t = max(0, min(trim, (len(srt) - 1) // 2))
    return np.clip(v, srt[t], srt[len(srt) - 1 - t])


def clean_trigger_rate(sim: FedAvgSimulation) -> float | None:
    """The backdoor trigger's success on ``sim``'s model when nobody attacked (the clean baseline).

    Model replacement's defaults (the global trigger, target label 0); ``None`` if the data
    are not images.
    """
    if sim.dataset.kind != "image":
        return None
    probe = ModelReplacement()
    probe._setup(sim)
    return probe.success(sim)
