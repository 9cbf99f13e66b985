"""Byzantine-robust aggregation rules behind the :class:`~protocols.aggregation.Aggregator` interface.

Every rule registers by name in :data:`~protocols.aggregation.AGGREGATORS`, states whether it
needs to see individual updates (``needs_plaintext_updates``; such rules cannot run under
secure aggregation or Paillier) and documents the largest number of Byzantine clients ``f``
it tolerates among ``n`` (:meth:`RobustAggregator.max_byzantine`). Asking for more
(``num_byzantine=`` beyond the bound for the round's ``n``) raises
:class:`~privagg.errors.ConfigurationError` instead of returning an aggregate with no
guarantee.

======================  =================================  ==========================  ==========
name                    rule                               tolerated f (n clients)     secagg
======================  =================================  ==========================  ==========
``median``              coordinate-wise median             f <= (n-1)//2               no
``trimmed-mean``        coordinate-wise trimmed mean       f <= (n-1)//2               no
``krum``                Krum (Blanchard et al. 2017)       f <= (n-3)//2               no
``multi-krum``          Multi-Krum                         f <= (n-3)//2               no
``bulyan``              Bulyan (El Mhamdi et al. 2018)     f <= (n-3)//4               no
``geometric-median``    RFA smoothed Weiszfeld             f <= (n-1)//2               no
``centered-clipping``   Karimireddy et al. 2021            f <= (n-1)//2               no
``norm-bound``          Sun et al. 2019 (clip + weak DP)   f <= (n-1)//2 (influence)   yes*
``fltrust``             Cao et al. 2021 (root dataset)     f <= n-1                    no
``foolsgold``           Fung et al. 2020                   f <= n-1 (Sybil-oriented)   no
``flame``               Nguyen et al. 2022                 f <= (n-1)//2               no
======================  =================================  ==========================  ==========

\\* ``norm-bound`` only needs a sum once every update is clipped, so it composes with secure
aggregation when clipping happens on the client. Under secure aggregation the server cannot
check that a malicious client clipped: the bound then holds for honest clients only unless
a zero-knowledge norm proof is added (privagg does not provide one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from privagg.errors import ConfigurationError
from protocols.aggregation import (
    AGGREGATORS,
    AggregateResult,
    Aggregator,
    ClientUpdate,
    RoundContext,
    check_updates,
    register_aggregator,
)

__all__ = [
    "RobustAggregator",
    "CoordinateMedian",
    "TrimmedMean",
    "Krum",
    "MultiKrum",
    "Bulyan",
    "GeometricMedian",
    "CenteredClipping",
    "NormBound",
    "FLTrust",
    "FoolsGold",
    "FLAME",
    "ROBUST_AGGREGATORS",
    "max_byzantine",
    "secure_aggregation_compatible",
]

#: Names of the rules this module registers (``mean`` lives in ``protocols.aggregation``).
ROBUST_AGGREGATORS: tuple[str, ...] = (
    "median",
    "trimmed-mean",
    "krum",
    "multi-krum",
    "bulyan",
    "geometric-median",
    "centered-clipping",
    "norm-bound",
    "fltrust",
    "foolsgold",
    "flame",
)


def _stack(updates: Sequence[ClientUpdate]) -> np.ndarray:
    check_updates(updates)
    stack = np.stack([np.asarray(u.delta, dtype=np.float64) for u in updates])
    if not np.all(np.isfinite(stack)):
        bad = [u.client_id for u in updates if not np.all(np.isfinite(u.delta))]
        raise ConfigurationError(f"non-finite values in updates of clients {bad}", field="updates")
    return stack


def _pairwise_sq_dists(x: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", x, x)
    d = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.maximum(d, 0.0, out=d)
    np.fill_diagonal(d, 0.0)
    return d


def _ids(updates: Sequence[ClientUpdate]) -> tuple[int, ...]:
    return tuple(u.client_id for u in updates)


class RobustAggregator(Aggregator):
    """Base of the robust rules: the Byzantine bound ``f`` and its checks.

    ``num_byzantine`` is the number ``f`` of Byzantine clients the server assumes per round;
    ``None`` assumes the worst case the rule tolerates for the round's ``n``. Rules that do
    not use ``f`` in their computation still refuse an ``f`` beyond their bound.
    """

    name: ClassVar[str] = "robust"
    #: One line on how this rule composes with secure aggregation (shown by the runner).
    secagg_note: ClassVar[str] = "needs every individual update in plaintext: incompatible with secure aggregation"

    def __init__(self, *, num_byzantine: int | None = None) -> None:
        if num_byzantine is not None and (not isinstance(num_byzantine, int) or num_byzantine < 0):
            raise ConfigurationError(f"must be an integer >= 0, got {num_byzantine!r}", field="num_byzantine")
        self.num_byzantine = num_byzantine

    @classmethod
    def max_byzantine(cls, n: int) -> int:
        """Largest ``f`` this rule tolerates among ``n`` clients (negative: ``n`` is too small)."""
        return (n - 1) // 2

    @classmethod
    def min_clients(cls, f: int) -> int:
        """Smallest ``n`` for which ``f`` Byzantine clients are tolerated."""
        n = 1
        while cls.max_byzantine(n) < f:
            n += 1
        return n

    def resolve_f(self, n: int) -> int:
        """The ``f`` used for a round of ``n`` clients; refuses an ``f`` beyond the bound."""
        bound = self.max_byzantine(n)
        if bound < 0:
            raise ConfigurationError(
                f"{self.name} needs at least {self.min_clients(0)} clients per round, got {n}", field="updates"
            )
        if self.num_byzantine is None:
            return bound
        if self.num_byzantine > bound:
            raise ConfigurationError(
                f"{self.name} tolerates at most {bound} Byzantine clients among {n} "
                f"(f={self.num_byzantine} needs n >= {self.min_clients(self.num_byzantine)})",
                field="num_byzantine",
                accepted=f"0..{bound}",
            )
        return self.num_byzantine


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


@register_aggregator("trimmed-mean")
class TrimmedMean(RobustAggregator):
    """Coordinate-wise trimmed mean (Yin et al. 2018): drop the ``trim`` largest and smallest values.

    ``trim`` defaults to ``f``; it must satisfy ``n - 2*trim >= 1``. Tolerates ``f <= (n-1)//2``.
    """

    name = "trimmed-mean"

    def __init__(self, *, num_byzantine: int | None = None, trim: int | None = None) -> None:
        super().__init__(num_byzantine=num_byzantine)
        if trim is not None and trim < 0:
            raise ConfigurationError("must be >= 0", field="trim")
        self.trim = trim

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


@register_aggregator("multi-krum")
class MultiKrum(Krum):
    """Multi-Krum: average the ``m`` updates with the best Krum scores (``m`` defaults to ``n - f``).

    Tolerates ``f <= (n-3)//2``.
    """

    name = "multi-krum"

    def __init__(self, *, num_byzantine: int | None = None, m: int | None = None) -> None:
        super().__init__(num_byzantine=num_byzantine)
        if m is not None and m < 1:
            raise ConfigurationError("must be >= 1", field="m")
        self.m = m

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


@register_aggregator("geometric-median")
class GeometricMedian(RobustAggregator):
    """Geometric median by the smoothed Weiszfeld algorithm of RFA (Pillutla et al. 2022).

    ``weighted`` uses ``num_examples`` as weights (RFA's alpha); off by default because a
    Byzantine client can lie about its size. Breakdown point 1/2: tolerates ``f <= (n-1)//2``.
    """

    name = "geometric-median"

    def __init__(
        self,
        *,
        num_byzantine: int | None = None,
        weighted: bool = False,
        nu: float = 1e-6,
        max_iter: int = 100,
        tol: float = 1e-7,
    ) -> None:
        super().__init__(num_byzantine=num_byzantine)
        if not nu > 0 or max_iter < 1 or not tol > 0:
            raise ConfigurationError("nu, tol must be > 0 and max_iter >= 1", field="geometric-median")
        self.weighted, self.nu, self.max_iter, self.tol = weighted, nu, max_iter, tol

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


@register_aggregator("centered-clipping")
class CenteredClipping(RobustAggregator):
    """Centered clipping (Karimireddy, He & Jaggi 2021).

    Starting from the previous round's aggregate ``v`` (the server's momentum), repeat
    ``iterations`` times: ``v <- v + mean_i clip(x_i - v, tau)``. ``tau=None`` picks the
    radius adaptively as the median distance ``||x_i - v||`` (an honest distance while
    ``f < n/2``). Tolerates ``f <= (n-1)//2``.
    """

    name = "centered-clipping"

    def __init__(self, *, num_byzantine: int | None = None, tau: float | None = None, iterations: int = 3) -> None:
        super().__init__(num_byzantine=num_byzantine)
        if tau is not None and not tau > 0:
            raise ConfigurationError("must be > 0", field="tau")
        if iterations < 1:
            raise ConfigurationError("must be >= 1", field="iterations")
        self.tau, self.iterations = tau, iterations
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


# ---------------------------------------------------------------------------------------------
# Norm bounding with weak DP (compatible with secure aggregation)
# ---------------------------------------------------------------------------------------------


def _clip_rows(x: np.ndarray, bound: float) -> tuple[np.ndarray, int]:
    norms = np.linalg.norm(x, axis=1)
    scale = np.minimum(1.0, bound / np.maximum(norms, 1e-300))
    return x * scale[:, None], int(np.sum(norms > bound))


@register_aggregator("norm-bound")
class NormBound(RobustAggregator):
    """Norm bounding with weak differential privacy (Sun et al. 2019, "Can you really backdoor FL?").

    Every update is clipped to L2 norm ``norm_bound`` (M), the clipped updates are averaged
    and Gaussian noise of standard deviation ``noise_multiplier * M / n`` per coordinate is
    added to the mean (i.e. ``noise_multiplier * M`` on the sum; "weak" DP: the multiplier is
    far below what a meaningful epsilon needs). Noise comes from ``ctx.rng`` (simulation
    randomness: this is a robustness defense, not a privacy guarantee).

    It bounds each client's influence to ``M/n`` rather than detecting anyone, so its bound
    is the honest-majority assumption ``f <= (n-1)//2``. Compatible with secure aggregation
    when clients clip before masking (the server then only needs the sum).
    """

    name = "norm-bound"
    needs_plaintext_updates = False
    secagg_note = (
        "compatible: clients clip to M before masking, the server adds noise to the sum; "
        "a malicious client's clipping cannot be checked without a zero-knowledge norm proof"
    )

    def __init__(
        self,
        *,
        num_byzantine: int | None = None,
        norm_bound: float = 1.0,
        noise_multiplier: float = 0.0,
        clip_on_server: bool = True,
    ) -> None:
        super().__init__(num_byzantine=num_byzantine)
        if not norm_bound > 0:
            raise ConfigurationError("must be > 0", field="norm_bound")
        if noise_multiplier < 0:
            raise ConfigurationError("must be >= 0", field="noise_multiplier")
        self.norm_bound, self.noise_multiplier = float(norm_bound), float(noise_multiplier)
        self.clip_on_server = clip_on_server

    def clip(self, delta: np.ndarray) -> np.ndarray:
        """Client-side clipping to ``norm_bound`` (what an honest client does before masking)."""
        return _clip_rows(np.asarray(delta, dtype=np.float64)[None, :], self.norm_bound)[0][0]

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        """Clip (unless ``clip_on_server=False``: clients clipped, as under secure aggregation), average, add noise."""
        x = _stack(updates)
        n = len(x)
        f = self.resolve_f(n)
        if self.clip_on_server:
            c, clipped = _clip_rows(x, self.norm_bound)
        else:
            c, clipped = x, 0
        delta = c.mean(axis=0)
        std = self.noise_multiplier * self.norm_bound / n
        if std > 0:
            delta = delta + ctx.rng.normal(0.0, std, size=delta.shape)
        return AggregateResult(
            delta=delta, participants=_ids(updates), metrics={"f": f, "clipped": clipped, "noise_std": std}
        )


# ---------------------------------------------------------------------------------------------
# FLTrust, FoolsGold, FLAME
# ---------------------------------------------------------------------------------------------

RootUpdate = Callable[[RoundContext], np.ndarray]


@register_aggregator("fltrust")
class FLTrust(RobustAggregator):
    """FLTrust (Cao et al. 2021): trust scores from a server-held clean root dataset.

    ``root_update(ctx)`` returns the server's own update ``g0`` for this round, trained on
    the root dataset from ``ctx.global_params`` (the runner builds it from a small clean
    sample of the training set). Each client update is rescaled to ``||g0||`` and weighted
    by ``ReLU(cos(g_i, g0))``. Since trust comes from the root data and not from a
    majority, FLTrust tolerates ``f <= n-1`` (it needs one client to aggregate).
    """

    name = "fltrust"

    def __init__(self, *, num_byzantine: int | None = None, root_update: RootUpdate | None = None) -> None:
        super().__init__(num_byzantine=num_byzantine)
        self.root_update = root_update

    @classmethod
    def max_byzantine(cls, n: int) -> int:
        return n - 1

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        x = _stack(updates)
        f = self.resolve_f(len(x))
        if self.root_update is None:
            raise ConfigurationError(
                "FLTrust needs the server's root update: pass root_update=callable(ctx) -> delta",
                field="root_update",
            )
        g0 = np.asarray(self.root_update(ctx), dtype=np.float64)
        if g0.shape != x.shape[1:]:
            raise ConfigurationError(f"root update has shape {g0.shape}, expected {x.shape[1:]}", field="root_update")
        n0 = float(np.linalg.norm(g0))
        norms = np.linalg.norm(x, axis=1)
        if n0 == 0:
            return AggregateResult(delta=np.zeros_like(g0), participants=(), metrics={"f": f, "trust": [0.0] * len(x)})
        cos = (x @ g0) / np.maximum(norms * n0, 1e-300)
        ts = np.maximum(cos, 0.0)
        ts[norms == 0] = 0.0
        if ts.sum() <= 0:
            return AggregateResult(delta=np.zeros_like(g0), participants=(), metrics={"f": f, "trust": ts.tolist()})
        scaled = x * (n0 / np.maximum(norms, 1e-300))[:, None]
        delta = (ts / ts.sum()) @ scaled
        part = tuple(u.client_id for u, t in zip(updates, ts) if t > 0)
        return AggregateResult(delta=delta, participants=part, metrics={"f": f, "trust": ts.tolist()})


@register_aggregator("foolsgold")
class FoolsGold(RobustAggregator):
    """FoolsGold (Fung, Yoon & Beschastnikh 2020): down-weight clients whose update *histories* look alike.

    Keeps each client's summed update history (keyed by client id), computes pairwise cosine
    similarities, pardons honest clients, and turns ``1 - max similarity`` into a weight
    through the paper's logit with confidence ``kappa``. Designed against Sybils: any number
    of them, ``f <= n-1``. If nobody can be told apart (all histories identical) it falls
    back to uniform weights rather than discarding the round.
    """

    name = "foolsgold"

    def __init__(self, *, num_byzantine: int | None = None, kappa: float = 1.0) -> None:
        super().__init__(num_byzantine=num_byzantine)
        if not kappa > 0:
            raise ConfigurationError("must be > 0", field="kappa")
        self.kappa = kappa
        self._history: dict[int, np.ndarray] = {}

    @classmethod
    def max_byzantine(cls, n: int) -> int:
        return n - 1

    def weights(self, h: np.ndarray) -> np.ndarray:
        """FoolsGold's per-client learning-rate weights from the history matrix ``h``."""
        n = len(h)
        if n == 1:
            return np.ones(1)
        norms = np.linalg.norm(h, axis=1)
        cs = (h @ h.T) / np.maximum(np.outer(norms, norms), 1e-300)
        np.fill_diagonal(cs, -np.inf)
        v = cs.max(axis=1)
        np.fill_diagonal(cs, 0.0)
        cs = cs.copy()
        for i in range(n):
            for j in range(n):
                if i != j and v[j] > v[i]:
                    cs[i, j] = cs[i, j] * v[i] / v[j]
        np.fill_diagonal(cs, -np.inf)
        alpha = 1.0 - cs.max(axis=1)
        alpha = np.clip(alpha, 0.0, 1.0)
        if alpha.max() <= 1e-12:
            return np.ones(n)
        alpha = alpha / alpha.max()
        alpha[alpha >= 1.0] = 0.99
        with np.errstate(divide="ignore"):
            logit = self.kappa * (np.log(alpha / (1.0 - alpha)) + 0.5)
        return np.clip(np.nan_to_num(logit, neginf=0.0, posinf=1.0), 0.0, 1.0)

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        x = _stack(updates)
        f = self.resolve_f(len(x))
        d = x.shape[1]
        for u, row in zip(updates, x):
            prev = self._history.get(u.client_id)
            self._history[u.client_id] = row.copy() if prev is None or prev.shape != (d,) else prev + row
        h = np.stack([self._history[u.client_id] for u in updates])
        w = self.weights(h)
        if w.sum() <= 0:
            w = np.ones(len(x))
        delta = (w / w.sum()) @ x
        part = tuple(u.client_id for u, wi in zip(updates, w) if wi > 0)
        return AggregateResult(delta=delta, participants=part, metrics={"f": f, "weights": w.tolist()})


@register_aggregator("flame")
class FLAME(RobustAggregator):
    """FLAME (Nguyen et al. 2022): cluster, clip, add noise.

    1. HDBSCAN (``sklearn.cluster.HDBSCAN``) on pairwise cosine distances with
       ``min_cluster_size = n//2 + 1``; only the majority cluster is admitted.
    2. Adaptive clipping: the bound is the median L2 norm ``S`` of all updates.
    3. Gaussian noise of standard deviation ``noise_lambda * S`` per coordinate (the paper's
       lambda = 0.001 for image classification; noise from ``ctx.rng``).

    The majority cluster must be honest: tolerates ``f <= (n-1)//2``.
    """

    name = "flame"

    def __init__(self, *, num_byzantine: int | None = None, noise_lambda: float = 0.001) -> None:
        super().__init__(num_byzantine=num_byzantine)
        if noise_lambda < 0:
            raise ConfigurationError("must be >= 0", field="noise_lambda")
        self.noise_lambda = noise_lambda

    def admitted(self, x: np.ndarray) -> np.ndarray:
        """Indices of the updates in the majority cluster."""
        n = len(x)
        if n < 3:
            return np.arange(n)
        norms = np.linalg.norm(x, axis=1)
        cos = (x @ x.T) / np.maximum(np.outer(norms, norms), 1e-300)
        dist = np.clip(1.0 - cos, 0.0, 2.0)
        np.fill_diagonal(dist, 0.0)
        if float(dist.max()) <= 1e-12:
            return np.arange(n)
        from sklearn.cluster import HDBSCAN

        labels = HDBSCAN(
            metric="precomputed", min_cluster_size=n // 2 + 1, min_samples=1, allow_single_cluster=True, copy=True
        ).fit_predict(dist)
        valid = labels[labels >= 0]
        if valid.size == 0:
            return np.arange(n)
        major = np.bincount(valid).argmax()
        return np.flatnonzero(labels == major)

    def aggregate(self, updates: Sequence[ClientUpdate], ctx: RoundContext) -> AggregateResult:
        x = _stack(updates)
        f = self.resolve_f(len(x))
        keep = self.admitted(x)
        s = float(np.median(np.linalg.norm(x, axis=1)))
        c, clipped = _clip_rows(x[keep], s) if s > 0 else (x[keep], 0)
        delta = c.mean(axis=0)
        std = self.noise_lambda * s
        if std > 0:
            delta = delta + ctx.rng.normal(0.0, std, size=delta.shape)
        part = tuple(updates[int(i)].client_id for i in keep)
        return AggregateResult(
            delta=delta,
            participants=part,
            metrics={"f": f, "admitted": len(keep), "clip_bound": s, "clipped": clipped, "noise_std": std},
        )


# ---------------------------------------------------------------------------------------------
# Lookups used by runners
# ---------------------------------------------------------------------------------------------


def max_byzantine(name: str, n: int) -> int:
    """The Byzantine bound of aggregator ``name`` for ``n`` clients (``mean`` tolerates none)."""
    factory: Any = AGGREGATORS.get(name, field="defense")
    bound = getattr(factory, "max_byzantine", None)
    return int(bound(n)) if callable(bound) else 0


def secure_aggregation_compatible(name: str) -> bool:
    """Whether aggregator ``name`` only needs a sum, so it can run under secure aggregation."""
    factory: Any = AGGREGATORS.get(name, field="defense")
    return not bool(getattr(factory, "needs_plaintext_updates", True))
