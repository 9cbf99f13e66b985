"""Fishing (Wen et al. 2022): a crafted output layer lets one class's images alone pass gradient, the
output-bias gradient gives the label histogram, a rank-one gradient gives its image, and the attack
reads images from the secure aggregate alone — but not from a noised sum."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attacks import ATTACKS, Adversary, AttackCase
from attacks.fishing import FishingAttack, craft_fishing_model, read_isolated, read_round
from attacks.imprint import ImprintResult
from attacks.metrics import psnr_per_image
from attacks.reconstruction import model_gradients
from attacks.runner import run_attack
from privagg.errors import ConfigurationError
from privagg.randomness import torch_generator
from protocols.datasets import load_dataset
from protocols.models import build_model, get_flat_params

pytestmark = pytest.mark.usefixtures("one_quiet_thread")


def _malicious(**kw: object) -> AttackCase:
    return AttackCase.create(num_clients=10, adversary=Adversary.malicious_server(), **kw)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 30), st.integers(2, 40), st.integers(0, 2**31 - 1))
def test_a_rank_one_gradient_gives_its_image_and_a_mix_does_not(k: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, delta = rng.random(d), rng.standard_normal(k)
    got, residual = read_isolated(np.outer(delta, x), delta)
    assert np.allclose(got, x, atol=1e-9) and residual < 1e-9
    x2, delta2 = rng.random(d), rng.standard_normal(k)
    mix = np.outer(delta, x) + np.outer(delta2, x2)
    if np.linalg.matrix_rank(np.c_[delta, delta2]) == 2 and np.linalg.norm(x - x2) > 0.1 * np.linalg.norm(x):
        assert read_isolated(mix, delta + delta2)[1] > 1e-3


def test_nothing_passing_reads_nothing() -> None:
    image, residual = read_isolated(np.zeros((3, 4)), np.zeros(3))
    assert residual == math.inf and not image.any()


def _class_round(picks: list[int]) -> tuple[np.ndarray, np.ndarray, list[torch.Tensor], torch.nn.Module]:
    ds = load_dataset("digits", seed=0)
    model = build_model("mlp", ds.input_shape, ds.num_classes, generator=torch_generator(0, "fish"), hidden=(64,))
    ones = np.full(64, 1 / 8.0)
    craft_fishing_model(model, get_flat_params(model), target=3, direction=ones, gain=5.0, offset=-200.0)
    x, y = ds.x_train[picks], ds.y_train[picks]
    return x, y, model_gradients(model, torch.from_numpy(x), torch.from_numpy(y)), model


def test_class_fishing_isolates_the_one_image_of_the_class_and_reads_the_histogram() -> None:
    ds = load_dataset("digits", seed=0)
    y = ds.y_train
    picks = [int(np.flatnonzero(y == 3)[0])] + [int(i) for i in np.flatnonzero(y != 3)[:9]]
    x, labels, g, _ = _class_round(picks)
    read = read_round(g, target=3, images=10, num_classes=10)
    assert np.array_equal(np.rint(read.counts).astype(int), np.bincount(labels, minlength=10))
    assert read.passing == pytest.approx(1.0, abs=1e-6) and read.residual < 1e-6
    assert psnr_per_image(x[:1], read.image.reshape(1, 1, 8, 8))[0] > 60


def test_two_images_of_the_fished_class_mix_and_the_server_sees_it() -> None:
    ds = load_dataset("digits", seed=0)
    threes = [int(i) for i in np.flatnonzero(ds.y_train == 3)[:2]]
    picks = threes + [int(i) for i in np.flatnonzero(ds.y_train != 3)[:8]]
    x, _, g, _ = _class_round(picks)
    read = read_round(g, target=3, images=10, num_classes=10)
    # the output bias counts two images passing, and their shared units make the mix nearly rank one:
    # the count is what refuses it, the residual check is the second line
    assert read.passing == pytest.approx(2.0, abs=1e-6) and read.residual > FishingAttack().consistency
    assert max(psnr_per_image(x[:2], np.repeat(read.image.reshape(1, 1, 8, 8), 2, axis=0))) < 25


def test_fishing_through_the_real_active_secure_aggregator() -> None:
    r = run_attack("fishing", _malicious(defense="secagg", seed=2))
    assert isinstance(r, ImprintResult) and r.attack == "fishing"
    assert r.metrics["images"] == 10.0 and r.metrics["fraction_recovered"] >= 0.5
    assert r.metrics["claimed_recovered"] >= 5 and r.metrics["rounds_used"] <= 10
    assert sorted(np.repeat(np.arange(10), r.data["label_histogram_read"]).tolist()) == sorted(r.true_labels.tolist())
    assert r.data["closed_form"] is True and "malicious server" in r.data["threat_model"]


def test_distributed_dp_stops_fishing() -> None:
    r = run_attack("fishing", _malicious(defense="distributed-dp", seed=2))
    assert r.metrics["fraction_recovered"] == 0.0 and r.metrics["claimed_recovered"] == 0.0


def test_registered_and_refuses_what_it_cannot_craft() -> None:
    assert ATTACKS.get("fishing") is FishingAttack
    assert not FishingAttack().supports(AttackCase.create(num_clients=10))
    assert not FishingAttack().supports(_malicious(hidden=(32, 32)))
    with pytest.raises(ConfigurationError):
        FishingAttack(rounds=0)
    with pytest.raises(ConfigurationError):
        FishingAttack().run(AttackCase.create(num_clients=10))
