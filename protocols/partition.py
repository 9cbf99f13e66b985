"""Split a training set among federated clients (IID and the standard non-IID schemes).

Every partitioner returns one index array per client; together they assign every sample
exactly once. Randomness is the injected simulation generator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from privagg.errors import ConfigurationError
from privagg.registry import Registry

__all__ = ["PARTITIONERS", "partition", "label_distribution"]

_Partitioner = Callable[..., list[np.ndarray]]
PARTITIONERS: Registry[_Partitioner] = Registry("partitioner")


def partition(
    name: str, labels: np.ndarray, *, num_clients: int, rng: np.random.Generator, **options: Any
) -> list[np.ndarray]:
    """Partition sample indices among ``num_clients`` with the named scheme."""
    fn = PARTITIONERS.get(name, field="data.partition")
    labels = np.asarray(labels)
    if not 1 <= num_clients <= len(labels):
        raise ConfigurationError(
            f"must be between 1 and the number of training samples ({len(labels)}), got {num_clients}",
            field="data.num_clients",
        )
    parts = fn(labels, num_clients=num_clients, rng=rng, **options)
    return [np.sort(p.astype(np.int64)) for p in parts]


def _ensure_nonempty(parts: list[list[int]], rng: np.random.Generator) -> list[list[int]]:
    """Move single samples from the largest clients to empty ones (every client trains)."""
    for i, p in enumerate(parts):
        while not p:
            donor = max(range(len(parts)), key=lambda j: len(parts[j]))
            if len(parts[donor]) <= 1:
                break
            k = int(rng.integers(len(parts[donor])))
            p.append(parts[donor].pop(k))
        parts[i] = p
    return parts


@PARTITIONERS.register("iid")
def _iid(labels: np.ndarray, *, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    return list(np.array_split(rng.permutation(len(labels)), num_clients))


@PARTITIONERS.register("dirichlet")
def _dirichlet(
    labels: np.ndarray, *, num_clients: int, rng: np.random.Generator, alpha: float = 0.5
) -> list[np.ndarray]:
    """Label skew: for each class, its samples are split by proportions ~ Dir(alpha).

    Small alpha -> each client holds few classes; large alpha -> close to IID.
    """
    if not alpha > 0:
        raise ConfigurationError(f"must be > 0, got {alpha}", field="data.alpha")
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        props = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(props) * len(idx)).astype(int)[:-1]
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].extend(chunk.tolist())
    return [np.array(p, dtype=np.int64) for p in _ensure_nonempty(parts, rng)]


@PARTITIONERS.register("shards")
def _shards(
    labels: np.ndarray, *, num_clients: int, rng: np.random.Generator, shards_per_client: int = 2
) -> list[np.ndarray]:
    """McMahan et al.'s pathological split, cut on class boundaries: each client holds exactly
    ``shards_per_client`` (k) classes.

    The ``num_clients * k`` shards are shared among the classes present, each class getting at
    least one and at most ``num_clients`` shards (and no more than it has samples), greedily in
    proportion to its size so shard sizes stay even. Each class's samples, shuffled, are cut
    into its shards. Classes, in a random order, hand their shards to distinct clients, each
    time to the clients with the most free places left (ties broken at random): the greedy
    construction of the Gale-Ryser theorem, which never gets stuck when every class has at
    most ``num_clients`` shards and the shards add up to ``num_clients * k``. So every client
    gets k shards of k different classes. Impossible requests (k above the number of classes,
    fewer shards than classes, more shards than the classes can fill) raise
    :class:`ConfigurationError`.
    """
    k = shards_per_client
    if k < 1:
        raise ConfigurationError(f"must be >= 1, got {k}", field="data.shards_per_client")
    classes, sizes = np.unique(labels, return_counts=True)
    n_classes, n_shards = len(classes), num_clients * k
    if k > n_classes:
        raise ConfigurationError(
            f"{k} classes per client, but the data has only {n_classes} classes", field="data.shards_per_client"
        )
    if n_shards < n_classes:
        raise ConfigurationError(
            f"{num_clients} clients x {k} classes = {n_shards} shards cannot cover the data's {n_classes} classes "
            f"(every sample must go to a client): use at least {-(-n_classes // k)} clients or more classes per client",
            field="data.shards_per_client",
        )
    caps = np.minimum(sizes, num_clients)
    if n_shards > int(caps.sum()):
        raise ConfigurationError(
            f"{n_shards} shards, but a class can give at most min(its samples, {num_clients} clients) shards "
            f"(at most {int(caps.sum())} in all): use fewer clients or fewer classes per client",
            field="data.shards_per_client",
        )
    count = np.ones(n_classes, dtype=np.int64)
    for _ in range(n_shards - n_classes):  # D'Hondt: the next shard goes to the class with the largest shards
        room = np.where(count < caps, sizes / count, -1.0)
        count[int(np.argmax(room))] += 1
    free = np.full(num_clients, k, dtype=np.int64)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in rng.permutation(n_classes):
        members = rng.permutation(np.flatnonzero(labels == classes[c]))
        takers = np.lexsort((rng.random(num_clients), -free))[: count[c]]
        if free[takers].min() < 1:  # unreachable by Gale-Ryser; kept so a bug cannot leak classes silently
            raise AssertionError("shards: no valid deal found")
        free[takers] -= 1
        for client, shard in zip(takers, np.array_split(members, int(count[c])), strict=True):
            parts[int(client)].append(shard)
    return [np.concatenate(p) for p in parts]


@PARTITIONERS.register("quantity")
def _quantity(
    labels: np.ndarray, *, num_clients: int, rng: np.random.Generator, alpha: float = 0.5
) -> list[np.ndarray]:
    """Quantity skew: IID labels, client sizes ~ Dir(alpha) (each client >= 1 sample)."""
    if not alpha > 0:
        raise ConfigurationError(f"must be > 0, got {alpha}", field="data.alpha")
    n = len(labels)
    props = rng.dirichlet(np.full(num_clients, alpha))
    sizes = 1 + np.floor(props * (n - num_clients)).astype(int)
    sizes[np.argmax(sizes)] += n - sizes.sum()
    return list(np.split(rng.permutation(n), np.cumsum(sizes)[:-1]))


def label_distribution(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """``(clients, classes)`` matrix of label counts."""
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
