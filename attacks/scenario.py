"""Turn an :class:`~attacks.registry.AttackCase` into what the attacker observes.

This is the bridge between a case (federation, defense, adversary) and the federated
simulation of :mod:`protocols`: it builds the federation, runs the clients' honest local
training, pushes the updates through the defense's real aggregator (plain mean, secure
aggregation, Paillier, DP-FedAvg) and returns what a curious server — or anyone who sees
the released aggregate — gets to see.

What the attacker observes per defense (:data:`attacks.registry.DEFENSES`):

* ``none``: the server sees every client's update; the observation is the target's.
* ``secagg`` / ``paillier``: the server learns only the cohort's aggregate.
* ``dp``: client-level DP-FedAvg (clip + Gaussian noise); the observation is the released,
  noised aggregate (the model update every participant receives). That is an *observer's* view: the
  server noises the aggregate after it has received every update, so against the server itself
  central DP is ``none`` (:attr:`attacks.registry.Defense.observer_only`; verdicts say so).
* ``secagg+dp``: both; the server sees only the noised sum.
* ``distributed-dp``: distributed DP inside the secure sum (integer noise shares, a ``2^bits`` ring);
  its rounds sample every client with rate 1 as Poisson sampling (the only sampling it is accounted for).

Population mode (``case.population``, :class:`attacks.registry.Population`): the case's clients are a
population sampled with Poisson rate ``q`` for ``R`` rounds, DP is calibrated for (q, R, epsilon, delta),
and :func:`observe_round` shows the server one round of that deployment: the target and each other
client independently with probability q (the cohort as sampled), aggregated by the same defense.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from attacks.registry import AttackCase
from dp.config import DPConfig
from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng
from protocols.aggregation import Aggregator, RoundContext, build_aggregator
from protocols.dp_fedavg import wrap_with_dp
from protocols.fedavg import AggregationConfig, FedAvgSimulation, RunConfig
from protocols.models import set_flat_params
from protocols.training import TrainConfig

__all__ = [
    "InversionObservation",
    "RoundObservation",
    "aggregation_options",
    "cohort_members",
    "dp_config",
    "fresh_aggregator",
    "inversion_observation",
    "make_run_config",
    "observe_round",
    "unflatten",
]


def aggregation_options(case: AttackCase) -> dict[str, Any]:
    """Options of the defense's inner aggregator; ``case.options["aggregation"]`` overrides them."""
    opts: dict[str, Any] = dict(case.defense_spec.options)
    opts.update(dict(case.option("aggregation", {})))
    return opts


def dp_config(case: AttackCase, *, clip: float | None = None) -> DPConfig:
    """The DP-FedAvg configuration of the case's defense: its client-level (epsilon, delta).

    Noise is central for ``dp`` (the released aggregate is protected) and client-side for
    ``secagg+dp`` (the secure sum carries the full noise, so the server sees only a noised
    sum). Measurement runs use DP-FedAvg's *seeded* simulation noise so an attack result is
    reproducible from the case seed; deployments keep the default secure sampler.
    ``case.options["dp"]`` overrides any field (errors name ``dp.<field>``).
    """
    opts: dict[str, Any] = {
        "target_epsilon": case.dp_epsilon,
        "delta": case.dp_delta,
        "noise": case.defense_spec.dp_noise,
        "secure_noise": False,
        "reproducible_cohorts": True,  # a measurement reproduces from the case seed (not private)
        "seed": case.seed,
    }
    if clip is not None:
        opts["clip_norm"] = clip
    opts.update(dict(case.option("dp", {})))
    return DPConfig.from_options(opts, path="dp")


def make_run_config(
    case: AttackCase, *, train: TrainConfig, rounds: int = 1, dp_clip: float | None = None
) -> RunConfig:
    """The case's run config (federation, model, seed) with ``train``, ``rounds`` and its defense.

    An attack's figure is measured on the rounds it asked for: a round the DP budget refuses raises
    :class:`~privagg.errors.PrivacyBudgetExceeded` (``federation.budget_exhausted = "refuse"``) rather
    than ending the run early; a caller that can use a shortened run (the matrix's utility column) says so.
    """
    spec = case.defense_spec
    federation = replace(
        case.run.federation, rounds=rounds, patience=None, target_accuracy=None, budget_exhausted="refuse"
    )
    if case.population is not None:  # the deployment: Poisson cohorts of rate q for R rounds (DP calibrated so)
        federation = replace(
            federation,
            rounds=max(rounds, case.population.rounds),
            sampling="poisson",
            sampling_rate=case.population.rate,
            clients_per_round=None,
        )
    elif spec.sampling == "poisson":  # distributed DP: every client with rate 1, accounted as Poisson sampling
        federation = replace(federation, sampling="poisson", sampling_rate=1.0, clients_per_round=None)
    return replace(
        case.run,
        train=train,
        # the attack sets the run length: no early stopping inherited from the case
        federation=federation,
        aggregation=AggregationConfig(name=spec.aggregator, options=aggregation_options(case)),
        dp=dp_config(case, clip=dp_clip) if spec.dp else None,
    )


def fresh_aggregator(case: AttackCase, *, rounds: int = 1, dp_clip: float = 1.0, stream: int = 0) -> Aggregator:
    """A new aggregator for the case's defense (DP-FedAvg with a fresh budget for ``rounds`` rounds).

    ``stream`` selects an independent (seeded) DP noise stream: separate deployments never share noise.
    """
    spec = case.defense_spec
    agg = build_aggregator(spec.aggregator, aggregation_options(case))
    if spec.dp:
        config = dp_config(case, clip=dp_clip)
        if stream:
            config = replace(config, seed=int(simulation_rng(case.seed, "dp-noise", stream).integers(0, 2**62)))
        agg = wrap_with_dp(agg, config, population=case.num_clients, rounds=rounds)
    return agg


def unflatten(model: nn.Module, vec: np.ndarray) -> list[torch.Tensor]:
    """Split a flat parameter-order vector into tensors shaped like ``model.parameters()``."""
    out = []
    i = 0
    t = torch.from_numpy(np.asarray(vec, dtype=np.float32))
    for p in model.parameters():
        n = p.numel()
        out.append(t[i : i + n].view_as(p).clone())
        i += n
    if i != t.numel():
        raise ConfigurationError(f"vector has {t.numel()} entries, model has {i}", field="update")
    return out


@dataclass
class RoundObservation:
    """One FedSGD round as the server sees it under the case's defense.

    ``observed``: every client's own update (``none``: nothing hides them) or the one
    released aggregate (secure / DP aggregation). ``cohort_images`` / ``cohort_labels`` /
    ``owners``: every client's real batch and whose it is (ground truth, metrics only).
    ``members``: the clients of the round, in the order of ``observed`` when updates are exposed.
    """

    members: tuple[int, ...]
    observed: list[np.ndarray]
    cohort_images: np.ndarray
    cohort_labels: np.ndarray
    owners: np.ndarray
    description: str
    metrics: dict[str, Any]


def cohort_members(case: AttackCase, stream: str) -> tuple[int, ...]:
    """The clients of the observed round: every client in cohort mode; in population mode the target
    (``case.options["target"]``, default 0: the attacker studies a round its target takes part in) and
    each other client independently with the sampling rate, drawn from ``stream`` of the case seed (one
    cohort per stream: an attack that spans rounds sees the same clients return, as in cohort mode)."""
    n = case.num_clients
    if case.population is None:
        return tuple(range(n))
    target = int(case.option("target", 0))
    if not 0 <= target < n:
        raise ConfigurationError(f"target client {target} is not in the federation", field="options.target")
    draw = simulation_rng(case.seed, stream, "cohort").random(n) < case.population.rate
    draw[target] = True
    return tuple(int(c) for c in np.flatnonzero(draw))


def observe_round(
    case: AttackCase,
    sim: FedAvgSimulation,
    params: np.ndarray,
    *,
    batch_size: int,
    stream: str,
    round: int = 1,
    batch_rng: np.random.Generator | None = None,
    aggregation_rng: np.random.Generator | None = None,
) -> RoundObservation:
    """Every client takes its local step(s) from ``params`` on ``batch_size`` of its own examples;
    the updates go through the simulation's real aggregator (the case's defense). The batches and
    the aggregation draw from ``stream`` (or the generators given). In population mode only the round's
    Poisson cohort (:func:`cohort_members`) takes part."""
    n = sim.config.data.num_clients
    members = cohort_members(case, stream)
    rng = batch_rng if batch_rng is not None else simulation_rng(case.seed, stream, "batches", round)
    updates, xs, ys = [], [], []
    for cid in members:
        x, y = sim.client_data(cid)
        if len(y) < batch_size:
            raise ConfigurationError(f"client {cid} has only {len(y)} examples", field="batch_size")
        pick = np.sort(rng.choice(len(y), batch_size, replace=False))
        xs.append(x[pick])
        ys.append(y[pick])
        updates.append(sim.train_client(cid, params, x=x[pick], y=y[pick], round=round))
    owners = np.repeat(np.asarray(members, dtype=np.int64), batch_size)
    pop = case.population
    where = "" if pop is None else f" of a Poisson cohort (rate {pop.rate:g}) from {n} clients"
    if case.defense_spec.exposes_updates:
        observed = [np.asarray(u.delta) for u in updates]
        desc = f"each of the {len(members)} clients' own update ({batch_size} example(s) each){where}"
        metrics: dict[str, Any] = {}
    else:
        if aggregation_rng is None:
            aggregation_rng = simulation_rng(case.seed, stream, "aggregation", round)
        ctx = RoundContext(
            round=round,
            population=n,
            sampled=members,
            sampling="poisson" if pop is not None else case.defense_spec.sampling,
            sampling_rate=1.0 if pop is None else pop.rate,
            rng=aggregation_rng,
            global_params=params,
        )
        result = sim.aggregator.aggregate(updates, ctx)
        observed = [np.asarray(result.delta)]
        metrics = dict(result.metrics)
        desc = (
            f"only the {case.defense} aggregate of {len(result.participants)} clients' updates "
            f"({batch_size} example(s) each){where}"
        )
        if case.defense_spec.observer_only:
            desc += " - what an observer of the release sees; the server itself receives every update before noising"
    return RoundObservation(
        members=members,
        observed=observed,
        cohort_images=np.concatenate(xs),
        cohort_labels=np.concatenate(ys),
        owners=owners,
        description=desc,
        metrics=metrics,
    )


@dataclass
class InversionObservation:
    """Gradient-inversion setting: the model the victim used, the gradient the attacker infers
    from what it observes, and the victim's real batch (ground truth, for the metrics only)."""

    model: nn.Module
    gradients: list[torch.Tensor]
    images: np.ndarray
    labels: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int
    description: str
    cohort_images: np.ndarray
    metrics: dict[str, Any]
    dataset_images: np.ndarray
    dataset_labels: np.ndarray
    cohort_labels: np.ndarray
    target: int


def inversion_observation(case: AttackCase) -> InversionObservation:
    """FedSGD round: every client sends one SGD step on ``batch_size`` of its own examples.

    The target is ``case.options["target"]`` (default client 0). The attacker knows the
    public learning rate and turns the observed delta into a gradient: ``g = -delta / lr``.
    ``case.options["pretrain_rounds"]`` FedAvg rounds (plain mean) run first, so the attack
    can hit a partially trained model; default 0 (the freshly initialised model).
    """
    lr = float(case.option("lr", 0.1))
    train = TrainConfig(epochs=1, batch_size=case.batch_size, lr=lr)
    dp_clip = float(case.option("dp_clip", 1.0))
    cfg = make_run_config(case, train=train, rounds=max(1, int(case.option("rounds", 1))), dp_clip=dp_clip)
    sim = FedAvgSimulation(cfg)
    pre = int(case.option("pretrain_rounds", 0))
    if pre:  # same seed: same split, partition and initial model, trained by plain FedAvg first
        warm_cfg = make_run_config(
            case.with_(defense="none"), train=TrainConfig(epochs=1, batch_size=32, lr=0.1), rounds=pre
        )
        warm = FedAvgSimulation(warm_cfg)
        warm.run()
        sim.global_params = warm.global_params.copy()
    target = int(case.option("target", 0))
    if not 0 <= target < cfg.data.num_clients:
        raise ConfigurationError(f"target client {target} is not in the federation", field="options.target")
    gp = sim.global_params.copy()
    seen = observe_round(
        case,
        sim,
        gp,
        batch_size=case.batch_size,
        stream="inversion",
        batch_rng=simulation_rng(case.seed, "inversion-batches"),
        aggregation_rng=simulation_rng(case.seed, "aggregation", 1),
    )
    if case.defense_spec.exposes_updates:
        observed = seen.observed[seen.members.index(target)]
        desc = f"client {target}'s own update (one SGD step on {case.batch_size} example(s))"
    else:
        observed = seen.observed[0]
        desc = seen.description
    mine = seen.owners == target
    model = sim.model
    set_flat_params(model, gp)
    model.eval()
    grads = unflatten(model, -np.asarray(observed) / lr)
    ds = sim.dataset
    return InversionObservation(
        model=model,
        gradients=grads,
        images=seen.cohort_images[mine],
        labels=seen.cohort_labels[mine],
        input_shape=tuple(ds.input_shape),
        num_classes=ds.num_classes,
        description=desc,
        cohort_images=seen.cohort_images,
        metrics=seen.metrics,
        dataset_images=ds.x_train,
        dataset_labels=ds.y_train,
        cohort_labels=seen.cohort_labels,
        target=target,
    )
