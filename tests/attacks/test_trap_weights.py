"""Trap weights (Boenisch et al. 2023): the crafted first layer fires on few inputs, a unit caught by one
image gives that image exactly, and the attack reads the cohort's images from the secure aggregate alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attacks import ATTACKS, Adversary, AttackCase
from attacks.imprint import ImprintResult
from attacks.metrics import psnr_per_image
from attacks.reconstruction import model_gradients
from attacks.runner import run_attack
from attacks.trap_weights import (
    TrapWeightsAttack,
    _split_signs,
    craft_trap_weights,
    recover_trap_weights,
    trap_scales,
)
from privagg.errors import ConfigurationError
from privagg.randomness import torch_generator
from protocols.datasets import load_dataset
from protocols.models import build_model

pytestmark = pytest.mark.usefixtures("one_quiet_thread")


def _malicious(**kw: object) -> AttackCase:
    return AttackCase.create(num_clients=10, adversary=Adversary.malicious_server(), **kw)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(4, 33), st.integers(0, 2**31 - 1))
def test_each_unit_has_half_its_weights_negative(k: int, d: int, seed: int) -> None:
    mags, neg = _split_signs(k, d, np.random.default_rng(seed))
    assert mags.shape == neg.shape == (k, d) and np.all(mags >= 0)
    assert np.all(neg.sum(axis=1) == d // 2)


@pytest.mark.parametrize("per_unit", [True, False])
def test_scales_make_units_fire_on_the_chosen_share_of_public_images(per_unit: bool) -> None:
    ds = load_dataset("digits", seed=0)
    public = ds.x_test.reshape(len(ds.x_test), -1).astype(np.float64)
    mags, neg = _split_signs(64, 64, np.random.default_rng(3))
    s = trap_scales(mags, neg, public, rate=0.1, per_unit=per_unit)
    assert s.shape == (64,) and np.all(s > 0)
    w = np.where(neg, -mags * s[:, None], mags)
    fires = (public @ w.T > 0).mean(axis=0)
    if per_unit:  # each unit on its own quantile: within a couple of images of 10%
        assert np.all(np.abs(fires - 0.1) < 0.01)
    else:  # one factor: 10% on average over the units
        assert abs(fires.mean() - 0.1) < 0.01 and fires.std() > 0.01
    with pytest.raises(ConfigurationError):
        trap_scales(mags, neg, public, rate=1.0)


def test_a_unit_caught_by_one_image_gives_it_exactly_and_mixes_otherwise() -> None:
    ds = load_dataset("digits", seed=0)
    model = build_model("mlp", ds.input_shape, ds.num_classes, generator=torch_generator(0, "trap-test"), hidden=(64,))
    public = ds.x_test.reshape(len(ds.x_test), -1).astype(np.float64)
    mags, neg = _split_signs(64, 64, np.random.default_rng(1))
    scales = trap_scales(mags, neg, public, rate=0.1)
    craft_trap_weights(model, magnitudes=mags, negative=neg, scales=scales)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert float(first.bias.abs().max()) == 0.0  # type: ignore[union-attr]
    x, y = ds.x_train[:10], ds.y_train[:10]
    g = model_gradients(model, torch.from_numpy(x), torch.from_numpy(y))
    on = (x.reshape(10, -1) @ first.weight.detach().double().numpy().T) > 0  # (images, units)
    single = [i for i in range(64) if on[:, i].sum() == 1]
    assert single, "some unit must be caught by one image"
    gw, gb = g[0].double().numpy(), g[1].double().numpy()
    for i in single:
        j = int(np.flatnonzero(on[:, i])[0])
        assert psnr_per_image(x[j][None], (gw[i] / gb[i]).reshape(1, 1, 8, 8))[0] > 60
    mixed = [i for i in range(64) if on[:, i].sum() >= 2 and abs(gb[i]) > 1e-6]
    if mixed:  # a unit two images switched on gives neither of them
        i = mixed[0]
        cand = (gw[i] / gb[i]).reshape(1, 1, 8, 8)
        assert max(psnr_per_image(x[j][None], cand)[0] for j in np.flatnonzero(on[:, i])) < 60
    cands = recover_trap_weights(gw, gb)
    assert len(cands) <= int((np.abs(gb) > 0).sum()) and cands.min() >= 0 and cands.max() <= 1


def test_no_gradient_no_candidates() -> None:
    assert recover_trap_weights(np.zeros((4, 3)), np.zeros(4)).shape == (0, 3)


def test_trap_weights_through_the_real_active_secure_aggregator() -> None:
    r = run_attack("trap-weights", _malicious(defense="secagg", seed=0))
    assert isinstance(r, ImprintResult) and r.attack == "trap-weights"
    assert r.data["secagg_threat"] == "active" and r.metrics["secagg_survivors"] == 10
    assert r.metrics["images"] == 10.0 and r.metrics["fraction_recovered"] >= 0.6
    assert "malicious server" in r.data["threat_model"] and "trap weights" in r.data["threat_model"]


def test_client_noise_in_the_secure_sum_stops_trap_weights() -> None:
    r = run_attack("trap-weights", _malicious(defense="distributed-dp", seed=0))
    assert r.metrics["fraction_recovered"] == 0.0


def test_registered_needs_a_malicious_server_and_checks_options() -> None:
    assert ATTACKS.get("trap-weights") is TrapWeightsAttack
    assert not TrapWeightsAttack().supports(AttackCase.create(num_clients=10))
    with pytest.raises(ConfigurationError):
        TrapWeightsAttack(rate=0.0)
    with pytest.raises(ConfigurationError):
        TrapWeightsAttack().run(AttackCase.create(num_clients=10))
