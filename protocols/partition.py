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
    """McMahan et al.'s pathological split: sort by label, cut into shards, deal them out."""
    if shards_per_client < 1:
        raise ConfigurationError(f"must be >= 1, got {shards_per_client}", field="data.shards_per_client")
    n_shards = num_clients * shards_per_client
    if n_shards > len(labels):
        raise ConfigurationError(
            f"{n_shards} shards for {len(labels)} samples", field="data.shards_per_client"
        )
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, n_shards)
    deal = rng.permutation(n_shards).reshape(num_clients, shards_per_client)
    return [np.concatenate([shards[s] for s in row]) for row in deal]


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
