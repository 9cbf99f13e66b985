"""The two parties of split learning as explicit objects exchanging typed messages.

A :class:`SplitClient` holds its data and the first layers (and, U-shaped, the head and the
labels); a :class:`SplitServer` holds the middle or top layers (and, vanilla, the labels, by
example id). A step is a short exchange driven from outside:

- vanilla: ``client.begin(ids) -> Smashed``; ``server.handle(Smashed) -> CutGradient``;
  ``client.handle(CutGradient) -> None`` (both parts updated);
- U-shaped: ``Smashed``; ``server -> ServerActivations``; ``client -> HeadGradient`` (head
  updated); ``server -> CutGradient`` (server part updated); ``client -> None``.

Each party checks that a message is the one its stage expects (a type, client, step and
shape check) and raises :class:`~privagg.errors.ProtocolAbort` otherwise; the label party
runs its gradient defense (:mod:`protocols.split.defenses`) on the gradient it sends.
Parties hold torch modules and optimisers (mutable training state); the messages they
exchange are immutable.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from privagg.errors import ConfigurationError, ProtocolAbort
from protocols.split.defenses import GradientDefense, NoDefense, distance_correlation
from protocols.split.messages import CutGradient, HeadGradient, Message, ServerActivations, Smashed
from protocols.training import TrainConfig

__all__ = ["ClientStage", "SplitClient", "SplitServer", "split_layers"]


def split_layers(model: nn.Sequential, cut: int, head_cut: int | None = None) -> tuple[nn.Sequential, ...]:
    """``model`` cut after its first ``cut`` modules: ``(bottom, top)``, or ``(bottom, middle, head)``
    when ``head_cut`` is given (the head is ``model[head_cut:]``). The parts share the parameters."""
    layers = list(model)
    n = len(layers)
    if not 1 <= cut < n:
        raise ConfigurationError(f"the cut must leave layers on both sides: 1 <= cut < {n}, got {cut}", field="cut")
    if head_cut is None:
        return nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut:])
    if not cut < head_cut < n:
        raise ConfigurationError(f"need cut < head_cut < {n}, got {cut}, {head_cut}", field="head_cut")
    return nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut:head_cut]), nn.Sequential(*layers[head_cut:])


class ClientStage(enum.Enum):
    IDLE = "idle"
    AWAIT_ACTIVATIONS = "await-activations"  # U-shaped: Smashed sent
    AWAIT_GRADIENT = "await-gradient"


def _optimizer(train: TrainConfig, module: nn.Module | None) -> torch.optim.Optimizer | None:
    params = [] if module is None else [p for p in module.parameters() if p.requires_grad]
    return train.make_optimizer(params) if params else None


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).numpy().copy()


class SplitClient:
    """A data owner: ``bottom`` (and ``head`` with its ``labels``, U-shaped) on its data ``x``."""

    def __init__(
        self,
        client_id: int,
        bottom: nn.Module,
        x: np.ndarray,
        train: TrainConfig,
        *,
        head: nn.Module | None = None,
        labels: np.ndarray | None = None,
        defense: GradientDefense | None = None,
        generator: torch.Generator | None = None,
        nopeek: float = 0.0,
    ) -> None:
        if head is not None and labels is None:
            raise ProtocolAbort("a U-shaped client needs its labels", party=f"client {client_id}")
        self.client_id = client_id
        self.bottom = bottom
        self.head = head
        self.x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        self.labels = None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self.defense = defense or NoDefense()
        self.generator = generator or torch.Generator()
        self.nopeek = nopeek
        self.train = train
        self.opt_bottom = _optimizer(train, bottom)
        self.opt_head = _optimizer(train, head)
        self.stage = ClientStage.IDLE
        self._step = 0
        self._ids = torch.zeros(0, dtype=torch.int64)
        self._z: torch.Tensor | None = None

    @property
    def u_shaped(self) -> bool:
        return self.head is not None

    def _abort(self, reason: str) -> ProtocolAbort:
        return ProtocolAbort(reason, stage=self.stage.value, party=f"client {self.client_id}")

    def begin(self, step: int, ids: np.ndarray) -> Smashed:
        """Start step ``step`` on the examples ``ids`` (indices into this client's data)."""
        if self.stage is not ClientStage.IDLE:
            raise self._abort("a step is already in progress")
        self.bottom.train()
        self._ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        self._z = self.bottom(self.x[self._ids])
        self._step = step
        self.stage = ClientStage.AWAIT_ACTIVATIONS if self.u_shaped else ClientStage.AWAIT_GRADIENT
        return Smashed(step=step, client=self.client_id, tensor=_f32(self._z), example_ids=self._ids.numpy())

    def _check(self, msg: Message, expected: type, shape: tuple[int, ...] | None) -> None:
        if not isinstance(msg, expected) or msg.client != self.client_id or msg.step != self._step:
            raise self._abort(f"unexpected {type(msg).__name__} (step {msg.step}, client {msg.client})")
        if shape is not None and tuple(msg.tensor.shape) != shape:
            raise self._abort(f"gradient shape {tuple(msg.tensor.shape)} != activations {shape}")

    def handle(self, msg: Message) -> HeadGradient | None:
        if self.stage is ClientStage.AWAIT_ACTIVATIONS:
            self._check(msg, ServerActivations, None)
            return self._head_step(msg.tensor)
        if self.stage is ClientStage.AWAIT_GRADIENT:
            assert self._z is not None
            self._check(msg, CutGradient, tuple(self._z.shape))
            self._bottom_step(torch.from_numpy(np.array(msg.tensor)))
            return None
        raise self._abort(f"no step in progress for {type(msg).__name__}")

    def _head_step(self, activations: np.ndarray) -> HeadGradient:
        assert self.head is not None and self.labels is not None
        if activations.shape[0] != len(self._ids):
            raise self._abort("server activations for a different batch size")
        h = torch.from_numpy(np.array(activations)).requires_grad_(True)
        self.head.train()
        self.head.zero_grad(set_to_none=True)
        y = self.labels[self._ids]
        nn.functional.cross_entropy(self.head(h), y).backward()
        if self.opt_head is not None:
            self.opt_head.step()
        assert h.grad is not None
        grad = self.defense.perturb(h.grad, y, self.generator)
        self.stage = ClientStage.AWAIT_GRADIENT
        return HeadGradient(step=self._step, client=self.client_id, tensor=_f32(grad))

    def _bottom_step(self, grad: torch.Tensor) -> None:
        assert self._z is not None
        if self.opt_bottom is not None:
            self.opt_bottom.zero_grad(set_to_none=True)
            surrogate = (self._z * grad).sum()
            if self.nopeek > 0:
                surrogate = surrogate + self.nopeek * distance_correlation(self.x[self._ids], self._z)
            surrogate.backward()
            self.opt_bottom.step()
        self._z = None
        self.stage = ClientStage.IDLE


class SplitServer:
    """The server part (``top`` in vanilla, ``middle`` U-shaped); vanilla holds ``labels[client][id]``.

    One server part serves many clients; it keeps one step in flight per client.
    """

    def __init__(
        self,
        part: nn.Module,
        train: TrainConfig,
        *,
        labels: Mapping[int, np.ndarray] | None = None,
        defense: GradientDefense | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.part = part
        self.labels = (
            None if labels is None else {c: torch.from_numpy(np.asarray(y, dtype=np.int64)) for c, y in labels.items()}
        )
        self.defense = defense or NoDefense()
        self.generator = generator or torch.Generator()
        self.opt = _optimizer(train, part)
        self._pending: dict[int, tuple[int, torch.Tensor, torch.Tensor]] = {}

    @property
    def holds_labels(self) -> bool:
        return self.labels is not None

    def _abort(self, reason: str, client: int) -> ProtocolAbort:
        return ProtocolAbort(reason, stage="await-head-gradient" if client in self._pending else "idle", party="server")

    def handle(self, msg: Message) -> CutGradient | ServerActivations:
        if isinstance(msg, Smashed):
            if msg.client in self._pending:
                raise self._abort("smashed data while a step is in flight", msg.client)
            return self._forward(msg)
        if isinstance(msg, HeadGradient):
            return self._backward(msg)
        raise self._abort(f"unexpected {type(msg).__name__}", msg.client)

    def _forward(self, msg: Smashed) -> CutGradient | ServerActivations:
        z = torch.from_numpy(np.array(msg.tensor)).requires_grad_(True)
        self.part.train()
        out = self.part(z)
        if self.labels is None:
            self._pending[msg.client] = (msg.step, z, out)
            return ServerActivations(step=msg.step, client=msg.client, tensor=_f32(out))
        table = self.labels.get(msg.client)
        if table is None or (msg.ids.size and int(msg.ids.max()) >= len(table)):
            raise self._abort("example ids outside the client's label table", msg.client)
        y = table[torch.from_numpy(msg.ids)]
        self.part.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(out, y).backward()
        if self.opt is not None:
            self.opt.step()
        assert z.grad is not None
        grad = self.defense.perturb(z.grad, y, self.generator)
        return CutGradient(step=msg.step, client=msg.client, tensor=_f32(grad))

    def _backward(self, msg: HeadGradient) -> CutGradient:
        pending = self._pending.pop(msg.client, None)
        if pending is None or pending[0] != msg.step:
            if pending is not None:
                self._pending[msg.client] = pending
            raise self._abort(f"head gradient for step {msg.step} without its forward pass", msg.client)
        step, z, out = pending
        if tuple(msg.tensor.shape) != tuple(out.shape):
            raise self._abort("head gradient shape does not match the activations sent", msg.client)
        self.part.zero_grad(set_to_none=True)
        out.backward(torch.from_numpy(np.array(msg.tensor)))
        if self.opt is not None:
            self.opt.step()
        assert z.grad is not None
        return CutGradient(step=step, client=msg.client, tensor=_f32(z.grad))
