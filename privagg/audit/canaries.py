"""The canary audit: run the deployment's own DP-FedAvg with inserted canary clients, measure epsilon.

:func:`run_canary_audit` runs :class:`protocols.fedavg.FedAvgSimulation` -- the loop and the
aggregator path of ``privagg run`` (``dp-fedavg`` around the configured inner aggregator,
secure aggregation included) -- with an update hook that adds canary clients to each round's
cohort and an observer that sees every released model delta. It reports epsilon lower bounds
(:mod:`privagg.audit.empirical`) beside the accountant's epsilon.

Canaries (Andrew et al., ICLR 2024): ``m`` random unit directions ``u_i`` in parameter space;
a canary's update is ``C u_i`` (``C`` = the DP clip norm: the largest update the mechanism
admits). Each canary flips a fair coin (Steinke et al.'s one-run game):

* Poisson sampling (add/remove neighbours): an included canary is a client of the
  population, sampled in each round with the deployment's rate; a held-out one never joins.
* fixed-size or full sampling (replace-one neighbours): every canary is a client sampled with
  the cohort rate; the coin is the sign of its update (``+C u_i`` or ``-C u_i``): the two
  worlds differ by replacing one client's data, the relation the accountant uses there.

Statistics. The auditor's view of round ``r`` is its released delta ``D_r``.
White-box (every released round): ``z_ir = sqrt(d) cos(u_i, D_r)`` is about N(0, 1) for an
absent canary; a sampled one shifts it by ``mu_r = C sqrt(d) / (den_r |D_r|)`` (``den_r``: the
round's public fixed denominator). A canary's score is the sum over its rounds of the
log-likelihood ratio ``log(1 - q + q exp(mu_r z_ir - mu_r^2 / 2))`` (its sign-symmetric
difference in the replace game); a round that released exactly zero (no noise at all) counts
``log(1 - q)``: nobody was sampled there. Black-box (final model only): ``cos(u_i, theta_T - theta_0)``.

Options: ``population = "canaries-only"`` drops the real clients' updates (the worst-case
dataset: a canary alone in its rounds; Poisson only) and ``groups`` splits the canaries into
groups active in consecutive blocks of rounds (each canary is then claimed at the epsilon of
its block). Together they expose mechanisms whose leak needs a client alone in a round.

The verdict: the audit *flags* the mechanism when any lower bound exceeds the accountant's
epsilon. The six bounds (three methods, white- and black-box) each hold at
``1 - (1 - confidence) / 6``, so together they hold at ``confidence``. Otherwise it says
NOT SHOWN: a lower bound below the claim is no evidence of privacy (the test has power only
against leaks larger than its canaries can see), and :data:`UNTESTED` names the faults the
canaries cannot see at all. Canaries are ``norm_factor`` clip norms long, so a mechanism that
skips clipping releases them unclipped and is seen (a correct one clips them to ``C``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from privagg.audit.empirical import EpsilonBound, gaussian_fit, one_run_bound, threshold_bound
from privagg.errors import ConfigurationError, PrivacyBudgetExceeded
from privagg.randomness import simulation_rng

__all__ = [
    "EMPIRICAL_DEFAULTS",
    "UNTESTED",
    "CanaryAuditResult",
    "CanaryConfig",
    "DPClaim",
    "EmpiricalCurve",
    "audit_simulation",
    "build_dp_aggregator",
    "canary_scores",
    "empirical_run_config",
    "epsilon_bounds",
    "no_training",
    "run_canary_audit",
    "run_every_round",
]

#: the run audited by ``privagg audit --empirical`` without ``--config``: the main job with DP,
#: Poisson sampling at 0.5 over 20 clients, 20 rounds
EMPIRICAL_DEFAULTS: dict[str, Any] = {
    "federation": {"rounds": 20, "sampling": "poisson", "sampling_rate": 0.5},
    "dp": {"noise_multiplier": 2.0, "clip_norm": 1.0, "delta": 1e-5},
}

#: faults of a DP deployment the canary audit cannot see, whatever its canaries and rounds
UNTESTED = (
    "the deployment's sampling (the audit samples its canaries itself, at the accounted rate; the run's guarantee "
    "checks its recorded cohort sizes: dp.sampling.poisson_sizes_p_value)",
    "adaptive clipping's noised clip-count release (only the model deltas are scored)",
    "noise shares missing for dropped or colluding clients beyond what the run's own aggregator drops",
)

_METHODS = 3  # gaussian-fit, threshold, one-run
_NO_NOISE_PENALTY = -50.0  # log-likelihood of "not sampled" when the rate is 1


@dataclass(frozen=True)
class CanaryConfig:
    """The canaries: how many, the seed of their directions and coins, the stated confidence.

    ``population``: ``"deployment"`` (canaries join the real clients) or ``"canaries-only"``;
    ``groups``: canaries active in that many consecutive blocks of rounds (1: all rounds);
    ``examples``: the example count each canary reports (default: 10 x the largest client's);
    ``norm_factor``: a canary's update norm in clip norms (a correct mechanism clips it to ``C``).
    """

    canaries: int = 1000
    seed: int = 0
    confidence: float = 0.95
    population: Literal["deployment", "canaries-only"] = "deployment"
    groups: int = 1
    examples: int | None = None
    norm_factor: float = 4.0

    def __post_init__(self) -> None:
        if self.canaries < 8:
            raise ConfigurationError(f"must be >= 8, got {self.canaries}", field="canaries")
        if not 0.5 <= self.confidence < 1:
            raise ConfigurationError(f"must be in [0.5, 1), got {self.confidence}", field="confidence")
        if self.population not in ("deployment", "canaries-only"):
            raise ConfigurationError(
                f"invalid value {self.population!r}", field="population", accepted=["deployment", "canaries-only"]
            )
        if not 1 <= self.groups <= self.canaries:
            raise ConfigurationError(f"must be in 1..canaries, got {self.groups}", field="groups")
        if self.examples is not None and self.examples < 1:
            raise ConfigurationError(f"must be >= 1, got {self.examples}", field="examples")
        if not 1.0 <= self.norm_factor <= 1e3:
            raise ConfigurationError(f"must be in [1, 1000], got {self.norm_factor}", field="norm_factor")


@dataclass(frozen=True)
class EmpiricalCurve:
    """Per marked round: the accountant's epsilon and the white-box Gaussian-fit estimate and bound."""

    rounds: tuple[int, ...]
    accounted: tuple[float, ...]
    estimate: tuple[float, ...]
    lower_bound: tuple[float, ...]


@dataclass(frozen=True)
class CanaryAuditResult:
    """What the canary audit measured, beside what the accountant claims.

    ``claimed_epsilon``: the configured accountant's epsilon for one canary's rounds (its
    block with ``groups > 1``); ``accounted``: every accountant's; ``white_box`` /
    ``black_box``: the bounds per method (each at ``bound_confidence``).
    """

    game: Literal["add/remove", "replace"]
    accountant: str
    claimed_epsilon: float
    accounted: dict[str, float]
    delta: float
    confidence: float
    bound_confidence: float
    white_box: tuple[EpsilonBound, ...]
    black_box: tuple[EpsilonBound, ...]
    curve: EmpiricalCurve | None
    canaries: int
    included: int
    rounds: int
    rounds_per_canary: int
    sampling_rate: float
    dimension: int
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    untested: tuple[str, ...] = UNTESTED

    @property
    def lower_bound(self) -> EpsilonBound:
        """The largest lower bound of all methods (white- and black-box)."""
        return max((*self.white_box, *self.black_box), key=lambda b: b.epsilon)

    @property
    def flagged(self) -> bool:
        """Some lower bound exceeds the accountant's epsilon: the deployed mechanism is not the claimed one."""
        return self.lower_bound.epsilon > self.claimed_epsilon

    def bound(self, view: Literal["white", "black"], method: str) -> EpsilonBound:
        return next(b for b in (self.white_box if view == "white" else self.black_box) if b.method == method)

    @property
    def verdict(self) -> str:
        best = self.lower_bound
        view = "white-box" if best in self.white_box else "black-box"
        fit = self.bound("white", "gaussian-fit")
        head = "FLAGGED" if self.flagged else "NOT SHOWN (no violation shown)"
        relation = ">" if self.flagged else "<="
        line = (
            f"{head}: empirical epsilon >= {best.epsilon:.3g} ({view} {best.method}, {self.confidence:.0%} confidence) "
            f"{relation} accounted {self.claimed_epsilon:.3g} ({self.accountant.upper()}, delta {self.delta:g}); "
            f"white-box estimate {fit.estimate:.3g}, {self.canaries} canaries, {self.rounds} rounds"
        )
        if self.flagged:
            return line
        return (
            f"{line}; not evidence of privacy: a canary audit sees only leaks above its power, and does not test "
            + "; ".join(self.untested)
        )


def build_dp_aggregator(run: Any) -> Any:
    """The ``dp-fedavg`` aggregator ``privagg run`` builds for ``run`` (a ``RunConfig`` with ``dp``)."""
    from protocols.aggregation import build_aggregator
    from protocols.dp_fedavg import wrap_with_dp

    if run.dp is None:
        raise ConfigurationError("the run has no [dp] table: nothing to audit", field="dp")
    inner = build_aggregator(run.aggregation.name, run.aggregation.options)
    return wrap_with_dp(inner, run.dp, population=run.data.num_clients, rounds=run.federation.rounds)


def _round_llr(z: np.ndarray, mu: float, q: float) -> np.ndarray:
    """log P(z | sampled with prob q) / P(z | absent) for unit-variance z shifted by mu when sampled."""
    shifted = mu * z - mu * mu / 2
    if q >= 1:
        return shifted
    return np.logaddexp(math.log1p(-q), math.log(q) + shifted)


def canary_scores(
    cosines: np.ndarray,
    norms: np.ndarray,
    denominators: np.ndarray,
    active: np.ndarray,
    *,
    dimension: int,
    clip: float | np.ndarray,
    rate: float,
    game: Literal["add/remove", "replace"],
) -> np.ndarray:
    """White-box scores per round: a ``(rounds, canaries)`` array of log-likelihood ratios (sum the rows).

    ``cosines[r, i] = cos(u_i, D_r)``, ``norms[r] = |D_r|``, ``denominators[r]``: the round's
    fixed denominator, ``active[r, i]``: canary ``i`` could join round ``r``; ``dimension``: of
    the model; ``clip``: the canaries' norm in the release (one, or one per round: the round's clip
    under adaptive clipping); ``rate``: the probability a member joins a round.
    """
    rounds, m = cosines.shape
    root = math.sqrt(dimension)
    out = np.zeros((rounds, m))
    for r in range(rounds):
        if norms[r] == 0:  # nothing but zeros released: nobody was sampled
            if game == "add/remove":
                out[r] = math.log1p(-rate) if rate < 1 else _NO_NOISE_PENALTY
            continue
        z = cosines[r] * root
        mu = float(np.broadcast_to(clip, (rounds,))[r]) * root / (denominators[r] * norms[r])
        llr = _round_llr(z, mu, rate)
        if game == "replace":
            llr = llr - _round_llr(-z, mu, rate)
        out[r] = llr
    return np.where(active, out, 0.0)


def epsilon_bounds(
    included: np.ndarray, scores: np.ndarray, *, delta: float, confidence: float
) -> tuple[EpsilonBound, ...]:
    """The three methods' bounds (Gaussian fit, threshold, one-run) for one view's canary scores."""
    return (
        gaussian_fit(scores[included], scores[~included], delta=delta, confidence=confidence),
        threshold_bound(scores[included], scores[~included], delta=delta, confidence=confidence),
        one_run_bound(scores, included, delta=delta, confidence=confidence),
    )


def _block_epsilon(
    steps: dict[int, tuple[float, Any]], rounds: list[int], names: list[str], delta: float, cache: dict[Any, float]
) -> dict[str, float]:
    """Each accountant's epsilon for the rounds ``rounds`` of ``steps`` (round -> noise multiplier, sampling).

    An accountant without a valid bound for the rounds' sampling is left out (PRV under
    fixed-size sampling). Blocks with the same steps share one computation.
    """
    from dp import make_accountant

    seq = tuple(steps[r] for r in rounds if r in steps)
    out: dict[str, float] = {}
    for name in names:
        key = (name, seq, delta)
        if key not in cache:
            acc = make_accountant(name)
            if not all(acc.supports(s) for _, s in seq):
                continue
            for z, s in seq:
                acc.step(noise_multiplier=z, sampling=s)
            cache[key] = acc.get_epsilon(delta)
        out[name] = cache[key]
    return out


@dataclass(frozen=True)
class DPClaim:
    """What a DP mechanism that keeps no privagg ledger claims (e.g. Flower's DP wrappers).

    ``noise_multiplier``: relative to the L2 sensitivity of the released sum under the
    sampling's neighbouring relation (add/remove for Poisson, replace-one otherwise), so the
    accountant's epsilon for the run's sampling is the claim; ``clip_norm``: the update norm bound.
    """

    noise_multiplier: float
    clip_norm: float
    delta: float = 1e-5
    accountant: Literal["rdp", "prv"] = "rdp"

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ConfigurationError(f"must be > 0, got {self.noise_multiplier}", field="noise_multiplier")
        if not self.clip_norm > 0:
            raise ConfigurationError(f"must be > 0, got {self.clip_norm}", field="clip_norm")
        if not 0 < self.delta < 1:
            raise ConfigurationError(f"must be in (0, 1), got {self.delta}", field="delta")


def no_training(*args: Any, **kwargs: Any) -> None:
    """A local trainer that leaves the model as the server sent it."""
    return None


def audit_simulation(run: Any, aggregator: Any, *, trainer: Callable[..., None]) -> Any:
    """``run``'s round loop (a ``FedAvgSimulation``) around ``aggregator``, every planned round run: early stopping
    off, and the DP the aggregator brings (the run's own ``[dp]`` table is not wrapped a second time)."""
    from protocols.fedavg import FedAvgSimulation

    fed = dataclasses.replace(run.federation, patience=None, target_accuracy=None)
    return FedAvgSimulation(dataclasses.replace(run, federation=fed, dp=None), aggregator=aggregator,
                            local_trainer=trainer)  # fmt: skip


def run_every_round(sim: Any, what: str) -> Any:
    """Run ``sim`` to its last planned round; a budget that stops it first is a typed refusal."""
    res = sim.run()
    if res.budget_stop is not None:
        raise PrivacyBudgetExceeded(
            f"{what} needs all {sim.config.federation.rounds} rounds: {res.budget_stop.message}",
            spent=res.budget_stop.spent,
            budget=res.budget_stop.budget,
        )
    return res


def run_canary_audit(
    run: Any,
    canary: CanaryConfig | None = None,
    *,
    aggregator: Any = None,
    claim: DPClaim | None = None,
    progress: Callable[[str], None] | None = None,
) -> CanaryAuditResult:
    """Run ``run`` (a ``protocols.fedavg.RunConfig`` with ``[dp]``) with canaries; bound its epsilon.

    ``aggregator``: a prebuilt DP aggregator (default: the one ``privagg run`` builds from
    ``run``, see :func:`build_dp_aggregator`); tests plant mechanism bugs through it. Any other
    aggregator (another toolkit's DP, e.g. :mod:`privagg.audit.empirical_flower`) needs its
    ``claim``. Every planned round is run (early stopping is off: the audit is about what is released).
    """
    from dp.sampling import federation_sampling
    from protocols.aggregation import ClientUpdate
    from protocols.dp_fedavg import DPFedAvg
    from protocols.training import train_local

    t0 = time.perf_counter()
    cc = canary or CanaryConfig()
    agg = aggregator if aggregator is not None else build_dp_aggregator(run)
    ours = isinstance(agg, DPFedAvg)
    if not ours and claim is None:
        raise ConfigurationError("an aggregator other than dp-fedavg needs its DP claim", field="claim")
    dp = agg.config if ours else claim
    assert dp is not None
    fed = run.federation
    population = run.data.num_clients
    rate = federation_sampling(fed, population).rate
    game: Literal["add/remove", "replace"] = "add/remove" if fed.sampling == "poisson" else "replace"
    if cc.population == "canaries-only" and game != "add/remove":
        raise ConfigurationError("canaries-only needs Poisson sampling", field="population")
    if fed.rounds % cc.groups:
        raise ConfigurationError(f"{fed.rounds} rounds do not split into {cc.groups} blocks", field="groups")

    # canaries-only: the real updates are dropped, so the clients need not train
    sim = audit_simulation(run, agg, trainer=no_training if cc.population == "canaries-only" else train_local)
    m, d, clip = cc.canaries, sim.num_params, dp.clip_norm  # ``clip``: what a correct mechanism releases
    rng = simulation_rng(cc.seed, "canary-audit")
    directions = rng.standard_normal((m, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    included = rng.random(m) < 0.5
    sign = np.where(included, 1.0, -1.0) if game == "replace" else np.ones(m)
    member = included if game == "add/remove" else np.ones(m, dtype=bool)
    examples = cc.examples or 10 * max(len(i) for i in sim.client_indices)
    block = fed.rounds // cc.groups
    group = np.arange(m) % cc.groups
    active = np.stack([group == (r // block) for r in range(fed.rounds)])  # (rounds, m)

    def hook(updates: list[Any], ctx: Any, _sim: Any) -> list[Any]:
        joins = member & active[ctx.round - 1] & (simulation_rng(cc.seed, "canary-join", ctx.round).random(m) < rate)
        length = sign * cc.norm_factor * clip
        extra = [
            ClientUpdate(client_id=population + int(i), delta=length[i] * directions[i], num_examples=examples)
            for i in np.flatnonzero(joins)
        ]
        return ([] if cc.population == "canaries-only" else list(updates)) + extra

    cosines, norms, dens, eps_rounds, clips = [], [], [], [], []

    def observe(record: Any, _updates: Any, result: Any, _sim: Any) -> None:
        delta = np.asarray(result.delta, dtype=np.float64)
        nrm = float(np.linalg.norm(delta))
        cosines.append(directions @ delta / nrm if nrm > 0 else np.zeros(m))
        norms.append(nrm)
        dens.append(float(result.metrics.get("dp_denominator", len(result.participants) or math.nan)))
        clips.append(min(cc.norm_factor * clip, float(result.metrics.get("dp_clip_norm", clip))))  # adaptive clip
        eps_rounds.append(float(result.metrics.get(f"dp_epsilon_{dp.accountant}", math.nan)))
        if progress is not None and (record.round % 10 == 0 or record.round == fed.rounds):
            progress(f"canary audit: round {record.round}/{fed.rounds}")

    sim.update_hooks.append(hook)
    sim.observers.append(observe)
    theta0 = sim.global_params.copy()
    run_every_round(sim, "the canary audit")
    per_round = canary_scores(
        np.array(cosines), np.array(norms), np.array(dens), active,
        dimension=d, clip=np.array(clips), rate=rate, game=game,
    )  # fmt: skip
    final = sim.global_params - theta0
    fnorm = float(np.linalg.norm(final))
    black = directions @ final / fnorm if fnorm > 0 else np.zeros(m)
    white = per_round.sum(axis=0)
    family = 1 - (1 - cc.confidence) / (2 * _METHODS)
    if ours:
        steps = {e.round: (e.noise_multiplier, e.sampling) for e in agg.ledger.entries}
        names = list(agg.ledger.accountant_names)
    else:
        steps = {r: (dp.noise_multiplier, federation_sampling(fed, population)) for r in range(1, fed.rounds + 1)}
        names = ["rdp", "prv"]
    cache: dict[Any, float] = {}

    def epsilon(rounds: range, which: list[str]) -> dict[str, float]:
        return _block_epsilon(steps, list(rounds), which, dp.delta, cache)

    accounted = epsilon(range(1, block + 1), names)
    claimed = max(
        epsilon(range(g * block + 1, (g + 1) * block + 1), [dp.accountant])[dp.accountant] for g in range(cc.groups)
    )
    curve = None
    if cc.groups == 1:
        marks = sorted({max(2, round(fed.rounds * k / 10)) for k in range(1, 11)} & set(range(1, fed.rounds + 1)))
        est, low = [], []
        for r in marks:
            fit = gaussian_fit(
                per_round[:r].sum(0)[included], per_round[:r].sum(0)[~included], delta=dp.delta, confidence=family
            )
            est.append(fit.estimate if fit.estimate is not None else math.nan)
            low.append(fit.epsilon)
        acc = [eps_rounds[r - 1] if ours else epsilon(range(1, r + 1), [dp.accountant])[dp.accountant] for r in marks]
        curve = EmpiricalCurve(tuple(marks), tuple(acc), tuple(est), tuple(low))
    return CanaryAuditResult(
        game=game,
        accountant=dp.accountant,
        claimed_epsilon=claimed,
        accounted=accounted,
        delta=dp.delta,
        confidence=cc.confidence,
        bound_confidence=family,
        white_box=epsilon_bounds(included, white, delta=dp.delta, confidence=family),
        black_box=epsilon_bounds(included, black, delta=dp.delta, confidence=family),
        curve=curve,
        canaries=m,
        included=int(included.sum()),
        rounds=fed.rounds,
        rounds_per_canary=block,
        sampling_rate=rate,
        dimension=d,
        seconds=time.perf_counter() - t0,
        config={
            "canary": dataclasses.asdict(cc),
            "aggregator": type(agg).__name__,
            "inner": getattr(getattr(agg, "inner", None), "name", None),
        },
    )


def empirical_run_config(toml: str | None = None, *, rounds: int | None = None) -> Any:
    """The run a canary audit runs: a run TOML (or :data:`EMPIRICAL_DEFAULTS`), ``rounds`` overriding."""
    from privagg.run import run_config

    over: dict[str, Any] = {} if toml is not None else {k: dict(v) for k, v in EMPIRICAL_DEFAULTS.items()}
    if rounds is not None:
        over.setdefault("federation", {})["rounds"] = rounds
    cfg = run_config(toml, overrides=over or None)
    if cfg.dp is None:
        raise ConfigurationError("the run has no [dp] table: nothing to audit empirically", field="dp")
    return cfg
