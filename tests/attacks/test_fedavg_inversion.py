"""Multi-step FedAvg inversion: the differentiable local-step simulation matches the real trainer, and
the attack rebuilds a client's batch from its 5-step model difference."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from attacks import AttackCase
from attacks.fedavg_inversion import simulate_local_steps
from attacks.inversion import InversionResult
from attacks.runner import run_attack
from privagg.randomness import torch_generator
from protocols.datasets import load_dataset
from protocols.models import build_model, get_flat_params, set_flat_params
from protocols.training import TrainConfig, train_local

pytestmark = pytest.mark.usefixtures("one_quiet_thread")


@pytest.mark.parametrize(("images", "batch", "steps"), [(8, 8, 5), (16, 8, 2)])
def test_simulated_local_steps_equal_the_real_trainer(images: int, batch: int, steps: int) -> None:
    """Full-batch steps, or one pass over the data: the client's shuffling does not matter."""
    ds = load_dataset("digits", seed=0)
    model = build_model("mlp", ds.input_shape, ds.num_classes, generator=torch_generator(0, "fedavg-inv"))
    p0 = get_flat_params(model)
    x, y = ds.x_train[:images], ds.y_train[:images]
    train_local(model, x, y, TrainConfig(batch_size=batch, lr=0.1), generator=torch_generator(1, "t"), steps=steps)
    real = get_flat_params(model) - p0
    set_flat_params(model, p0)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.named_parameters()}
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    if images > batch:  # the attacker's dummy order is free: put the client's batches in its order
        order = torch.cat([b for b, _ in zip(_orders(images, batch), range(steps))])
        xt, yt = xt[order], yt[order]
    sim = simulate_local_steps(model, params, xt, yt, lr=0.1, steps=steps, batch_size=batch, create_graph=False)
    flat = torch.cat([v.detach().reshape(-1) for v in sim.values()]).double().numpy()
    assert np.allclose(flat, real, atol=1e-5)


def _orders(n: int, batch: int) -> Iterator[torch.Tensor]:
    from protocols.training import batch_order

    return batch_order(n, batch, torch_generator(1, "t"))


def test_five_step_fedavg_update_is_inverted() -> None:
    """5 local steps, batch 8, no defense: most of the batch is recovered (seed 1: 8/8, 41.8 dB median)."""
    r = run_attack("fedavg-inversion", AttackCase.create(num_clients=10, seed=1, batch_size=8))
    assert isinstance(r, InversionResult) and r.originals.shape == (8, 1, 8, 8)
    assert r.metrics["images"] == 8.0 and r.metrics["fraction_recovered"] >= 0.75
    assert r.metrics["psnr_median"] >= 25.0 and r.metrics["label_accuracy"] == 1.0
    assert "5 local SGD steps" in r.data["threat_model"]


def test_fewer_iterations_recover_less() -> None:
    """The optimiser does the work (not a closed form): 5 iterations rebuild nothing."""
    case = AttackCase.create(num_clients=10, seed=1, batch_size=8)
    r = run_attack("fedavg-inversion", case, options={"iterations": 5})
    assert r.metrics["fraction_recovered"] == 0.0
