"""ServerApp: FedAvg (legacy strategy API) with privagg's aggregation workflow and DP wrapper.

Switching protection is one line: ``fit_workflow=PrivAggSecAggWorkflow(SecAggWorkflowConfig(...))``
instead of Flower's ``SecAggPlusWorkflow(...)``;
``PrivAggPaillierWorkflow(PaillierWorkflowConfig.from_folder(folder))`` for packed threshold
Paillier. ``PrivAggDPStrategy`` wraps the strategy for client-level DP.
"""

from __future__ import annotations

import time
from logging import WARNING
from typing import Any, Literal

import numpy as np
from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.common.logger import log
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow
from flwr.serverapp import Grid, ServerApp

from flower_digits.task import initial_vector, test
from protocols.flower import PaillierWorkflowConfig, PrivAggSecAggWorkflow, SecAggWorkflowConfig
from protocols.flower.dp import PrivAggDPStrategy
from protocols.flower.paillier import PrivAggPaillierWorkflow
from secagg.params import ThreatModel

__all__ = ["app"]

app = ServerApp()


@app.main()  # type: ignore[misc]
def main(grid: Grid, context: Context) -> None:
    cfg = dict(context.run_config)
    model = str(cfg["model"])
    min_nodes = int(cfg["min-nodes"])
    dp = bool(cfg["dp"])
    mode = str(cfg["aggregation"])

    def evaluate_fn(server_round: int, arrays: list[np.ndarray], config: Any) -> tuple[float, dict[str, Any]]:
        acc, loss = test(model, arrays[0])
        log(WARNING, "round %s: test accuracy %.4f loss %.4f", server_round, acc, loss)
        return float(loss), {"accuracy": float(acc)}

    # wait (bounded) for the federation to connect, then train with whoever is online: a node
    # that dies later must not block the next rounds (FedAvg's min_available_clients would)
    deadline = time.monotonic() + 600.0
    while len(list(grid.get_node_ids())) < min_nodes and time.monotonic() < deadline:
        time.sleep(1.0)
    strategy: Any = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=2,
        min_evaluate_clients=0,
        min_available_clients=2,
        accept_failures=True,
        initial_parameters=ndarrays_to_parameters([initial_vector(model)]),
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=lambda rnd: {"round": rnd},
    )
    timeout = float(cfg.get("secagg-timeout", 0.0)) or None
    weighting: Literal["examples", "uniform"] = "uniform" if dp else "examples"

    def report(rec: Any) -> None:
        log(
            WARNING,
            "privagg round %s: %s, %s survivors, dropped nodes %s, errors %s",
            rec.round,
            "ok" if rec.ok else f"aborted ({rec.abort})",
            len(getattr(rec, "survivors", getattr(rec, "contributors", ()))),
            list(getattr(rec, "dropped", ())),
            sorted(set(rec.node_errors.values())),
        )

    degree, threshold = int(cfg.get("secagg-degree", 0)), int(cfg.get("secagg-threshold", 0))
    if mode == "secagg":
        threat = ThreatModel.parse(str(cfg["privagg-threat"]))
        config = SecAggWorkflowConfig(
            threat=threat,
            dropout_rate=float(cfg["secagg-dropout-rate"]),
            failure_bits=int(cfg["secagg-failure-bits"]),
            degree=degree if degree > 0 else None,  # 0: derived from the cohort, dropout and failure bits
            threshold=threshold if degree > 0 else None,
            clipping_range=8.0,
            weighting=weighting,
            timeout=timeout,
            pki=str(cfg["privagg-pki"]) if threat is ThreatModel.ACTIVE else None,
        )
        workflow: Any = PrivAggSecAggWorkflow(config, round_hook=report)
    elif mode == "paillier":
        paillier = PaillierWorkflowConfig.from_folder(
            str(cfg["privagg-paillier"]), weighting=weighting, timeout=timeout
        )
        workflow = PrivAggPaillierWorkflow(paillier, round_hook=report)
    else:
        workflow = None  # Flower's plain FedAvg fit (no protection), for comparison
    if dp:
        budget = float(cfg.get("dp-budget-epsilon", 0.0))
        # the fewest survivors a round can release with: the budget is checked for them before the secure sum
        # (Paillier: the fewest contributions the decryptors decrypt; the clients' DP mod checks the same floor)
        survivors: Any = None
        if mode == "secagg":
            survivors = lambda n: config.params_for(n).min_survivors(n)  # noqa: E731
        elif mode == "paillier":
            survivors = workflow.material.config.min_clients
        strategy = PrivAggDPStrategy(
            strategy,
            noise_multiplier=float(cfg["dp-noise-multiplier"]),
            clip_norm=float(cfg["dp-clip"]),
            adaptive=bool(cfg["dp-adaptive"]),
            budget_epsilon=budget if budget > 0 else None,
            min_survivors=survivors,
        )
    lctx = LegacyContext(
        context=context, config=ServerConfig(num_rounds=int(cfg["num-server-rounds"])), strategy=strategy
    )
    DefaultWorkflow(fit_workflow=workflow)(grid, lctx)
    if dp:
        log(WARNING, "privacy ledger: %s", strategy.ledger.rows())
