"""Small Flower apps for tests and benchmarks: clients whose "training" returns a known vector.

:func:`vector_client_app` builds a ClientApp whose ``fit`` returns one float vector drawn
from a seeded simulation stream ``(seed, round, partition-id)``, so the server-side test can
recompute the plain mean of exactly the clients that survived (its ``evaluate`` answers the squared
distance of the model to that vector, its ``get_parameters`` the vector: what a server learns from them).
:func:`dropout_mod` makes chosen partitions fail at the start of a chosen protocol stage (mid-round dropout: the
engine turns the exception into an error reply, the workflow counts the node as dropped).
:func:`vector_server_app` runs ``rounds`` rounds of a legacy FedAvg strategy with the
given fit workflow (privagg's or Flower's). Everything here is importable by Ray actors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType

from privagg.randomness import simulation_rng

__all__ = [
    "client_vector",
    "expected_mean",
    "dropout_mod",
    "send_metrics_mod",
    "vector_client_app",
    "vector_server_app",
]


def client_vector(seed: int, rnd: int, pid: int, dimension: int) -> np.ndarray:
    """The vector partition ``pid`` contributes in round ``rnd`` (float32, N(0, 1))."""
    return simulation_rng(seed, "flower-vector", rnd, pid).standard_normal(dimension).astype(np.float32)


def expected_mean(seed: int, rnd: int, pids: Iterable[int], dimension: int) -> np.ndarray:
    vs = [client_vector(seed, rnd, p, dimension).astype(np.float64) for p in pids]
    return np.mean(vs, axis=0)


def dropout_mod(
    *, partitions: Iterable[int], stage: str, record: str = "privagg_secagg", stage_key: str = "stage"
) -> Callable[[Message, Context, Callable[[Message, Context], Message]], Message]:
    """A mod that raises for ``partitions`` when a message of protocol ``stage`` arrives."""
    drop = frozenset(int(p) for p in partitions)

    def mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        if msg.metadata.message_type == MessageType.TRAIN and int(ctxt.node_config.get("partition-id", -1)) in drop:
            cfg = msg.content.config_records.get(record)
            if cfg is not None and cfg.get(stage_key) == stage:
                raise RuntimeError(f"simulated dropout at stage {stage}")
        return call_next(msg, ctxt)

    return mod


def send_metrics_mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """A node's own opt-in to sending its ``FitRes`` metrics in the clear (``SEND_METRICS_KEY`` in its
    ``node_config``; :func:`protocols.flower._fit_round.clear_fit_metadata`): benchmarks and tests whose
    clients report their partition id, to recompute the survivors' plain mean. Put it first in the mods."""
    from ._fit_round import SEND_METRICS_KEY

    ctxt.node_config[SEND_METRICS_KEY] = True
    return call_next(msg, ctxt)


def vector_client_app(*, dimension: int, seed: int, mods: Sequence[Any] = (), num_examples: int = 1000) -> Any:
    from flwr.client import ClientApp, NumPyClient

    class VectorClient(NumPyClient):  # type: ignore[misc]
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def fit(self, parameters: Any, config: Any) -> tuple[list[np.ndarray], int, dict[str, Any]]:
            rnd = int(config.get("round", 0))
            dim = int(config.get("dimension", dimension))
            return [client_vector(seed, rnd, self.pid, dim)], num_examples, {"pid": self.pid}

        def evaluate(self, parameters: Any, config: Any) -> tuple[float, int, dict[str, Any]]:
            """The loss of the model against this node's vector of round ``config["round"]`` (squared distance)."""
            x = client_vector(seed, int(config.get("round", 0)), self.pid, int(config.get("dimension", dimension)))
            loss = float(np.sum((np.asarray(parameters[0], dtype=np.float64) - x) ** 2))
            return loss, num_examples, {"pid": self.pid}

        def get_parameters(self, config: Any) -> list[np.ndarray]:
            """The model this node holds: its vector of round ``config["round"]`` (a stateful client's last fit)."""
            rnd, dim = int(config.get("round", 0)), int(config.get("dimension", dimension))
            return [client_vector(seed, rnd, self.pid, dim)]

    def client_fn(context: Context) -> Any:
        return VectorClient(int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn, mods=list(mods))


def vector_server_app(
    fit_workflow: Callable[[Any, Any], None],
    *,
    num_clients: int,
    dimension: int,
    rounds: int = 1,
    dimension_of_round: Callable[[int], int] | None = None,
    wrap_strategy: Callable[[Any], Any] | None = None,
    reset_model: bool = True,
    evaluate: bool = False,
) -> Any:
    """A ServerApp: ``rounds`` rounds of FedAvg over all ``num_clients`` nodes with ``fit_workflow``.

    ``wrap_strategy(fedavg)`` may wrap the strategy (e.g. with DP); ``reset_model`` resets the
    global model to zeros before every round (benchmarks: the broadcast stays small); ``evaluate``
    sends every node an evaluate message after each round (Flower's federated evaluation).
    """
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow
    from flwr.serverapp import Grid, ServerApp

    dim_of = dimension_of_round or (lambda rnd: dimension)
    app = ServerApp()

    @app.main()  # type: ignore[misc]
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_fit=1.0,
            fraction_evaluate=1.0 if evaluate else 0.0,
            min_fit_clients=num_clients,
            min_evaluate_clients=num_clients if evaluate else 0,
            min_available_clients=num_clients,
            accept_failures=True,
            initial_parameters=ndarrays_to_parameters([np.zeros(dim_of(1), dtype=np.float32)]),
            on_fit_config_fn=lambda rnd: {"round": rnd, "dimension": dim_of(rnd)},
            on_evaluate_config_fn=lambda rnd: {"round": rnd, "dimension": dim_of(rnd)},
        )
        if wrap_strategy is not None:
            strategy = wrap_strategy(strategy)
        lctx = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)

        def fit(grid_: Grid, ctx: Any) -> None:
            # keep the broadcast model at this round's dimension (benchmarks change it per round)
            from flwr.compat.common import recorddict_compat as compat
            from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
            from flwr.server.workflow.constant import Key as WorkflowKey

            rnd = int(ctx.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
            if reset_model:
                ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                    ndarrays_to_parameters([np.zeros(dim_of(rnd), dtype=np.float32)]), True
                )
            fit_workflow(grid_, ctx)

        DefaultWorkflow(fit_workflow=fit)(grid, lctx)

    return app
