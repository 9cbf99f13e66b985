"""ClientApp: local training on this node's digits partition, behind privagg's mods.

One mod list serves all three modes: each privagg mod only acts on its own messages
(``privagg_secagg_mod`` on secure-aggregation records, ``paillier`` on Paillier records,
``privagg_dp_mod`` on fit instructions that carry DP settings), exactly like swapping in
Flower's ``secaggplus_mod``.

What protects a node against the server is the node's own: its threat mode, PKI and Paillier folders
(trust roots), Paillier role and DP policy come from its ``node_config`` (``flower-supernode --node-config
...``), never from the run config, which the server side writes. :data:`NODE_DEFAULTS` fills the keys a
node left out. In active mode (the default) a node joins a secure-aggregation round only under its own policy
(``privagg-secagg-min-clients``, ``privagg-secagg-corruption-rate``) and answers only inside a secure round: a plain fit
(``aggregation = "plain"``), an evaluate or a get-parameters message is refused unless the node itself sets
``privagg-secure-only = false`` (the comparison run without protection).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import Context, Message
from flwr.client import ClientApp, NumPyClient

from protocols.flower import privagg_secagg_mod
from protocols.flower.dp import privagg_dp_mod
from protocols.flower.paillier import make_paillier_mod

__all__ = ["NODE_DEFAULTS", "app", "node_defaults"]

#: this node's own settings where its node config has none (``--node-config`` overrides each): the PKI and
#: Paillier folders ``provision`` wrote, which partitions are Paillier decryptors in simulation (a deployed
#: decryptor sets ``privagg-paillier-decryptor=<i>`` instead), the DP policy (it refuses a server asking
#: for less noise or more noise shares) and the secure-aggregation policy an active node needs (it refuses to
#: run without one): the smallest cohort and roster it joins, and the fraction of colluding clients it assumes.
#: 12 clients are too few to protect against a colluder (``SecAggParams.derive`` finds no graph at 2^-40 against
#: one in twelve), so this demo assumes none: with ``corruption-rate = 0`` a node accepts any valid graph of
#: 12 or more clients (degree 2 / threshold 2 included). A deployment that assumes ``C`` colluders sets a rate
#: ``> 0`` and ``min-clients >= C / rate``. The threat mode defaults to active; a semi-honest node sets
#: ``privagg-threat`` itself, and a node that takes part in ``aggregation = "plain"`` runs sets
#: ``privagg-secure-only`` to false itself.
NODE_DEFAULTS: dict[str, Any] = {
    "privagg-pki": "/tmp/privagg-flower-digits",
    "privagg-paillier": "/tmp/privagg-flower-digits",
    "privagg-paillier-decryptors": "0,1,2",
    "privagg-dp-min-noise-multiplier": 0.3,
    "privagg-dp-max-shares": 12,
    "privagg-secagg-min-clients": 12,
    "privagg-secagg-corruption-rate": 0.0,
}


def node_defaults(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Fill :data:`NODE_DEFAULTS` into the node's own config (keys it set win) before privagg's mods read it."""
    for key, value in NODE_DEFAULTS.items():
        ctxt.node_config.setdefault(key, value)
    return call_next(msg, ctxt)


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


app = ClientApp(client_fn=client_fn, mods=[node_defaults, privagg_secagg_mod, make_paillier_mod(), privagg_dp_mod])
