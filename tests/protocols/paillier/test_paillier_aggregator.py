"""The ``paillier`` aggregator: registered, exact up to quantisation, refuses bad options, reports cost."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from privagg.errors import ConfigurationError
from privagg.randomness import InsecureDeterministicSecrets
from protocols.aggregation import AGGREGATORS, ClientUpdate, RoundContext
from protocols.paillier import PaillierAggregator

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
    bound = res.metrics["paillier_error_bound"]
    assert bound == pytest.approx(len(ups) / 32767 / (1 if weighted else len(ups)))
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
    sections = agg.report_sections()
    assert sections and sections[0].key == "paillier"
    text = dict(sections[0].summary)
    assert "threshold 2-of-3" in text["key"] and text["rounds decrypted / refused"] == "2 / 0"


def test_too_few_clients_round_is_refused_not_decrypted():
    agg = PaillierAggregator(min_clients=3, secrets=InsecureDeterministicSecrets(b"few"), **OPTS)
    res = agg.aggregate(_updates(k=2), _ctx())
    assert "paillier_aborted" in res.metrics and res.participants == ()
    assert not res.delta.any()


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
    assert any(s.key == "paillier" for s in res.report_sections())
