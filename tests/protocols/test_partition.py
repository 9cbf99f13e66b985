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
    if name == "shards" and not _shards_feasible(np.unique(labels, return_counts=True)[1], clients, 2):
        with pytest.raises(ConfigurationError, match="shards_per_client"):
            partition(name, labels, num_clients=clients, rng=np.random.default_rng(seed), **OPTIONS[name])
        return
    parts = partition(name, labels, num_clients=clients, rng=np.random.default_rng(seed), **OPTIONS[name])
    assert len(parts) == clients
    allidx = np.concatenate(parts)
    assert np.array_equal(np.sort(allidx), np.arange(n))
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
    assert all(len(np.unique(labels[p])) == 2 for p in parts)


def _shards_feasible(sizes: np.ndarray, clients: int, k: int) -> bool:
    """Whether k classes per client can be dealt (the conditions the partitioner states)."""
    shards = clients * k
    return k <= len(sizes) and shards >= len(sizes) and shards <= int(np.minimum(sizes, clients).sum())


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=12),
    clients=st.integers(1, 40),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**31),
)
def test_shards_give_exactly_k_classes_or_refuse(sizes, clients, k, seed):
    """Uneven classes, few or many clients: exactly k classes each, every sample once; else a clear error."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(sizes)) * 3 + 1, sizes))  # sparse, unsorted label values
    if clients > len(labels):
        return
    sz = np.asarray(sizes)
    if not _shards_feasible(sz, clients, k):
        with pytest.raises(ConfigurationError, match="shards_per_client"):
            partition("shards", labels, num_clients=clients, rng=np.random.default_rng(seed), shards_per_client=k)
        return
    parts = partition("shards", labels, num_clients=clients, rng=np.random.default_rng(seed), shards_per_client=k)
    assert len(parts) == clients
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    assert [len(np.unique(labels[p])) for p in parts] == [k] * clients
    # shard sizes stay even: a class's shards differ by at most one sample, so no client holds a sliver
    # of a large class while another holds most of it
    for c in np.unique(labels):
        held = [int((labels[p] == c).sum()) for p in parts if (labels[p] == c).any()]
        assert max(held) - min(held) <= 1


def test_shards_leaky_cut_regression():
    """The old cut (label-sorted array split evenly) gave '2-class' clients up to 3 classes on uneven data."""
    labels = np.repeat(np.arange(10), [170, 190, 175, 183, 181, 182, 180, 179, 174, 180])
    for seed in range(20):
        parts = partition("shards", labels, num_clients=10, rng=np.random.default_rng(seed), shards_per_client=2)
        assert sorted(len(np.unique(labels[p])) for p in parts) == [2] * 10


def test_shards_random_pairs_and_seeded():
    labels = np.repeat(np.arange(10), 50)
    pairs = set()
    for seed in range(10):
        a = partition("shards", labels, num_clients=10, rng=np.random.default_rng(seed), shards_per_client=2)
        b = partition("shards", labels, num_clients=10, rng=np.random.default_rng(seed), shards_per_client=2)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        pairs |= {tuple(np.unique(labels[p])) for p in a}
    assert len(pairs) > 20  # not a fixed pairing of classes


@pytest.mark.parametrize(
    ("sizes", "clients", "k", "match"),
    [
        ([5] * 10, 4, 2, "cannot cover the data's 10 classes"),
        ([5] * 3, 5, 4, "only 3 classes"),
        ([1, 1, 50], 30, 2, "at most 32 in all"),
        ([5] * 3, 2, 0, "must be >= 1"),
    ],
)
def test_shards_refuse_impossible_splits(sizes, clients, k, match):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    with pytest.raises(ConfigurationError, match=match) as e:
        partition("shards", labels, num_clients=clients, rng=np.random.default_rng(0), shards_per_client=k)
    assert e.value.field == "data.shards_per_client"


def test_errors():
    labels = np.zeros(10, dtype=int)
    with pytest.raises(ConfigurationError, match="accepted: dirichlet, iid, quantity, shards"):
        partition("nope", labels, num_clients=2, rng=np.random.default_rng(0))
    with pytest.raises(ConfigurationError, match="num_clients"):
        partition("iid", labels, num_clients=11, rng=np.random.default_rng(0))
    with pytest.raises(ConfigurationError, match="alpha"):
        partition("dirichlet", labels, num_clients=2, rng=np.random.default_rng(0), alpha=0)
    assert set(PARTITIONERS.names()) == set(OPTIONS)
