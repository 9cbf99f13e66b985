import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from dp.config import DPConfig
from privagg.config import config_to_dict, load_config, override
from privagg.errors import ConfigurationError
from protocols.aggregation import (
    AGGREGATORS,
    Aggregator,
    ClientUpdate,
    MeanAggregator,
    MeanOptions,
    RoundContext,
    build_aggregator,
)
from protocols.datasets import load_dataset
from protocols.fedavg import FedAvgSimulation, FederationConfig, RunConfig
from protocols.models import build_model, get_flat_params, num_params, set_flat_params


def _ctx(ids):
    return RoundContext(
        round=1, population=10, sampled=tuple(ids), sampling="fixed", sampling_rate=1.0, rng=np.random.default_rng(0)
    )


def test_mean_aggregator_matches_hand_computed_weighted_mean():
    ups = [
        ClientUpdate(0, np.array([1.0, 2.0]), 1),
        ClientUpdate(1, np.array([3.0, -2.0]), 3),
        ClientUpdate(2, np.array([0.0, 4.0]), 0),
    ]
    res = MeanAggregator().aggregate(ups, _ctx([0, 1, 2]))
    # (1*[1,2] + 3*[3,-2] + 0*[0,4]) / 4 = [10/4, -4/4]
    np.testing.assert_allclose(res.delta, [2.5, -1.0])
    assert res.participants == (0, 1, 2)
    res = MeanAggregator(weighted=False).aggregate(ups, _ctx([0, 1, 2]))
    np.testing.assert_allclose(res.delta, [4 / 3, 4 / 3])


def test_mean_aggregator_rejects_bad_rounds():
    agg = MeanAggregator()
    with pytest.raises(ConfigurationError, match="no client updates"):
        agg.aggregate([], _ctx([]))
    with pytest.raises(ConfigurationError, match="shape"):
        agg.aggregate([ClientUpdate(0, np.zeros(2), 1), ClientUpdate(1, np.zeros(3), 1)], _ctx([0, 1]))
    with pytest.raises(ConfigurationError, match="duplicate"):
        agg.aggregate([ClientUpdate(0, np.zeros(2), 1), ClientUpdate(0, np.zeros(2), 1)], _ctx([0]))
    with pytest.raises(ConfigurationError, match="zero examples"):
        agg.aggregate([ClientUpdate(0, np.zeros(2), 0)], _ctx([0]))


def test_one_fedavg_round_equals_weighted_mean_of_local_models():
    cfg = load_config(RunConfig, {"data": {"num_clients": 4}, "federation": {"rounds": 1}})
    sim = FedAvgSimulation(cfg)
    g0 = sim.global_params.copy()
    seen = {}

    def observer(record, updates, result, s):
        seen["updates"] = updates

    sim.observers.append(observer)
    sim.run_round(1)
    ups = seen["updates"]
    w = np.array([u.num_examples for u in ups], dtype=float)
    expected = g0 + (w / w.sum()) @ np.stack([u.delta for u in ups])
    np.testing.assert_allclose(sim.global_params, expected, rtol=1e-12, atol=1e-12)
    assert sum(w) == len(sim.dataset.y_train)


def test_same_seed_same_history_and_hooks_can_replace_updates():
    cfg = load_config(RunConfig, {"seed": 11, "data": {"num_clients": 5}, "federation": {"rounds": 2}})
    a = FedAvgSimulation(cfg).run()
    b = FedAvgSimulation(cfg).run()
    assert [h.accuracy for h in a.history] == [h.accuracy for h in b.history]
    np.testing.assert_array_equal(a.global_params, b.global_params)

    def zero_hook(updates, ctx, sim):
        return [dataclasses.replace(u, delta=np.zeros_like(u.delta)) for u in updates]

    sim = FedAvgSimulation(cfg, update_hooks=[zero_hook])
    g0 = sim.global_params.copy()
    sim.run()
    np.testing.assert_array_equal(sim.global_params, g0)


def test_sampling_schemes():
    base = {"data": {"num_clients": 10}, "federation": {"rounds": 1}}
    fixed_cfg = {**base, "federation": {"sampling": "fixed", "clients_per_round": 3}}
    fixed = FedAvgSimulation(load_config(RunConfig, fixed_cfg))
    s, rate = fixed.sample_clients(1)
    assert len(s) == 3 and rate == 0.3
    pois_cfg = {**base, "federation": {"sampling": "poisson", "sampling_rate": 0.5}}
    pois = FedAvgSimulation(load_config(RunConfig, pois_cfg))
    sizes = [len(pois.sample_clients(r)[0]) for r in range(1, 200)]
    assert 4.0 < np.mean(sizes) < 6.0  # Binomial(10, 0.5): mean 5, sd of the mean ~0.11
    with pytest.raises(ConfigurationError, match="clients_per_round"):
        load_config(RunConfig, {"federation": {"sampling": "fixed"}})
    with pytest.raises(ConfigurationError, match="sampling_rate"):
        load_config(RunConfig, {"federation": {"sampling": "poisson", "sampling_rate": 1.5}})


@pytest.mark.parametrize(
    ("name", "shape"), [("digits", (1, 8, 8)), ("breast-cancer", (30,)), ("mnist-5k", (1, 28, 28))]
)
def test_datasets_load_real_data(name, shape):
    ds = load_dataset(name, seed=0)
    assert ds.input_shape == shape
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert len(ds.y_train) + len(ds.y_test) == {"digits": 1797, "breast-cancer": 569, "mnist-5k": 5000}[name]
    assert set(np.unique(ds.y_test)) == set(range(ds.num_classes))  # stratified
    if ds.kind == "image":
        assert ds.x_train.min() >= 0 and ds.x_train.max() <= 1
    with pytest.raises(ConfigurationError, match="accepted: breast-cancer, digits, mnist-5k"):
        load_dataset("cifar")


@pytest.mark.parametrize("model", ["logreg", "mlp", "cnn"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_models_fit_inputs_and_flat_params_roundtrip(model, shape):
    m = build_model(model, shape, 10, generator=torch.Generator().manual_seed(0))
    assert m(torch.zeros(2, *shape)).shape == (2, 10)
    v = get_flat_params(m)
    assert v.shape == (num_params(m),)
    set_flat_params(m, v * 2)
    np.testing.assert_allclose(get_flat_params(m), (v * 2).astype(np.float32))
    m2 = build_model(model, shape, 10, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(get_flat_params(m2), v)


def test_unknown_aggregator_lists_names(monkeypatch):
    with pytest.raises(ConfigurationError, match=r"aggregation\.name"):
        build_aggregator("nope")
    with pytest.raises(ConfigurationError, match="unknown setting") as info:
        build_aggregator("mean", {"bogus": 1})
    assert info.value.field == "aggregation.options.bogus" and info.value.accepted == "weighted"
    with pytest.raises(ConfigurationError, match="expected true or false") as info:
        build_aggregator("mean", {"weighted": "yes"})
    assert info.value.field == "aggregation.options.weighted"

    # a registered factory without typed Options is called with the mapping as keywords
    class Untyped(Aggregator):  # keyword options, no Options class
        def __init__(self, *, scale: float = 1.0) -> None:
            self.scale = scale

        def aggregate(self, updates, ctx):
            raise NotImplementedError

    monkeypatch.setitem(AGGREGATORS._items, "untyped-test", Untyped)
    assert build_aggregator("untyped-test", {"scale": 2.0}).scale == 2.0
    with pytest.raises(ConfigurationError, match="invalid options for aggregator 'untyped-test'") as info:
        build_aggregator("untyped-test", {"bogus": 1})
    assert info.value.field == "aggregation.options"


def test_typed_options_build_the_same_aggregator_by_name_and_by_keyword():
    by_name = build_aggregator("mean", {"weighted": False})
    assert isinstance(by_name, MeanAggregator) and by_name.options == MeanOptions(weighted=False)
    assert MeanAggregator(weighted=False).options == by_name.options == MeanAggregator(MeanOptions(False)).options
    with pytest.raises(ConfigurationError, match="unknown option"):
        MeanAggregator(bogus=1)


def test_registry_is_complete_on_import_of_any_submodule():
    code = "import protocols.aggregation as a; print(' '.join(a.AGGREGATORS.names()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert {"mean", "secagg", "paillier", "dp-fedavg", "krum", "median", "norm-bound"} <= set(out)


def test_run_config_defaults_are_the_main_job():
    cfg = RunConfig()
    assert (cfg.federation.rounds, cfg.federation.patience, cfg.federation.sampling) == (50, 10, "all")
    data = cfg.data
    assert (data.dataset, data.num_clients, data.partition, data.alpha) == ("digits", 20, "dirichlet", 0.5)
    assert (cfg.model.name, cfg.model.hidden) == ("mlp", (64,))
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr, cfg.train.momentum) == (2, 16, 0.05, 0.9)
    assert cfg.aggregation.name == "mean" and cfg.dp is None and cfg.seed == 0
    # a bare federation runs its whole budget; only the main job stops on a plateau
    assert FederationConfig().patience is None and FederationConfig().rounds == 50
    # overriding a table keeps the main job's other settings
    assert override(cfg, {"federation": {"rounds": 7}}).federation == FederationConfig(rounds=7, patience=10)


def test_dp_table_is_a_typed_dp_config():
    cfg = load_config(RunConfig, {"dp": {"noise_multiplier": 1.0, "clip_norm": 0.5}})
    assert cfg.dp == DPConfig(noise_multiplier=1.0, clip_norm=0.5)
    assert load_config(RunConfig, config_to_dict(cfg)) == cfg
    assert override(cfg, {"dp": {"clip_norm": 0.25}}).dp == DPConfig(noise_multiplier=1.0, clip_norm=0.25)
    for table, field in [
        ({"noise_multiplier": 0}, "dp.noise_multiplier"),
        ({"noise_multiplier": "lots"}, "dp.noise_multiplier"),
        ({"noise_multiplier": 1.0, "nosie": "central"}, "dp.nosie"),
        ({"noise_multiplier": 1.0, "weighting": "examples"}, "dp.weighting"),
    ]:
        with pytest.raises(ConfigurationError) as info:
            load_config(RunConfig, {"dp": table})
        assert info.value.field == field
    with pytest.raises(ConfigurationError) as info:
        load_config(RunConfig, {"dp": 3})
    assert info.value.field == "dp"
