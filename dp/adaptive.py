"""Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021): the clip follows a quantile.

Each round every client reports ``b_k = 1[||delta_k|| <= C]``; the server releases the noised
count ``sum_k (b_k - 1/2) + N(0, sigma_b^2)`` (sensitivity 1/2 under add/remove, 1 under
replace-one), estimates the unclipped fraction ``b = (noised + m/2) / m`` with ``m`` the
expected cohort, and updates ``C <- C * exp(-eta * (b - gamma))``: up when fewer than a
``gamma`` fraction pass unclipped, down otherwise (geometric update).

The count and the update sum are released from the same cohort, so together they are one
Gaussian mechanism on the joint vector; with noise multipliers ``z_delta`` (updates) and
``z_b = sigma_b / sens_b`` (count), the joint multiplier is
``z = (z_delta^-2 + z_b^-2)^(-1/2)``. Given the accounted ``z``, :func:`split_noise_multiplier`
returns the ``z_delta`` the updates must use, so the privacy cost of the count is inside
the accounting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privagg.errors import ConfigurationError

__all__ = ["AdaptiveClipConfig", "AdaptiveClipper", "split_noise_multiplier"]


def split_noise_multiplier(noise_multiplier: float, count_noise_multiplier: float) -> float:
    """``z_delta`` with ``z_delta^-2 + z_b^-2 = z^-2``; refuses when the count alone would exceed ``z``."""
    z, zb = noise_multiplier, count_noise_multiplier
    if not (z > 0 and zb > 0):
        raise ConfigurationError("noise multipliers must be > 0", field="noise_multiplier")
    rest = z**-2 - zb**-2
    if rest <= 0:
        raise ConfigurationError(
            f"the clip-count noise (multiplier {zb:.4g}) spends the whole budget of noise multiplier {z:.4g}; "
            "raise count_noise_std",
            field="count_noise_std",
        )
    return rest**-0.5


@dataclass(frozen=True)
class AdaptiveClipConfig:
    initial_clip: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_noise_std: float | None = None  # None: expected cohort / 20 (the paper's default)

    def __post_init__(self) -> None:
        if not self.initial_clip > 0:
            raise ConfigurationError(f"must be > 0, got {self.initial_clip}", field="clip_norm")
        if not 0 < self.target_quantile < 1:
            raise ConfigurationError(f"must be in (0, 1), got {self.target_quantile}", field="target_quantile")
        if not self.learning_rate > 0:
            raise ConfigurationError(f"must be > 0, got {self.learning_rate}", field="clip_learning_rate")
        if self.count_noise_std is not None and not self.count_noise_std > 0:
            raise ConfigurationError(f"must be > 0, got {self.count_noise_std}", field="count_noise_std")

    def count_std(self, expected_cohort: float) -> float:
        return self.count_noise_std if self.count_noise_std is not None else max(expected_cohort / 20.0, 1e-3)


class AdaptiveClipper:
    """The current clip norm and its geometric update from a *noised* unclipped count."""

    def __init__(self, config: AdaptiveClipConfig) -> None:
        self.config = config
        self.clip = config.initial_clip
        self.history: list[float] = [self.clip]

    def unclipped_fraction(self, noised_centered_count: float, expected_cohort: float) -> float:
        """``(sum (b_k - 1/2) + noise + m/2) / m``, the estimate of the unclipped fraction."""
        return (noised_centered_count + expected_cohort / 2.0) / expected_cohort

    def update(self, unclipped_fraction: float) -> float:
        """``C <- C * exp(-eta * (b - gamma))``; returns the new clip."""
        self.clip *= math.exp(-self.config.learning_rate * (unclipped_fraction - self.config.target_quantile))
        self.history.append(self.clip)
        return self.clip
