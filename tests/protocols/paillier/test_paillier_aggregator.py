"""The ``paillier`` aggregator: registered, exact up to quantisation, refuses bad options, reports cost."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from privagg.errors import ConfigurationError
from privagg.randomness import InsecureDeterministicSecrets
from protocols.aggregation import AGGREGATORS, ClientUpdate, RoundContext, build_aggregator
from protocols.paillier import PaillierAggregator
from protocols.paillier.aggregator import PaillierOptions, PaillierRoundStats

OPTS: dict[str, Any] = dict(key_bits=512, allow_insecure=True, clip=1.0, value_bits=16, decryptors=3, threshold=2)


def _ctx(r=0, population=8, seed=0):
    return RoundContext(
        round=r,
        population=population,
        sampled=tuple(range(population)),
        sampling="fixed",
        sampling_rate=1.0,
        rng=np.random.default_rng(seed),
    )


def _updates(k=5, dim=300, seed=1, scale=0.5):
    rng = np.random.default_rng(seed)
    return [
        ClientUpdate(client_id=i, delta=rng.normal(0, scale, dim), num_examples=int(rng.integers(1, 50)))
        for i in range(k)
    ]


def test_registered():
    assert AGGREGATORS.get("paillier") is PaillierAggregator
    assert PaillierAggregator.needs_plaintext_updates is False


@pytest.mark.parametrize("weighted", [True, False])
def test_mean_matches_plaintext_within_quantisation(weighted):
    agg = PaillierAggregator(weighted=weighted, secrets=InsecureDeterministicSecrets(b"agg"), **OPTS)
    ups = _updates()
    res = agg.aggregate(ups, _ctx())
    stack = np.clip(np.stack([u.delta for u in ups]), -1, 1)
    if weighted:
        w = np.array([u.num_examples for u in ups], dtype=float)
        expect = (w / w.sum()) @ stack
    else:
        expect = stack.mean(axis=0)
    # the server decodes the mean from the weight slot: numerator error <= k steps, and
    # weighted the slot's (<= k steps) too, over the decoded total weight sum(n_i / max n)
    bound = res.metrics["paillier_error_bound"]
    (stats,) = agg.rounds
    n = np.array([u.num_examples for u in ups], dtype=float)
    total = n.sum() / n.max() if weighted else len(ups)
    assert stats.total_weight == pytest.approx(total, abs=2 * len(ups) / 32767)
    assert bound == pytest.approx(len(ups) / 32767 * (2 if weighted else 1) / stats.total_weight)
    assert np.max(np.abs(res.delta - expect)) <= bound
    assert res.participants == tuple(range(5))
    assert res.metrics["paillier_clipped"] == int(np.count_nonzero(np.abs(np.stack([u.delta for u in ups])) > 1))
    for key in ("paillier_keygen_seconds", "paillier_encrypt_seconds", "paillier_decrypt_seconds", "paillier_bytes_up"):
        assert key in res.metrics


def test_keys_made_once_and_rounds_continue():
    agg = PaillierAggregator(secrets=InsecureDeterministicSecrets(b"rounds"), **OPTS)
    agg.aggregate(_updates(seed=1), _ctx(0))
    setup = agg.setup
    assert setup is not None
    key = setup.public_key
    res = agg.aggregate(_updates(seed=2), _ctx(1))
    assert agg.setup is setup and setup.public_key is key and "paillier_keygen_seconds" not in res.metrics
    assert [r.round for r in agg.rounds] == [0, 1] and all(isinstance(r, PaillierRoundStats) for r in agg.rounds)
    assert agg.rounds[0].keygen_seconds == setup.keygen_seconds and agg.rounds[1].keygen_seconds is None
    assert agg.rounds[1].metrics() == res.metrics


def test_max_weight_caps_the_weights():
    agg = PaillierAggregator(max_weight=10.0, secrets=InsecureDeterministicSecrets(b"cap"), **OPTS)
    ups = _updates()
    res = agg.aggregate(ups, _ctx())
    w = np.array([min(u.num_examples, 10) for u in ups], dtype=float)
    expect = (w / w.sum()) @ np.clip(np.stack([u.delta for u in ups]), -1, 1)
    assert np.max(np.abs(res.delta - expect)) <= res.metrics["paillier_error_bound"]


def test_too_few_clients_round_is_refused_not_decrypted():
    agg = PaillierAggregator(min_clients=3, secrets=InsecureDeterministicSecrets(b"few"), **OPTS)
    res = agg.aggregate(_updates(k=2), _ctx())
    assert "paillier_aborted" in res.metrics and res.participants == ()
    assert not res.delta.any()
    assert agg.rounds[0].aborted == res.metrics["paillier_aborted"]


def test_cohort_larger_than_slot_headroom_is_refused():
    agg = PaillierAggregator(max_clients=3, secrets=InsecureDeterministicSecrets(b"big"), **OPTS)
    with pytest.raises(ConfigurationError, match="max_clients"):
        agg.aggregate(_updates(k=4), _ctx())


@pytest.mark.parametrize(
    ("opts", "field"),
    [
        (dict(key_bits=1024), "key_bits"),
        (dict(key_bits=512, allow_insecure=True, threshold=4), "threshold"),
        (dict(key_bits=512, allow_insecure=True, min_clients=1), "min_clients"),
        (dict(key_bits=512, allow_insecure=True, randomness="weak"), "randomness"),
        (dict(key_bits=512, allow_insecure=True, clip=-1.0), "clip"),
        (dict(key_bits=512, allow_insecure=True, value_bits=1), "value_bits"),
        (dict(key_bits=512, allow_insecure=True, randomness="fixed-base", exponent_bits=8), "exponent_bits"),
        (dict(key_bits="2048"), "key_bits"),
    ],
)
def test_options_validated(opts, field):
    with pytest.raises(ConfigurationError) as e:
        PaillierAggregator(**opts)
    assert e.value.field == field
    with pytest.raises(ConfigurationError) as e:
        build_aggregator("paillier", opts)
    assert e.value.field == f"aggregation.options.{field}"


def test_typed_options():
    agg = build_aggregator("paillier", {**OPTS, "max_weight": 20})
    assert isinstance(agg, PaillierAggregator) and agg.options == PaillierOptions(**OPTS, max_weight=20.0)
    assert PaillierAggregator(**OPTS, max_weight=20.0).options == agg.options
    with pytest.raises(ConfigurationError) as e:
        PaillierAggregator(max_weight=-1.0, **OPTS)
    assert e.value.field == "max_weight"


def test_nan_update_refused():
    agg = PaillierAggregator(secrets=InsecureDeterministicSecrets(b"nan"), **OPTS)
    ups = _updates(k=3)
    bad = ClientUpdate(client_id=9, delta=np.full(300, np.nan), num_examples=3)
    with pytest.raises(ConfigurationError, match="NaN"):
        agg.aggregate([*ups, bad], _ctx())


def test_fedavg_run_with_paillier():
    from privagg.config import load_config
    from protocols.fedavg import FedAvgSimulation, RunConfig

    cfg = load_config(
        RunConfig,
        {
            "seed": 0,
            "data": {"dataset": "breast-cancer", "num_clients": 4, "partition": "iid"},
            "model": {"name": "logreg"},
            "federation": {"rounds": 2},
            "aggregation": {
                "name": "paillier",
                "options": {"key_bits": 512, "allow_insecure": True, "decryptors": 2, "threshold": 2},
            },
        },
    )
    sim = FedAvgSimulation(cfg)
    res = sim.run(progress=False)
    assert res.final_accuracy > 0.8
    assert isinstance(res.aggregator, PaillierAggregator) and len(res.aggregator.rounds) == 2
