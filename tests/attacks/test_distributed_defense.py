"""The distributed-DP defense of an attack case (issue 15 inside the attack matrix): its registration,
the Poisson accounting of its rounds, the real ring sum, and what it stops."""

from __future__ import annotations

import pytest

from attacks import DEFENSES, Adversary, AttackCase, Defense
from attacks.runner import run_attack
from attacks.scenario import make_run_config
from privagg.errors import ConfigurationError
from protocols.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_quiet_thread")


def test_noise_placement_is_checked() -> None:
    with pytest.raises(ConfigurationError):
        Defense("secagg", noise="client")  # noise without DP
    with pytest.raises(ConfigurationError):
        Defense("mean", dp=True, noise="distributed")  # distributed noise needs the secure sum
    assert Defense("secagg", dp=True, sum_only=True).dp_noise == "client"
    assert Defense("mean", dp=True).dp_noise == "central"


def test_only_distributed_dp_samples_as_poisson() -> None:
    spec = DEFENSES.get("distributed-dp")
    assert spec.dp and spec.sum_only and spec.dp_noise == "distributed" and spec.sampling == "poisson"
    assert all(DEFENSES.get(d).sampling == "fixed" for d in ("none", "secagg", "dp", "secagg+dp", "paillier"))


def test_the_run_config_samples_everyone_with_rate_one_and_keeps_the_defaults() -> None:
    cfg = make_run_config(AttackCase.create(defense="distributed-dp"), train=TrainConfig(), rounds=3)
    assert cfg.federation.sampling == "poisson" and cfg.federation.sampling_rate == 1.0
    assert cfg.dp is not None and cfg.dp.noise == "distributed" and cfg.dp.target_epsilon == 8.0
    assert cfg.dp.mechanism == "dgauss" and cfg.dp.bits == 16 and cfg.dp.clip_norm == 1.0
    assert cfg.aggregation.name == "secagg"
    assert make_run_config(AttackCase.create(defense="secagg+dp"), train=TrainConfig()).federation.sampling == "all"


def test_imprint_sees_only_the_ring_sum_and_recovers_nothing() -> None:
    case = AttackCase.create(num_clients=10, seed=1, defense="distributed-dp", adversary=Adversary.malicious_server())
    r = run_attack("imprint", case)
    assert r.metrics["dp_bits"] == 16 and r.metrics["dp_secure_sum"] and r.metrics["dp_epsilon_rdp"] <= 8.0
    assert r.metrics["fraction_recovered"] == 0.0 and r.metrics["psnr_median"] < 20.0


def test_inverting_the_noised_sum_recovers_nothing() -> None:
    r = run_attack("inverting-gradients", AttackCase.create(num_clients=10, seed=1, defense="distributed-dp"))
    assert r.metrics["fraction_recovered"] == 0.0
