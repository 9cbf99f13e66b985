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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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

    def next_clip(self, unclipped_fraction: float) -> float:
        """``C * exp(-eta * (b - gamma))``, the clip :meth:`update` would move to (nothing changes)."""
        if not math.isfinite(unclipped_fraction):
            raise ConfigurationError(f"must be finite, got {unclipped_fraction}", field="unclipped_fraction")
        return self.clip * math.exp(-self.config.learning_rate * (unclipped_fraction - self.config.target_quantile))

    def update(self, unclipped_fraction: float) -> float:
        """``C <- C * exp(-eta * (b - gamma))``; returns the new clip."""
        self.clip = self.next_clip(unclipped_fraction)
        self.history.append(self.clip)
        return self.clip

    # -- durability: saved with the privacy ledger, so a restarted server resumes this exact clip --------------
    def _config_record(self) -> dict[str, float | None]:
        c = self.config
        return {
            "initial_clip": c.initial_clip,
            "target_quantile": c.target_quantile,
            "learning_rate": c.learning_rate,
            "count_noise_std": c.count_noise_std,
        }

    def state(self) -> dict[str, Any]:
        """The clip, its history and the configuration they came from (JSON-able; floats round-trip exactly)."""
        return {"clip": self.clip, "history": list(self.history), "config": self._config_record()}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state` saved by a run with the same configuration (else refuses)."""
        try:
            saved_config = dict(state["config"])
            clip = float(state["clip"])
            history = [float(v) for v in state["history"]]
        except (KeyError, TypeError, ValueError):
            raise ConfigurationError("unreadable adaptive clip state in the ledger", field="ledger") from None
        mine = self._config_record()
        changed = sorted(k for k in mine if saved_config.get(k) != mine[k])
        if changed:
            raise ConfigurationError(
                f"the ledger's adaptive clipping ran with other settings ({', '.join(changed)}); resume with the same "
                "settings or start a new ledger",
                field="ledger",
            )
        if not (clip > 0 and math.isfinite(clip)) or not history or history[-1] != clip:
            raise ConfigurationError("inconsistent adaptive clip state in the ledger", field="ledger")
        self.clip, self.history = clip, history
