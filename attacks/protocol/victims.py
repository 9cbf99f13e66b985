"""The federation a protocol attack targets, and what an attack's outcome records.

Each client computes one FedSGD step of the global MLP on one of its own digits, ring-encoded
as in deployment (:func:`make_victims`); an attack succeeds when the server recovers the
target's exact individual update, and the target's digit rebuilt from it is scored by PSNR
(:func:`image_psnr`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privagg.digest import model_digest
from privagg.randomness import simulation_rng, torch_generator

__all__ = ["ProtocolAttackOutcome", "ProtocolVictims", "image_psnr", "make_victims"]


@dataclass
class ProtocolVictims:
    """The federation under attack: per-client ring inputs and what the target's input means."""

    ring_inputs: dict[int, np.ndarray]
    float_updates: dict[int, np.ndarray]
    target: int
    target_image: np.ndarray
    target_label: int
    encoding: Any
    model: Any
    input_shape: tuple[int, ...]
    lr: float
    first_layer: slice
    model_digests: dict[int, bytes]


@dataclass
class ProtocolAttackOutcome:
    """What happened: did the server isolate the target's input, who aborted, what it learned."""

    attack: str
    config: str
    succeeded: bool
    recovered: np.ndarray | None
    client_aborts: dict[int, str] = field(default_factory=dict)
    server_abort: str | None = None
    psnr: float | None = None
    label_recovered: bool | None = None
    stopped_by: str = ""
    notes: str = ""


def make_victims(
    *,
    num_clients: int,
    target: int,
    seed: int,
    crafted_for_others: bool = False,
    dataset: str = "digits",
    hidden: tuple[int, ...] = (64,),
    lr: float = 0.1,
    value_bits: int = 24,
) -> ProtocolVictims:
    """Each client: one SGD step of the global MLP on one of its digits, ring-encoded.

    ``crafted_for_others``: every client but the target receives the model-inconsistency
    attacker's model (first-layer biases pushed to -1e4: all ReLUs dead, zero first-layer
    gradient) and computes its update on that model.
    """
    import torch

    from privagg.encoding import RingEncoding
    from protocols.datasets import load_dataset
    from protocols.models import build_model, get_flat_params, set_flat_params
    from protocols.training import TrainConfig, train_local

    ds = load_dataset(dataset, seed=seed)
    model = build_model(
        "mlp", ds.input_shape, ds.num_classes, generator=torch_generator(seed, "protocol", "model"), hidden=hidden
    )
    honest = get_flat_params(model)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    n_first = first.weight.numel() + first.bias.numel()
    crafted = honest.copy()
    crafted[first.weight.numel() : n_first] = -1e4  # first-layer bias: every ReLU dead
    rng = simulation_rng(seed, "protocol", "batches")
    picks = rng.choice(len(ds.y_train), num_clients, replace=False)
    enc = RingEncoding.for_sum(clip=1.0, max_summands=2 * num_clients, value_bits=value_bits)  # room for Sybils
    cfg = TrainConfig(epochs=1, batch_size=1, lr=lr)
    ring: dict[int, np.ndarray] = {}
    floats: dict[int, np.ndarray] = {}
    digests: dict[int, bytes] = {}
    erng = simulation_rng(seed, "protocol", "encoding")
    for cid in range(num_clients):
        start = crafted if (crafted_for_others and cid != target) else honest
        set_flat_params(model, start)
        i = int(picks[cid])
        train_local(
            model,
            ds.x_train[i : i + 1],
            ds.y_train[i : i + 1],
            cfg,
            generator=torch_generator(seed, "protocol", "train", cid),
        )
        delta = get_flat_params(model) - start
        floats[cid] = delta
        ring[cid] = enc.encode(delta, erng).values
        digests[cid] = model_digest([start])
    set_flat_params(model, honest)
    t = int(picks[target])
    return ProtocolVictims(
        ring_inputs=ring,
        float_updates=floats,
        target=target,
        target_image=ds.x_train[t : t + 1],
        target_label=int(ds.y_train[t]),
        encoding=enc,
        model=model,
        input_shape=tuple(ds.input_shape),
        lr=lr,
        first_layer=slice(0, n_first),
        model_digests=digests,
    )


def image_psnr(victims: ProtocolVictims, update: np.ndarray) -> tuple[float, bool]:
    """The target's digit rebuilt from a recovered (float) update by linear-layer inversion:
    its PSNR against the real digit, and whether the label came out right."""
    from attacks.metrics import psnr
    from attacks.reconstruction import linear_leakage, recover_labels
    from attacks.scenario import unflatten

    grads = unflatten(victims.model, -np.asarray(update) / victims.lr)
    labels = recover_labels(victims.model, grads, batch_size=1)
    rec = linear_leakage(victims.model, grads, input_shape=victims.input_shape, batch_size=1, labels=labels)
    return psnr(victims.target_image, rec.x), bool(labels[0] == victims.target_label)
