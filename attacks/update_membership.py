"""Membership inference on updates: was this example in the client's training data this round?

Threat model: honest-but-curious server that knows the global model it sent and observes the
round's update — the target client's own (no defense) or only the released aggregate (secure /
DP aggregation). The score of a candidate example ``z`` is how much the observed update lowers
its loss: ``loss(z; w) - loss(z; w + delta)``. An example a client trained on this round is
pulled down more than one it never saw. Candidates: the target client's local examples
(members) and as many examples from outside the federation (non-members, the test split).
Under aggregation the question the attacker answers is "did someone in this cohort train on
``z``" — still membership, of the cohort; the target's own members are the positives.

Each client in turn is the target (one round each), so the AUC has ``num_clients *
2 * client_size`` pairs; its 95% interval is Hanley-McNeil. Beside it: the test accuracy of
the released model and of the plain mean of the same cohort (the defense's utility cost).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from attacks.metrics import auc_interval_metrics, membership_metrics, utility_gap
from attacks.registry import Attack, AttackCase, AttackResult, register_attack
from privagg.errors import ConfigurationError

__all__ = ["UpdateMembership", "loss_drop_scores"]


def loss_drop_scores(model: Any, before: np.ndarray, after: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example ``loss(before) - loss(after)`` (cross-entropy) of ``model`` with flat parameters."""
    import torch

    from protocols.models import set_flat_params

    xt, yt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(np.asarray(y))
    out = []
    for params in (before, after):
        set_flat_params(model, params)
        with torch.no_grad():
            out.append(torch.nn.functional.cross_entropy(model(xt), yt, reduction="none").double().numpy())
    return np.asarray(out[0] - out[1])


@register_attack("update-membership")
class UpdateMembership(Attack):
    """Loss-drop membership inference from the observed update (or aggregate).

    Case options: ``client_size`` (32 local examples), ``local_epochs`` (1), ``local_batch``
    (8), ``lr`` (0.1), ``pretrain_rounds`` (3 plain FedAvg rounds first: a model mid-training).
    """

    kind: ClassVar[str] = "inference"
    description = "Membership inference on updates: the update's loss drop on a candidate example"

    def run(self, case: AttackCase, *, progress: bool = False) -> AttackResult:
        from attacks.scenario import make_run_config
        from privagg.randomness import simulation_rng
        from protocols.aggregation import RoundContext
        from protocols.fedavg import FedAvgSimulation
        from protocols.models import set_flat_params
        from protocols.training import TrainConfig, evaluate

        t0 = time.perf_counter()
        size = int(case.option("client_size", 32))
        lr = float(case.option("lr", 0.1))
        train = TrainConfig(
            epochs=int(case.option("local_epochs", 1)), batch_size=int(case.option("local_batch", 8)), lr=lr
        )
        if size < 2:
            raise ConfigurationError("must be >= 2", field="options.client_size")
        cfg = make_run_config(case, train=train, dp_clip=float(case.option("dp_clip", 1.0)))
        sim = FedAvgSimulation(cfg)
        pre = int(case.option("pretrain_rounds", 3))
        if pre:
            warm = FedAvgSimulation(
                make_run_config(case.with_(defense="none"), train=TrainConfig(batch_size=32), rounds=pre)
            )
            warm.run()
            sim.global_params = warm.global_params.copy()
        gp = sim.global_params.copy()
        ds = sim.dataset
        n = case.num_clients
        rng = simulation_rng(case.seed, "update-membership")
        local = []
        for cid in range(n):
            x, y = sim.client_data(cid)
            if len(y) < size:
                raise ConfigurationError(f"client {cid} has only {len(y)} examples", field="options.client_size")
            pick = rng.choice(len(y), size, replace=False)
            local.append((x[pick], y[pick]))
        exposed = case.defense_spec.exposes_updates
        model = sim.model
        scores, labels = [], []
        released_acc: list[float] = []
        plain_acc: list[float] = []
        for r, target in enumerate(range(n), start=1):
            updates = [sim.train_client(c, gp, x=local[c][0], y=local[c][1], round=r) for c in range(n)]
            if exposed:
                delta = np.asarray(updates[target].delta)
            else:
                from attacks.scenario import fresh_aggregator

                ctx = RoundContext(
                    round=r,
                    population=n,
                    sampled=tuple(range(n)),
                    sampling="fixed",
                    sampling_rate=1.0,
                    rng=simulation_rng(case.seed, "update-membership", "aggregation", r),
                    global_params=gp,
                )
                agg = fresh_aggregator(case, rounds=1, dp_clip=float(case.option("dp_clip", 1.0)), stream=r)
                delta = np.asarray(agg.aggregate(updates, ctx).delta)
                for acc, d in ((released_acc, delta), (plain_acc, np.mean([u.delta for u in updates], axis=0))):
                    set_flat_params(model, gp + d)
                    acc.append(evaluate(model, ds.x_test, ds.y_test)[0])
            out_idx = rng.choice(len(ds.y_test), size, replace=False)
            xs = np.concatenate([local[target][0], ds.x_test[out_idx]])
            ys = np.concatenate([local[target][1], ds.y_test[out_idx]])
            scores.append(loss_drop_scores(model, gp, gp + delta, xs, ys))
            labels.append(np.r_[np.ones(size, dtype=bool), np.zeros(size, dtype=bool)])
        sc, lb = np.concatenate(scores), np.concatenate(labels)
        metrics: dict[str, Any] = membership_metrics(sc, lb)
        metrics.update(auc_interval_metrics(metrics["auc"], lb))
        set_flat_params(model, gp)
        metrics["model_test_accuracy"] = evaluate(model, ds.x_test, ds.y_test)[0]
        if released_acc:
            metrics["released_model_accuracy"] = float(np.mean(released_acc))
            metrics.update(utility_gap(metrics["released_model_accuracy"], float(np.mean(plain_acc))))
        obs = "each target's own update" if exposed else f"only the {case.defense} aggregate of all {n} clients"
        threat = (
            f"Threat model: honest-but-curious server; knows the global model it sent and observes {obs} "
            f"({train.epochs} local epoch(s), batch {train.batch_size}, {size} examples per client)."
            + ("" if exposed else " Positives are members of the cohort's data (the target's).")
        )
        return AttackResult(
            attack=self.name,
            case=case,
            metrics=metrics,
            data={"threat_model": threat, "pairs": int(lb.size)},
            seconds=time.perf_counter() - t0,
            text=(
                f"{threat} AUC {metrics['auc']:.3f} (95% CI {metrics['auc_ci_low']:.3f}.."
                f"{metrics['auc_ci_high']:.3f}) over {lb.size} candidate examples "
                f"({n} targets)."
            ),
        )
