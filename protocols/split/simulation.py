"""The in-memory driver of split learning: configuration, the training loop, byte counts, taps.

:func:`run_split` trains a model cut between clients and a server on a registered dataset:

- ``mode="vanilla"``: the server holds the top layers and the labels (by example id; they
  never travel); the clients hold the first ``cut`` layers;
- ``mode="u-shaped"``: the clients also keep the head (``model[head_cut:]``) and the labels;
  the server holds only the middle;
- ``topology="single"``: one client; ``"sequential"``: the clients take turns, each training
  on all its data for an epoch and handing the client part to the next (the hand-over is
  counted); ``"splitfed"``: every client runs its steps in parallel against the one server
  part, and after each epoch the client parts are averaged (FedAvg, weights = data sizes;
  uploads and downloads counted).

Every message goes through its binary codec (:mod:`protocols.split.messages`) and is
decoded by the receiver, so the byte counts are those of real encodings. *Taps* see every
message with its sender and receiver (the attacks of :mod:`attacks.split` watch through
them). The data are partitioned IID with the same stream as :class:`protocols.fedavg.FedAvgSimulation`,
so :func:`fedavg_baseline` trains FedAvg on exactly the same clients.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng, torch_generator
from protocols.datasets import Dataset, load_dataset
from protocols.models import build_model
from protocols.partition import partition
from protocols.split.defenses import GradientDefense, build_gradient_defense
from protocols.split.messages import Message, decode, encode
from protocols.split.parties import SplitClient, SplitServer, split_layers
from protocols.training import TrainConfig, batch_order, evaluate

__all__ = [
    "ByteCounts",
    "SplitConfig",
    "SplitModel",
    "SplitRunResult",
    "Tap",
    "client_partition",
    "fedavg_baseline",
    "run_split",
]

Tap = Callable[[str, str, Message], None]
"""``tap(sender, receiver, message)``: sees every message of a run (``"client 3"``, ``"server"``)."""


@dataclass(frozen=True)
class SplitConfig:
    """One split-learning run. ``cut``: modules in the client part (default: everything up to the
    last hidden layer's activation, so the server holds the logit layer); ``head_cut`` (U-shaped):
    where the client's head starts (default: the last module). ``defense``/``defense_options``
    name the label party's gradient defense; ``nopeek`` weights the clients' distance-correlation loss."""

    dataset: str = "breast-cancer"
    model: str = "mlp"
    hidden: tuple[int, ...] = (32, 16)
    cut: int = 5
    head_cut: int | None = None
    mode: Literal["vanilla", "u-shaped"] = "vanilla"
    topology: Literal["single", "sequential", "splitfed"] = "single"
    num_clients: int = 1
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    optimizer: Literal["sgd", "adam"] = "sgd"
    defense: str = "none"
    defense_options: tuple[tuple[str, Any], ...] = ()
    nopeek: float = 0.0
    seed: int = 0
    test_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.mode not in ("vanilla", "u-shaped"):
            raise ConfigurationError(f"unknown mode {self.mode!r}", field="mode", accepted=["vanilla", "u-shaped"])
        if self.topology not in ("single", "sequential", "splitfed"):
            raise ConfigurationError(
                f"unknown topology {self.topology!r}", field="topology", accepted=["single", "sequential", "splitfed"]
            )
        if self.num_clients < 1 or (self.topology == "single" and self.num_clients != 1):
            raise ConfigurationError("single topology has exactly one client", field="num_clients")
        if self.epochs < 1:
            raise ConfigurationError("must be >= 1", field="epochs")
        if self.nopeek < 0:
            raise ConfigurationError("must be >= 0", field="nopeek")
        build_gradient_defense(self.defense, dict(self.defense_options))
        self.train_config()  # validates lr, batch size, momentum

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=1, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum, optimizer=self.optimizer
        )

    def model_options(self) -> dict[str, Any]:
        return {"hidden": self.hidden} if self.model == "mlp" else {}


@dataclass
class ByteCounts:
    """Encoded bytes per message type and direction, and per training step."""

    by_type: dict[str, int] = field(default_factory=dict)
    upload: int = 0
    download: int = 0
    model_sync: int = 0
    steps: int = 0

    def add(self, sender: str, msg_type: str, n: int) -> None:
        self.by_type[msg_type] = self.by_type.get(msg_type, 0) + n
        if sender == "server":
            self.download += n
        else:
            self.upload += n

    @property
    def per_step(self) -> float:
        """Mean cut-layer bytes (both directions) per training step."""
        return (self.upload + self.download) / self.steps if self.steps else 0.0

    @property
    def total(self) -> int:
        return self.upload + self.download + self.model_sync


@dataclass
class SplitModel:
    """The trained parts: the clients' (averaged or last) bottom, the server part, the head (U-shaped)."""

    bottom: nn.Module
    server: nn.Module
    head: nn.Module | None

    def full(self) -> nn.Sequential:
        parts = [self.bottom, self.server] + ([self.head] if self.head is not None else [])
        return nn.Sequential(*parts)


@dataclass
class SplitRunResult:
    config: SplitConfig
    accuracy: float
    loss: float
    history: list[float]
    bytes: ByteCounts
    model: SplitModel = field(repr=False)
    dataset: Dataset = field(repr=False)
    client_indices: list[np.ndarray] = field(repr=False)
    seconds: float = 0.0


def client_partition(ds: Dataset, cfg: SplitConfig) -> list[np.ndarray]:
    """Each client's training indices: everything for one client, else IID with FedAvg's partition stream."""
    if cfg.num_clients == 1:
        return [np.arange(len(ds.y_train))]
    return partition("iid", ds.y_train, num_clients=cfg.num_clients, rng=simulation_rng(cfg.seed, "partition"))


def _deliver(msg: Message, sender: str, receiver: str, counts: ByteCounts, taps: Sequence[Tap]) -> Message:
    wire = encode(msg)
    counts.add(sender, type(msg).__name__, len(wire))
    received = decode(wire)
    for tap in taps:
        tap(sender, receiver, received)
    return received


def _run_step(
    client: SplitClient, server: SplitServer, step: int, ids: np.ndarray, counts: ByteCounts, taps: Sequence[Tap]
) -> None:
    name = f"client {client.client_id}"
    msg: Message | None = _deliver(client.begin(step, ids), name, "server", counts, taps)
    while msg is not None:
        assert msg is not None
        reply = _deliver(server.handle(msg), "server", name, counts, taps)
        back = client.handle(reply)
        msg = None if back is None else _deliver(back, name, "server", counts, taps)
    counts.steps += 1


def _average_into(parts: list[nn.Module], weights: np.ndarray) -> None:
    w = weights / weights.sum()
    with torch.no_grad():
        for ps in zip(*(m.parameters() for m in parts)):
            avg = sum(float(wi) * p.detach() for wi, p in zip(w, ps))
            for p in ps:
                p.copy_(avg)


def _param_bytes(m: nn.Module | None) -> int:
    return 0 if m is None else 4 * sum(p.numel() for p in m.parameters())


def run_split(
    cfg: SplitConfig,
    *,
    taps: Sequence[Tap] = (),
    dataset: Dataset | None = None,
    defense: GradientDefense | None = None,
) -> SplitRunResult:
    """Train ``cfg`` in memory; return the test accuracy, byte counts and the trained parts."""
    t0 = time.perf_counter()
    ds = dataset or load_dataset(cfg.dataset, seed=cfg.seed, test_fraction=cfg.test_fraction)
    full = build_model(
        cfg.model,
        ds.input_shape,
        ds.num_classes,
        generator=torch_generator(cfg.seed, "model-init"),
        **cfg.model_options(),
    )
    if not isinstance(full, nn.Sequential):
        raise ConfigurationError("split learning needs a sequential model", field="model")
    ushaped = cfg.mode == "u-shaped"
    head_cut = (cfg.head_cut or len(full) - 1) if ushaped else None
    parts = split_layers(full, cfg.cut, head_cut)
    bottom0, server_part = parts[0], parts[1]
    if not any(True for _ in bottom0.parameters()):
        raise ConfigurationError("the client part has no parameters: move the cut deeper", field="cut")
    head0 = parts[2] if ushaped else None
    if defense is None:
        defense = build_gradient_defense(cfg.defense, dict(cfg.defense_options))
    train = cfg.train_config()
    indices = client_partition(ds, cfg)
    noise = torch_generator(cfg.seed, "split-defense")
    clients = [
        SplitClient(
            c,
            copy.deepcopy(bottom0),
            ds.x_train[idx],
            train,
            head=copy.deepcopy(head0) if head0 is not None else None,
            labels=ds.y_train[idx] if ushaped else None,
            defense=defense,
            generator=noise,
            nopeek=cfg.nopeek,
        )
        for c, idx in enumerate(indices)
    ]
    server = SplitServer(
        server_part,
        train,
        labels=None if ushaped else {c: ds.y_train[i] for c, i in enumerate(indices)},
        defense=defense,
        generator=noise,
    )
    counts = ByteCounts()
    orders = [
        batch_order(len(idx), cfg.batch_size, torch_generator(cfg.seed, "split-batches", c))
        for c, idx in enumerate(indices)
    ]
    per_epoch = [-(-len(idx) // cfg.batch_size) for idx in indices]
    client_bytes = _param_bytes(bottom0) + _param_bytes(head0)
    history: list[float] = []
    step = 0
    for _ in range(cfg.epochs):
        if cfg.topology == "splitfed":
            for k in range(max(per_epoch)):
                for c, cl in enumerate(clients):
                    if k < per_epoch[c]:
                        _run_step(cl, server, step, next(orders[c]).numpy(), counts, taps)
                        step += 1
            sizes = np.array([len(i) for i in indices], dtype=np.float64)
            _average_into([cl.bottom for cl in clients], sizes)
            if ushaped:
                _average_into([cl.head for cl in clients if cl.head is not None], sizes)
            counts.model_sync += 2 * client_bytes * len(clients)
        else:
            for c, cl in enumerate(clients):
                if cfg.topology == "sequential" and len(clients) > 1:
                    prev = clients[c - 1]
                    cl.bottom.load_state_dict(prev.bottom.state_dict())
                    if cl.head is not None and prev.head is not None:
                        cl.head.load_state_dict(prev.head.state_dict())
                    counts.model_sync += client_bytes
                for _ in range(per_epoch[c]):
                    _run_step(cl, server, step, next(orders[c]).numpy(), counts, taps)
                    step += 1
        last = clients[-1]
        model = SplitModel(last.bottom, server.part, last.head)
        history.append(evaluate(model.full(), ds.x_test, ds.y_test)[0])
    model = SplitModel(clients[-1].bottom, server.part, clients[-1].head)
    acc, loss = evaluate(model.full(), ds.x_test, ds.y_test)
    return SplitRunResult(cfg, acc, loss, history, counts, model, ds, indices, time.perf_counter() - t0)


def fedavg_baseline(cfg: SplitConfig, *, dataset: Dataset | None = None, rounds: int | None = None) -> float:
    """Test accuracy of FedAvg on the same data, partition, model, initialisation and optimiser:
    one local epoch per round, every client every round, ``rounds`` rounds (default ``cfg.epochs``:
    the same passes over the data as split learning)."""
    from protocols.fedavg import DataConfig, FedAvgSimulation, FederationConfig, ModelConfig, RunConfig

    run = RunConfig(
        seed=cfg.seed,
        data=DataConfig(
            dataset=cfg.dataset, num_clients=cfg.num_clients, partition="iid", test_fraction=cfg.test_fraction
        ),
        model=ModelConfig(name=cfg.model, hidden=cfg.hidden),
        train=cfg.train_config(),
        federation=FederationConfig(rounds=rounds or cfg.epochs),
    )
    return FedAvgSimulation(run, dataset=dataset).run().final_accuracy
