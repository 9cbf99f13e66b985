"""SPEAR-style exact batch inversion of a fully connected ReLU layer (Dimitrov et al., NeurIPS 2024).

Threat model: an honest-but-curious server that follows FedSGD and inspects what it receives: one client's
single-step update (``defense="none"``), or whatever the defense releases (the cohort's secure sum, the
DP-noised aggregate), turned into a gradient with the public learning rate (``g = -delta / lr``). It knows the
architecture and the weights it sent; the model's first layer must be fully connected *with a bias* and be
followed by a ReLU (our ``mlp``). It needs no labels, no data prior and no optimisation. It needs the batch it
inverts (``b``: the client's batch, or ``cohort x b`` for a sum) to be smaller than the layer's width ``m``
(and than the input size ``n``), and the batch's images to be linearly independent. It outputs the batch's
inputs, exactly (up to floating point) when it succeeds, and says why when it does not (:class:`SpearOutcome`).

The algorithm. With ``Z = W X + c 1^T`` for the batch's inputs ``X`` (``n x b``), the layer's observed weight
gradient is ``G = dL/dW = Delta X^T`` with ``Delta = dL/dZ`` (``m x b``), and ``dL/dc = Delta 1``. So ``G`` has
rank ``b``: with its truncated SVD ``G = U_b (S_b V_b^T)``, there is an invertible ``Q`` (``b x b``) with
``Delta = U_b Q`` and ``X^T = Q^{-1} S_b V_b^T``. Recovering ``Q`` recovers the batch. Each column ``delta_j``
of ``Delta`` is zero at every unit the ReLU switched off for example ``j`` (about half of them). Pick ``b - 1``
units at random: if all were off for one example ``j``, the one-dimensional null space of those rows of ``U_b``
is ``q_j``'s direction, and ``U_b q_j`` has zeros far beyond the ``b - 1`` forced ones. A wrong pick gives a
vector with few extra zeros (only where the examples it mixes are all switched off), so counting zeros filters
most candidates; a pick whose rows are rank deficient (inside the shared zero set of several examples) is
skipped, since its null space mixes them. ``b`` independent candidates are selected (most zeros first), their
scales come from the bias gradient (``U_b Q_hat s = dL/dc``), and ``X`` follows; the selection is accepted only
when the recovered inputs, through the layer's ``W`` and ``c``, switch on exactly the units their gradient
columns say (swaps are tried until they do). Two examples that switch off the same units cannot be told apart.
Samples are drawn in chunks from the seeded simulation generator (:func:`privagg.randomness.torch_generator`),
uniformly over the units some example switched on (``conditioned_share`` draws part of each chunk from inside
the zero sets already found; measured on digits at batch 8 it needed more samples, not fewer, so it is off by
default). A candidate is re-fitted to its whole zero set; one whose zero set has a unit essential to its rank
looks like a mixture of examples and is kept apart, used only when the clean candidates cannot explain the
gradient. The chance that a uniform pick works falls like ``2^-(b-1)``: the attack's cost is exponential in
``b`` (as the paper says), and ``max_samples`` bounds it.

Measured (``benchmarks/attacks_strength.py``, digits, 10 clients, 64 hidden units, seeds 0-4): exact at batch 1
and 4, most of the batch at 8, nothing at 16 and 32 (a zero set of about 20 of the 50-odd live units cannot be
hit with 15 random units); nothing under ``secagg`` (the secure sum's 16-bit encoding rounds every update, so
the sum is not of low rank) or ``dp``.

What it does not do: deeper layers, convolutions, layers without a bias (the scale then needs the next
layer), the paper's GPU-scale sampling (we sample on one CPU core), and noise-robust selection: under DP
noise ``G`` is full rank and the zero test fails, which the outcome reports.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from attacks.inversion import InversionAttack, InversionResult
from attacks.reconstruction import Reconstruction
from attacks.registry import AttackCase, register_attack
from privagg.errors import ConfigurationError

__all__ = ["Spear", "SpearOutcome", "SpearStatus", "first_relu_layer", "spear_invert"]

SpearStatus = Literal["exact", "partial", "batch-too-large", "rank-deficient", "no-bias"]


@dataclass(frozen=True)
class SpearOutcome:
    """What :func:`spear_invert` found.

    ``x``: the recovered inputs ``(b, n)`` (``None`` unless ``status == "exact"``); ``status``: ``"exact"`` (``b``
    directions found and the gradient reproduced), ``"partial"`` (fewer than ``b`` directions within the sample
    budget), ``"batch-too-large"`` (``b >= m`` or ``b > n``: no sparse direction can be isolated),
    ``"rank-deficient"`` (the gradient's rank is below ``b``: identical images, or an example with no gradient);
    ``directions``: how many of the ``b`` were found; ``samples``: unit subsets tried; ``residual``: relative
    error of ``Delta X^T`` against the observed gradient (NaN unless exact); ``spectral_gap``: singular value
    ``b + 1`` over singular value ``b`` of the gradient (near 0 for an exact rank-``b`` gradient, near 1 under
    noise); ``reason``: a sentence for the report.
    """

    status: SpearStatus
    batch: int
    width: int
    directions: int
    samples: int
    seconds: float
    reason: str
    x: np.ndarray | None = field(default=None, repr=False, compare=False)
    residual: float = float("nan")
    spectral_gap: float = float("nan")

    @property
    def exact(self) -> bool:
        return self.status == "exact"

    def as_data(self) -> dict[str, Any]:
        """The outcome's numbers and words, for a result's ``data`` (no arrays)."""
        return {
            "status": self.status,
            "batch": self.batch,
            "width": self.width,
            "directions": self.directions,
            "samples": self.samples,
            "seconds": self.seconds,
            "residual": self.residual,
            "spectral_gap": self.spectral_gap,
            "reason": self.reason,
        }


def _fail(status: SpearStatus, b: int, m: int, t0: float, reason: str, **kw: Any) -> SpearOutcome:
    return SpearOutcome(
        status=status, batch=b, width=m, directions=kw.pop("directions", 0), samples=kw.pop("samples", 0),
        seconds=time.perf_counter() - t0, reason=reason, **kw,
    )  # fmt: skip


def _canonical(q: torch.Tensor) -> torch.Tensor:
    """Unit vectors with their largest-magnitude entry positive (one representative per direction)."""
    q = q / q.norm(dim=-1, keepdim=True)
    idx = q.abs().argmax(dim=-1, keepdim=True)
    return q * torch.sign(q.gather(-1, idx))


def _draw(pool: torch.Tensor, count: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` subsets of ``k`` distinct entries of ``pool`` (uniform, one row per subset)."""
    keys = torch.rand((count, len(pool)), generator=generator, dtype=torch.float64)
    return pool[keys.argsort(dim=1)[:, :k]]


def spear_invert(
    grad_weight: np.ndarray | torch.Tensor,
    grad_bias: np.ndarray | torch.Tensor,
    batch_size: int,
    *,
    weight: np.ndarray | torch.Tensor,
    bias: np.ndarray | torch.Tensor,
    generator: torch.Generator,
    max_samples: int = 100_000,
    chunk: int = 2048,
    zero_tol: float = 1e-4,
    rank_tol: float = 1e-4,
    extra_zeros: int = 2,
    conditioned_share: float = 0.0,
    max_mismatch: float = 0.01,
) -> SpearOutcome:
    """Recover the ``batch_size`` inputs of a fully connected ReLU layer from its gradients (module docstring).

    ``grad_weight`` is ``dL/dW`` (``m x n``), ``grad_bias`` is ``dL/dc`` (``m``); ``weight`` and ``bias`` are the
    layer's parameters the server sent (``W``, ``c``). ``generator`` draws the unit subsets (seeded: the same
    generator state gives the same outcome). ``max_samples`` bounds the subsets tried, in chunks of ``chunk``.
    A vector ``U_b q`` is zero at a unit when its magnitude is below ``zero_tol`` times its largest; a candidate
    needs ``extra_zeros`` zeros beyond the ``b - 1`` it was built from. A subset whose rows have a singular
    value below ``rank_tol`` times their largest is skipped (its null space mixes examples).
    ``conditioned_share`` of each chunk is drawn from inside the zero sets already found. Candidates are
    selected greedily (most zeros first, linearly independent), then improved by swaps, until the recovered
    inputs switch on exactly the units their gradient columns say (at most ``max_mismatch`` of the
    ``b x m`` unit states disagree): a wrong selection disagrees on about half of them.
    """
    t0 = time.perf_counter()
    g = torch.as_tensor(grad_weight).detach().to(torch.float64)
    gb = torch.as_tensor(grad_bias).detach().to(torch.float64).reshape(-1)
    w = torch.as_tensor(weight).detach().to(torch.float64)
    c = torch.as_tensor(bias).detach().to(torch.float64).reshape(-1)
    if g.ndim != 2 or gb.shape[0] != g.shape[0] or w.shape != g.shape or c.shape != gb.shape:
        raise ConfigurationError(
            f"gradients {tuple(g.shape)}, {tuple(gb.shape)} for a layer {tuple(w.shape)}, {tuple(c.shape)}",
            field="gradients",
        )
    m, n = g.shape
    b = int(batch_size)
    if b < 1:
        raise ConfigurationError("must be >= 1", field="batch_size")
    if b >= m or b > n:
        return _fail(
            "batch-too-large", b, m, t0,
            f"batch {b} is not below the layer's width {m} (and at most its {n} inputs): no unit subset of size "
            f"b - 1 can single out one example, so SPEAR cannot disaggregate this gradient",
        )  # fmt: skip
    u, s, vt = torch.linalg.svd(g, full_matrices=False)
    gap = float(s[b] / s[b - 1]) if b < len(s) and s[b - 1] > 0 else float("nan")
    if s[0] <= 0 or s[b - 1] <= 1e-9 * s[0]:
        return _fail(
            "rank-deficient", b, m, t0,
            f"the gradient has rank below {b} (singular value {b} is {float(s[b - 1]):.2e} of the largest "
            f"{float(s[0]):.2e}): two identical inputs, or an example without gradient",
            spectral_gap=gap,
        )  # fmt: skip
    noise = float(s[b] / s[0]) if b < len(s) else 0.0  # rounding (or noise) floor of the observed gradient
    search = _Search(
        basis=u[:, :b],
        right=s[:b, None] * vt[:b],
        grad_bias=gb,
        weight=w,
        bias=c,
        zero_tol=min(zero_tol, max(10.0 * noise, 1e-10)),
    )
    samples, best = 0, None
    if b == 1:
        search.add(torch.ones(1, dtype=torch.float64), -1)
        best = search.select()
    while (best is None or best[2] > max_mismatch) and samples < max_samples:
        count = min(chunk, max_samples - samples)
        fresh = search.sample(count, generator, rank_tol=rank_tol, extra_zeros=extra_zeros, share=conditioned_share)
        samples += count
        if fresh and len(search.candidates) >= b:
            best = search.select()
    if (best is None or best[2] > max_mismatch) and search.spare:  # last resort: the mixed-looking candidates
        keep = sorted(range(len(search.spare)), key=lambda i: -search.spare_zeros[i])[: 2 * b]
        search.candidates += [search.spare[i] for i in keep]
        search.zeros += [search.spare_zeros[i] - m for i in keep]  # after every clean candidate
        last = search.select()
        if last is not None and (best is None or last[2] < best[2]):
            best = last
    found = len(search.candidates)
    if best is None:
        return _fail(
            "partial", b, m, t0,
            f"{found} candidate directions for {b} examples after {samples} unit subsets (the chance a uniform "
            f"subset isolates one example falls like 2^-(b-1)); no input is recovered without {b} of them",
            directions=found, samples=samples, spectral_gap=gap,
        )  # fmt: skip
    xt, q, mismatch = best
    residual = float(torch.linalg.norm(search.basis @ q @ xt - g) / torch.linalg.norm(g))
    exact = mismatch <= max_mismatch
    return SpearOutcome(
        status="exact" if exact else "partial",
        batch=b,
        width=m,
        directions=b if exact else search.consistent(q, xt),
        samples=samples,
        seconds=time.perf_counter() - t0,
        reason=(
            f"all {b} directions found in {samples} unit subsets; gradient reproduced to {residual:.1e}, "
            f"{mismatch:.1%} of the unit states inconsistent"
            if exact
            else f"after {samples} unit subsets the best selection of {b} of {found} candidates leaves "
            f"{mismatch:.1%} of the unit states inconsistent (examples sharing their switched-off units cannot be "
            f"told apart; a mixed direction spoils only the examples it mixes); its inputs are returned as they are"
        ),
        x=xt.numpy(),
        residual=residual,
        spectral_gap=gap,
    )


@dataclass
class _Search:
    """The candidate directions found so far and the selection of ``b`` of them that explains the gradient."""

    basis: torch.Tensor  # U_b (m x b)
    right: torch.Tensor  # S_b V_b^T (b x n)
    grad_bias: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    zero_tol: float
    candidates: list[torch.Tensor] = field(default_factory=list)
    zeros: list[int] = field(default_factory=list)
    zero_sets: list[torch.Tensor] = field(default_factory=list)
    spare: list[torch.Tensor] = field(default_factory=list)
    spare_zeros: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        norm = self.basis.norm(dim=1)
        self.live = torch.nonzero(norm > self.zero_tol * norm.max()).flatten()  # units some example switched on

    def add(self, q: torch.Tensor, extra_zeros: int) -> bool:
        """Keep ``q`` if it is new and its zero set is one example's (no unit of it is essential to its rank)."""
        cand, zero_set = self._refine(q)
        if len(zero_set) < self.basis.shape[1] - 1 + extra_zeros:
            return False
        score = len(zero_set)
        if not self._one_example(zero_set):  # kept apart: the last selection may still need it
            cap = 2 * self.basis.shape[1]
            if len(self.spare) >= cap and score <= min(self.spare_zeros):
                return False
            if not any(float((cand @ f).abs()) > 1 - 1e-6 for f in self.spare):
                if len(self.spare) >= cap:
                    drop = self.spare_zeros.index(min(self.spare_zeros))
                    del self.spare[drop], self.spare_zeros[drop]
                self.spare.append(cand)
                self.spare_zeros.append(score)
            return False
        for i, f in enumerate(self.candidates):
            if float((cand @ f).abs()) > 1 - 1e-6:  # seen: keep the copy with the larger zero set
                if len(zero_set) > len(self.zero_sets[i]):
                    self.candidates[i], self.zeros[i], self.zero_sets[i] = cand, score, zero_set
                return False
        self.candidates.append(cand)
        self.zeros.append(score)
        self.zero_sets.append(zero_set)
        return True

    def _refine(self, q: torch.Tensor, rounds: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        """``q`` re-fitted to its whole zero set (the least-squares null vector of those rows), until the zero set
        is stable: a direction from ``b - 1`` units carries their rounding error, one from all of them less."""
        cand = _canonical(q)
        zero_set = self.live[:0]
        for _ in range(rounds):
            full = (self.basis[self.live] @ cand).abs()
            new = self.live[full <= self.zero_tol * full.max()]
            if torch.equal(new, zero_set) or len(new) < self.basis.shape[1] - 1:
                break
            zero_set = new
            cand = _canonical(torch.linalg.svd(self.basis[zero_set], full_matrices=True)[2][-1])
        return cand, zero_set

    def _one_example(self, zero_set: torch.Tensor) -> bool:
        """A true direction's zero set is where one example is switched off: the other examples' gradients
        there span ``b - 1`` dimensions with no unit essential to that. A mixture of examples ``T`` is zero on
        their common switched-off units (``b - |T|`` dimensions) plus ``|T| - 1`` sampled units, each essential:
        its leverage in the zero set's row space is 1."""
        b = self.basis.shape[1]
        if b == 1:
            return True
        rows = self.basis[zero_set]
        if len(rows) < b:  # b - 1 rows or fewer: every one is essential
            return False
        left, sv, _ = torch.linalg.svd(rows, full_matrices=False)
        if float(sv[b - 2]) <= 1e-6 * float(sv[0]):
            return False
        leverage = (left[:, : b - 1] ** 2).sum(dim=1)
        return float(leverage.max()) < 0.99

    def sample(self, count: int, generator: torch.Generator, *, rank_tol: float, extra_zeros: int, share: float) -> int:
        """Try ``count`` unit subsets; returns how many new candidates they gave."""
        b = self.basis.shape[1]
        pools = [z for z in self.zero_sets if len(z) >= b - 1]
        n_cond = int(count * share) if pools else 0
        subsets = [_draw(self.live, count - n_cond, b - 1, generator)] if len(self.live) >= b - 1 else []
        if n_cond:
            pick = torch.randint(0, len(pools), (n_cond,), generator=generator)
            subsets += [_draw(p, int((pick == i).sum()), b - 1, generator) for i, p in enumerate(pools)]
        if not subsets:
            return 0
        rows = self.basis[torch.cat(subsets)]  # (count, b - 1, b)
        _, sv, vh = torch.linalg.svd(rows, full_matrices=True)
        q = vh[:, -1, :]  # orthogonal to the subset's rows
        v = (q @ self.basis[self.live].T).abs()
        zeros = (v <= self.zero_tol * v.amax(dim=1, keepdim=True)).sum(dim=1)
        hit = (sv[:, -1] > rank_tol * sv[:, 0]) & (zeros >= b - 1 + extra_zeros)
        return sum(self.add(q[j], extra_zeros) for j in torch.nonzero(hit).flatten().tolist())

    def solve(self, chosen: list[int]) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """Inputs, disaggregation matrix and the share of inconsistent unit states of a selection."""
        q_hat = torch.stack([self.candidates[i] for i in chosen], dim=1)
        if float(torch.linalg.svdvals(q_hat)[-1]) < 1e-8:
            return None
        scale = torch.linalg.lstsq(self.basis @ q_hat, self.grad_bias[:, None]).solution[:, 0]
        if bool((scale.abs() < 1e-300).any()):
            return None
        q = q_hat * scale[None, :]
        xt = torch.linalg.solve(q, self.right)  # (b, n): row j is example j's input
        delta = (self.basis @ q).abs()  # (m, b)
        said_on = delta > self.zero_tol * delta.amax(dim=0, keepdim=True)
        z = xt @ self.weight.T + self.bias  # (b, m)
        clear = z.abs() > 1e-6 * z.abs().amax()  # a unit on the ReLU's edge says nothing
        wrong = ((z > 0) != said_on.T) & clear
        return xt, q, float(wrong.sum()) / wrong.numel()

    def consistent(self, q: torch.Tensor, xt: torch.Tensor) -> int:
        """How many examples of a selection switch on exactly the units their gradient column says."""
        delta = (self.basis @ q).abs()
        said_on = delta > self.zero_tol * delta.amax(dim=0, keepdim=True)
        z = xt @ self.weight.T + self.bias
        clear = z.abs() > 1e-6 * z.abs().amax()
        return int((~(((z > 0) != said_on.T) & clear).any(dim=1)).sum())

    def select(self, max_trials: int = 200) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """Greedy selection (most zeros first, independent), then single swaps while they reduce inconsistency."""
        b = self.basis.shape[1]
        order = sorted(range(len(self.candidates)), key=lambda i: -self.zeros[i])
        chosen: list[int] = []
        for i in order:
            trial = torch.stack([self.candidates[j] for j in [*chosen, i]])
            if float(torch.linalg.svdvals(trial)[-1]) > 1e-6:
                chosen.append(i)
            if len(chosen) == b:
                break
        if len(chosen) < b or (best := self.solve(chosen)) is None:
            return None
        trials, improved = 0, True
        while improved and best[2] > 0 and trials < max_trials:
            improved = False
            for pos in range(b):
                for i in order:
                    if i in chosen or trials >= max_trials:
                        continue
                    trials += 1
                    alt = [*chosen[:pos], i, *chosen[pos + 1 :]]
                    got = self.solve(alt)
                    if got is not None and got[2] < best[2]:
                        chosen, best, improved = alt, got, True
                        break
        return best


def first_relu_layer(model: nn.Module) -> nn.Linear:
    """The model's first layer when it is fully connected with a bias and followed by a ReLU (else a typed error)."""
    mods = [m for m in model.modules() if not isinstance(m, (nn.Sequential, nn.Flatten)) and m is not model]
    if not mods or not isinstance(mods[0], nn.Linear):
        raise ConfigurationError("SPEAR needs a model whose first layer is fully connected", field="model")
    if len(mods) < 2 or not isinstance(mods[1], nn.ReLU):
        raise ConfigurationError("SPEAR needs a ReLU right after the first linear layer", field="model")
    if mods[0].bias is None:
        raise ConfigurationError("SPEAR scales its directions with the first layer's bias gradient", field="model")
    return mods[0]


@register_attack("spear")
class Spear(InversionAttack):
    """SPEAR (Dimitrov et al. 2024): exact batch inversion of the first fully connected ReLU layer.

    Hyper-parameters: ``max_samples`` (unit subsets tried, the attack's budget), ``chunk``, ``zero_tol``,
    ``extra_zeros``, ``conditioned_share`` (:func:`spear_invert`). The result's ``data["spear"]`` holds the
    :class:`SpearOutcome`'s numbers; a batch it cannot invert is reported there and scores the uniform grey
    image it then returns (nothing recovered), never an error.
    """

    description = (
        "SPEAR (Dimitrov et al. 2024): exact batch inversion from a first FC ReLU layer's sparse, low-rank gradient"
    )
    label_mode: ClassVar[str] = "recover"

    def __init__(
        self,
        *,
        max_samples: int = 100_000,
        chunk: int = 2048,
        zero_tol: float = 1e-4,
        extra_zeros: int = 2,
        conditioned_share: float = 0.0,
    ) -> None:
        super().__init__()
        if max_samples < 1 or chunk < 1 or extra_zeros < 1 or not zero_tol > 0 or not 0 <= conditioned_share < 1:
            raise ConfigurationError(
                "max_samples, chunk, extra_zeros >= 1; zero_tol > 0; conditioned_share in [0, 1)", field="attack"
            )
        self.max_samples = max_samples
        self.chunk = chunk
        self.zero_tol = zero_tol
        self.extra_zeros = extra_zeros
        self.conditioned_share = conditioned_share
        self._outcome: SpearOutcome | None = None

    def supports(self, case: AttackCase) -> bool:
        return super().supports(case) and case.run.model.name == "mlp"

    def reconstruct(
        self,
        model: nn.Module,
        observed: list[torch.Tensor],
        *,
        input_shape: tuple[int, ...],
        num_classes: int,
        batch_size: int,
        labels: np.ndarray,
        generator: torch.Generator,
    ) -> Reconstruction:
        layer = first_relu_layer(model)
        assert layer.bias is not None
        index = {id(p): i for i, p in enumerate(model.parameters())}
        out = spear_invert(
            observed[index[id(layer.weight)]],
            observed[index[id(layer.bias)]],
            batch_size,
            weight=layer.weight,
            bias=layer.bias,
            generator=generator,
            max_samples=self.max_samples,
            chunk=self.chunk,
            zero_tol=self.zero_tol,
            extra_zeros=self.extra_zeros,
            conditioned_share=self.conditioned_share,
        )
        self._outcome = out
        n = math.prod(input_shape)
        x = np.clip(out.x, 0.0, 1.0) if out.x is not None else np.full((batch_size, n), 0.5)
        return Reconstruction(
            x=x.reshape((batch_size, *input_shape)).astype(np.float32),
            labels=np.asarray(labels),
            grad_loss=out.residual,
            iterations=out.samples,
        )

    def run(self, case: AttackCase, *, progress: bool = False) -> InversionResult:
        self._outcome = None
        result = super().run(case, progress=progress)
        out = self._outcome
        assert out is not None
        result.data["spear"] = out.as_data()
        result.metrics["spear_exact"] = float(out.exact)
        result.metrics["spear_directions"] = float(out.directions)
        result.metrics["spear_samples"] = float(out.samples)
        result.text += f" SPEAR: {out.status} ({out.reason})."
        return result
