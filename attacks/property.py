"""Property inference from a client's update (Melis et al. 2019, "Exploiting Unintended
Feature Leakage in Collaborative Learning").

Question: does this client's local data contain examples of class ``c``? The attacker holds
auxiliary data from the same distribution (the dataset's test split, disjoint from every
client's data), computes updates of the current global model on auxiliary client datasets
with and without the property, and trains a binary classifier (logistic regression) on
those updates. It then scores what it observes for each target client: the client's own
update (no defense), or only the secure / DP aggregate of the round that contains it.
Metric: ROC AUC over target clients (half of them have the property) with its 95% interval
(Hanley-McNeil); the default 600 targets keep the half-width at or below 0.05. Beside it, the
utility of what the defense releases: the test accuracy of the global model after the released
aggregate, against the plain mean of the same cohort (the undefended release), so a defense is
only called effective when it costs at most 5 points.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from attacks.metrics import auc_interval_metrics, membership_metrics, roc_auc, utility_gap
from attacks.registry import Attack, AttackCase, AttackResult, register_attack
from privagg.errors import ConfigurationError

__all__ = ["PropertyInference", "sample_client_data"]


def sample_client_data(
    x: np.ndarray,
    y: np.ndarray,
    *,
    size: int,
    prop_class: int,
    has_property: bool,
    min_count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """A client dataset of ``size`` examples; with the property it holds >= ``min_count`` of ``prop_class``,
    without it none."""
    is_c = y == prop_class
    others = np.flatnonzero(~is_c)
    if has_property:
        pos = np.flatnonzero(is_c)
        k = int(rng.integers(min_count, max(min_count, size // 4) + 1))
        idx = np.r_[rng.choice(pos, k, replace=False), rng.choice(others, size - k, replace=False)]
    else:
        idx = rng.choice(others, size, replace=False)
    idx = rng.permutation(idx)
    return x[idx], y[idx]


@register_attack("property-inference")
class PropertyInference(Attack):
    """Melis et al.: classify "contains class c" from the observed update.

    Options (``case.options``): ``property_class`` (0), ``client_size`` (32 examples),
    ``min_count`` (1), ``aux_updates`` (200), ``targets`` (600: AUC half-width <= 0.05),
    ``utility_rounds`` (20: released aggregates whose model accuracy is measured),
    ``pretrain_epochs`` (2: the global model is trained centrally on auxiliary data first, as
    after a few rounds).
    """

    kind: ClassVar[str] = "inference"
    description = "Property inference from updates (Melis et al. 2019): does the client hold class c"

    def run(self, case: AttackCase, *, progress: bool = False) -> AttackResult:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        from attacks.scenario import fresh_aggregator, make_run_config
        from privagg.randomness import simulation_rng, torch_generator
        from protocols.aggregation import ClientUpdate, RoundContext
        from protocols.fedavg import FedAvgSimulation
        from protocols.models import get_flat_params, set_flat_params
        from protocols.training import TrainConfig, evaluate, train_local

        t0 = time.perf_counter()
        exposed = case.defense_spec.exposes_updates
        c = int(case.option("property_class", 0))
        size = int(case.option("client_size", 32))
        min_count = int(case.option("min_count", 1))
        n_aux = int(case.option("aux_updates", 200))
        n_tgt = int(case.option("targets", 600))
        n_util = int(case.option("utility_rounds", 20))
        train = TrainConfig(
            epochs=1, batch_size=int(case.option("local_batch", size)), lr=float(case.option("lr", 0.1))
        )
        cfg = make_run_config(case, train=train, rounds=1, dp_clip=float(case.option("dp_clip", 1.0)))
        sim = FedAvgSimulation(cfg)
        ds = sim.dataset
        if not 0 <= c < ds.num_classes:
            raise ConfigurationError(f"class {c} not in 0..{ds.num_classes - 1}", field="options.property_class")
        # The global model: a few epochs on auxiliary data (the model mid-training).
        model = sim.model
        set_flat_params(model, sim.global_params)
        pre = int(case.option("pretrain_epochs", 2))
        if pre:
            train_local(
                model,
                ds.x_test,
                ds.y_test,
                TrainConfig(epochs=pre, batch_size=32, lr=0.1),
                generator=torch_generator(case.seed, "property", "pretrain"),
            )
        gp = get_flat_params(model)
        rng = simulation_rng(case.seed, "property")

        def update(x: np.ndarray, y: np.ndarray, cid: int) -> ClientUpdate:
            return sim.train_client(cid, gp, x=x, y=y, round=1)

        # Attacker's training set: updates on auxiliary data, with and without the property.
        aux_y = (np.arange(n_aux) % 2).astype(bool)
        aux_x = np.stack(
            [
                update(
                    *sample_client_data(
                        ds.x_test,
                        ds.y_test,
                        size=size,
                        prop_class=c,
                        has_property=bool(p),
                        min_count=min_count,
                        rng=rng,
                    ),
                    0,
                ).delta
                for p in aux_y
            ]
        )
        scaler = StandardScaler().fit(aux_x)
        clf = LogisticRegression(max_iter=1000, C=1.0, random_state=case.seed).fit(scaler.transform(aux_x), aux_y)

        # Targets: clients drawn from the training split; each round has num_clients clients.
        tgt_y = (rng.permutation(n_tgt) % 2).astype(bool)
        observed = []
        released_acc: list[float] = []
        plain_acc: list[float] = []
        for j, p in enumerate(tgt_y):
            xs, ys = sample_client_data(
                ds.x_train, ds.y_train, size=size, prop_class=c, has_property=bool(p), min_count=min_count, rng=rng
            )
            target_update = update(xs, ys, 0)
            if exposed:
                observed.append(target_update.delta)
                continue
            cohort = [target_update]
            for cid in range(1, case.num_clients):
                xo, yo = sample_client_data(
                    ds.x_train,
                    ds.y_train,
                    size=size,
                    prop_class=c,
                    has_property=bool(rng.random() < 0.5),
                    min_count=min_count,
                    rng=rng,
                )
                cohort.append(update(xo, yo, cid))
            ctx = RoundContext(
                round=j + 1,
                population=case.num_clients,
                sampled=tuple(range(case.num_clients)),
                sampling="fixed",
                sampling_rate=1.0,
                rng=simulation_rng(case.seed, "agg", j),
                global_params=gp,
            )
            # each target is a separate one-round deployment (a fresh DP budget per observation)
            agg = fresh_aggregator(case, rounds=1, dp_clip=float(case.option("dp_clip", 1.0)), stream=j + 1)
            observed.append(agg.aggregate(cohort, ctx).delta)
            if j < n_util:  # utility: the released model vs the plain mean of the same cohort
                for acc, delta in (
                    (released_acc, observed[-1]),
                    (plain_acc, np.mean([u.delta for u in cohort], axis=0)),
                ):
                    set_flat_params(model, gp + np.asarray(delta))
                    acc.append(evaluate(model, ds.x_test, ds.y_test)[0])
        scores = clf.decision_function(scaler.transform(np.stack(observed)))
        metrics: dict[str, Any] = {"auc": roc_auc(scores, tgt_y)}
        metrics.update(auc_interval_metrics(metrics["auc"], tgt_y))
        set_flat_params(model, gp)
        metrics["model_test_accuracy"] = evaluate(model, ds.x_test, ds.y_test)[0]
        if released_acc:
            metrics["released_model_accuracy"] = float(np.mean(released_acc))
            metrics.update(utility_gap(metrics["released_model_accuracy"], float(np.mean(plain_acc))))
        mm = membership_metrics(scores, tgt_y)
        metrics["accuracy"] = mm["accuracy"]
        metrics["aux_train_auc"] = roc_auc(clf.decision_function(scaler.transform(aux_x)), aux_y)
        return AttackResult(
            attack=self.name,
            case=case,
            metrics=metrics,
            data={
                "threat_model": (
                    "Threat model: honest-but-curious server with auxiliary data from the same distribution; it "
                    + ("sees each target's own update." if exposed else f"sees only the {case.defense} aggregate of "
                       f"the target with {case.num_clients - 1} other clients.")
                ),
                "property": f"client data contains class {c}",
                "targets": n_tgt,
                "aux_updates": n_aux,
                "client_size": size,
            },
            seconds=time.perf_counter() - t0,
            text=(
                f"Attack classifier trained on {n_aux} auxiliary updates; {n_tgt} target clients of {size} "
                f"examples, half holding class {c}. Observation: "
                + (
                    "each target's own update."
                    if exposed
                    else f"the {case.defense} aggregate of the target with {case.num_clients - 1} other clients."
                )
            ),
        )
