"""FedLTN (Mugunthan & Kagal, ECCV 2022), LotteryFL (Li et al. 2020) and a FedAvg baseline.

One simulation loop, three registered algorithms (:data:`ALGORITHMS`):

- ``fedltn``: each client downloads the global model restricted to its mask, trains (masked
  SGD), and, once its training accuracy reaches ``acc_threshold`` and its weight sparsity is
  below ``target_sparsity``, prunes ``prune_rate`` of each layer's kept weights by magnitude
  *after* training; kept weights are not rewound. The server averages each coordinate over
  the clients that keep it (the counts travel with the sum) and applies server momentum.
- ``lotteryfl``: the same, but after pruning the kept weights are rewound to the initial model
  (and that rewound model is what the client uploads that round); no server momentum.
- ``fedavg``: no masks, dense float32 uploads, the global model evaluated on each client's split;
  the result also carries FedAvg + local fine-tuning (``fine_tune_epochs`` on each client).

Batch-norm parameters and buffers stay on the client (never uploaded) when the model has them;
the registry's ``cnn`` and ``mlp`` have none. Per-client data: the dataset's train and test
parts are pooled, dealt out by ``run_config.data.partition`` (``shards`` = pathological
non-IID), and each client's part is split (stratified by label, ``data.test_fraction``) into
its own train and test split. ``secure_aggregation=True`` runs the per-coordinate average
through SecAgg+ (:mod:`protocols.personalization.secure`). Not done: the jump-start of
late-joining clients, DP.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng, torch_generator
from privagg.registry import Registry
from protocols.datasets import load_dataset
from protocols.models import build_model, get_flat_params, set_flat_params
from protocols.partition import partition
from protocols.personalization.masks import (
    Layer,
    aggregate_per_coordinate,
    decode_sparse,
    dense_bytes,
    encode_sparse,
    layers_of,
    prune_magnitude,
    weight_density,
)
from protocols.personalization.secure import secure_aggregator, secure_per_coordinate_mean
from protocols.training import TrainConfig, evaluate, train_local

if TYPE_CHECKING:  # protocols.fedavg may then hold these options without an import cycle
    from protocols.fedavg import RunConfig

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "ClientData",
    "ClientUpdate",
    "PersonalizationOptions",
    "PersonalizationResult",
    "RoundStats",
    "client_splits",
    "client_update",
    "run_personalized",
]


@dataclass(frozen=True)
class Algorithm:
    """What distinguishes the registered algorithms."""

    prune: bool
    rewind: bool
    server_momentum: bool
    personal: bool  # evaluate each client's own model (else: the global model)


ALGORITHMS: Registry[Algorithm] = Registry("personalization")
ALGORITHMS.add("fedltn", Algorithm(prune=True, rewind=False, server_momentum=True, personal=True))
ALGORITHMS.add("lotteryfl", Algorithm(prune=True, rewind=True, server_momentum=False, personal=True))
ALGORITHMS.add("fedavg", Algorithm(prune=False, rewind=False, server_momentum=False, personal=False))


@dataclass(frozen=True)
class PersonalizationOptions:
    """The ``[personalization]`` table. Rounds, local training and data come from the ``RunConfig``."""

    name: str = "fedltn"
    rounds: int = 30
    target_sparsity: float = 0.9
    prune_rate: float = 0.2
    acc_threshold: float = 0.6
    server_momentum: float = 0.5
    fine_tune_epochs: int = 1
    secure_aggregation: bool = False
    secagg_clip: float = 1.0

    def __post_init__(self) -> None:
        ALGORITHMS.get(self.name, field="personalization.name")
        if self.rounds < 1:
            raise ConfigurationError(f"must be >= 1, got {self.rounds}", field="personalization.rounds")
        if not 0.0 <= self.target_sparsity < 1.0:
            raise ConfigurationError(
                f"must be in [0, 1), got {self.target_sparsity}", field="personalization.target_sparsity"
            )
        if not 0.0 < self.prune_rate < 1.0:
            raise ConfigurationError(f"must be in (0, 1), got {self.prune_rate}", field="personalization.prune_rate")
        if not 0.0 <= self.acc_threshold <= 1.0:
            raise ConfigurationError(
                f"must be in [0, 1], got {self.acc_threshold}", field="personalization.acc_threshold"
            )
        if not 0.0 <= self.server_momentum < 1.0:
            raise ConfigurationError(
                f"must be in [0, 1), got {self.server_momentum}", field="personalization.server_momentum"
            )
        if self.fine_tune_epochs < 0:
            raise ConfigurationError(
                f"must be >= 0, got {self.fine_tune_epochs}", field="personalization.fine_tune_epochs"
            )


@dataclass(frozen=True)
class ClientData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class RoundStats:
    """One round: each client's accuracy (personal or global model), upload bytes and nonzeros."""

    round: int
    accuracies: np.ndarray
    upload_bytes: np.ndarray
    nonzeros: np.ndarray
    plain_upload_bytes: np.ndarray | None = None  # the sparse encoding's size when SecAgg carried the round

    @property
    def mean_accuracy(self) -> float:
        return float(self.accuracies.mean())


@dataclass(frozen=True)
class PersonalizationResult:
    algorithm: str
    dataset: str
    seed: int
    num_params: int
    rounds: tuple[RoundStats, ...]
    fine_tuned_accuracies: np.ndarray | None = None  # FedAvg + local fine-tuning
    densities: np.ndarray = field(default_factory=lambda: np.zeros(0))  # final weight density per client

    @property
    def client_accuracies(self) -> np.ndarray:
        return self.rounds[-1].accuracies

    @property
    def mean_accuracy(self) -> float:
        return float(self.client_accuracies.mean())

    @property
    def worst_accuracy(self) -> float:
        return float(self.client_accuracies.min())

    @property
    def nonzeros(self) -> np.ndarray:
        """Parameters each client's final model holds (nonzero, i.e. kept, coordinates)."""
        return self.rounds[-1].nonzeros

    @property
    def total_upload_bytes(self) -> int:
        return int(sum(int(r.upload_bytes.sum()) for r in self.rounds))

    def upload_to_reach(self, accuracy: float) -> int | None:
        """Total bytes uploaded up to the first round whose mean accuracy is >= ``accuracy``."""
        total = 0
        for r in self.rounds:
            total += int(r.upload_bytes.sum())
            if r.mean_accuracy >= accuracy:
                return total
        return None


def client_splits(run_config: RunConfig) -> list[ClientData]:
    """Pool the dataset, deal it out by the run's partition, split each client's part (stratified)."""
    d = load_dataset(run_config.data.dataset, seed=run_config.seed)
    x = np.concatenate([d.x_train, d.x_test])
    y = np.concatenate([d.y_train, d.y_test])
    parts = partition(
        run_config.data.partition,
        y,
        num_clients=run_config.data.num_clients,
        rng=simulation_rng(run_config.seed, "personalization", "partition"),
        **run_config.data.partition_options(),
    )
    rng = simulation_rng(run_config.seed, "personalization", "client-split")
    out = []
    for idx in parts:
        tr: list[np.ndarray] = []
        te: list[np.ndarray] = []
        for c in np.unique(y[idx]):
            members = rng.permutation(idx[y[idx] == c])
            n_test = round(len(members) * run_config.data.test_fraction)
            te.append(members[:n_test])
            tr.append(members[n_test:])
        itr, ite = np.sort(np.concatenate(tr)), np.sort(np.concatenate(te))
        out.append(ClientData(x[itr], y[itr], x[ite], y[ite]))
    return out


def _param_masks(model: nn.Module, flat_mask: np.ndarray) -> list[torch.Tensor]:
    out, i = [], 0
    for p in model.parameters():
        n = p.numel()
        out.append(torch.from_numpy(flat_mask[i : i + n].astype(np.float32)).view_as(p))
        i += n
    return out


def _masked_step(masks: Sequence[torch.Tensor]):  # type: ignore[no-untyped-def]
    def after_step(model: nn.Module) -> None:
        with torch.no_grad():
            for p, m in zip(model.parameters(), masks, strict=True):
                p.mul_(m)

    return after_step


def _accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    return evaluate(model, x, y)[0] if len(y) else 0.0


@dataclass(frozen=True)
class ClientUpdate:
    """A client's round: the model it uploads (full flat vector), its mask, its personal accuracy."""

    values: np.ndarray
    mask: np.ndarray
    accuracy: float
    nonzeros: int
    pruned: bool


def client_update(
    model: nn.Module,
    mask: np.ndarray,
    data: ClientData,
    *,
    algo: Algorithm,
    options: PersonalizationOptions,
    cfg: TrainConfig,
    generator: torch.Generator,
    global_w: np.ndarray,
    init_w: np.ndarray,
    shared: np.ndarray,
    layers: Sequence[Layer],
) -> ClientUpdate:
    """Download (global weights on the mask, local ones elsewhere), train, evaluate, maybe prune.

    Accuracy and nonzeros describe the trained model the client holds before this round's
    pruning. Pruning happens after training; ``algo.rewind`` resets the kept shared weights
    to ``init_w`` (LotteryFL), otherwise they keep their trained values (FedLTN).
    """
    set_flat_params(model, np.where(shared, global_w * mask, get_flat_params(model)))
    step = _masked_step(_param_masks(model, mask)) if algo.prune else None
    train_local(model, data.x_train, data.y_train, cfg, generator=generator, after_step=step)
    w = get_flat_params(model)
    accuracy = _accuracy(model, data.x_test, data.y_test) if algo.personal else float("nan")
    nonzeros = int(mask.sum())
    pruned = (
        algo.prune
        and weight_density(mask, layers) > 1.0 - options.target_sparsity + 1e-9
        and _accuracy(model, data.x_train, data.y_train) >= options.acc_threshold
    )
    if pruned:
        mask = prune_magnitude(w, mask, layers, rate=options.prune_rate, target_sparsity=options.target_sparsity)
        if algo.rewind:
            w = np.where(shared, init_w, w)
        w = w * mask
        set_flat_params(model, w)
    return ClientUpdate(values=w, mask=mask, accuracy=accuracy, nonzeros=nonzeros, pruned=pruned)


def run_personalized(
    run_config: RunConfig, options: PersonalizationOptions, *, clients: Sequence[ClientData] | None = None
) -> PersonalizationResult:
    """Simulate ``options.name`` for ``options.rounds`` rounds, all clients every round."""
    algo = ALGORITHMS.get(options.name, field="personalization.name")
    if run_config.torch_threads is not None:
        torch.set_num_threads(run_config.torch_threads)
    data = list(clients) if clients is not None else client_splits(run_config)
    d0 = data[0]
    num_classes = int(max(int(c.y_train.max(initial=0)) for c in data)) + 1
    num_classes = max(num_classes, int(max(int(c.y_test.max(initial=0)) for c in data)) + 1)
    base = build_model(
        run_config.model.name,
        tuple(d0.x_train.shape[1:]),
        num_classes,
        generator=torch_generator(run_config.seed, "personalization", "init"),
        **run_config.model.options(),
    )
    layers = layers_of(base)
    dim = sum(lay.stop - lay.start for lay in layers)
    shared = np.ones(dim, dtype=bool)
    for lay in layers:
        if lay.local:
            shared[lay.start : lay.stop] = False
    init_w = get_flat_params(base)
    global_w = init_w.copy()
    velocity = np.zeros(dim)
    beta = options.server_momentum if algo.server_momentum else 0.0
    models = [copy.deepcopy(base) for _ in data]
    masks = [np.ones(dim, dtype=bool) for _ in data]
    gens = [torch_generator(run_config.seed, "personalization", "client", k) for k in range(len(data))]
    cfg: TrainConfig = run_config.train
    secure = secure_aggregator(clip=options.secagg_clip) if options.secure_aggregation else None
    history: list[RoundStats] = []
    for r in range(options.rounds):
        acc = np.zeros(len(data))
        up = np.zeros(len(data), dtype=np.int64)
        nnz = np.zeros(len(data), dtype=np.int64)
        values, kept = [], []
        for k, c in enumerate(data):
            upd = client_update(
                models[k],
                masks[k],
                c,
                algo=algo,
                options=options,
                cfg=cfg,
                generator=gens[k],
                global_w=global_w,
                init_w=init_w,
                shared=shared,
                layers=layers,
            )
            acc[k], nnz[k], masks[k] = upd.accuracy, upd.nonzeros, upd.mask
            if algo.prune:
                payload = encode_sparse(upd.values[shared], upd.mask[shared])
                up[k] = len(payload)
                v, m = decode_sparse(payload, dimension=int(shared.sum()))  # what the server sees
            else:
                up[k] = dense_bytes(int(shared.sum()))
                v, m = upd.values[shared], np.ones(int(shared.sum()), dtype=bool)
            values.append(v)
            kept.append(m)
        plain = None
        if secure is not None:
            deltas = [v - global_w[shared] for v in values]
            mean_delta, _counts, secure_bytes = secure_per_coordinate_mean(
                deltas,
                kept,
                aggregator=secure,
                round=r,
                rng=simulation_rng(run_config.seed, "personalization", "secagg", r),
            )
            mean = global_w[shared] + mean_delta
            plain, up = up, np.full(len(data), round(secure_bytes), dtype=np.int64)
        else:
            mean, _counts = aggregate_per_coordinate(values, kept, weights=[len(c.y_train) for c in data])
        target = global_w.copy()
        target[shared] = np.where(np.isnan(mean), global_w[shared], mean)
        velocity = beta * velocity + (target - global_w)
        global_w = global_w + velocity
        if not algo.personal:
            for k, c in enumerate(data):
                w = np.where(shared, global_w, get_flat_params(models[k]))
                set_flat_params(models[k], w)
                acc[k] = _accuracy(models[k], c.x_test, c.y_test)
                nnz[k] = dim
        history.append(RoundStats(round=r, accuracies=acc, upload_bytes=up, nonzeros=nnz, plain_upload_bytes=plain))
    fine_tuned = None
    if not algo.personal and options.fine_tune_epochs > 0:
        ft_cfg = TrainConfig(
            epochs=options.fine_tune_epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            optimizer=cfg.optimizer,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        fine_tuned = np.zeros(len(data))
        for k, c in enumerate(data):
            train_local(models[k], c.x_train, c.y_train, ft_cfg, generator=gens[k])
            fine_tuned[k] = _accuracy(models[k], c.x_test, c.y_test)
    return PersonalizationResult(
        algorithm=options.name,
        dataset=run_config.data.dataset,
        seed=run_config.seed,
        num_params=dim,
        rounds=tuple(history),
        fine_tuned_accuracies=fine_tuned,
        densities=np.array([weight_density(m, layers) for m in masks]),
    )
