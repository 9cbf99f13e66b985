"""Disaggregation over rounds (Lam et al. 2021, "Gradient Disaggregation"): secure aggregation
hides a client's update in one round, not across rounds.

Threat model: honest-but-curious server. It runs the protocol, so it knows who took part in
each round (the participant list of every secure-aggregation round) and it sees each
round's aggregate. Every round a cohort of ``cohort`` of the ``num_clients`` clients takes one
FedSGD step on its own fixed local batch; the updates go through the case's real aggregator.
Each round's sum is ``S_r = sum_{i in P_r} u_{i,r}``. If a client's update changes slowly
between rounds (``u_{i,r} ~ u_i``), the participation matrix ``A`` (rounds x clients) gives
``S = A U`` and least squares recovers every client's update once ``A`` has full column rank
— with enough rounds, always. ``freeze_model=True`` (a malicious server resends the same model)
makes ``u_{i,r} = u_i`` exact; by default the model trains, so the updates drift and the
estimate is their average.

A target round's update counts as recovered when the estimate is within 10% relative L2
error of it (:data:`RECOVERED_RELATIVE_ERROR`). With one image per client, the recovered
update is then inverted in closed form through the first layer (``target_image_psnr``).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from attacks.metrics import psnr
from attacks.registry import Attack, AttackCase, AttackResult, register_attack
from privagg.errors import ConfigurationError

__all__ = ["RECOVERED_RELATIVE_ERROR", "Disaggregation", "disaggregate", "participation_matrix"]

#: relative L2 error up to which a round's update counts as recovered
RECOVERED_RELATIVE_ERROR = 0.1


def participation_matrix(participants: list[tuple[int, ...]], num_clients: int) -> np.ndarray:
    """Rounds x clients 0/1 matrix: who took part in which round."""
    a = np.zeros((len(participants), num_clients))
    for r, ids in enumerate(participants):
        a[r, list(ids)] = 1.0
    return a


def disaggregate(a: np.ndarray, sums: np.ndarray, target: int) -> tuple[np.ndarray, bool]:
    """Least-squares estimate of client ``target``'s (constant) update from per-round sums ``a @ U``,
    and whether it is identifiable (the target's unit vector lies in the row space of ``a``)."""
    a = np.asarray(a, dtype=np.float64)
    if not 0 <= target < a.shape[1]:
        raise ConfigurationError(f"target {target} is not a client", field="options.target")
    u, *_ = np.linalg.lstsq(a, np.asarray(sums, dtype=np.float64), rcond=None)
    e = np.zeros(a.shape[1])
    e[target] = 1.0
    proj = np.linalg.pinv(a) @ (a @ e)  # projection of e onto the row space of a
    return u[target], bool(np.linalg.norm(proj - e) < 1e-6)


@register_attack("disaggregation")
class Disaggregation(Attack):
    """Recover a target's per-round updates from secure aggregates of many rounds (Lam et al. 2021).

    Hyper-parameter: ``freeze_model`` (False; True: the server resends the round-1 model every
    round, which needs a malicious server). Case options: ``rounds`` (20), ``cohort``
    (``num_clients // 2``), ``lr`` (0.1), ``target`` (0). Images per client:
    ``case.batch_size``. ``success``: at least half of the target's participation rounds recovered.
    """

    kind: ClassVar[str] = "inference"
    description = "Disaggregation over rounds (Lam et al. 2021): least squares on the participation pattern"

    def __init__(self, *, freeze_model: bool = False) -> None:
        self.freeze_model = bool(freeze_model)

    def supports(self, case: AttackCase) -> bool:
        return not self.freeze_model or case.adversary.server == "malicious"

    def run(self, case: AttackCase, *, progress: bool = False) -> AttackResult:
        from attacks.reconstruction import linear_leakage
        from attacks.scenario import make_run_config, unflatten
        from privagg.randomness import simulation_rng
        from protocols.aggregation import RoundContext
        from protocols.fedavg import FedAvgSimulation
        from protocols.models import set_flat_params
        from protocols.training import TrainConfig

        t0 = time.perf_counter()
        rounds = int(case.option("rounds", 20))
        n = case.num_clients
        cohort = int(case.option("cohort", n // 2 if case.population is None else case.cohort_size))
        lr = float(case.option("lr", 0.1))
        target = int(case.option("target", 0))
        freeze = self.freeze_model
        if freeze and case.adversary.server != "malicious":
            raise ConfigurationError("resending a frozen model needs a malicious server", field="adversary.server")
        if rounds < 1 or not 3 <= cohort <= n:
            raise ConfigurationError("need rounds >= 1 and 3 <= cohort <= num_clients", field="options")
        cfg = make_run_config(case, train=TrainConfig(epochs=1, batch_size=case.batch_size, lr=lr), rounds=rounds)
        sim = FedAvgSimulation(cfg)
        rng = simulation_rng(case.seed, "disaggregation")
        batches = []
        for cid in range(n):
            x, y = sim.client_data(cid)
            pick = np.sort(rng.choice(len(y), case.batch_size, replace=False))
            batches.append((x[pick], y[pick]))
        gp = sim.global_params.copy()
        # distributed DP is accounted for Poisson sampling only; population mode samples Poisson cohorts of its rate
        poisson = case.defense_spec.sampling == "poisson" or case.population is not None
        participants: list[tuple[int, ...]] = []
        sums, truth = [], []
        for r in range(1, rounds + 1):
            if poisson:  # a Poisson cohort of rate cohort / n
                chosen = tuple(int(c) for c in np.flatnonzero(rng.random(n) < cohort / n))
            else:
                chosen = tuple(sorted(int(c) for c in rng.choice(n, cohort, replace=False)))
            updates = [sim.train_client(c, gp, x=batches[c][0], y=batches[c][1], round=r) for c in chosen]
            ctx = RoundContext(
                round=r,
                population=n,
                sampled=chosen,
                sampling="poisson" if poisson else "fixed",
                sampling_rate=cohort / n,
                rng=simulation_rng(case.seed, "disaggregation", "aggregation", r),
                global_params=gp,
            )
            res = sim.aggregator.aggregate(updates, ctx)
            part = tuple(sorted(int(c) for c in res.participants))
            participants.append(part)
            # the mean of equal-weight updates times the count (Poisson DP: the sum over the fixed denominator q n)
            sums.append(np.asarray(res.delta) * (cohort if poisson else len(part)))
            truth.append({u.client_id: np.asarray(u.delta) for u in updates})
            if not freeze:
                gp = gp + np.asarray(res.delta)
        a = participation_matrix(participants, n)
        est, identifiable = disaggregate(a, np.stack(sums), target)
        if case.defense_spec.exposes_updates:  # nothing hides the updates: the server reads each one
            identifiable = True
            errs = [0.0 for t in truth if target in t]
            mine = [t[target] for t in truth if target in t]
            est = mine[0] if mine else est
        else:
            errs = [
                float(np.linalg.norm(est - t[target])) / max(float(np.linalg.norm(t[target])), 1e-12)
                for t in truth
                if target in t
            ]
        hit = [e <= RECOVERED_RELATIVE_ERROR for e in errs]
        metrics: dict[str, Any] = {
            "rounds": float(rounds),
            "target_rounds": float(len(errs)),
            "identifiable": float(identifiable),
            "rank": float(np.linalg.matrix_rank(a)),
            "fraction_recovered": float(np.mean(hit)) if hit else 0.0,
            "relative_error_median": float(np.median(errs)) if errs else float("nan"),
        }
        if case.batch_size == 1 and case.run.model.name == "mlp":
            model = sim.model
            set_flat_params(model, sim.global_params)  # the model of round 1, for the closed-form inversion
            grads = unflatten(model, -est / lr)
            rec = linear_leakage(model, grads, input_shape=tuple(sim.dataset.input_shape), labels=batches[target][1])
            metrics["target_image_psnr"] = psnr(batches[target][0], rec.x)
        threat = (
            f"Threat model: honest-but-curious server; knows each round's participants (it runs the protocol) "
            f"and sees only the {case.defense} aggregate of {cohort} of {n} clients per round, over {rounds} rounds"
            + (" (it resends the same model: malicious)" if freeze else " (the model trains between rounds)")
            + "."
        )
        return AttackResult(
            attack=self.name,
            case=case,
            metrics=metrics,
            data={"threat_model": threat, "relative_errors": [round(e, 4) for e in errs], "freeze_model": freeze},
            success=bool(metrics["fraction_recovered"] >= 0.5),
            seconds=time.perf_counter() - t0,
            text=(
                f"{threat} Participation matrix rank {int(metrics['rank'])}/{n}; the target's update is "
                f"{'identifiable' if identifiable else 'not identifiable'}. Recovered "
                f"{sum(hit)}/{len(errs)} of its participation rounds (relative error <= "
                f"{RECOVERED_RELATIVE_ERROR:g})."
            ),
        )
