"""Malicious imprint model (Robbing the Fed): the construction, its recovery, and the attack through
the real active SecAgg aggregator and the DP defenses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attacks import ATTACKS, Adversary, AttackCase
from attacks.imprint import (
    ImprintAttack,
    ImprintResult,
    craft_imprint_model,
    imprint_thresholds,
    malicious_model_exposure,
    recover_imprint,
)
from attacks.metrics import psnr_per_image
from attacks.reconstruction import model_gradients
from attacks.runner import run_attack
from privagg.errors import ConfigurationError
from privagg.randomness import torch_generator
from protocols.datasets import load_dataset
from protocols.models import build_model

pytestmark = pytest.mark.usefixtures("one_quiet_thread")


def _malicious(**kw: object) -> AttackCase:
    return AttackCase.create(num_clients=10, adversary=Adversary.malicious_server(), **kw)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=40, max_size=200), st.integers(2, 16))
def test_thresholds_increase_and_start_below_every_value(values: list[float], bins: int) -> None:
    t = imprint_thresholds(np.array(values), bins)
    assert t.shape == (bins,) and np.all(np.diff(t) > 0)
    assert t[0] < min(values)


def test_thresholds_cut_equally_likely_bins() -> None:
    v = np.random.default_rng(0).random(10_000)
    t = imprint_thresholds(v, 10)
    counts = np.histogram(v, bins=np.r_[t, np.inf])[0]
    assert np.all(np.abs(counts - 1000) < 60)
    with pytest.raises(ConfigurationError):
        imprint_thresholds(v, 1)
    with pytest.raises(ConfigurationError):
        imprint_thresholds(v[:5], 10)


def _crafted_gradients(perturb_output: bool) -> tuple[np.ndarray, list[torch.Tensor]]:
    ds = load_dataset("digits", seed=0)
    gen = torch_generator(0, "imprint-test")
    model = build_model("mlp", ds.input_shape, ds.num_classes, generator=gen, hidden=(64,))
    x = ds.x_train.reshape(len(ds.x_train), -1)
    bright = x.mean(1)
    t = imprint_thresholds(ds.x_test.reshape(len(ds.x_test), -1).mean(1), 64)
    bins = np.searchsorted(t, bright, side="left")
    picks, seen = [], set()
    for i, b in enumerate(bins):  # five images in five different bins
        if b not in seen:
            seen.add(b)
            picks.append(i)
        if len(picks) == 5:
            break
    craft_imprint_model(model, direction=np.full(64, 1 / 64), thresholds=t, output_gain=5.0)
    if perturb_output:
        with torch.no_grad():
            out = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
            out.weight.add_(torch.randn(out.weight.shape, generator=torch.Generator().manual_seed(1)))
    xb = torch.from_numpy(ds.x_train[picks])
    grads = model_gradients(model, xb, torch.from_numpy(ds.y_train[picks]))
    return ds.x_train[picks], grads


def test_imprint_layer_isolates_each_image_exactly() -> None:
    originals, g = _crafted_gradients(perturb_output=False)
    cand = recover_imprint(g[0].numpy(), g[1].numpy())
    assert len(cand) == 5
    best = [max(psnr_per_image(o[None], c.reshape(1, 1, 8, 8))[0] for c in cand) for o in originals]
    assert min(best) > 60.0


def test_imprint_needs_the_identical_columns_after_the_imprint_layer() -> None:
    """With a random output layer the per-bin gradients differ and the differences are no longer images."""
    originals, g = _crafted_gradients(perturb_output=True)
    cand = recover_imprint(g[0].numpy(), g[1].numpy())
    best = [max(psnr_per_image(o[None], c.reshape(1, 1, 8, 8))[0] for c in cand) for o in originals]
    assert np.median(best) < 25.0


def test_imprint_through_the_real_active_secure_aggregator() -> None:
    """Issue 16 target: 10-client cohort, digits, >= 70% of images recovered at >= 25 dB from the sum alone."""
    r = run_attack("imprint", _malicious(defense="secagg", seed=0))
    assert isinstance(r, ImprintResult)
    assert r.data["secagg_threat"] == "active"
    assert r.metrics["secagg_survivors"] == 10 and r.metrics["secagg_clipped"] == 0
    assert r.metrics["images"] == 10.0 and r.metrics["fraction_recovered"] >= 0.7
    assert r.metrics["psnr_median"] >= 40.0 and r.success is True
    assert r.originals.shape == r.reconstructions.shape == (10, 1, 8, 8)
    assert "malicious server" in r.data["threat_model"] and "identical for every client" in r.data["threat_model"]


@pytest.mark.parametrize("defense", ["dp"])
def test_central_dp_stops_the_imprint_model(defense: str) -> None:
    r = run_attack("imprint", _malicious(defense=defense, seed=0))
    assert r.metrics["fraction_recovered"] == 0.0 and r.success is False


def test_no_defense_and_a_deeper_mlp() -> None:
    r = run_attack("imprint", _malicious(defense="none", seed=1, hidden=(64, 32), batch_size=2))
    assert r.metrics["images"] == 20.0 and r.metrics["fraction_recovered"] >= 0.9


def test_random_direction_statistic_works_too() -> None:
    r = run_attack("imprint", _malicious(defense="secagg", seed=0), options={"statistic": "random"})
    assert r.metrics["fraction_recovered"] >= 0.7


def test_needs_a_malicious_server_and_an_mlp() -> None:
    assert "imprint" in ATTACKS.names()
    assert not ImprintAttack().supports(AttackCase.create(num_clients=10))
    with pytest.raises(ConfigurationError):
        ImprintAttack().run(AttackCase.create(num_clients=10))
    with pytest.raises(ConfigurationError):
        run_attack("imprint", _malicious(model="logreg"))
    with pytest.raises(ConfigurationError):
        ImprintAttack(statistic="variance")  # type: ignore[arg-type]


def test_exposure_for_the_audit_states_a_verdict_with_an_interval() -> None:
    e = malicious_model_exposure("secagg", seeds=(0, 1))
    assert e.leaks and len(e.fractions) == 2 and e.interval[1] <= e.interval[0] <= e.interval[2]
    line = e.verdict()
    assert "LEAKS" in line and "secagg" in line and "95% CI" in line and "\n" not in line
    with pytest.raises(ConfigurationError):
        malicious_model_exposure("secagg", seeds=(0,))
