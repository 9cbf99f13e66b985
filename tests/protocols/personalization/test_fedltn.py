"""FedLTN / LotteryFL / FedAvg simulation: rewinding, byte counts, a tiny end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from privagg.errors import ConfigurationError
from privagg.randomness import torch_generator
from protocols.models import build_model, get_flat_params
from protocols.personalization import ALGORITHMS, PersonalizationOptions, client_splits, run_fedltn
from protocols.personalization.fedltn import ClientData, client_update
from protocols.personalization.masks import layers_of, sparse_bytes, weight_density
from protocols.training import TrainConfig
from tests.protocols.personalization.task import shards_task

RC = shards_task(3)


@pytest.fixture(scope="module")
def clients():  # type: ignore[no-untyped-def]
    return client_splits(RC)


def test_client_splits_are_disjoint_and_cover_each_clients_classes(clients) -> None:  # type: ignore[no-untyped-def]
    assert len(clients) == 5
    for c in clients:
        assert set(np.unique(c.y_test)) <= set(np.unique(c.y_train))
        assert len(np.unique(c.y_train)) == 2  # shards are cut on class boundaries: exactly 2 classes each
    total = sum(len(c.y_train) + len(c.y_test) for c in clients)
    assert total == 1797  # every digit, pooled then dealt out


def _update(clients, name: str, target: float):  # type: ignore[no-untyped-def]
    model = build_model("mlp", (1, 8, 8), 10, generator=torch_generator(0, "t"), hidden=(16,))
    layers = layers_of(model)
    init = get_flat_params(model)
    dim = len(init)
    opts = PersonalizationOptions(name=name, acc_threshold=0.0, prune_rate=0.5, target_sparsity=target)
    upd = client_update(
        model,
        np.ones(dim, dtype=bool),
        clients[0],
        algo=ALGORITHMS.get(name),
        options=opts,
        cfg=RC.train,
        generator=torch_generator(0, "c"),
        global_w=init,
        init_w=init,
        shared=np.ones(dim, dtype=bool),
        layers=layers,
    )
    return upd, init, layers, model


@pytest.mark.parametrize("name", ["fedltn", "lotteryfl"])
def test_pruning_after_training_rewinds_only_for_lotteryfl(clients, name: str) -> None:  # type: ignore[no-untyped-def]
    trained, init, _, _ = _update(clients, name, target=0.0)  # already at the target: no pruning
    assert not trained.pruned and trained.mask.all()
    upd, _, layers, model = _update(clients, name, target=0.9)  # same seeds, so the same training
    assert upd.pruned
    assert weight_density(upd.mask, layers) == pytest.approx(0.5, abs=0.01)
    np.testing.assert_array_equal(upd.values[~upd.mask], 0.0)
    kept = upd.mask
    expected = init if name == "lotteryfl" else trained.values
    np.testing.assert_array_equal(upd.values[kept], expected[kept])
    assert not np.array_equal(trained.values[kept], init[kept])  # training moved the kept weights
    # pruning keeps the largest trained magnitudes in each prunable layer
    w0 = layers[0]
    assert (
        np.abs(trained.values[w0.start : w0.stop][kept[w0.start : w0.stop]]).min()
        >= np.abs(trained.values[w0.start : w0.stop][~kept[w0.start : w0.stop]]).max()
    )
    np.testing.assert_allclose(get_flat_params(model), upd.values)  # the client holds what it uploads


def test_tiny_end_to_end_run(clients) -> None:  # type: ignore[no-untyped-def]
    fed = run_fedltn(
        RC,
        PersonalizationOptions(name="fedltn", rounds=4, prune_rate=0.5, target_sparsity=0.75, acc_threshold=0.0),
        clients=clients,
    )
    avg = run_fedltn(RC, PersonalizationOptions(name="fedavg", rounds=2, fine_tune_epochs=1), clients=clients)
    dim = fed.num_params
    assert avg.total_upload_bytes == 2 * 5 * 4 * dim
    assert avg.fine_tuned_accuracies is not None and avg.fine_tuned_accuracies.shape == (5,)
    assert fed.fine_tuned_accuracies is None
    # every client prunes 50% in rounds 1 and 2, then stays at 25% weight density
    np.testing.assert_allclose(fed.densities, 0.25, atol=0.01)
    for r, nxt in zip(fed.rounds, fed.rounds[1:], strict=False):  # uploaded = kept after this round's pruning
        assert [int(b) for b in r.upload_bytes] == [sparse_bytes(dim, int(n)) for n in nxt.nonzeros]
    assert fed.nonzeros.max() < dim / 2
    assert 0.0 <= fed.worst_accuracy <= fed.mean_accuracy <= 1.0
    assert fed.upload_to_reach(0.0) == int(fed.rounds[0].upload_bytes.sum())
    assert fed.upload_to_reach(1.1) is None


def test_options_are_validated() -> None:
    with pytest.raises(ConfigurationError):
        PersonalizationOptions(name="nope")
    with pytest.raises(ConfigurationError):
        PersonalizationOptions(target_sparsity=1.0)
    with pytest.raises(ConfigurationError):
        PersonalizationOptions(server_momentum=1.0)


def test_batch_norm_parameters_stay_local() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 3))
    layers = layers_of(model)
    shared = np.ones(sum(x.stop - x.start for x in layers), dtype=bool)
    for lay in layers:
        if lay.local:
            shared[lay.start : lay.stop] = False
    with torch.no_grad():
        model[1].weight.fill_(7.0)
    rng = np.random.default_rng(0)
    data = ClientData(
        rng.random((12, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, 12), np.zeros((0, 1, 4, 4)), np.zeros(0)
    )
    global_w = np.full(len(shared), 0.5)
    upd = client_update(
        model,
        np.ones(len(shared), dtype=bool),
        data,
        algo=ALGORITHMS.get("fedltn"),
        options=PersonalizationOptions(target_sparsity=0.0),
        cfg=TrainConfig(epochs=1, batch_size=4, lr=1e-9),  # training barely moves anything
        generator=torch_generator(0, "bn"),
        global_w=global_w,
        init_w=global_w,
        shared=shared,
        layers=layers,
    )
    bn_weight = next(x for x in layers if x.name == "1.weight")
    np.testing.assert_allclose(upd.values[bn_weight.start : bn_weight.stop], 7.0, atol=1e-5)  # kept its own
    np.testing.assert_allclose(upd.values[shared], 0.5, atol=1e-5)  # downloaded the global weights
    assert (~shared).sum() == 4  # BN weight and bias of 2 channels
