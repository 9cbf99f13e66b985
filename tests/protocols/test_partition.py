import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.errors import ConfigurationError
from protocols.partition import PARTITIONERS, label_distribution, partition

OPTIONS = {"iid": {}, "dirichlet": {"alpha": 0.3}, "shards": {"shards_per_client": 2}, "quantity": {"alpha": 0.5}}


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(OPTIONS)),
    n=st.integers(40, 400),
    clients=st.integers(1, 20),
    classes=st.integers(2, 10),
    seed=st.integers(0, 2**31),
)
def test_every_sample_assigned_exactly_once(name, n, clients, classes, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    parts = partition(name, labels, num_clients=clients, rng=np.random.default_rng(seed), **OPTIONS[name])
    assert len(parts) == clients
    allidx = np.concatenate(parts)
    assert np.array_equal(np.sort(allidx), np.arange(n))
    if name != "shards":
        assert all(len(p) > 0 for p in parts)


def _mean_label_entropy(alpha: float, seed: int) -> float:
    labels = np.repeat(np.arange(10), 100)
    parts = partition("dirichlet", labels, num_clients=20, rng=np.random.default_rng(seed), alpha=alpha)
    counts = label_distribution(labels, parts, 10).astype(float)
    p = counts / counts.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return float(h.mean())


def test_dirichlet_alpha_controls_skew():
    # smaller alpha -> fewer classes per client -> lower label entropy; large alpha ~ IID (log 10 = 2.30)
    h = [np.mean([_mean_label_entropy(a, s) for s in range(3)]) for a in (0.05, 0.5, 100.0)]
    assert h[0] < h[1] < h[2]
    assert h[2] > 2.1 and h[0] < 1.0


def test_shards_give_few_labels_per_client():
    labels = np.repeat(np.arange(10), 100)
    parts = partition("shards", labels, num_clients=10, rng=np.random.default_rng(0), shards_per_client=2)
    assert all(len(np.unique(labels[p])) <= 2 for p in parts)


def test_errors():
    labels = np.zeros(10, dtype=int)
    with pytest.raises(ConfigurationError, match="accepted: dirichlet, iid, quantity, shards"):
        partition("nope", labels, num_clients=2, rng=np.random.default_rng(0))
    with pytest.raises(ConfigurationError, match="num_clients"):
        partition("iid", labels, num_clients=11, rng=np.random.default_rng(0))
    with pytest.raises(ConfigurationError, match="alpha"):
        partition("dirichlet", labels, num_clients=2, rng=np.random.default_rng(0), alpha=0)
    assert set(PARTITIONERS.names()) == set(OPTIONS)
