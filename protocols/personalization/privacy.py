"""Client-level DP for sparse (masked) updates: the sensitivity under clipping, the release, the accounting.

What a round releases. Client ``k`` keeps the coordinates of its mask ``m_k`` and contributes

    u_k = [ clip_C(m_k * delta_k),  beta * m_k ]

(the first half: its kept update, clipped to L2 norm ``C`` *after* masking, zero off the mask;
the second half: its mask, scaled by ``beta``), and the release is ``sum_k u_k`` plus Gaussian
noise on *every* coordinate (noise only on the union of masks would publish the union). The
server divides each coordinate's value sum by its noisy keeper count.

Sensitivity. ``||u_k||^2 <= C^2 + beta^2 * |m_k|``, and a client may keep at most ``K``
coordinates (``max_kept``, public; :meth:`SparseUpdateDP.contribution` refuses a larger mask),
so one client moves the release by at most

    Delta = f * sqrt(C^2 + beta^2 * K)

in L2, with ``f = 1`` for add/remove neighbours (Poisson sampling) and ``f = 2`` for
replace-one (fixed-size sampling; :attr:`dp.accounting.Sampling.sensitivity_factor`). The
sparsity does not lower the value half's sensitivity (the clip bounds its norm, not its
support); it is the mask counts that cost ``beta * sqrt(K)``. With ``beta = 0`` the counts are
not released and the server divides by the public cohort size instead (a non-keeper counts
as a zero): ``Delta = f * C``, the dense bound. With the same noise on every coordinate, a
count carries noise of standard deviation ``sigma / beta`` in count units
(:meth:`SparseUpdateDP.count_noise_std`): a small ``beta`` makes the counts useless, a large
one the values; both need a large cohort.

Accounting. The noise standard deviation is ``noise_multiplier * Delta``, so each round is one
subsampled Gaussian step of ``noise_multiplier`` for :mod:`dp.accounting` (any registered
accountant that supports the sampling); the noise itself is the grid mechanism of
:mod:`dp.noise` with a CSPRNG-backed sampler.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dp import GaussianGridMechanism, NoiseSampler, Sampling, clip_l2, make_accountant
from privagg.errors import ConfigurationError

__all__ = ["SparseUpdateDP", "private_per_coordinate_mean"]


@dataclass(frozen=True)
class SparseUpdateDP:
    """Clip ``clip`` (L2, after masking), at most ``max_kept`` kept coordinates, mask weight ``count_weight``."""

    clip: float
    max_kept: int
    noise_multiplier: float
    count_weight: float = 0.0

    def __post_init__(self) -> None:
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ConfigurationError(f"must be finite and > 0, got {self.clip}", field="personalization.dp_clip")
        if self.max_kept < 1:
            raise ConfigurationError(f"must be >= 1, got {self.max_kept}", field="personalization.dp_max_kept")
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise ConfigurationError(
                f"must be finite and >= 0, got {self.noise_multiplier}", field="personalization.dp_noise_multiplier"
            )
        if not (self.count_weight >= 0 and math.isfinite(self.count_weight)):
            raise ConfigurationError(
                f"must be finite and >= 0, got {self.count_weight}", field="personalization.dp_count_weight"
            )

    @property
    def releases_counts(self) -> bool:
        return self.count_weight > 0

    def sensitivity(self, sampling: Sampling) -> float:
        """L2 sensitivity of the released sum: ``f * sqrt(clip^2 + count_weight^2 * max_kept)``."""
        return sampling.sensitivity_factor * math.sqrt(self.clip**2 + self.count_weight**2 * self.max_kept)

    def mechanism(self, dimension: int, sampling: Sampling) -> GaussianGridMechanism:
        """The grid Gaussian mechanism for a release over ``dimension`` model coordinates."""
        width = 2 * dimension if self.releases_counts else dimension
        return GaussianGridMechanism.create(
            sensitivity=self.sensitivity(sampling), noise_multiplier=self.noise_multiplier, dim=width
        )

    def count_noise_std(self, sampling: Sampling) -> float:
        """Noise on one keeper count, in clients (``inf`` when counts are not released)."""
        if not self.releases_counts:
            return math.inf
        return self.noise_multiplier * self.sensitivity(sampling) / self.count_weight

    def contribution(self, delta: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``u_k``: the masked update clipped to ``clip`` (then, with counts, ``count_weight * mask``)."""
        m = np.asarray(mask, dtype=bool)
        d = np.asarray(delta, dtype=np.float64)
        if m.shape != d.shape or m.ndim != 1:
            raise ConfigurationError(f"mask {m.shape} and update {d.shape} must be equal 1-d shapes", field="mask")
        kept = int(m.sum())
        if kept > self.max_kept:
            raise ConfigurationError(
                f"a mask keeps {kept} coordinates, above the accounted max_kept {self.max_kept}",
                field="personalization.dp_max_kept",
            )
        values, _norm = clip_l2(np.where(m, d, 0.0), self.clip)
        if not self.releases_counts:
            return values
        return np.concatenate([values, self.count_weight * m.astype(np.float64)])

    def epsilon(self, *, rounds: int, sampling: Sampling, delta: float, accountant: str = "rdp") -> float:
        """Epsilon after ``rounds`` releases under ``sampling``, from :mod:`dp.accounting`."""
        acc = make_accountant(accountant)
        acc.step(noise_multiplier=self.noise_multiplier, sampling=sampling, count=rounds)
        return acc.get_epsilon(delta)


def private_per_coordinate_mean(
    deltas: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    spec: SparseUpdateDP,
    sampling: Sampling,
    cohort: int,
    sampler: NoiseSampler,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(mean_delta, noisy_counts)`` of one central-noise release (``noisy_counts`` is ``None`` without counts).

    With counts, each coordinate's noisy value sum is divided by its noisy count, floored at
    1 (a count below one is noise); without, by ``cohort`` (public). Only the noisy sum is
    used: the clients' contributions never leave this function.
    """
    if not deltas or len(deltas) != len(masks):
        raise ConfigurationError("need one mask per update and at least one update", field="updates")
    if cohort < 1:
        raise ConfigurationError(f"must be >= 1, got {cohort}", field="cohort")
    dim = len(deltas[0])
    total = np.sum([spec.contribution(d, m) for d, m in zip(deltas, masks, strict=True)], axis=0)
    mech = spec.mechanism(dim, sampling)
    noisy = mech.release(total, sampler) if spec.noise_multiplier > 0 else total
    if not spec.releases_counts:
        return noisy / cohort, None
    counts = noisy[dim:] / spec.count_weight
    return noisy[:dim] / np.maximum(counts, 1.0), counts
