"""Data, model and training for the digits app (privagg's simulation core: real data, real training)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from privagg.randomness import simulation_rng, torch_generator
from protocols.datasets import Dataset, load_dataset
from protocols.models import build_model, get_flat_params, set_flat_params
from protocols.partition import partition
from protocols.training import TrainConfig, evaluate, train_local

__all__ = ["dataset", "client_data", "new_model", "initial_vector", "train", "test"]


@lru_cache(maxsize=1)
def dataset(seed: int = 0) -> Dataset:
    return load_dataset("digits", seed=seed)


def client_data(pid: int, num_partitions: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    ds = dataset(seed)
    parts = partition("iid", ds.y_train, num_clients=num_partitions, rng=simulation_rng(seed, "partition"))
    idx = parts[pid]
    return ds.x_train[idx], ds.y_train[idx]


def new_model(name: str, seed: int = 0) -> Any:
    ds = dataset(seed)
    return build_model(name, ds.input_shape, ds.num_classes, generator=torch_generator(seed, "init"))


def initial_vector(name: str, seed: int = 0) -> np.ndarray:
    return get_flat_params(new_model(name, seed)).astype(np.float32)


def train(name: str, vec: np.ndarray, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, seed: int) -> np.ndarray:
    import torch

    torch.set_num_threads(1)  # a tiny model: extra threads only contend with the other nodes
    model = new_model(name)
    set_flat_params(model, np.asarray(vec, dtype=np.float64))
    train_local(model, x, y, TrainConfig(epochs=epochs, lr=lr), generator=torch_generator(seed))
    return get_flat_params(model).astype(np.float32)


def test(name: str, vec: np.ndarray, seed: int = 0) -> tuple[float, float]:
    ds = dataset(seed)
    model = new_model(name)
    set_flat_params(model, np.asarray(vec, dtype=np.float64))
    return evaluate(model, ds.x_test, ds.y_test)
