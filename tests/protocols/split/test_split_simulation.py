"""The split-learning driver: byte counts, topologies, U-shaped = vanilla math, FedAvg on the same partition."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from privagg.errors import ConfigurationError
from protocols.datasets import load_dataset
from protocols.split.messages import Message, Smashed
from protocols.split.simulation import SplitConfig, client_partition, fedavg_baseline, run_split

BASE = SplitConfig(dataset="breast-cancer", hidden=(8, 4), cut=5, epochs=2, batch_size=32)


def _expected_cut_bytes(batches: list[int], width: int, ushaped_width: int | None = None) -> int:
    """Smashed (ids + B x width) + CutGradient (B x width) [+ ServerActivations + HeadGradient]."""
    total = 0
    for b in batches:
        total += (15 + 4 * b + 1 + 8 + 4 * b * width) + (15 + 1 + 8 + 4 * b * width)
        if ushaped_width is not None:
            total += 2 * (15 + 1 + 8 + 4 * b * ushaped_width)
    return total


def test_vanilla_byte_counts_are_the_encodings() -> None:
    seen: list[Message] = []
    r = run_split(BASE, taps=[lambda s, t, m: seen.append(m)])
    n = len(r.dataset.y_train)
    per_epoch = [32] * (n // 32) + ([n % 32] if n % 32 else [])
    assert r.bytes.steps == 2 * len(per_epoch)
    assert r.bytes.upload + r.bytes.download == _expected_cut_bytes(per_epoch * 2, width=4)
    assert r.bytes.by_type.keys() == {"Smashed", "CutGradient"}
    assert r.bytes.model_sync == 0
    assert sum(isinstance(m, Smashed) for m in seen) == r.bytes.steps
    assert r.bytes.per_step == pytest.approx((r.bytes.upload + r.bytes.download) / r.bytes.steps)


def test_u_shaped_trains_the_same_function_as_vanilla() -> None:
    """Same init, batches and SGD: moving the head and labels to the client changes who computes, not what."""
    v = run_split(replace(BASE, cut=3))
    u = run_split(replace(BASE, cut=3, mode="u-shaped"))
    for a, b in zip(v.model.full().parameters(), u.model.full().parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    n = len(v.dataset.y_train)
    per_epoch = [32] * (n // 32) + ([n % 32] if n % 32 else [])
    assert u.bytes.upload + u.bytes.download == _expected_cut_bytes(per_epoch * 2, width=8, ushaped_width=4)


@pytest.mark.parametrize("topology", ["sequential", "splitfed"])
def test_multi_client_topologies(topology: str) -> None:
    cfg = replace(BASE, topology=topology, num_clients=3, lr=0.2, epochs=3)
    r = run_split(cfg)
    client_params = 4 * sum(p.numel() for p in r.model.bottom.parameters())
    syncs = 3 * 3 if topology == "sequential" else 2 * 3 * 3
    assert r.bytes.model_sync == syncs * client_params
    parts = client_partition(r.dataset, cfg)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(r.dataset.y_train)))
    assert r.accuracy > 0.9


def test_splitfed_averages_the_client_parts() -> None:
    from protocols.split import simulation as sim

    captured = {}
    original = sim._average_into

    def spy(parts, weights):  # type: ignore[no-untyped-def]
        original(parts, weights)
        captured["parts"] = parts

    sim._average_into = spy
    try:
        run_split(replace(BASE, topology="splitfed", num_clients=3, epochs=1))
    finally:
        sim._average_into = original
    first = [p.detach().clone() for p in captured["parts"][0].parameters()]
    for other in captured["parts"][1:]:
        for a, b in zip(first, other.parameters()):
            torch.testing.assert_close(a, b)


def test_fedavg_baseline_runs_on_the_same_partition() -> None:
    cfg = replace(BASE, topology="splitfed", num_clients=3, epochs=3, lr=0.1)
    acc = fedavg_baseline(cfg)
    assert 0.5 < acc <= 1.0


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        SplitConfig(num_clients=2)  # single topology has one client
    with pytest.raises(ConfigurationError):
        SplitConfig(defense="nope")
    with pytest.raises(ConfigurationError):
        run_split(replace(BASE, cut=1))  # nothing for the client to train
    with pytest.raises(ConfigurationError):
        run_split(replace(BASE, mode="u-shaped"))  # cut 5 leaves no server part before the head


def test_taps_see_only_decoded_messages() -> None:
    ds = load_dataset("breast-cancer", seed=0)
    kinds: set[tuple[str, str, str]] = set()
    run_split(
        replace(BASE, epochs=1, cut=3, mode="u-shaped"),
        dataset=ds,
        taps=[lambda s, t, m: kinds.add((s, t, type(m).__name__))],
    )
    assert kinds == {
        ("client 0", "server", "Smashed"),
        ("server", "client 0", "ServerActivations"),
        ("client 0", "server", "HeadGradient"),
        ("server", "client 0", "CutGradient"),
    }
