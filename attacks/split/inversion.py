"""Model inversion of the smashed data: a decoder the server trains on public data of its own.

Threat model: an honest-but-curious server that follows the protocol, owns auxiliary
public data of the same kind as the clients' (disjoint from it: here the data set's test
split, which no client trains on) and has black-box access to the client part — in a
multi-client federation it enrolls a client of its own, and the client parts are shared
(sequential hand-over, SplitFed averaging). It queries the client part on its auxiliary data,
trains a decoder from activations back to inputs, and applies it to the smashed data the
victims send (their next forward pass with the trained client part).

Reported: per-image PSNR of the reconstructions (median, not a capped mean), the fraction
of images at or above a stated PSNR threshold, and the baseline of a server that knows
nothing about the individual (the mean auxiliary image as every "reconstruction").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from privagg.errors import ConfigurationError
from privagg.randomness import simulation_rng, torch_generator
from protocols.split.simulation import SplitRunResult

__all__ = ["DecoderScores", "decoder_attack", "image_psnr"]


def image_psnr(originals: np.ndarray, recon: np.ndarray, *, max_db: float = 100.0) -> np.ndarray:
    """PSNR (dB, data range 1) of each image pair; identical images get ``max_db``."""
    a = np.asarray(originals, dtype=np.float64).reshape(len(originals), -1)
    b = np.asarray(recon, dtype=np.float64).reshape(len(recon), -1)
    if a.shape != b.shape:
        raise ConfigurationError(f"shape mismatch {a.shape} vs {b.shape}", field="images")
    m = ((a - b) ** 2).mean(axis=1)
    with np.errstate(divide="ignore"):
        db = np.where(m > 0, -10.0 * np.log10(np.where(m > 0, m, 1.0)), max_db)
    return np.minimum(db, max_db)


@dataclass
class DecoderScores:
    psnr: np.ndarray
    baseline_psnr: np.ndarray
    threshold_db: float
    originals: np.ndarray = field(repr=False)
    reconstructions: np.ndarray = field(repr=False)

    @property
    def median_psnr(self) -> float:
        return float(np.median(self.psnr))

    @property
    def fraction_recovered(self) -> float:
        return float(np.mean(self.psnr >= self.threshold_db))

    @property
    def baseline_median_psnr(self) -> float:
        return float(np.median(self.baseline_psnr))

    @property
    def baseline_fraction(self) -> float:
        return float(np.mean(self.baseline_psnr >= self.threshold_db))


@torch.no_grad()
def _smash(bottom: nn.Module, x: np.ndarray) -> torch.Tensor:
    bottom.eval()
    return bottom(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).reshape(len(x), -1)


def decoder_attack(
    result: SplitRunResult,
    *,
    threshold_db: float = 20.0,
    targets: int = 200,
    epochs: int = 300,
    hidden: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> DecoderScores:
    """Train a decoder on the auxiliary data through the trained client part; invert ``targets``
    training examples of the clients from their smashed data."""
    ds = result.dataset
    if ds.kind != "image":
        raise ConfigurationError(
            "the decoder attack reconstructs images", field="dataset", accepted=["digits", "mnist-5k"]
        )
    bottom = result.model.bottom
    x_aux = ds.x_test
    rng = simulation_rng(seed, "split-decoder-targets")
    pick = rng.choice(len(ds.x_train), size=min(targets, len(ds.x_train)), replace=False)
    x_t = ds.x_train[np.sort(pick)]
    z_aux, z_t = _smash(bottom, x_aux), _smash(bottom, x_t)
    dim = math.prod(ds.input_shape)
    gen = torch_generator(seed, "split-decoder")
    decoder = nn.Sequential(
        nn.Linear(z_aux.shape[1], hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, dim),
        nn.Sigmoid(),
    )
    with torch.no_grad():
        for m in decoder:
            if isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.uniform_(-bound, bound, generator=gen)
                m.bias.uniform_(-bound, bound, generator=gen)
    scale = z_aux.std().clamp(min=1e-6)
    target = torch.from_numpy(np.ascontiguousarray(x_aux, dtype=np.float32)).reshape(len(x_aux), -1)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    n = len(z_aux)
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for s in range(0, n, 64):
            b = order[s : s + 64]
            opt.zero_grad(set_to_none=True)
            nn.functional.mse_loss(decoder(z_aux[b] / scale), target[b]).backward()
            opt.step()
    with torch.no_grad():
        recon = decoder(z_t / scale).numpy().reshape(x_t.shape)
    baseline = np.broadcast_to(x_aux.mean(axis=0), x_t.shape)
    return DecoderScores(
        psnr=image_psnr(x_t, recon),
        baseline_psnr=image_psnr(x_t, baseline),
        threshold_db=threshold_db,
        originals=x_t,
        reconstructions=recon,
    )
