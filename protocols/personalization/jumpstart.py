"""Jump-start of a client that joins a FedLTN federation late.

A newcomer does not start pruning from the dense global model: it scores each candidate
ticket (an existing client's mask and kept weights) and the global model by their accuracy
on its own training split (then by their cross-entropy there, lower first), starts from the
best one (the global model wins exact ties) and goes on training and pruning from there
(FedLTN, Mugunthan & Kagal 2022, "jump-start"). Starting from a ticket that already fits its
classes, the newcomer uploads a sparse update from its first round instead of spending
rounds pruning.

What it reveals: the candidates' tickets (masks and kept weights) reach the newcomer. A
deployment must only offer the tickets of clients that agreed to that; under secure
aggregation the server never holds a ticket, so the candidates come from the clients
themselves, or the newcomer uses ``rule="global"`` (the global model only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch import nn

from privagg.errors import ConfigurationError
from protocols.models import get_flat_params, set_flat_params
from protocols.training import evaluate

__all__ = ["JUMP_START_RULES", "JumpStart", "Ticket", "jump_start"]

JumpStartRule = Literal["similar", "global"]
JUMP_START_RULES: tuple[str, ...] = ("similar", "global")


@dataclass(frozen=True)
class Ticket:
    """An existing client's sparse subnetwork: its mask and its weights (zero off the mask)."""

    client: int
    mask: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True)
class JumpStart:
    """Where a newcomer started: ``source`` (a client id, ``None`` for the global model) and every score.

    ``scores`` maps each candidate client (and ``None``, the global model) to its accuracy and
    cross-entropy on the newcomer's training split.
    """

    client: int
    source: int | None
    mask: np.ndarray
    weights: np.ndarray
    scores: dict[int | None, tuple[float, float]]


def _score(model: nn.Module, weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    set_flat_params(model, weights)
    return evaluate(model, x, y) if len(y) else (0.0, float("inf"))


def _better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] > b[0] or (a[0] == b[0] and a[1] < b[1])


def jump_start(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    client: int,
    candidates: Sequence[Ticket],
    global_w: np.ndarray,
    shared: np.ndarray,
    rule: JumpStartRule = "similar",
) -> JumpStart:
    """Choose the newcomer's starting mask and weights and load them into ``model`` (its own model).

    The newcomer keeps its own local (batch-norm) parameters (``~shared``); a candidate gives
    its shared weights and its mask. ``rule="global"`` skips the candidates: a dense mask on
    the global model, the start of a client without jump-start.
    """
    if rule not in JUMP_START_RULES:
        raise ConfigurationError(
            f"unknown rule {rule!r}", field="personalization.jump_start", accepted=JUMP_START_RULES
        )
    own = get_flat_params(model)
    dim = len(own)
    if global_w.shape != (dim,) or shared.shape != (dim,):
        raise ConfigurationError(f"global model and shared mask must have {dim} coordinates", field="global_w")
    start_global = np.where(shared, global_w, own)
    scores: dict[int | None, tuple[float, float]] = {None: _score(model, start_global, x_train, y_train)}
    best: int | None = None
    starts: dict[int | None, tuple[np.ndarray, np.ndarray]] = {None: (np.ones(dim, dtype=bool), start_global)}
    if rule == "similar":
        for t in candidates:
            if t.mask.shape != (dim,) or t.weights.shape != (dim,):
                raise ConfigurationError(f"ticket of client {t.client} is not {dim} long", field="candidates")
            mask = np.where(shared, t.mask, True)
            w = np.where(shared, t.weights * t.mask, own)
            scores[t.client] = _score(model, w, x_train, y_train)
            starts[t.client] = (mask, w)
            if _better(scores[t.client], scores[best]):
                best = t.client
    mask, weights = starts[best]
    set_flat_params(model, weights)
    return JumpStart(client=client, source=best, mask=mask, weights=weights, scores=scores)
