"""The statistical robust rules: coordinate-wise median and trimmed mean, the Krum family, the
geometric median and centered clipping. Each needs every individual update in plaintext.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from privagg.errors import ConfigurationError
from protocols.aggregation import AggregateResult, ClientUpdate, RoundContext, register_aggregator, resolve_options
from protocols.robust.base import RobustAggregator, RobustOptions, _ids, _pairwise_sq_dists, _stack

__all__ = [
    "Bulyan",
    "CenteredClipping",
    "CenteredClippingOptions",
    "CoordinateMedian",
    "GeometricMedian",
    "GeometricMedianOptions",
    "Krum",
    "MultiKrum",
    "MultiKrumOptions",
    "TrimmedMean",
    "TrimmedMeanOptions",
]


# ---------------------------------------------------------------------------------------------
# Coordinate-wise rules
# ---------------------------------------------------------------------------------------------


@register_aggregator("median")
class CoordinateMedian(RobustAggregator):
    """Coordinate-wise median (Yin et al. 2018). Tolerates ``f <= (n-1)//2``."""

    name = "median"

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        x = _stack(updates)
        f = self.resolve_f(len(x))
        return AggregateResult(delta=np.median(x, axis=0), participants=_ids(updates), metrics={"f": f})


@dataclass(frozen=True)
class TrimmedMeanOptions(RobustOptions):
    """``trim``: values dropped from each side of every coordinate (``None``: ``f``)."""

    trim: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.trim is not None and self.trim < 0:
            raise ConfigurationError("must be >= 0", field="trim")


@register_aggregator("trimmed-mean")
class TrimmedMean(RobustAggregator):
    """Coordinate-wise trimmed mean (Yin et al. 2018): drop the ``trim`` largest and smallest values.

    ``trim`` defaults to ``f``; it must satisfy ``n - 2*trim >= 1``. Tolerates ``f <= (n-1)//2``.
    """

    name = "trimmed-mean"
    Options = TrimmedMeanOptions
    tuning_grid: ClassVar[Mapping[str, tuple[Any, ...]]] = {"trim": (None, 2)}

    def __init__(self, options: TrimmedMeanOptions | None = None, **overrides: Any) -> None:
        opts = resolve_options(TrimmedMeanOptions, options, overrides)
        super().__init__(opts)
        self.trim = opts.trim

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        x = _stack(updates)
        n = len(x)
        f = self.resolve_f(n)
        b = f if self.trim is None else self.trim
        if n - 2 * b < 1:
            raise ConfigurationError(
                f"cannot trim {b} from each side of {n} values", field="trim", accepted=f"0..{(n - 1) // 2}"
            )
        s = np.sort(x, axis=0)
        return AggregateResult(delta=s[b : n - b].mean(axis=0), participants=_ids(updates), metrics={"f": f, "trim": b})


# ---------------------------------------------------------------------------------------------
# Krum family
# ---------------------------------------------------------------------------------------------


def _krum_scores(d2: np.ndarray, f: int) -> np.ndarray:
    n = len(d2)
    k = n - f - 2  # neighbours counted in the score
    s = np.sort(d2 + np.diag(np.full(n, np.inf)), axis=1)[:, :k]
    return s.sum(axis=1)


@register_aggregator("krum")
class Krum(RobustAggregator):
    """Krum (Blanchard et al. 2017): the update closest to its ``n-f-2`` nearest neighbours.

    Requires ``n >= 2f + 3``: tolerates ``f <= (n-3)//2``.
    """

    name = "krum"

    @classmethod
    def max_byzantine(cls, n: int) -> int:
        return (n - 3) // 2

    def _select(self, x: np.ndarray, f: int, m: int) -> np.ndarray:
        scores = _krum_scores(_pairwise_sq_dists(x), f)
        return np.argsort(scores, kind="stable")[:m]

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        x = _stack(updates)
        f = self.resolve_f(len(x))
        i = int(self._select(x, f, 1)[0])
        return AggregateResult(
            delta=x[i].copy(),
            participants=(updates[i].client_id,),
            metrics={"f": f, "selected": [updates[i].client_id]},
        )


@dataclass(frozen=True)
class MultiKrumOptions(RobustOptions):
    """``m``: the number of best-scored updates averaged (``None``: ``n - f``)."""

    m: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.m is not None and self.m < 1:
            raise ConfigurationError("must be >= 1", field="m")


@register_aggregator("multi-krum")
class MultiKrum(Krum):
    """Multi-Krum: average the ``m`` updates with the best Krum scores (``m`` defaults to ``n - f``).

    Tolerates ``f <= (n-3)//2``.
    """

    name = "multi-krum"
    Options = MultiKrumOptions
    tuning_grid: ClassVar[Mapping[str, tuple[Any, ...]]] = {"m": (None, 10)}

    def __init__(self, options: MultiKrumOptions | None = None, **overrides: Any) -> None:
        opts = resolve_options(MultiKrumOptions, options, overrides)
        super().__init__(opts)
        self.m = opts.m

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        x = _stack(updates)
        n = len(x)
        f = self.resolve_f(n)
        m = n - f if self.m is None else min(self.m, n)
        sel = np.sort(self._select(x, f, m))
        chosen = [updates[int(i)].client_id for i in sel]
        return AggregateResult(
            delta=x[sel].mean(axis=0), participants=tuple(chosen), metrics={"f": f, "m": m, "selected": chosen}
        )


@register_aggregator("bulyan")
class Bulyan(RobustAggregator):
    """Bulyan (El Mhamdi et al. 2018): Krum selection of ``n-2f``, then a coordinate-wise trimmed mean.

    The second stage averages, per coordinate, the ``n-4f`` selected values closest to the
    median. Requires ``n >= 4f + 3``: tolerates ``f <= (n-3)//4``.
    """

    name = "bulyan"

    @classmethod
    def max_byzantine(cls, n: int) -> int:
        return (n - 3) // 4

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        x = _stack(updates)
        n = len(x)
        f = self.resolve_f(n)
        theta = n - 2 * f
        d2 = _pairwise_sq_dists(x)
        remaining = list(range(n))
        selected: list[int] = []
        for _ in range(theta):
            sub = d2[np.ix_(remaining, remaining)]
            # Krum among the remaining candidates (neighbours: len - f - 2, at least 1 while possible)
            k = max(len(remaining) - f - 2, 1) if len(remaining) > 1 else 0
            masked = sub + np.diag(np.full(len(remaining), np.inf))
            scores = np.sort(masked, axis=1)[:, :k].sum(axis=1) if k else np.zeros(len(remaining))
            j = int(np.argsort(scores, kind="stable")[0])
            selected.append(remaining.pop(j))
        sel = np.array(sorted(selected))
        s = x[sel]
        beta = theta - 2 * f
        med = np.median(s, axis=0)
        order = np.argsort(np.abs(s - med), axis=0, kind="stable")[:beta]
        delta = np.take_along_axis(s, order, axis=0).mean(axis=0)
        chosen = [updates[int(i)].client_id for i in sel]
        return AggregateResult(
            delta=delta, participants=tuple(chosen), metrics={"f": f, "selected": chosen, "beta": beta}
        )


# ---------------------------------------------------------------------------------------------
# Geometric median, centered clipping
# ---------------------------------------------------------------------------------------------


def _geometric_median(x: np.ndarray, w: np.ndarray, *, nu: float, max_iter: int, tol: float) -> tuple[np.ndarray, int]:
    v = (w / w.sum()) @ x
    for it in range(1, max_iter + 1):
        dist = np.linalg.norm(x - v, axis=1)
        beta = w / np.maximum(dist, nu)
        nv = (beta / beta.sum()) @ x
        moved = float(np.linalg.norm(nv - v))
        v = nv
        if moved <= tol * max(1.0, float(np.linalg.norm(v))):
            return v, it
    return v, max_iter


@dataclass(frozen=True)
class GeometricMedianOptions(RobustOptions):
    """``weighted`` by ``num_examples``; Weiszfeld's smoothing ``nu``, ``max_iter`` and relative ``tol``."""

    weighted: bool = False
    nu: float = 1e-6
    max_iter: int = 100
    tol: float = 1e-7

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.nu > 0 or self.max_iter < 1 or not self.tol > 0:
            raise ConfigurationError("nu, tol must be > 0 and max_iter >= 1", field="geometric-median")


@register_aggregator("geometric-median")
class GeometricMedian(RobustAggregator):
    """Geometric median by the smoothed Weiszfeld algorithm of RFA (Pillutla et al. 2022).

    ``weighted`` uses ``num_examples`` as weights (RFA's alpha); off by default because a
    Byzantine client can lie about its size. Breakdown point 1/2: tolerates ``f <= (n-1)//2``.
    """

    name = "geometric-median"
    Options = GeometricMedianOptions

    def __init__(self, options: GeometricMedianOptions | None = None, **overrides: Any) -> None:
        opts = resolve_options(GeometricMedianOptions, options, overrides)
        super().__init__(opts)
        self.weighted, self.nu, self.max_iter, self.tol = opts.weighted, opts.nu, opts.max_iter, opts.tol

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        x = _stack(updates)
        f = self.resolve_f(len(x))
        if self.weighted:
            w = np.array([u.num_examples for u in updates], dtype=np.float64)
            if w.sum() <= 0:
                raise ConfigurationError("all clients report zero examples", field="updates")
        else:
            w = np.ones(len(x))
        v, iters = _geometric_median(x, w, nu=self.nu, max_iter=self.max_iter, tol=self.tol)
        return AggregateResult(delta=v, participants=_ids(updates), metrics={"f": f, "weiszfeld_iterations": iters})


@dataclass(frozen=True)
class CenteredClippingOptions(RobustOptions):
    """``tau``: the clipping radius (``None``: adaptive, the median distance); ``iterations`` per round."""

    tau: float | None = None
    iterations: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tau is not None and not self.tau > 0:
            raise ConfigurationError("must be > 0", field="tau")
        if self.iterations < 1:
            raise ConfigurationError("must be >= 1", field="iterations")


@register_aggregator("centered-clipping")
class CenteredClipping(RobustAggregator):
    """Centered clipping (Karimireddy, He & Jaggi 2021).

    Starting from the previous round's aggregate ``v`` (the server's momentum), repeat
    ``iterations`` times: ``v <- v + mean_i clip(x_i - v, tau)``. ``tau=None`` picks the
    radius adaptively as the median distance ``||x_i - v||`` (an honest distance while
    ``f < n/2``). Tolerates ``f <= (n-1)//2``.
    """

    name = "centered-clipping"
    Options = CenteredClippingOptions
    tuning_grid: ClassVar[Mapping[str, tuple[Any, ...]]] = {"iterations": (1, 3)}

    def __init__(self, options: CenteredClippingOptions | None = None, **overrides: Any) -> None:
        opts = resolve_options(CenteredClippingOptions, options, overrides)
        super().__init__(opts)
        self.tau, self.iterations = opts.tau, opts.iterations
        self._center: np.ndarray | None = None

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        x = _stack(updates)
        f = self.resolve_f(len(x))
        v = self._center if self._center is not None and self._center.shape == x.shape[1:] else np.zeros(x.shape[1])
        clipped = 0
        for _ in range(self.iterations):
            diff = x - v
            dist = np.linalg.norm(diff, axis=1)
            tau = float(np.median(dist)) if self.tau is None else self.tau
            if tau <= 0:
                break
            scale = np.minimum(1.0, tau / np.maximum(dist, 1e-300))
            clipped += int(np.sum(scale < 1.0))
            v = v + (scale[:, None] * diff).mean(axis=0)
        self._center = v.copy()
        return AggregateResult(delta=v, participants=_ids(updates), metrics={"f": f, "clipped": clipped})
