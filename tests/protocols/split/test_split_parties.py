"""Parties: the gradients through the cut equal end-to-end autograd; out-of-order messages abort."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from privagg.errors import ConfigurationError, ProtocolAbort
from protocols.models import build_model
from protocols.split.messages import CutGradient, HeadGradient, ServerActivations, Smashed, decode, encode
from protocols.split.parties import SplitClient, SplitServer, split_layers
from protocols.training import TrainConfig

TRAIN = TrainConfig(epochs=1, batch_size=8, lr=0.3)


def _model(seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    m = build_model("mlp", (6,), 2, generator=g, hidden=(5, 4))
    assert isinstance(m, nn.Sequential)
    return m


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(20, 6)).astype(np.float32), rng.integers(0, 2, size=20)


def _reference_step(model: nn.Sequential, x: np.ndarray, y: np.ndarray, ids: np.ndarray) -> nn.Sequential:
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(ref.parameters(), lr=TRAIN.lr)
    opt.zero_grad()
    nn.functional.cross_entropy(ref(torch.from_numpy(x[ids])), torch.from_numpy(y[ids])).backward()
    opt.step()
    return ref


def _wire(msg):  # type: ignore[no-untyped-def]
    return decode(encode(msg))


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5])
def test_vanilla_step_equals_end_to_end_autograd(cut: int) -> None:
    x, y = _data()
    model = _model()
    ids = np.array([3, 0, 7, 11, 19])
    ref = _reference_step(model, x, y, ids)
    bottom, top = split_layers(copy.deepcopy(model), cut)
    client = SplitClient(0, bottom, x, TRAIN)
    server = SplitServer(top, TRAIN, labels={0: y})
    smashed = _wire(client.begin(0, ids))
    grad = _wire(server.handle(smashed))
    assert isinstance(grad, CutGradient) and client.handle(grad) is None
    got = nn.Sequential(*bottom, *top)
    for a, b in zip(got.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cut_gradient_is_autograd_of_the_loss_at_the_cut() -> None:
    x, y = _data(1)
    model = _model(1)
    ids = np.arange(8)
    bottom, top = split_layers(copy.deepcopy(model), 3)
    z = model[:3](torch.from_numpy(x[ids])).detach().requires_grad_(True)
    nn.functional.cross_entropy(model[3:](z), torch.from_numpy(y[ids])).backward()
    server = SplitServer(top, TRAIN, labels={0: y})
    msg = server.handle(SplitClient(0, bottom, x, TRAIN).begin(0, ids))
    assert z.grad is not None
    np.testing.assert_allclose(msg.tensor, z.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_u_shaped_step_equals_end_to_end_autograd() -> None:
    x, y = _data(2)
    model = _model(2)
    ids = np.array([1, 2, 3, 5, 8, 13])
    ref = _reference_step(model, x, y, ids)
    bottom, middle, head = split_layers(copy.deepcopy(model), 3, 5)
    client = SplitClient(0, bottom, x, TRAIN, head=head, labels=y)
    server = SplitServer(middle, TRAIN)
    acts = _wire(server.handle(_wire(client.begin(4, ids))))
    assert isinstance(acts, ServerActivations)
    head_grad = _wire(client.handle(acts))
    assert isinstance(head_grad, HeadGradient)
    cut_grad = _wire(server.handle(head_grad))
    assert isinstance(cut_grad, CutGradient) and client.handle(cut_grad) is None
    got = nn.Sequential(*bottom, *middle, *head)
    for a, b in zip(got.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_out_of_order_messages_abort() -> None:
    x, y = _data()
    bottom, top = split_layers(_model(), 3)
    client = SplitClient(0, bottom, x, TRAIN)
    server = SplitServer(top, TRAIN, labels={0: y})
    stray = CutGradient(step=0, client=0, tensor=np.zeros((2, 5), np.float32))
    with pytest.raises(ProtocolAbort, match="no step in progress"):
        client.handle(stray)
    smashed = client.begin(1, np.array([0, 1]))
    with pytest.raises(ProtocolAbort, match="already in progress"):
        client.begin(2, np.array([0]))
    with pytest.raises(ProtocolAbort, match="unexpected"):
        client.handle(stray)  # step 0, the client waits for step 1
    with pytest.raises(ProtocolAbort, match="shape"):
        client.handle(CutGradient(step=1, client=0, tensor=np.zeros((3, 5), np.float32)))
    bad_ids = Smashed(step=1, client=0, tensor=smashed.tensor, example_ids=np.array([0, 99]))
    with pytest.raises(ProtocolAbort, match="label table"):
        server.handle(bad_ids)
    with pytest.raises(ProtocolAbort, match="unexpected"):
        server.handle(stray)


def test_u_shaped_server_refuses_a_head_gradient_without_forward() -> None:
    _, _, head = split_layers(_model(), 3, 5)
    server = SplitServer(split_layers(_model(), 3, 5)[1], TRAIN)
    with pytest.raises(ProtocolAbort, match="without its forward"):
        server.handle(HeadGradient(step=0, client=0, tensor=np.zeros((2, 4), np.float32)))
    assert head is not None


def test_split_layers_validates_cuts() -> None:
    m = _model()
    with pytest.raises(ConfigurationError):
        split_layers(m, 0)
    with pytest.raises(ConfigurationError):
        split_layers(m, len(m))
    with pytest.raises(ConfigurationError):
        split_layers(m, 3, 3)
