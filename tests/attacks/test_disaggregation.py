"""Disaggregation over rounds: least squares on the participation pattern recovers a target's update
from secure aggregates once the pattern has full column rank."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attacks import Adversary, AttackCase
from attacks.disaggregation import Disaggregation, disaggregate, participation_matrix
from attacks.runner import run_attack
from privagg.errors import ConfigurationError

pytestmark = pytest.mark.usefixtures("one_quiet_thread")


@settings(max_examples=50, deadline=None)
@given(st.integers(3, 8), st.integers(0, 2**31 - 1))
def test_least_squares_is_exact_iff_identifiable(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rounds = int(rng.integers(1, 3 * n))
    parts = [tuple(sorted(rng.choice(n, int(rng.integers(1, n + 1)), replace=False).tolist())) for _ in range(rounds)]
    a = participation_matrix(parts, n)
    u = rng.standard_normal((n, 4))
    est, ok = disaggregate(a, a @ u, 0)
    if ok:
        assert np.allclose(est, u[0], atol=1e-8)
    if np.linalg.matrix_rank(a) == n:
        assert ok
    # identifiable <=> the target's unit vector is in the row space: appending it keeps the rank
    assert ok == (np.linalg.matrix_rank(np.vstack([a, np.eye(n)[0]])) == np.linalg.matrix_rank(a))


def test_participation_matrix_and_bad_target() -> None:
    a = participation_matrix([(0, 2), (1,)], 3)
    assert a.tolist() == [[1, 0, 1], [0, 1, 0]]
    with pytest.raises(ConfigurationError):
        disaggregate(a, np.zeros((2, 1)), 3)


def test_frozen_model_updates_are_recovered_from_secure_aggregates() -> None:
    """Real active SecAgg, 10 clients, cohorts of 5: 5 rounds cannot identify the target, 20 rounds do,
    and the recovered update gives the target's digit in closed form."""
    mal = AttackCase.create(defense="secagg", seed=0, adversary=Adversary.malicious_server())
    frozen = {"freeze_model": True}
    few = run_attack("disaggregation", mal.with_(options={"rounds": 5}), options=frozen)
    assert few.metrics["identifiable"] == 0.0 and few.metrics["fraction_recovered"] == 0.0
    many = run_attack("disaggregation", mal.with_(options={"rounds": 20}), options=frozen)
    assert many.metrics["identifiable"] == 1.0 and many.metrics["rank"] == 10.0
    assert many.metrics["target_rounds"] >= 1 and many.metrics["fraction_recovered"] == 1.0
    assert many.metrics["target_image_psnr"] >= 40.0
    assert "knows each round's participants" in many.data["threat_model"] and "malicious" in many.data["threat_model"]
    assert not Disaggregation(freeze_model=True).supports(AttackCase.create(defense="secagg"))
    with pytest.raises(ConfigurationError):
        run_attack("disaggregation", AttackCase.create(defense="secagg"), options=frozen)


def test_no_defense_exposes_every_update() -> None:
    r = run_attack("disaggregation", AttackCase.create(defense="none", seed=0, options={"rounds": 20}))
    assert r.metrics["target_rounds"] >= 1
    assert r.metrics["identifiable"] == 1.0 and r.metrics["fraction_recovered"] == 1.0


def test_a_training_model_blurs_the_per_round_updates() -> None:
    r = run_attack("disaggregation", AttackCase.create(defense="secagg", seed=0, options={"rounds": 20}))
    assert r.metrics["identifiable"] == 1.0 and r.metrics["relative_error_median"] > 0.1
