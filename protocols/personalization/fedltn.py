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
through SecAgg+ (:mod:`protocols.personalization.secure`); ``dp_noise_multiplier > 0`` releases it
with DP (:mod:`protocols.personalization.privacy`). ``late_clients`` clients (the last
ones) join at ``join_round``; a FedLTN newcomer jump-starts from the most similar existing
ticket or the global model (:mod:`protocols.personalization.jumpstart`). The sensitivity and
accounting of a sparse update under DP are :mod:`protocols.personalization.privacy`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from dp import NoiseSampler, Sampling, SecureNoise
from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng, torch_generator
from protocols.datasets import load_dataset
from protocols.models import build_model, get_flat_params, set_flat_params
from protocols.partition import partition
from protocols.personalization.jumpstart import JumpStart, Ticket, jump_start
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
from protocols.personalization.options import ALGORITHMS, Algorithm, PersonalizationOptions
from protocols.personalization.privacy import SparseUpdateDP, private_per_coordinate_mean
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
class ClientData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class RoundStats:
    """One round: each client's accuracy (personal or global model), upload bytes and nonzeros."""

    round: int
    accuracies: np.ndarray  # NaN for a client that has not joined yet
    upload_bytes: np.ndarray
    nonzeros: np.ndarray
    plain_upload_bytes: np.ndarray | None = None  # the sparse encoding's size when SecAgg carried the round

    @property
    def active(self) -> np.ndarray:
        return ~np.isnan(self.accuracies)

    @property
    def mean_accuracy(self) -> float:
        """Mean over the clients taking part this round."""
        return float(self.accuracies[self.active].mean())


@dataclass(frozen=True)
class PersonalizationResult:
    algorithm: str
    dataset: str
    seed: int
    num_params: int
    rounds: tuple[RoundStats, ...]
    fine_tuned_curve: np.ndarray | None = None  # FedAvg + local fine-tuning: (epoch, client) accuracies
    densities: np.ndarray = field(default_factory=lambda: np.zeros(0))  # final weight density per client
    joins: tuple[JumpStart, ...] = ()  # how each late client started
    epsilon: float | None = None  # with DP: the whole run's epsilon at ``options.dp_delta``

    @property
    def fine_tuned_accuracies(self) -> np.ndarray | None:
        """Each client's accuracy after ``fine_tune_epochs`` epochs of local fine-tuning (FedAvg only)."""
        return None if self.fine_tuned_curve is None else self.fine_tuned_curve[-1]

    def best_fine_tuned(self) -> np.ndarray | None:
        """The fine-tuning epoch count with the best mean accuracy (chosen on the test splits:
        an optimistic baseline)."""
        if self.fine_tuned_curve is None:
            return None
        return self.fine_tuned_curve[int(np.argmax(self.fine_tuned_curve.mean(axis=1)))]

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
    download: bool = True,
) -> ClientUpdate:
    """Download (global weights on the mask, local ones elsewhere), train, evaluate, maybe prune.

    Accuracy and nonzeros describe the trained model the client holds before this round's
    pruning. Pruning happens after training; ``algo.rewind`` resets the kept shared weights
    to ``init_w`` (LotteryFL), otherwise they keep their trained values (FedLTN).
    ``download=False`` trains from the weights the model holds (a jump-started newcomer's
    first round).
    """
    if download:
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
    run_config: RunConfig,
    options: PersonalizationOptions,
    *,
    clients: Sequence[ClientData] | None = None,
    noise: NoiseSampler | None = None,
) -> PersonalizationResult:
    """Simulate ``options.name`` for ``options.rounds`` rounds, every client that has joined every round.

    With ``options.dp_noise_multiplier > 0`` the average is released with DP noise from ``noise``
    (default: :class:`dp.SecureNoise`, the CSPRNG); every client that has joined takes part in
    every round (Poisson sampling at rate 1: no amplification).
    """
    algo = ALGORITHMS.get(options.name, field="personalization.name")
    if run_config.torch_threads is not None:
        torch.set_num_threads(run_config.torch_threads)
    data = list(clients) if clients is not None else client_splits(run_config)
    if options.late_clients >= len(data):
        raise ConfigurationError(
            f"{options.late_clients} late clients leave nobody to start with ({len(data)} clients)",
            field="personalization.late_clients",
        )
    joins_at = [options.join_round if k >= len(data) - options.late_clients else 0 for k in range(len(data))]
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
    dp_spec, dp_sampling = None, Sampling.poisson(rate=1.0, population=len(data))
    if options.dp_noise_multiplier > 0:
        dp_spec = SparseUpdateDP(
            clip=options.dp_clip,
            max_kept=int(shared.sum()),  # a mask starts dense
            noise_multiplier=options.dp_noise_multiplier,
            count_weight=options.dp_count_weight,
        )
        noise = noise if noise is not None else SecureNoise()
    history: list[RoundStats] = []
    joins: list[JumpStart] = []
    for r in range(options.rounds):
        active = [k for k in range(len(data)) if joins_at[k] <= r]
        acc = np.full(len(data), np.nan)
        up = np.zeros(len(data), dtype=np.int64)
        nnz = np.zeros(len(data), dtype=np.int64)
        values, kept = [], []
        newcomers = [k for k in active if joins_at[k] == r and r > 0]
        tickets = [Ticket(j, masks[j], get_flat_params(models[j])) for j in active if joins_at[j] < r]
        for k in newcomers:
            models[k] = copy.deepcopy(base)
            js = jump_start(
                models[k],
                data[k].x_train,
                data[k].y_train,
                client=k,
                candidates=tickets if algo.prune else (),
                global_w=global_w,
                shared=shared,
                rule=options.jump_start,
            )
            masks[k] = js.mask
            joins.append(js)
        from_ticket = {js.client for js in joins[len(joins) - len(newcomers) :] if js.source is not None}
        for k in active:
            c = data[k]
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
                download=k not in from_ticket,
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
            plain, up = up, np.zeros(len(data), dtype=np.int64)
            up[active] = round(secure_bytes)
        elif dp_spec is not None and noise is not None:
            mean_delta, _ = private_per_coordinate_mean(
                [v - global_w[shared] for v in values],
                kept,
                spec=dp_spec,
                sampling=dp_sampling,
                cohort=len(active),
                sampler=noise,
            )
            mean = global_w[shared] + mean_delta
        else:
            mean, _counts = aggregate_per_coordinate(values, kept, weights=[len(data[k].y_train) for k in active])
        target = global_w.copy()
        target[shared] = np.where(np.isnan(mean), global_w[shared], mean)
        velocity = beta * velocity + (target - global_w)
        global_w = global_w + velocity
        if not algo.personal:
            for k in active:
                c = data[k]
                w = np.where(shared, global_w, get_flat_params(models[k]))
                set_flat_params(models[k], w)
                acc[k] = _accuracy(models[k], c.x_test, c.y_test)
                nnz[k] = dim
        history.append(RoundStats(round=r, accuracies=acc, upload_bytes=up, nonzeros=nnz, plain_upload_bytes=plain))
    fine_tuned = None
    if not algo.personal and options.fine_tune_epochs > 0:
        one_epoch = TrainConfig(
            epochs=1,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            optimizer=cfg.optimizer,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
        )
        fine_tuned = np.zeros((options.fine_tune_epochs, len(data)))
        for k, c in enumerate(data):
            for e in range(options.fine_tune_epochs):  # one optimizer per epoch, as a new round would
                train_local(models[k], c.x_train, c.y_train, one_epoch, generator=gens[k])
                fine_tuned[e, k] = _accuracy(models[k], c.x_test, c.y_test)
    return PersonalizationResult(
        algorithm=options.name,
        dataset=run_config.data.dataset,
        seed=run_config.seed,
        num_params=dim,
        rounds=tuple(history),
        fine_tuned_curve=fine_tuned,
        densities=np.array([weight_density(m, layers) for m in masks]),
        joins=tuple(joins),
        epsilon=None
        if dp_spec is None
        else dp_spec.epsilon(rounds=options.rounds, sampling=dp_sampling, delta=options.dp_delta),
    )
