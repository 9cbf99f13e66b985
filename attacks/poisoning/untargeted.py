"""Untargeted poisoning attacks: degrade the main task (label and sign flipping, noise, ALIE, IPM,
Min-Max / Min-Sum, Fang et al.'s attacks on Krum and on the median).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from scipy.stats import norm as _normal

from attacks.poisoning.base import PoisoningAttack
from attacks.registry import register_attack
from privagg.errors import ConfigurationError
from protocols.aggregation import ClientUpdate, RoundContext
from protocols.robust import Krum

if TYPE_CHECKING:
    from protocols.fedavg import FedAvgSimulation

__all__ = [
    "ALIE",
    "IPM",
    "FangKrum",
    "FangMedian",
    "GaussianNoise",
    "LabelFlip",
    "MinMax",
    "MinSum",
    "SignFlip",
    "alie_z",
]


@register_attack("label-flip")
class LabelFlip(PoisoningAttack):
    """Data poisoning: malicious clients train honestly on labels ``y -> C - 1 - y``."""

    description = "label flipping (data poisoning): train on y -> C-1-y"

    def craft(
        self, updates: list[ClientUpdate], mal: list[int], ctx: RoundContext, sim: FedAvgSimulation
    ) -> dict[int, np.ndarray | ClientUpdate]:
        assert ctx.global_params is not None
        out: dict[int, np.ndarray | ClientUpdate] = {}
        c = sim.dataset.num_classes
        for i in mal:
            cid = updates[i].client_id
            x, y = sim.client_data(cid)
            out[i] = sim.train_client(cid, ctx.global_params, x=x, y=(c - 1 - y), round=ctx.round)
        return out


@register_attack("sign-flip")
class SignFlip(PoisoningAttack):
    """Send ``-scale`` times the genuine update (reverses the descent direction)."""

    description = "sign flipping: send -scale * genuine update"

    def __init__(self, *, scale: float = 1.0, **kw: Any) -> None:
        super().__init__(**kw)
        if not scale > 0:
            raise ConfigurationError("must be > 0", field="scale")
        self.scale = scale

    def craft(
        self, updates: list[ClientUpdate], mal: list[int], ctx: RoundContext, sim: FedAvgSimulation
    ) -> dict[int, np.ndarray | ClientUpdate]:
        return {i: -self.scale * updates[i].delta for i in mal}


@register_attack("gaussian")
class GaussianNoise(PoisoningAttack):
    """Send Gaussian noise: ``std`` per coordinate, or by default ``scale`` times the genuine norm in total."""

    description = "Gaussian noise updates"

    def __init__(self, *, std: float | None = None, scale: float = 30.0, **kw: Any) -> None:
        super().__init__(**kw)
        if std is not None and not std > 0:
            raise ConfigurationError("must be > 0", field="std")
        if not scale > 0:
            raise ConfigurationError("must be > 0", field="scale")
        self.std, self.scale = std, scale

    def craft(
        self, updates: list[ClientUpdate], mal: list[int], ctx: RoundContext, sim: FedAvgSimulation
    ) -> dict[int, np.ndarray | ClientUpdate]:
        out: dict[int, np.ndarray | ClientUpdate] = {}
        for i in mal:
            d = updates[i].delta
            std = self.std if self.std is not None else self.scale * float(np.linalg.norm(d)) / math.sqrt(d.size)
            out[i] = self.rng(ctx, updates[i].client_id).normal(0.0, std, size=d.shape)
        return out


def alie_z(n: int, f: int) -> float:
    """Baruch et al. 2019: ``s = floor(n/2 + 1) - f``, ``z = Phi^-1((n - s) / n)`` (0 if not positive)."""
    if n < 1 or not 0 <= f <= n:
        raise ConfigurationError(f"need 0 <= f <= n and n >= 1, got n={n}, f={f}", field="alie")
    s = math.floor(n / 2 + 1) - f
    p = (n - s) / n
    if p <= 0.5:
        return 0.0
    if p >= 1.0:
        p = 1.0 - 1e-9
    return float(_normal.ppf(p))


@register_attack("alie")
class ALIE(PoisoningAttack):
    """A Little Is Enough (Baruch, Baruch & Goldberg 2019): ``mu - z * sigma`` coordinate-wise.

    ``mu``/``sigma`` are the coordinate-wise mean and standard deviation of the benign
    updates the attacker knows; ``z`` comes from the paper's formula :func:`alie_z` for the
    round's ``n`` and number of malicious clients (``z`` overrides it).
    """

    reads_benign_updates = True
    description = "A Little Is Enough: mu - z sigma, z from Baruch et al."
    needs_statistics = True

    def __init__(self, *, z: float | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.z = z
        self.last_z: float | None = None

    def craft(
        self, updates: list[ClientUpdate], mal: list[int], ctx: RoundContext, sim: FedAvgSimulation
    ) -> dict[int, np.ndarray | ClientUpdate]:
        ref = self.reference(updates, mal)
        z = self.z if self.z is not None else alie_z(len(updates), len(mal))
        self.last_z = z
        mal_delta = ref.mean(axis=0) - z * ref.std(axis=0)
        return {i: mal_delta.copy() for i in mal}

    def details(self) -> dict[str, Any]:
        return {} if self.last_z is None else {"last_z": self.last_z}


@register_attack("ipm")
class IPM(PoisoningAttack):
    """Inner Product Manipulation (Xie, Koyejo & Gupta 2019): ``-epsilon * mean(benign)``."""

    reads_benign_updates = True
    description = "inner product manipulation: -epsilon * benign mean"

    def __init__(self, *, epsilon: float = 0.5, **kw: Any) -> None:
        super().__init__(**kw)
        if not epsilon > 0:
            raise ConfigurationError("must be > 0", field="epsilon")
        self.epsilon = epsilon

    def craft(
        self, updates: list[ClientUpdate], mal: list[int], ctx: RoundContext, sim: FedAvgSimulation
    ) -> dict[int, np.ndarray | ClientUpdate]:
        return {i: -self.epsilon * self.reference(updates, mal, i).mean(axis=0) for i in mal}


class _Shejwalkar(PoisoningAttack):
    """Min-Max / Min-Sum (Shejwalkar & Houmansadr, NDSS 2021), AGR-agnostic.

    Malicious update ``mu + gamma * p`` with ``p`` the perturbation (``"std"``: ``-sigma``,
    ``"uv"``: ``-mu/||mu||``, ``"sgn"``: ``-sign(mu)``); ``gamma`` is the largest value the
    paper's halving search (start ``gamma_init``, stop at step ``tau``) finds that keeps the
    update within the benign spread (max distance for Min-Max, sum of squared distances
    for Min-Sum).
    """

    reads_benign_updates = True
    needs_statistics = True
    objective: ClassVar[Literal["max", "sum"]] = "max"

    def __init__(
        self,
        *,
        perturbation: Literal["std", "uv", "sgn"] = "std",
        gamma_init: float = 10.0,
        tau: float = 1e-5,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if perturbation not in ("std", "uv", "sgn"):
            raise ConfigurationError(f"unknown {perturbation!r}", field="perturbation", accepted=["std", "uv", "sgn"])
        if not gamma_init > 0 or not tau > 0:
            raise ConfigurationError("gamma_init and tau must be > 0", field="gamma")
        self.perturbation, self.gamma_init, self.tau = perturbation, gamma_init, tau
        self.last_gamma: float | None = None

    def _ok(self, m: np.ndarray, ref: np.ndarray, d2: np.ndarray) -> bool:
        dist2 = np.sum((ref - m) ** 2, axis=1)
        if self.objective == "max":
            return float(np.sqrt(dist2.max())) <= float(np.sqrt(d2.max()))
        return float(dist2.sum()) <= float(d2.sum(axis=1).max())

    def gamma_search(self, mu: np.ndarray, p: np.ndarray, ref: np.ndarray) -> float:
        sq = np.einsum("ij,ij->i", ref, ref)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * ref @ ref.T, 0.0)
        gamma, step, best = self.gamma_init, self.gamma_init, 0.0
        while abs(best - gamma) > self.tau and step > self.tau / 4:
            if self._ok(mu + gamma * p, ref, d2):
                best = gamma
                gamma += step / 2
            else:
                gamma -= step / 2
            step /= 2
        return best

    def craft(
        self, updates: list[ClientUpdate], mal: list[int], ctx: RoundContext, sim: FedAvgSimulation
    ) -> dict[int, np.ndarray | ClientUpdate]:
        ref = self.reference(updates, mal)
        mu = ref.mean(axis=0)
        if self.perturbation == "std":
            p = -ref.std(axis=0)
        elif self.perturbation == "uv":
            p = -mu / max(float(np.linalg.norm(mu)), 1e-300)
        else:
            p = -np.sign(mu)
        gamma = self.gamma_search(mu, p, ref)
        self.last_gamma = gamma
        m = mu + gamma * p
        return {i: m.copy() for i in mal}

    def details(self) -> dict[str, Any]:
        return {} if self.last_gamma is None else {"last_gamma": self.last_gamma}


@register_attack("min-max")
class MinMax(_Shejwalkar):
    __doc__ = _Shejwalkar.__doc__
    description = "Min-Max (Shejwalkar & Houmansadr 2021)"
    objective = "max"


@register_attack("min-sum")
class MinSum(_Shejwalkar):
    __doc__ = _Shejwalkar.__doc__
    description = "Min-Sum (Shejwalkar & Houmansadr 2021)"
    objective = "sum"


@register_attack("fang-krum")
class FangKrum(PoisoningAttack):
    """Fang et al. 2020 (USENIX Security), full-knowledge attack on Krum.

    All malicious clients send ``-lambda * s`` with ``s`` the sign of the benign mean update
    (the direction the global model would move). ``lambda`` starts at the paper's upper
    bound and halves until Krum (with ``f`` = number of malicious clients) selects a
    malicious update, or falls below ``threshold``. With ``omniscient=False`` the benign
    updates are estimated from the attackers' own genuine updates (partial knowledge).
    """

    reads_benign_updates = True
    description = "Fang et al. 2020 attack on Krum (full knowledge)"

    def __init__(self, *, threshold: float = 1e-5, **kw: Any) -> None:
        super().__init__(**kw)
        self.threshold = threshold
        self.last_lambda: float | None = None

    def craft(
        self, updates: list[ClientUpdate], mal: list[int], ctx: RoundContext, sim: FedAvgSimulation
    ) -> dict[int, np.ndarray | ClientUpdate]:
        ref = self.reference(updates, mal)
        if self.adversary.omniscient:
            benign = [u for j, u in enumerate(updates) if j not in set(mal)]
        else:  # partial knowledge: the attackers' genuine updates stand in for the benign ones
            benign = [
                ClientUpdate(client_id=-1 - k, delta=updates[j].delta, num_examples=updates[j].num_examples)
                for k, j in enumerate(mal)
            ]
        n, c = len(benign) + len(mal), len(mal)
        d = ref.shape[1]
        s = np.sign(ref.mean(axis=0))
        k = max(n - c - 2, 1)
        sq = np.einsum("ij,ij->i", ref, ref)
        dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * ref @ ref.T, 0.0))
        if len(ref) > 1:
            nearest = np.sort(dist + np.diag(np.full(len(ref), np.inf)), axis=1)[:, : min(k, len(ref) - 1)]
            term1 = float(nearest.sum(axis=1).min()) / (max(n - 2 * c - 1, 1) * math.sqrt(d))
        else:
            term1 = 0.0
        term2 = float(np.linalg.norm(ref, axis=1).max()) / math.sqrt(d)
        lam = max(term1 + term2, self.threshold)
        bound = Krum.max_byzantine(n)
        krum = Krum(num_byzantine=min(c, bound)) if bound >= 0 else None
        while krum is not None and lam > self.threshold:
            crafted = [
                ClientUpdate(client_id=updates[j].client_id, delta=-lam * s, num_examples=updates[j].num_examples)
                for j in mal
            ]
            res = krum.aggregate(benign + crafted, ctx)
            if res.participants[0] in self.malicious:
                break
            lam /= 2
        self.last_lambda = lam
        return {i: -lam * s for i in mal}

    def details(self) -> dict[str, Any]:
        return {} if self.last_lambda is None else {"last_lambda": self.last_lambda}


@register_attack("fang-median")
class FangMedian(PoisoningAttack):
    """Fang et al. 2020, full-knowledge attack on the coordinate-wise median / trimmed mean.

    Per coordinate ``j`` with benign direction ``s_j = sign(mean_j)``, malicious values are
    drawn beyond the benign extreme on the opposite side: in ``[w_min/b, w_min]`` (or
    ``[b*w_min, w_min]`` when ``w_min <= 0``) if ``s_j > 0``, and in ``[w_max, b*w_max]``
    (or ``[w_max/b, w_max]`` when ``w_max <= 0``) if ``s_j < 0``; ``b = 2`` as in the paper.
    Applied to update deltas rather than absolute weights.
    """

    reads_benign_updates = True
    description = "Fang et al. 2020 attack on median / trimmed mean (full knowledge)"

    def __init__(self, *, b: float = 2.0, **kw: Any) -> None:
        super().__init__(**kw)
        if not b > 1:
            raise ConfigurationError("must be > 1", field="b")
        self.b = b

    def craft(
        self, updates: list[ClientUpdate], mal: list[int], ctx: RoundContext, sim: FedAvgSimulation
    ) -> dict[int, np.ndarray | ClientUpdate]:
        ref = self.reference(updates, mal)
        s = np.sign(ref.mean(axis=0))
        wmax, wmin = ref.max(axis=0), ref.min(axis=0)
        b = self.b
        # interval below the benign minimum (for s > 0) and above the maximum (for s <= 0)
        lo_down = np.where(wmin > 0, wmin / b, wmin * b)
        hi_up = np.where(wmax > 0, wmax * b, wmax / b)
        out: dict[int, np.ndarray | ClientUpdate] = {}
        for i in mal:
            u = self.rng(ctx, updates[i].client_id).random(ref.shape[1])
            down = lo_down + u * (wmin - lo_down)
            up = wmax + u * (hi_up - wmax)
            out[i] = np.where(s > 0, down, up)
        return out
