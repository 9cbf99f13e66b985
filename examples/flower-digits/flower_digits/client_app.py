"""ClientApp: local training on this node's digits partition, behind privagg's mods.

One mod list serves all three modes: each privagg mod only acts on its own messages
(``privagg_secagg_mod`` on secure-aggregation records, ``paillier`` on Paillier records,
``privagg_dp_mod`` on fit instructions that carry DP settings), exactly like swapping in
Flower's ``secaggplus_mod``.
"""

from __future__ import annotations

from typing import Any

from flwr.app import Context
from flwr.client import ClientApp, NumPyClient

from protocols.flower import privagg_secagg_mod
from protocols.flower.dp import privagg_dp_mod
from protocols.flower.paillier import make_paillier_mod

__all__ = ["app"]


class DigitsClient(NumPyClient):  # type: ignore[misc]
    """Data and torch are loaded only when a message needs them (a deployment starts one
    ClientApp process per message; the protocol-only stages stay light)."""

    def __init__(self, pid: int, num_partitions: int, run_config: dict[str, Any]) -> None:
        self.pid = pid
        self.n = num_partitions
        self.cfg = run_config

    def fit(self, parameters: Any, config: Any) -> tuple[list[Any], int, dict[str, Any]]:
        from flower_digits.task import client_data, train

        self.x, self.y = client_data(self.pid, self.n, int(self.cfg.get("seed", 0)))
        rnd = int(config.get("round", 0))
        vec = train(
            str(self.cfg["model"]),
            parameters[0],
            self.x,
            self.y,
            epochs=int(self.cfg["local-epochs"]),
            lr=float(self.cfg["lr"]),
            seed=int(self.cfg.get("seed", 0)) * 100_003 + rnd * 1009 + self.pid,
        )
        return [vec], len(self.x), {}

    def evaluate(self, parameters: Any, config: Any) -> tuple[float, int, dict[str, Any]]:
        from flower_digits.task import client_data, test

        x, _ = client_data(self.pid, self.n, int(self.cfg.get("seed", 0)))
        acc, loss = test(str(self.cfg["model"]), parameters[0])
        return float(loss), len(x), {"accuracy": float(acc)}


def client_fn(context: Context) -> Any:
    pid = int(context.node_config["partition-id"])
    n = int(context.node_config["num-partitions"])
    return DigitsClient(pid, n, dict(context.run_config)).to_client()


app = ClientApp(client_fn=client_fn, mods=[privagg_secagg_mod, make_paillier_mod(), privagg_dp_mod])
