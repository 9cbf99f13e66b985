"""The distributed-DP plan the Flower distributed-DP tests start from (clip 1, dgauss, 16 bits, epsilon 8)."""

from __future__ import annotations

from typing import Any

from dp.config import DPConfig

__all__ = ["ddp_config"]


def ddp_config(**kw: Any) -> DPConfig:
    """Distributed DP at epsilon 8, delta 1e-5, clip 1, dgauss shares in a 16-bit ring; ``kw`` overrides."""
    base: dict[str, Any] = {
        "noise": "distributed",
        "target_epsilon": 8.0,
        "delta": 1e-5,
        "clip_norm": 1.0,
        "bits": 16,
        "mechanism": "dgauss",
    }
    return DPConfig(**{**base, **kw})
