"""Malicious-server attacks on secure aggregation: each isolates the target's update against the
unprotected configuration and is stopped by privagg's active-mode defenses."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from attacks.protocol import PROTOCOL_ATTACKS, make_victims, run_protocol_attack
from attacks.registry import AttackCase
from attacks.runner import run_attack
from privagg.errors import ConfigurationError
from privagg.randomness import InsecureDeterministicSecrets

N = 6


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def victims():  # type: ignore[no-untyped-def]
    return {
        crafted: make_victims(num_clients=N, target=2, seed=0, crafted_for_others=crafted) for crafted in (False, True)
    }


def _run(attack: str, config: str, victims) -> object:  # type: ignore[no-untyped-def]
    v = victims[attack == "model-inconsistency"]
    return run_protocol_attack(
        attack,
        config=config,
        num_clients=N,
        target=2,
        victims=v,
        secrets=InsecureDeterministicSecrets(f"{attack}/{config}"),
    )


@pytest.mark.parametrize("attack", PROTOCOL_ATTACKS)
def test_attack_isolates_the_target_without_protection(attack: str, victims) -> None:  # type: ignore[no-untyped-def]
    o = _run(attack, "unprotected", victims)
    assert o.succeeded, o.stopped_by
    assert o.psnr is not None and o.psnr >= 30.0  # the target's digit, rebuilt from its isolated update
    assert not o.client_aborts


@pytest.mark.parametrize("attack", PROTOCOL_ATTACKS)
def test_active_mode_stops_the_attack(attack: str, victims) -> None:  # type: ignore[no-untyped-def]
    o = _run(attack, "active", victims)
    assert not o.succeeded
    assert o.client_aborts, "honest clients must abort"
    assert o.psnr is None or o.psnr < 15.0  # nothing about the target's digit


def test_what_each_defense_stops(victims) -> None:  # type: ignore[no-untyped-def]
    # model digest bound into the signed config hash (active only)
    o = _run("model-inconsistency", "active", victims)
    assert any("different configuration or model" in r for r in o.client_aborts.values())
    # PKI: a Sybil is not in the identity directory (active only)
    o = _run("sybil-isolation", "active", victims)
    assert any("identity directory" in r for r in o.client_aborts.values())
    assert _run("sybil-isolation", "semi-honest", victims).succeeded  # hardened checks alone do not stop Sybils
    # hardened unmask checks stop both unmask-stage attacks even in semi-honest mode
    o = _run("both-shares", "semi-honest", victims)
    assert not o.succeeded and any("both as survivor and as dropped" in r for r in o.client_aborts.values())
    o = _run("fake-dropout", "semi-honest", victims)
    assert not o.succeeded and any("threshold" in r or "missing" in r for r in o.client_aborts.values())


def test_model_inconsistency_first_layer_is_the_targets_alone(victims) -> None:  # type: ignore[no-untyped-def]
    v = victims[True]
    first = v.first_layer
    for cid, upd in v.float_updates.items():
        if cid != v.target:
            assert np.all(upd[first] == 0.0)  # dead ReLUs: no first-layer gradient
    assert np.any(v.float_updates[v.target][first] != 0.0)


def test_registered_protocol_attack_reports_the_matrix() -> None:
    r = run_attack(
        "protocol", AttackCase(num_clients=4, options={"configs": ("unprotected", "active"), "flower": False})
    )
    assert r.success is True
    assert {f"{a}/unprotected" for a in PROTOCOL_ATTACKS} <= set(r.metrics)
    assert all(r.metrics[f"{a}/unprotected"] == 1.0 for a in PROTOCOL_ATTACKS)
    assert all(r.metrics[f"{a}/active"] == 0.0 for a in PROTOCOL_ATTACKS)
    assert r.tables and len(r.tables[0][2]) == 2 * len(PROTOCOL_ATTACKS)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigurationError):
        run_protocol_attack("replay", config="active")
    with pytest.raises(ConfigurationError):
        run_protocol_attack("both-shares", config="paranoid")
    with pytest.raises(ConfigurationError):
        run_protocol_attack("both-shares", config="active", num_clients=3)


@pytest.mark.flower
@pytest.mark.parametrize("attack", ["sybil-isolation", "fake-dropout", "both-shares"])
def test_same_attacks_against_flower_secaggplus_client(attack: str, victims) -> None:  # type: ignore[no-untyped-def]
    """Flower's SecAgg+ client mod (flwr 1.41) obeys the malicious server: the target's update comes out."""
    pytest.importorskip("flwr")
    from attacks.protocol import run_flower_attack

    o = run_flower_attack(attack, victims=victims[False])
    assert o.succeeded
    assert o.recovered is not None
    assert np.max(np.abs(o.recovered - victims[False].float_updates[2])) < 1e-5
