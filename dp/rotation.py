"""The randomized Hadamard rotation of distributed DP: flatten a vector before rounding it.

``rotate(x) = H D pad(x) / sqrt(P)``: pad ``x`` with zeros to the next power of two ``P``,
flip the signs of its coordinates with a public random diagonal ``D`` (signs from a shared
32-byte seed, expanded by the PRG of :mod:`privagg.randomness` under a label naming the
purpose and the round), and apply the normalised Walsh-Hadamard matrix ``H / sqrt(P)`` (an
orthonormal, symmetric, self-inverse matrix; the fast transform costs ``P log2 P``). The
rotation is orthonormal, so L2 norms are kept; after it each coordinate of a vector of norm
``r`` is a Rademacher sum with coefficients of norm ``r / sqrt(P)``, hence sub-Gaussian with
variance proxy ``r^2 / P`` (Hoeffding): no coordinate carries much more than ``r / sqrt(P)``,
which is what lets few bits per coordinate hold the sum (Kairouz, Liu, Steinke 2021, Sec. 4).

The seed is *public* (every client and the server use the same rotation, so the server can
undo it on the sum); it protects nothing and needs no secrecy, only agreement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privagg.errors import ConfigurationError
from privagg.randomness import SEED_BYTES, label, prg_words

__all__ = ["padded_dim", "fwht", "RandomizedHadamard"]


def padded_dim(dim: int) -> int:
    """The smallest power of two ``>= dim`` (``dim >= 1``)."""
    if dim < 1:
        raise ConfigurationError(f"must be >= 1, got {dim}", field="dim")
    return 1 << (dim - 1).bit_length()


def fwht(x: np.ndarray) -> np.ndarray:
    """The orthonormal Walsh-Hadamard transform along the last axis (length a power of two).

    Returns a new ``float64`` array; ``fwht(fwht(x)) == x`` up to rounding.
    """
    a = np.array(x, dtype=np.float64, copy=True)
    n = a.shape[-1]
    if n < 1 or n & (n - 1):
        raise ConfigurationError(f"length must be a power of two, got {n}", field="dim")
    lead = a.shape[:-1]
    h = 1
    while h < n:
        v = a.reshape(*lead, n // (2 * h), 2, h)
        top = v[..., 0, :].copy()
        v[..., 0, :] += v[..., 1, :]
        v[..., 1, :] = top - v[..., 1, :]
        h *= 2
    a *= 1.0 / np.sqrt(n)
    return a


@dataclass(frozen=True)
class RandomizedHadamard:
    """``x -> H D pad(x) / sqrt(P)`` and back, for vectors of length ``dim``; see the module docstring."""

    dim: int
    seed: bytes
    round: int = 0

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_BYTES:
            raise ConfigurationError(f"the rotation seed is {SEED_BYTES} bytes, got {len(self.seed)}", field="seed")
        padded_dim(self.dim)

    @property
    def padded(self) -> int:
        return padded_dim(self.dim)

    def signs(self) -> np.ndarray:
        """The public diagonal ``D`` (``+1.0`` / ``-1.0``), from the seed and the round."""
        words = prg_words(self.seed, info=label("privagg/dp/rotation/v1", self.round), count=self.padded, bits=64)
        return np.where((words & np.uint64(1)).astype(bool), -1.0, 1.0)

    def rotate(self, x: np.ndarray) -> np.ndarray:
        """Rotate one vector (``(dim,)``) or a batch (``(k, dim)``) -> length ``padded``."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.dim:
            raise ConfigurationError(f"expected length {self.dim}, got {x.shape[-1]}", field="updates")
        pad = np.zeros((*x.shape[:-1], self.padded), dtype=np.float64)
        pad[..., : self.dim] = x
        return fwht(pad * self.signs())

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Undo :meth:`rotate` (``(padded,)`` or ``(k, padded)``) -> length ``dim``."""
        y = np.asarray(y, dtype=np.float64)
        if y.shape[-1] != self.padded:
            raise ConfigurationError(f"expected length {self.padded}, got {y.shape[-1]}", field="updates")
        return (fwht(y) * self.signs())[..., : self.dim]
