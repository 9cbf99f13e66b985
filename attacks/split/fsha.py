"""Feature-space hijacking (FSHA, Pasquini et al., CCS 2021): a malicious server steers the client part.

The server deviates from the protocol: instead of the task's gradient it answers every
:class:`~protocols.split.messages.Smashed` with the gradient of an adversarial loss that pulls
the client part's outputs into the latent space of a *pilot* encoder the server trains on its
own public data, together with the pilot's decoder. Once the client part maps into the pilot's
space, the decoder inverts the client's smashed data. The client here is the real
:class:`~protocols.split.parties.SplitClient` (its NoPeek term included); only the server is
replaced, and every message goes through the codec.

Simplifications (stated): a WGAN-GP critic (as in the paper) trained once per step with Adam;
the pilot has the client part's architecture (the server chose the model, so it knows it) and,
by default, its initial weights (``pilot="shared-init"``: the server shipped the initial client
part; with ``"independent"`` the attack failed on the digits MLP in our runs); the public
data is the data set's test split, disjoint from the clients' training data. Reported like the
decoder: per-image PSNR, median, fraction at or above the threshold, and the mean-public-image
baseline.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Literal

import numpy as np
import torch
from torch import nn

from attacks.split.inversion import DecoderScores, image_psnr
from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng, torch_generator
from protocols.datasets import load_dataset
from protocols.models import build_model
from protocols.split.messages import CutGradient, Smashed, decode, encode
from protocols.split.parties import SplitClient, split_layers
from protocols.split.simulation import SplitConfig
from protocols.training import batch_order

__all__ = ["FSHAServer", "fsha_attack"]


def _mlp(sizes: list[int], gen: torch.Generator, last: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        lin = nn.Linear(a, b)
        bound = 1.0 / math.sqrt(a)
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound, generator=gen)
            lin.bias.uniform_(-bound, bound, generator=gen)
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(0.2))
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


class FSHAServer:
    """The malicious server: pilot encoder + decoder on public data, a discriminator, hijacking gradients."""

    def __init__(self, pilot: nn.Module, public: np.ndarray, smashed_dim: int, *, seed: int, lr: float = 1e-3) -> None:
        gen = torch_generator(seed, "fsha-init")
        dim = int(np.prod(public.shape[1:]))
        self.pilot = pilot
        self.decoder = _mlp([smashed_dim, 256, 256, dim], gen, nn.Sigmoid())
        self.critic = _mlp([smashed_dim, 128, 64, 1], gen)
        self.public = torch.from_numpy(np.ascontiguousarray(public, dtype=np.float32))
        self.shape = public.shape[1:]
        self.opt_ae = torch.optim.Adam([*pilot.parameters(), *self.decoder.parameters()], lr=lr)
        self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=lr, betas=(0.5, 0.9))
        self.gp_weight = 10.0
        self.mix = torch_generator(seed, "fsha-gradient-penalty")
        self.order = batch_order(len(public), 64, torch_generator(seed, "fsha-public"))

    def handle(self, msg: Smashed) -> CutGradient:
        if not isinstance(msg, Smashed):
            raise ConfigurationError("the FSHA server only answers smashed data", field="message")
        z = torch.from_numpy(np.array(msg.tensor)).reshape(msg.batch_size, -1).requires_grad_(True)
        xp = self.public[next(self.order)]
        # pilot autoencoder on the public data
        self.opt_ae.zero_grad(set_to_none=True)
        zp = self.pilot(xp).reshape(len(xp), -1)
        nn.functional.mse_loss(self.decoder(zp), xp.reshape(len(xp), -1)).backward()
        self.opt_ae.step()
        # the critic (WGAN-GP) scores the pilot's latents high and the client's low
        self.opt_critic.zero_grad(set_to_none=True)
        real, fake = zp.detach(), z.detach()
        n = min(len(real), len(fake))
        mix = torch.rand(n, 1, generator=self.mix)
        between = (mix * real[:n] + (1 - mix) * fake[:n]).requires_grad_(True)
        (slope,) = torch.autograd.grad(self.critic(between).sum(), between, create_graph=True)
        penalty = ((slope.norm(dim=1) - 1.0) ** 2).mean()
        (self.critic(fake).mean() - self.critic(real).mean() + self.gp_weight * penalty).backward()
        self.opt_critic.step()
        # the hijacking gradient: raise the critic's score of the client's latents
        (-self.critic(z).mean()).backward()
        assert z.grad is not None
        return CutGradient(step=msg.step, client=msg.client, tensor=z.grad.reshape(msg.tensor.shape).numpy())

    @torch.no_grad()
    def reconstruct(self, smashed: torch.Tensor) -> np.ndarray:
        return self.decoder(smashed.reshape(len(smashed), -1)).numpy().reshape(len(smashed), *self.shape)


def fsha_attack(
    cfg: SplitConfig,
    *,
    steps: int = 3000,
    targets: int = 200,
    threshold_db: float = 20.0,
    pilot: Literal["shared-init", "independent"] = "shared-init",
) -> tuple[DecoderScores, int]:
    """Run FSHA for ``steps`` against one client configured by ``cfg`` (its ``nopeek`` included);
    return the reconstruction scores and the encoded bytes exchanged.

    ``pilot="shared-init"``: the server shipped the client part's initial weights (it set up
    the model) and starts its pilot from the same draw; ``"independent"``: the pilot starts
    from the server's own random draw (the server knows only the architecture)."""
    if pilot not in ("shared-init", "independent"):
        raise ConfigurationError(f"unknown pilot {pilot!r}", field="pilot", accepted=["shared-init", "independent"])
    ds = load_dataset(cfg.dataset, seed=cfg.seed, test_fraction=cfg.test_fraction)
    if ds.kind != "image":
        raise ConfigurationError("FSHA reconstructs images", field="dataset", accepted=["digits", "mnist-5k"])
    full = build_model(
        cfg.model,
        ds.input_shape,
        ds.num_classes,
        generator=torch_generator(cfg.seed, "model-init"),
        **cfg.model_options(),
    )
    assert isinstance(full, nn.Sequential)
    bottom = split_layers(full, cfg.cut)[0]
    pilot_part = copy.deepcopy(bottom)
    if pilot == "independent":
        with torch.no_grad():
            g = torch_generator(cfg.seed, "fsha-pilot")
            for p in pilot_part.parameters():
                bound = 1.0 / math.sqrt(p[0].numel() if p.dim() > 1 else p.shape[0])
                p.uniform_(-bound, bound, generator=g)
    client = SplitClient(0, bottom, ds.x_train, cfg.train_config(), nopeek=cfg.nopeek)
    with torch.no_grad():
        dim = bottom(torch.from_numpy(ds.x_train[:1])).numel()
    server = FSHAServer(pilot_part, ds.x_test, dim, seed=cfg.seed)
    order = batch_order(len(ds.x_train), cfg.batch_size, torch_generator(cfg.seed, "split-batches", 0))
    sent = 0
    for step in range(steps):
        up = encode(client.begin(step, next(order).numpy()))
        down = encode(server.handle(decode(up)))  # type: ignore[arg-type]
        sent += len(up) + len(down)
        client.handle(decode(down))
    pick = np.sort(simulation_rng(cfg.seed, "split-decoder-targets").choice(len(ds.x_train), targets, replace=False))
    x_t = ds.x_train[pick]
    with torch.no_grad():
        bottom.eval()
        recon = server.reconstruct(bottom(torch.from_numpy(x_t)))
    baseline = np.broadcast_to(ds.x_test.mean(axis=0), x_t.shape)
    scores = DecoderScores(image_psnr(x_t, recon), image_psnr(x_t, baseline), threshold_db, x_t, recon)
    return scores, sent
