"""SPEAR: exact batch inversion of a fully connected ReLU layer, its failure modes, and the registered attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attacks import ATTACKS, AttackCase
from attacks.matrix import attack_matrix
from attacks.registry import catalog
from attacks.runner import run_attack
from attacks.spear import Spear, first_relu_layer, spear_invert
from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng, torch_generator

pytestmark = pytest.mark.usefixtures("one_quiet_thread")


def _layer_gradients(
    b: int, *, m: int = 32, n: int = 20, seed: int = 0, duplicate: bool = False
) -> tuple[nn.Sequential, torch.Tensor, list[torch.Tensor]]:
    """A known batch through a float64 two-layer ReLU net; the first layer's exact gradients (mean cross-entropy)."""
    rng = simulation_rng(seed, "test-spear")
    torch.manual_seed(0)  # only nn.Linear's own init below; every value the test checks is set from rng
    net = nn.Sequential(nn.Linear(n, m), nn.ReLU(), nn.Linear(m, 5)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.from_numpy(rng.normal(0.0, 0.5, size=tuple(p.shape))))
    x = torch.from_numpy(rng.normal(0.0, 1.0, size=(b, n)))  # centred: switched-off sets vary by example
    if duplicate:
        x[1] = x[0]
    y = torch.from_numpy(rng.integers(0, 5, size=b))
    loss = nn.functional.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, [_lin(net).weight, _lin(net).bias])
    return net, x, [g.detach() for g in grads]


def _lin(net: nn.Sequential) -> nn.Linear:
    first = net[0]
    assert isinstance(first, nn.Linear)
    return first


def _invert(net: nn.Sequential, grads: list[torch.Tensor], b: int, seed: int = 0):  # type: ignore[no-untyped-def]
    return spear_invert(
        grads[0], grads[1], b, weight=_lin(net).weight, bias=_lin(net).bias, generator=torch_generator(seed, "spear")
    )


def _matched_error(x: torch.Tensor, rec: np.ndarray) -> float:
    """Largest input error after pairing each input with its nearest reconstruction (order is unknown)."""
    t = x.numpy()
    cost = np.abs(t[:, None, :] - rec[None, :, :]).max(-1)
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].max())


@pytest.mark.parametrize("b", [1, 4])
def test_known_batch_is_recovered_exactly(b: int) -> None:
    net, x, grads = _layer_gradients(b)
    out = _invert(net, grads, b)
    assert out.status == "exact" and out.directions == b
    assert out.x is not None and out.x.shape == (b, 20)
    assert _matched_error(x, out.x) < 1e-6
    assert out.residual < 1e-9


def test_wrong_inputs_are_not_accepted() -> None:
    """The check that the recovered inputs switch on the units their gradient says is what makes a selection
    exact: with the layer's weights perturbed, no selection is consistent and the outcome says so."""
    net, _, grads = _layer_gradients(4)
    with torch.no_grad():
        _lin(net).bias.add_(torch.from_numpy(simulation_rng(1, "perturb").normal(0, 1.0, size=32)))
    out = spear_invert(
        grads[0], grads[1], 4, weight=_lin(net).weight, bias=_lin(net).bias, generator=torch_generator(0, "spear"),
        max_samples=4096,
    )  # fmt: skip
    assert out.status == "partial"
    assert "inconsistent" in out.reason or "candidate" in out.reason


def test_batch_not_below_the_width_is_reported_not_raised() -> None:
    net, _, grads = _layer_gradients(8, m=8, n=20)
    out = _invert(net, grads, 8)
    assert out.status == "batch-too-large" and out.x is None and out.directions == 0
    assert "width 8" in out.reason
    net, _, grads = _layer_gradients(12, m=8, n=20)
    assert _invert(net, grads, 12).status == "batch-too-large"


def test_identical_inputs_are_rank_deficient() -> None:
    net, _, grads = _layer_gradients(4, duplicate=True)
    out = _invert(net, grads, 4)
    assert out.status == "rank-deficient" and out.x is None


def test_noisy_gradient_is_not_called_exact() -> None:
    net, _, grads = _layer_gradients(4)
    noise = torch.from_numpy(simulation_rng(0, "noise").normal(0, 1e-2 * float(grads[0].abs().max()), grads[0].shape))
    out = spear_invert(
        grads[0] + noise, grads[1], 4, weight=_lin(net).weight, bias=_lin(net).bias, generator=torch_generator(0, "s"),
        max_samples=4096,
    )  # fmt: skip
    assert out.status != "exact"
    assert out.spectral_gap > 1e-3  # the noise floor is visible


def test_same_seed_same_outcome_other_seed_same_batch() -> None:
    net, x, grads = _layer_gradients(6, seed=3)
    a, b_, c = _invert(net, grads, 6, seed=5), _invert(net, grads, 6, seed=5), _invert(net, grads, 6, seed=6)
    assert a.exact and b_.exact and c.exact
    assert a.samples == b_.samples and np.abs(a.x - b_.x).max() < 1e-12  # type: ignore[operator]
    assert _matched_error(x, c.x) < 1e-6  # type: ignore[arg-type]


def test_bad_inputs_are_typed_errors() -> None:
    net, _, grads = _layer_gradients(2)
    with pytest.raises(ConfigurationError):
        spear_invert(
            grads[0], grads[1][:-1], 2, weight=_lin(net).weight, bias=_lin(net).bias, generator=torch.Generator()
        )
    with pytest.raises(ConfigurationError):
        spear_invert(grads[0], grads[1], 0, weight=_lin(net).weight, bias=_lin(net).bias, generator=torch.Generator())
    with pytest.raises(ConfigurationError):
        Spear(max_samples=0)
    with pytest.raises(ConfigurationError):
        first_relu_layer(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)))
    with pytest.raises(ConfigurationError):
        first_relu_layer(nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU()))
    assert isinstance(first_relu_layer(nn.Sequential(nn.Flatten(), nn.Linear(3, 4), nn.ReLU())), nn.Linear)


def test_registry_and_catalog_list_it() -> None:
    assert "spear" in ATTACKS.names()
    assert ["spear", "inference"] == catalog()["attacks"][ATTACKS.names().index("spear")][:2]
    assert not Spear().supports(AttackCase.create(model="cnn"))


def test_registered_attack_recovers_a_digits_batch() -> None:
    r = run_attack("spear", AttackCase.create(num_clients=3, batch_size=4, seed=0))
    assert r.data["spear"]["status"] == "exact"
    assert r.metrics["fraction_recovered"] == 1.0 and r.metrics["spear_exact"] == 1.0
    assert "SPEAR: exact" in r.text


def test_secure_sum_is_inverted_as_the_cohort_batch_and_its_limits_reported() -> None:
    """Under secure aggregation the sum is one batch of the cohort's examples (3 clients x 2 = 6 here). The
    secure sum's fixed-point encoding rounds each update, so the sum is not exactly of rank 6 (a visible noise
    floor) and SPEAR's zero test is not exact there: the outcome says so. A cohort of 3 x 24 = 72 examples is not
    below the 64 units: reported, not raised."""
    case = AttackCase.create(num_clients=3, batch_size=2, seed=0, defense="secagg")
    r = run_attack("spear", case, options={"max_samples": 4096})
    assert r.metrics["inverted_batch"] == 6.0
    assert r.data["spear"]["spectral_gap"] > 1e-3  # the encoding's rounding, against ~1e-6 for a plain update
    assert r.data["spear"]["status"] != "exact" or r.metrics["fraction_recovered"] == 1.0
    big = run_attack("spear", AttackCase.create(num_clients=3, batch_size=24, seed=0, defense="secagg"))
    assert big.data["spear"]["status"] == "batch-too-large" and big.metrics["fraction_recovered"] == 0.0


def test_the_matrix_runs_it() -> None:
    m = attack_matrix(
        ["spear"],
        ["none", "secagg"],
        base=AttackCase.create(num_clients=3, batch_size=2),
        seeds=(0, 1),
        options={"spear": {"max_samples": 4096}},
        utility=False,
    )
    cells = {c.defense: c for c in m.cells}
    assert cells["none"].metric == "fraction_recovered" and cells["none"].value == 1.0
    assert not cells["secagg"].error and 0.0 <= cells["secagg"].value <= 1.0
