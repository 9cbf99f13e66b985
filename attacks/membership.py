"""Membership inference on federated models: loss threshold, shadow models, LiRA.

Experiment (Carlini et al. 2022, "Membership Inference Attacks From First Principles"):
``num_models`` models are trained by the *same* federated procedure (FedAvg over
``num_clients`` clients, with the case's defense), each on a random half of a population
of examples. Every model in turn is the target and the others are the attacker's shadow
models (leave-one-out), so each (model, example) pair is one membership question.
The target is the global model (``options["target_model"]="global"``) or one client's
local model after its last local training (``"client"``: the membership question is then
"is this example in client ``target``'s data").

Scores (higher = member):

* ``loss-threshold`` (Yeom et al. 2018): minus the example's loss on the target.
* ``shadow-models`` (Shokri et al. 2017): a classifier trained on the shadow models'
  outputs (in/out) scores the target's output.
* ``lira-online`` / ``lira-offline``: per-example Gaussians of the logit-scaled confidence
  ``log p_y - log(1 - p_y)`` of IN and OUT shadow models; online is the likelihood ratio,
  offline the one-sided test against the OUT distribution only (global variance, as
  recommended with few shadow models).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from attacks.metrics import membership_metrics, utility_gap
from attacks.registry import Attack, AttackCase, AttackResult, register_attack
from privagg.errors import ConfigurationError

__all__ = [
    "LiRAOffline",
    "LiRAOnline",
    "LossThreshold",
    "MembershipAttack",
    "MembershipResult",
    "MembershipScores",
    "ShadowModels",
    "collect_membership_scores",
    "lira_offline_scores",
    "lira_online_scores",
    "logit_confidence",
    "loss_scores",
    "shadow_model_scores",
]


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Numerically stable ``log p_y - log(1 - p_y)`` from raw logits (``(..., N, K)``, labels ``(N,)``)."""
    z = np.asarray(logits, dtype=np.float64)
    idx = np.asarray(labels, dtype=np.int64)
    zy = np.take_along_axis(z, np.broadcast_to(idx[:, None], (*z.shape[:-1], 1)), axis=-1)[..., 0]
    others = z.copy()
    np.put_along_axis(others, np.broadcast_to(idx[:, None], (*z.shape[:-1], 1)), -np.inf, axis=-1)
    m = others.max(axis=-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(others - m).sum(axis=-1))
    return zy - lse


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    m = z.max(axis=-1, keepdims=True)
    lse = m[..., 0] + np.log(np.exp(z - m).sum(axis=-1))
    zy = np.take_along_axis(z, np.broadcast_to(labels[:, None], (*z.shape[:-1], 1)), axis=-1)[..., 0]
    return lse - zy


@dataclass
class MembershipScores:
    """Outputs of ``K`` models on ``N`` population examples and who was a member of what.

    ``logits``: ``(K, N, C)``; ``labels``: ``(N,)``; ``members``: ``(K, N)`` bool;
    ``accuracies``: per model (train, test) accuracy; ``reference_test_accuracy``: test accuracy
    of undefended models on the same splits (empty when the case has no defense).
    """

    logits: np.ndarray
    labels: np.ndarray
    members: np.ndarray
    train_accuracy: np.ndarray
    test_accuracy: np.ndarray
    description: str = ""
    reference_test_accuracy: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def num_models(self) -> int:
        return int(self.logits.shape[0])


def loss_scores(s: MembershipScores, targets: np.ndarray) -> np.ndarray:
    """Loss threshold: score = -loss on the target model. Shape ``(len(targets), N)``."""
    return -_cross_entropy(s.logits[targets], s.labels)


def _loo_stats(phi: np.ndarray, members: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray]:
    """Per-example IN/OUT means over shadow models (all but ``t``), global IN/OUT std."""
    mask = np.ones(phi.shape[0], dtype=bool)
    mask[t] = False
    p, m = phi[mask], members[mask]
    n_in = m.sum(0)
    n_out = (~m).sum(0)
    mu_in = np.where(n_in > 0, (p * m).sum(0) / np.maximum(n_in, 1), np.nan)
    mu_out = np.where(n_out > 0, (p * ~m).sum(0) / np.maximum(n_out, 1), np.nan)
    res_in = (p - mu_in[None])[m & (n_in > 0)[None]]
    res_out = (p - mu_out[None])[~m & (n_out > 0)[None]]
    sd_in = float(np.std(res_in)) if res_in.size > 1 else 1.0
    sd_out = float(np.std(res_out)) if res_out.size > 1 else 1.0
    return mu_in, mu_out, max(sd_in, 1e-6), max(sd_out, 1e-6), n_in


def lira_online_scores(s: MembershipScores, targets: np.ndarray) -> np.ndarray:
    """LiRA online: ``log N(phi; mu_in, sd_in) - log N(phi; mu_out, sd_out)`` per example."""
    phi = logit_confidence(s.logits, s.labels)
    out = np.empty((len(targets), phi.shape[1]))
    for j, t in enumerate(targets):
        mu_in, mu_out, sd_in, sd_out, _ = _loo_stats(phi, s.members, int(t))
        mu_in = np.where(np.isnan(mu_in), np.nanmean(mu_in), mu_in)
        mu_out = np.where(np.isnan(mu_out), np.nanmean(mu_out), mu_out)
        x = phi[t]
        lin = -0.5 * ((x - mu_in) / sd_in) ** 2 - np.log(sd_in)
        lout = -0.5 * ((x - mu_out) / sd_out) ** 2 - np.log(sd_out)
        out[j] = lin - lout
    return out


def lira_offline_scores(s: MembershipScores, targets: np.ndarray) -> np.ndarray:
    """LiRA offline: how far above the OUT distribution the target's confidence lies.

    One-sided test ``P[OUT >= phi]``; the score is ``log Phi((phi - mu_out)/sd_out)``
    (monotone in the standardised distance, computed stably).
    """
    from scipy.stats import norm

    phi = logit_confidence(s.logits, s.labels)
    out = np.empty((len(targets), phi.shape[1]))
    for j, t in enumerate(targets):
        _, mu_out, _, sd_out, _ = _loo_stats(phi, s.members, int(t))
        mu_out = np.where(np.isnan(mu_out), np.nanmean(mu_out), mu_out)
        out[j] = norm.logcdf((phi[t] - mu_out) / sd_out)
    return out


def _attack_features(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(-1, keepdims=True)
    top = -np.sort(-p, axis=-1)[..., :3]
    conf = logit_confidence(logits, labels)
    ent = -(p * np.log(np.clip(p, 1e-12, 1))).sum(-1)
    onehot = np.eye(num_classes)[labels]
    onehot = np.broadcast_to(onehot, (*z.shape[:-2], *onehot.shape))
    return np.concatenate([top, conf[..., None], ent[..., None], onehot, onehot * conf[..., None]], axis=-1)


def shadow_model_scores(s: MembershipScores, targets: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Shokri et al.: a logistic-regression attack model trained on shadow outputs (in/out)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    k = s.logits.shape[-1]
    feats = _attack_features(s.logits, s.labels, k)  # (K, N, F)
    out = np.empty((len(targets), feats.shape[1]))
    for j, t in enumerate(targets):
        mask = np.ones(s.num_models, dtype=bool)
        mask[t] = False
        xs = feats[mask].reshape(-1, feats.shape[-1])
        ys = s.members[mask].reshape(-1)
        scaler = StandardScaler().fit(xs)
        clf = LogisticRegression(max_iter=500, random_state=seed).fit(scaler.transform(xs), ys)
        out[j] = clf.decision_function(scaler.transform(feats[t]))
    return out


class _ProgressBar:
    """A transient progress bar (rich, like the FedAvg loop's) over the experiment's model trainings."""

    def __init__(self, total: int, description: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._prog = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=True,
        )
        self._prog.start()
        self._task = self._prog.add_task(description, total=total)

    def advance(self) -> None:
        self._prog.update(self._task, advance=1)

    def stop(self) -> None:
        self._prog.stop()


def collect_membership_scores(case: AttackCase, *, progress: bool = False) -> MembershipScores:
    """Train the ``num_models`` federated models of the experiment and record their outputs.

    Options (``case.options``): ``num_models`` (16), ``population`` (400 examples drawn from
    the dataset's train+test pool), ``rounds`` (8), ``local_epochs`` (12), ``lr`` (0.5), ``optimizer`` ("sgd"),
    ``local_batch`` (16), ``target_model`` ("global" | "client"), ``target`` (client id, 0).
    The defense is the case's (``none``, ``dp``, ``secagg``...): the same real aggregator
    the deployment would use trains every model.
    """
    from attacks.scenario import make_run_config
    from protocols.datasets import Dataset, load_dataset
    from protocols.fedavg import FedAvgSimulation
    from protocols.models import set_flat_params
    from protocols.training import TrainConfig, evaluate, predict_logits

    num_models = int(case.option("num_models", 16))
    pop_size = int(case.option("population", 400))
    rounds = int(case.option("rounds", 8))
    target_model = str(case.option("target_model", "global"))
    target = int(case.option("target", 0))
    if num_models < 4:
        raise ConfigurationError("membership inference needs at least 4 models", field="options.num_models")
    if target_model not in ("global", "client"):
        raise ConfigurationError(
            f"unknown target model {target_model!r}", field="options.target_model", accepted=["global", "client"]
        )
    from privagg.randomness import simulation_rng

    base = load_dataset(case.dataset, seed=case.seed)
    x_all = np.concatenate([base.x_train, base.x_test])
    y_all = np.concatenate([base.y_train, base.y_test])
    rng = simulation_rng(case.seed, "membership", "population")
    if pop_size > len(y_all):
        raise ConfigurationError(f"population {pop_size} > {len(y_all)} examples", field="options.population")
    pop = np.sort(rng.choice(len(y_all), pop_size, replace=False))
    x, y = x_all[pop], y_all[pop]
    train_cfg = TrainConfig(
        epochs=int(case.option("local_epochs", 12)),
        batch_size=int(case.option("local_batch", 16)),
        lr=float(case.option("lr", 0.5)),
        optimizer=str(case.option("optimizer", "sgd")),  # type: ignore[arg-type]
    )
    logits = np.empty((num_models, pop_size, base.num_classes), dtype=np.float32)
    members = np.zeros((num_models, pop_size), dtype=bool)
    tr_acc = np.empty(num_models)
    te_acc = np.empty(num_models)

    def train(k: int, c: AttackCase) -> tuple[Any, Any, np.ndarray, np.ndarray]:
        mrng = simulation_rng(case.seed, "membership", "model", k)
        inn = mrng.random(pop_size) < 0.5
        idx_in = np.flatnonzero(inn)
        idx_out = np.flatnonzero(~inn)
        ds = Dataset(
            name=f"{case.dataset}-mia-{k}",
            x_train=x[idx_in],
            y_train=y[idx_in],
            x_test=x[idx_out],
            y_test=y[idx_out],
            num_classes=base.num_classes,
            input_shape=base.input_shape,
            kind=base.kind,
        )
        cfg = make_run_config(
            c.with_(seed=case.seed * 1000 + k),
            train=train_cfg,
            rounds=rounds,
            dp_clip=float(case.option("dp_clip", 1.0)),
        )
        sim = FedAvgSimulation(cfg, dataset=ds)
        sim.run(progress=False)
        model = sim.model
        set_flat_params(model, sim.global_params)
        return model, sim, inn, idx_in

    n_ref = 0 if case.defense == "none" else min(num_models, int(case.option("reference_models", 2)))
    bar = _ProgressBar(num_models + n_ref, f"membership: training {num_models} models") if progress else None
    for k in range(num_models):
        model, sim, inn, idx_in = train(k, case)
        if target_model == "client":
            upd = sim.train_client(target, sim.global_params, round=rounds + 1)
            set_flat_params(model, sim.global_params + upd.delta)
            member_local = np.zeros(pop_size, dtype=bool)
            member_local[idx_in[sim.client_indices[target]]] = True
            members[k] = member_local
        else:
            members[k] = inn
        logits[k] = predict_logits(model, x)
        tr_acc[k] = evaluate(model, x[members[k]], y[members[k]])[0]
        te_acc[k] = evaluate(model, x[~inn], y[~inn])[0]
        if bar is not None:
            bar.advance()
    # the undefended reference: the same splits and training without the defense (utility cost)
    ref_acc = np.empty(n_ref)
    for k in range(n_ref):
        model, _, inn, _ = train(k, case.with_(defense="none"))
        ref_acc[k] = evaluate(model, x[~inn], y[~inn])[0]
        if bar is not None:
            bar.advance()
    if bar is not None:
        bar.stop()
    desc = (
        f"{num_models} FedAvg models ({case.num_clients} clients, {rounds} rounds, defense {case.defense}), "
        f"each trained on a random half of {pop_size} {case.dataset} examples; target: {target_model} model"
    )
    return MembershipScores(
        logits=logits,
        labels=y,
        members=members,
        train_accuracy=tr_acc,
        test_accuracy=te_acc,
        description=desc,
        reference_test_accuracy=ref_acc,
    )


@dataclass(kw_only=True)
class MembershipResult(AttackResult):
    """A membership attack's result with its per-pair ``scores`` and membership ``labels``
    (the ROC curve). ``comparison`` (name -> (scores, labels)) holds every attack scored on
    the same trained models when a runner groups them (one ROC plot of all of them)."""

    scores: np.ndarray = field(repr=False, compare=False)
    labels: np.ndarray = field(repr=False, compare=False)
    target_model: str = "global"
    comparison: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)


class MembershipAttack(Attack):
    """Shared driver: collect scores once per case, score targets, measure."""

    kind: ClassVar[str] = "inference"

    def __init__(self, *, num_targets: int | None = None) -> None:
        self.num_targets = num_targets

    def scores(self, s: MembershipScores, targets: np.ndarray, case: AttackCase) -> np.ndarray:
        raise NotImplementedError

    def evaluate(self, s: MembershipScores, case: AttackCase) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        n_t = self.num_targets or s.num_models
        targets = np.arange(min(n_t, s.num_models))
        sc = self.scores(s, targets, case)
        lb = s.members[targets]
        return membership_metrics(sc.ravel(), lb.ravel()), sc.ravel(), lb.ravel()

    def run(
        self, case: AttackCase, *, progress: bool = False, scores: MembershipScores | None = None
    ) -> MembershipResult:
        t0 = time.perf_counter()
        s = scores if scores is not None else collect_membership_scores(case, progress=progress)
        metrics, sc, lb = self.evaluate(s, case)
        metrics["model_train_accuracy"] = float(np.mean(s.train_accuracy))
        metrics["model_test_accuracy"] = float(np.mean(s.test_accuracy))
        metrics["tpr@1%fpr / fpr"] = metrics["tpr@1%fpr"] / 0.01
        if s.reference_test_accuracy.size:
            metrics.update(utility_gap(metrics["model_test_accuracy"], float(np.mean(s.reference_test_accuracy))))
        target_model = str(case.option("target_model", "global"))
        return MembershipResult(
            attack=self.name,
            case=case,
            metrics=metrics,
            scores=sc,
            labels=lb,
            target_model=target_model,
            data={
                "setting": s.description,
                "target_model": target_model,
                "pairs": int(lb.size),
                "members": int(lb.sum()),
                "threat_model": (
                    "Threat model: anyone holding the trained model (black-box logits) and data from the same "
                    f"distribution for {s.num_models - 1} shadow models; target: the {target_model} model."
                ),
            },
            seconds=time.perf_counter() - t0,
            text=s.description,
        )


@register_attack("loss-threshold")
class LossThreshold(MembershipAttack):
    description = "Loss threshold (Yeom et al. 2018)"

    def scores(self, s: MembershipScores, targets: np.ndarray, case: AttackCase) -> np.ndarray:
        return loss_scores(s, targets)


@register_attack("shadow-models")
class ShadowModels(MembershipAttack):
    description = "Shadow models + attack classifier (Shokri et al. 2017)"

    def scores(self, s: MembershipScores, targets: np.ndarray, case: AttackCase) -> np.ndarray:
        return shadow_model_scores(s, targets, seed=case.seed)


@register_attack("lira-online")
class LiRAOnline(MembershipAttack):
    description = "LiRA online (Carlini et al. 2022): IN/OUT Gaussian likelihood ratio"

    def scores(self, s: MembershipScores, targets: np.ndarray, case: AttackCase) -> np.ndarray:
        return lira_online_scores(s, targets)


@register_attack("lira-offline")
class LiRAOffline(MembershipAttack):
    description = "LiRA offline (Carlini et al. 2022): one-sided test against OUT models only"

    def scores(self, s: MembershipScores, targets: np.ndarray, case: AttackCase) -> np.ndarray:
        return lira_offline_scores(s, targets)

