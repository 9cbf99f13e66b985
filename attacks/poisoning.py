"""Poisoning attacks by malicious clients, as FedAvg update hooks.

Each attack registers in :data:`attacks.registry.ATTACKS` with ``kind = "poisoning"`` and
works in two steps:

1. ``attack.setup(sim, threat, seed=...)`` picks the malicious clients of a
   :class:`~protocols.fedavg.FedAvgSimulation` from a :class:`PoisoningThreat` (fraction
   malicious, omniscient or not, colluding or not);
2. the attack object is then an update hook, ``attack(updates, ctx, sim) -> updates``: it
   replaces the updates of the malicious clients sampled this round (after honest local
   training, before aggregation).

What an attacker knows follows the threat model. An *omniscient* attacker reads every honest
update of the round; otherwise it only knows the genuine updates its own clients computed on
their own data — pooled when the malicious clients *collude*, each on its own when they do
not. Attacks that need statistics of benign updates (ALIE, Min-Max, Min-Sum) refuse to run
without collusion or omniscience.

Backdoor attacks (``model-replacement``, ``constrain-and-scale``, ``dba``) stamp a pixel
pattern on images and relabel them to ``target_label``; their :meth:`PoisoningAttack.success`
is the attack success rate: the share of triggered test images of other classes that the
global model classifies as the target.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from scipy.stats import norm as _normal

from attacks.registry import Attack, AttackCase, AttackResult, register_attack
from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng, torch_generator
from protocols.aggregation import ClientUpdate, RoundContext
from protocols.models import get_flat_params, set_flat_params
from protocols.robust import Krum
from protocols.training import predict_logits

if TYPE_CHECKING:
    from protocols.fedavg import FedAvgSimulation

__all__ = [
    "PoisoningThreat",
    "PoisoningAttack",
    "BackdoorAttack",
    "LabelFlip",
    "SignFlip",
    "GaussianNoise",
    "ALIE",
    "IPM",
    "MinMax",
    "MinSum",
    "FangKrum",
    "FangMedian",
    "ModelReplacement",
    "ConstrainAndScale",
    "DistributedBackdoor",
    "POISONING_ATTACKS",
    "alie_z",
    "trigger_groups",
    "apply_trigger",
]

#: Names of the attacks this module registers, in the order runners show them.
POISONING_ATTACKS: tuple[str, ...] = (
    "label-flip",
    "sign-flip",
    "gaussian",
    "alie",
    "ipm",
    "min-max",
    "min-sum",
    "fang-krum",
    "fang-median",
    "model-replacement",
    "constrain-and-scale",
    "dba",
)


@dataclass(frozen=True)
class PoisoningThreat:
    """Who is malicious and what they know.

    ``fraction`` of the population is malicious (rounded to the nearest integer, at least
    one when ``fraction > 0``) unless ``num_malicious`` fixes the count. ``omniscient``:
    the attacker reads all honest updates of the round. ``colluding``: malicious clients
    share what they know and coordinate.
    """

    fraction: float = 0.2
    omniscient: bool = False
    colluding: bool = True
    num_malicious: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ConfigurationError(f"must be in [0, 1), got {self.fraction}", field="threat.fraction")
        if self.num_malicious is not None and self.num_malicious < 0:
            raise ConfigurationError("must be >= 0", field="threat.num_malicious")

    def count(self, population: int) -> int:
        if self.num_malicious is not None:
            if self.num_malicious >= population:
                raise ConfigurationError(
                    f"{self.num_malicious} malicious clients in a population of {population}",
                    field="threat.num_malicious",
                )
            return self.num_malicious
        if self.fraction == 0:
            return 0
        return min(population - 1, max(1, round(self.fraction * population)))

    def describe(self) -> str:
        who = f"{self.num_malicious} clients" if self.num_malicious is not None else f"{self.fraction:.0%} of clients"
        return (
            f"{who} malicious, {'omniscient' if self.omniscient else 'own data only'}, "
            f"{'colluding' if self.colluding else 'not colluding'}"
        )


class PoisoningAttack(Attack):
    """Base class: malicious-client bookkeeping and the update-hook protocol.

    Subclasses implement :meth:`craft`, returning the new delta of each malicious update of
    the round. ``start_round`` and ``attack_rounds`` restrict when the attack is active
    (``attack_rounds=None``: every round from ``start_round``).
    """

    kind = "poisoning"
    #: needs benign statistics (mean/std) and so collusion or omniscience
    needs_statistics: ClassVar[bool] = False
    #: a backdoor attack (has an attack success rate)
    is_backdoor: ClassVar[bool] = False

    def __init__(self, *, start_round: int = 1, attack_rounds: Sequence[int] | None = None) -> None:
        if start_round < 1:
            raise ConfigurationError("must be >= 1", field="start_round")
        self.start_round = start_round
        self.attack_rounds = None if attack_rounds is None else frozenset(int(r) for r in attack_rounds)
        self.threat = PoisoningThreat()
        self.malicious: frozenset[int] = frozenset()
        self.seed = 0
        self.rounds_attacked = 0

    # -- setup ---------------------------------------------------------------------------
    def setup(self, sim: FedAvgSimulation, threat: PoisoningThreat, *, seed: int = 0) -> PoisoningAttack:
        """Choose the malicious clients of ``sim`` (a seeded draw) and validate the threat model."""
        population = sim.config.data.num_clients
        if self.needs_statistics and not (threat.colluding or threat.omniscient):
            raise ConfigurationError(
                f"{self.name} estimates benign statistics: it needs colluding or omniscient attackers",
                field="threat",
            )
        m = threat.count(population)
        rng = simulation_rng(seed, "malicious-clients")
        self.malicious = frozenset(int(c) for c in rng.permutation(population)[:m])
        self.threat = threat
        self.seed = seed
        self.rounds_attacked = 0
        self._setup(sim)
        return self

    def _setup(self, sim: FedAvgSimulation) -> None:
        """Hook for subclasses (check the dataset kind, precompute triggers)."""

    def active(self, r: int) -> bool:
        if r < self.start_round:
            return False
        return self.attack_rounds is None or r in self.attack_rounds

    # -- hook ----------------------------------------------------------------------------
    def __call__(self, updates: list[ClientUpdate], ctx: RoundContext, sim: FedAvgSimulation) -> list[ClientUpdate]:
        mal = [i for i, u in enumerate(updates) if u.client_id in self.malicious]
        if not mal or not self.active(ctx.round):
            return updates
        self.rounds_attacked += 1
        crafted = self.craft(updates, mal, ctx, sim)
        out = list(updates)
        for i, new in crafted.items():
            if isinstance(new, ClientUpdate):
                out[i] = new
            else:
                out[i] = ClientUpdate(
                    client_id=updates[i].client_id,
                    delta=np.asarray(new, dtype=np.float64),
                    num_examples=updates[i].num_examples,
                )
        return out

    def craft(
        self, updates: list[ClientUpdate], mal: list[int], ctx: RoundContext, sim: FedAvgSimulation
    ) -> dict[int, np.ndarray | ClientUpdate]:
        raise NotImplementedError

    # -- knowledge -----------------------------------------------------------------------
    def reference(self, updates: list[ClientUpdate], mal: list[int], i: int | None = None) -> np.ndarray:
        """The benign updates the attacker knows: all honest ones if omniscient, else its own.

        Non-colluding attackers (``i`` given) only know their own genuine update.
        """
        if self.threat.omniscient:
            honest = [u.delta for j, u in enumerate(updates) if j not in set(mal)]
            if honest:
                return np.stack(honest)
        if self.threat.colluding or i is None:
            return np.stack([updates[j].delta for j in mal])
        return updates[i].delta[None, :]

    def rng(self, ctx: RoundContext, *stream: int | str) -> np.random.Generator:
        return simulation_rng(self.seed, "attack", self.name, ctx.round, *stream)

    # -- results -------------------------------------------------------------------------
    def success(self, sim: FedAvgSimulation) -> float | None:
        """Attack success rate of a backdoor on ``sim``'s global model; ``None`` if not a backdoor."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"attack": self.name, "threat": self.threat.describe(), "malicious": sorted(self.malicious)}

    # -- Attack.run: one FedAvg run on the case -----------------------------------------------
    def supports(self, case: AttackCase) -> bool:
        return not case.uses_dp

    def run(self, case: AttackCase, *, progress: bool = False) -> AttackResult:
        """One FedAvg run on ``case`` with this attack; secure aggregation computes the plain sum.

        The full attack x defense sweep is ``attacks.robustness.run_matrix`` /
        ``privagg evaluate robustness``.
        """
        from protocols.fedavg import DataConfig, FedAvgSimulation, FederationConfig, ModelConfig, RunConfig

        if not self.supports(case):
            raise ConfigurationError(
                f"{self.name} runs against sum-based aggregation (none, secagg, paillier); "
                "use `privagg evaluate robustness` for DP and robust defenses",
                field="defense",
            )
        t0 = time.perf_counter()
        rounds = int(case.option("rounds", 15))
        cfg = RunConfig(
            seed=case.seed,
            data=DataConfig(dataset=case.dataset, num_clients=case.num_clients, alpha=float(case.option("alpha", 0.5))),
            model=ModelConfig(name=case.model, hidden=case.hidden),
            federation=FederationConfig(rounds=rounds),
        )
        threat = PoisoningThreat(
            fraction=case.threat.malicious_fraction or 0.2,
            omniscient=bool(case.option("omniscient", False)),
            colluding=bool(case.option("colluding", True)),
        )
        sim = FedAvgSimulation(cfg, update_hooks=[self])
        self.setup(sim, threat, seed=case.seed)
        res = sim.run(progress=progress, description=self.name)
        metrics: dict[str, float] = {"accuracy": float(res.final_accuracy)}
        asr = self.success(sim)
        if asr is not None:
            metrics["attack_success_rate"] = float(asr)
        return AttackResult(
            attack=self.name,
            case=case,
            metrics=metrics,
            data=self.describe(),
            success=None if asr is None else asr >= 0.5,
            seconds=time.perf_counter() - t0,
        )


# ---------------------------------------------------------------------------------------------
# Untargeted attacks
# ---------------------------------------------------------------------------------------------


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


@register_attack("ipm")
class IPM(PoisoningAttack):
    """Inner Product Manipulation (Xie, Koyejo & Gupta 2019): ``-epsilon * mean(benign)``."""

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

    description = "Fang et al. 2020 attack on Krum (full knowledge)"

    def __init__(self, *, threshold: float = 1e-5, **kw: Any) -> None:
        super().__init__(**kw)
        self.threshold = threshold
        self.last_lambda: float | None = None

    def craft(
        self, updates: list[ClientUpdate], mal: list[int], ctx: RoundContext, sim: FedAvgSimulation
    ) -> dict[int, np.ndarray | ClientUpdate]:
        ref = self.reference(updates, mal)
        if self.threat.omniscient:
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


@register_attack("fang-median")
class FangMedian(PoisoningAttack):
    """Fang et al. 2020, full-knowledge attack on the coordinate-wise median / trimmed mean.

    Per coordinate ``j`` with benign direction ``s_j = sign(mean_j)``, malicious values are
    drawn beyond the benign extreme on the opposite side: in ``[w_min/b, w_min]`` (or
    ``[b*w_min, w_min]`` when ``w_min <= 0``) if ``s_j > 0``, and in ``[w_max, b*w_max]``
    (or ``[w_max/b, w_max]`` when ``w_max <= 0``) if ``s_j < 0``; ``b = 2`` as in the paper.
    Applied to update deltas rather than absolute weights.
    """

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


# ---------------------------------------------------------------------------------------------
# Backdoors
# ---------------------------------------------------------------------------------------------


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
        if self.threat.omniscient and bool(getattr(sim.aggregator, "weighted", False)):
            w = np.array([u.num_examples for u in updates], dtype=np.float64)
            wm = float(w[mal].sum())
            if wm > 0:
                return float(w.sum()) / wm
        return len(updates) / max(len(mal), 1)

    def train_poisoned(
        self, sim: FedAvgSimulation, cid: int, gp: np.ndarray, x: np.ndarray, y: np.ndarray, r: int, *, gamma: float
    ) -> np.ndarray:
        """Local training on poisoned data; returns the (unscaled) delta."""
        model = copy.deepcopy(sim.model)
        set_flat_params(model, gp)
        cfg = sim.config.train
        lr = self.lr if self.lr is not None else cfg.lr
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
        g = torch_generator(self.seed, "attack", self.name, cid, r)
        ref = [p.detach().clone() for p in model.parameters()]
        model.train()
        for _ in range(self.local_epochs):
            order = torch.randperm(len(xt), generator=g)
            for s in range(0, len(xt), cfg.batch_size):
                b = order[s : s + cfg.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = self.loss(model, loss_fn(model(xt[b]), yt[b]), ref)
                loss.backward()
                opt.step()
                self.after_step(model, ref, gamma)
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
    """

    description = "backdoor with model replacement (Bagdasaryan et al. 2020)"


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
