"""Malicious-server attacks on secure aggregation: each isolates the target's update against the
unprotected configuration and is stopped by privagg's active-mode defenses."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import attacks.protocol as protocol_pkg
from attacks.protocol import (
    PROTOCOL_ATTACKS,
    ProtocolAttack,
    ProtocolAttackOutcome,
    UnmaskAttack,
    config_for,
    make_victims,
    protocol_attack,
    run_protocol_attack,
)
from attacks.registry import ATTACKS, AttackCase
from attacks.runner import run_attack
from privagg.errors import ConfigurationError
from privagg.randomness import InsecureDeterministicSecrets
from secagg import ThreatModel

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


def _run(attack: str, config: str, victims) -> ProtocolAttackOutcome:  # type: ignore[no-untyped-def]
    v = victims[attack == "model-inconsistency"]
    return run_protocol_attack(
        attack,
        config=config,
        num_clients=N,
        target=2,
        victims=v,
        secrets=InsecureDeterministicSecrets(f"{attack}/{config}".encode()),
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


# The whole matrix (6 clients, target 2): who succeeds, who aborts and why, what the server gave up on.
_THRESHOLD = "only 0 neighbours survived (+ this client), the threshold is 4"
_MISSING = "this client is missing from the survivor list"
_BOTH = "a client is listed both as survivor and as dropped"
_ALL = [0, 1, 2, 3, 4, 5]
_MATRIX = [
    ("model-inconsistency", "unprotected", True, [], [], None),
    ("model-inconsistency", "semi-honest", True, [], [], None),
    (
        "model-inconsistency",
        "active",
        False,
        ["client 0 joined a different configuration or model", "client 2 joined a different configuration or model"],
        _ALL,
        "clients [0, 1, 2, 3, 4, 5] did not reveal their graph-seed contributions",  # secagg.seeding
    ),
    ("sybil-isolation", "unprotected", True, [], [], None),
    ("sybil-isolation", "semi-honest", True, [], [], None),
    # the target refuses the roster and never reveals: the session aborts before the ring is drawn
    (
        "sybil-isolation",
        "active",
        False,
        ["client 6 is not in the identity directory"],
        [2],
        "clients [2] did not reveal their graph-seed contributions",
    ),
    ("fake-dropout", "unprotected", True, [], [], None),
    ("fake-dropout", "semi-honest", False, [_THRESHOLD, _MISSING], _ALL, None),
    ("fake-dropout", "active", False, [_THRESHOLD, _MISSING], _ALL, None),
    ("both-shares", "unprotected", True, [], [], None),
    ("both-shares", "semi-honest", False, [_BOTH], _ALL, None),
    ("both-shares", "active", False, [_BOTH], _ALL, None),
]


@pytest.mark.parametrize(("attack", "config", "succeeded", "reasons", "aborted", "server_abort"), _MATRIX)
def test_outcome_matrix(attack, config, succeeded, reasons, aborted, server_abort, victims) -> None:  # type: ignore[no-untyped-def]
    o = _run(attack, config, victims)
    assert o.succeeded is succeeded
    assert sorted(set(o.client_aborts.values())) == reasons
    assert sorted(o.client_aborts) == aborted
    assert o.server_abort == server_abort
    if succeeded:
        assert o.psnr == 100.0 and o.label_recovered is (None if attack == "model-inconsistency" else True)


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


def test_one_registered_class_per_attack() -> None:
    classes = [ATTACKS.get(name) for name in PROTOCOL_ATTACKS]
    assert all(issubclass(c, ProtocolAttack) for c in classes)
    assert len(set(classes)) == len(PROTOCOL_ATTACKS)
    assert {c.name for c in classes if issubclass(c, UnmaskAttack)} == {"fake-dropout", "both-shares"}
    assert not issubclass(ATTACKS.get("protocol"), ProtocolAttack)  # the suite runs them all
    assert isinstance(protocol_attack("both-shares"), UnmaskAttack)
    with pytest.raises(ConfigurationError):
        protocol_attack("protocol")


def test_attacks_touch_no_private_state() -> None:
    """The attacks use the driver's hooks and public state only (no ``obj._private``)."""
    import re

    from attacks.protocol import client_attacks, conformance, rewrite, server_attacks

    mods = (protocol_pkg.base, protocol_pkg.deviations, protocol_pkg.victims)
    for mod in (*mods, rewrite, conformance, server_attacks, client_attacks):
        src = inspect.getsource(mod)
        assert not re.search(r"\b(?:srv|server|rnd|report|client|c)\._[a-z]", src), mod.__name__


def test_deployed_configuration_follows_the_threat_model() -> None:
    assert config_for(ThreatModel.ACTIVE).name == "active"
    assert config_for("semi-honest").name == "semi-honest" and config_for("semi-honest").hardened


def test_registered_protocol_attack_reports_the_matrix() -> None:
    r = run_attack(
        "protocol", AttackCase.create(num_clients=4, options={"configs": ("unprotected", "active"), "flower": False})
    )
    assert r.success is True
    assert {f"{a}/unprotected" for a in PROTOCOL_ATTACKS} <= set(r.metrics)
    assert all(r.metrics[f"{a}/unprotected"] == 1.0 for a in PROTOCOL_ATTACKS)
    assert all(r.metrics[f"{a}/active"] == 0.0 for a in PROTOCOL_ATTACKS)
    assert r.tables and len(r.tables[0][2]) == 2 * len(PROTOCOL_ATTACKS)
    assert [row[0] for row in r.tables[0][2]] == [a for a in PROTOCOL_ATTACKS for _ in range(2)]


def test_each_attack_runs_on_its_own() -> None:
    case = AttackCase.create(num_clients=4, options={"configs": ("semi-honest",), "flower": False})
    r = run_attack("sybil-isolation", case)
    assert r.metrics == {"sybil-isolation/semi-honest": 1.0} and r.success is True
    r = run_attack("both-shares", case)
    assert r.metrics == {"both-shares/semi-honest": 0.0} and r.success is False
    assert r.tables[0][2][0][5] == "a client is listed both as survivor and as dropped"


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


def test_model_inconsistency_is_not_simulated_against_flower(victims) -> None:  # type: ignore[no-untyped-def]
    from attacks.protocol import run_flower_attack

    with pytest.raises(ConfigurationError):
        run_flower_attack("model-inconsistency", victims=victims[True])
