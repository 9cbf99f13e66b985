"""Membership inference on updates (loss drop) and the ICA core of the Cocktail Party Attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks import ATTACKS, AttackCase
from attacks.metrics import psnr_per_image
from attacks.reconstruction import cocktail_party, match_reconstructions
from attacks.runner import run_attack
from attacks.update_membership import loss_drop_scores
from privagg.errors import ConfigurationError
from protocols.models import build_model, get_flat_params

pytestmark = pytest.mark.usefixtures("one_quiet_thread")


def test_loss_drop_is_zero_without_an_update_and_positive_after_a_step_on_the_example() -> None:
    model = build_model("mlp", (1, 8, 8), 10, generator=torch.Generator().manual_seed(0))
    p = get_flat_params(model)
    x = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    y = np.array([1, 2, 3])
    assert np.allclose(loss_drop_scores(model, p, p, x, y), 0.0)
    xt, yt = torch.from_numpy(x[:1]), torch.from_numpy(y[:1])
    loss = torch.nn.functional.cross_entropy(model(xt), yt)
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(model.parameters()))]).double().numpy()
    drop = loss_drop_scores(model, p, p - 0.1 * g, x, y)
    assert drop[0] > 0 and drop[0] > drop[1]


def test_update_membership_leaks_from_one_update_less_from_the_secure_aggregate() -> None:
    none = run_attack("update-membership", AttackCase.create(num_clients=10, seed=0, defense="none"))
    sec = run_attack("update-membership", AttackCase.create(num_clients=10, seed=0, defense="secagg"))
    assert none.metrics["auc_ci_low"] > 0.55  # measured AUC 0.68 [0.64, 0.72]
    assert sec.metrics["auc"] < none.metrics["auc"]
    assert abs(sec.metrics["utility_gap_points"]) < 1.0  # secure aggregation costs no accuracy
    assert none.data["pairs"] == 640 and "own update" in none.data["threat_model"]
    assert "aggregate" in sec.data["threat_model"]


def test_ica_unmixes_independent_sparse_sources() -> None:
    """Known answer: 4 independent sparse 28x28 sources mixed by 64 random rows come back (sign, scale fixed)."""
    rng = np.random.default_rng(0)
    src = rng.random((4, 784)) * (rng.random((4, 784)) < 0.2)
    src /= src.max(axis=1, keepdims=True)
    mixed = rng.standard_normal((64, 4)) @ src
    rec = match_reconstructions(src, cocktail_party(mixed, 4, seed=0))
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(src, rec)]
    assert min(corr) > 0.99  # right sign, one source each (measured 0.998-1.0)
    assert np.min(psnr_per_image(src.reshape(4, 1, 28, 28), rec.reshape(4, 1, 28, 28))) > 20.0
    assert np.max(psnr_per_image(src.reshape(4, 1, 28, 28), mixed[:4].reshape(4, 1, 28, 28).clip(0, 1))) < 20.0


def test_ica_batch_one_and_too_few_units() -> None:
    x = np.linspace(0, 1, 64) ** 2
    rec = cocktail_party(np.outer([0.5, -2.0, 0.1], x), 1, seed=0)
    assert np.allclose(rec[0], x, atol=1e-9)
    with pytest.raises(ConfigurationError):
        cocktail_party(np.zeros((2, 64)), 3, seed=0)


def test_cocktail_party_is_registered_and_labelled() -> None:
    assert {"cocktail-party", "update-membership"} <= set(ATTACKS.names())
    r = run_attack("cocktail-party", AttackCase.create(num_clients=10, seed=0, defense="none", batch_size=4))
    assert r.metrics["inverted_batch"] == 4.0 and 0.0 <= r.metrics["fraction_recovered"] <= 1.0
