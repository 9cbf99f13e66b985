"""Property inference (Melis et al.): "does this client hold class c" from its update, and what
secure aggregation / DP-FedAvg leave of it."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.property import sample_client_data
from attacks.registry import AttackCase
from attacks.runner import run_attack
from privagg.errors import ConfigurationError

OPTS = {"aux_updates": 60, "targets": 40}


pytestmark = pytest.mark.usefixtures("one_quiet_thread")


def test_client_datasets_have_the_property_or_not() -> None:
    rng = np.random.default_rng(0)
    x = np.arange(200, dtype=np.float32)[:, None]
    y = np.arange(200) % 10
    _, yp = sample_client_data(x, y, size=20, prop_class=3, has_property=True, min_count=2, rng=rng)
    _, yn = sample_client_data(x, y, size=20, prop_class=3, has_property=False, min_count=2, rng=rng)
    assert (yp == 3).sum() >= 2 and len(yp) == 20
    assert (yn == 3).sum() == 0 and len(yn) == 20


def test_property_leaks_from_a_single_update_and_is_deterministic() -> None:
    case = AttackCase(defense="none", options=OPTS)
    r = run_attack("property-inference", case)
    assert r.metrics["auc"] >= 0.75
    assert run_attack("property-inference", case).metrics == r.metrics


def test_secure_aggregation_hides_the_clients_property() -> None:
    """Seeded; with 40 targets the AUC's standard error is ~0.09: the aggregate's AUC stays below 0.75."""
    none = run_attack("property-inference", AttackCase(defense="none", options=OPTS)).metrics["auc"]
    case = AttackCase.create(defense="secagg", num_clients=10, options=OPTS)
    sec = run_attack("property-inference", case).metrics["auc"]
    assert sec < 0.75
    assert sec < none


def test_bad_property_class() -> None:
    with pytest.raises(ConfigurationError):
        run_attack("property-inference", AttackCase(options={"property_class": 11, **OPTS}))
