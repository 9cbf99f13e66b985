"""DP noise bench engine: secure noise throughput, measured side by side in one run.

Compares, on the same vector length: the secure discrete Gaussian (AES-256-CTR keyed by a fresh
``os.urandom`` seed, exact integer support, float64 rejection steps), the exact CKS sampler
(:mod:`dp.exact`, integer arithmetic only), the full grid mechanism (snap + secure noise), the
same sampler on a seeded numpy stream (simulation mode), numpy's floating-point
``Generator.normal`` (insecure baseline, for scale) and the raw AES-CTR keystream.
Medians and ratios; the target is secure noise for 1,000,000 coordinates in < 0.5 s.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from dp.exact import ExactSecureNoise
from dp.noise import GaussianGridMechanism, InsecureNoiseWarning, SecureNoise, SeededNoise
from privagg.errors import ConfigurationError

from .timing import JsonResult, aes_ctr_keystream_rate, median_seconds

__all__ = ["DPBenchResult", "run_bench", "SECURE", "EXACT", "BASELINE", "TARGET_SECONDS"]

SECURE = "secure discrete Gaussian (AES-CTR, fresh urandom seed)"
EXACT = "exact CKS sampler, integer arithmetic only (AES-CTR)"
BASELINE = "numpy Generator.normal (insecure float baseline)"
#: secure noise for 1,000,000 coordinates should take less than this
TARGET_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class DPBenchResult(JsonResult):
    """Median seconds per sampler (``median_seconds``, in the order measured) and the keystream rate."""

    dim: int
    sigma_grid_units: float
    repeats: int
    median_seconds: Mapping[str, float]
    aes_ctr_keystream_GBps: float
    target_seconds: float = TARGET_SECONDS

    @property
    def ratio_to_numpy_normal(self) -> dict[str, float]:
        base = self.median_seconds[BASELINE]
        return {k: v / base for k, v in self.median_seconds.items()}

    @property
    def secure_meets_target(self) -> bool:
        return self.median_seconds[SECURE] < self.target_seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "sigma_grid_units": self.sigma_grid_units,
            "repeats": self.repeats,
            "median_seconds": dict(self.median_seconds),
            "ratio_to_numpy_normal": self.ratio_to_numpy_normal,
            "aes_ctr_keystream_GBps": self.aes_ctr_keystream_GBps,
            "target_seconds": self.target_seconds,
            "secure_meets_target": self.secure_meets_target,
        }


def run_bench(*, dim: int = 1_000_000, sigma: float = 1e6, repeats: int = 7, exact: bool = False) -> DPBenchResult:
    """Time every sampler on ``dim`` coordinates of noise with std ``sigma`` grid units.

    ``exact`` adds the integer-only CKS sampler (:class:`dp.exact.ExactSecureNoise`, slower).
    """
    if dim < 1 or repeats < 1 or not sigma > 0:
        raise ConfigurationError("dim and repeats must be >= 1, sigma > 0", field="bench")
    secure = SecureNoise()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        seeded = SeededNoise(0)
    mech = GaussianGridMechanism.create(sensitivity=1.0, noise_multiplier=1.0, dim=dim)
    x = np.random.default_rng(0).normal(size=dim) * 1e-3
    rng = np.random.default_rng(0)
    secure.discrete_gaussian(sigma, 1000)  # warm-up (imports, OpenSSL init)
    rows = {
        SECURE: median_seconds(lambda: secure.discrete_gaussian(sigma, dim), repeats),
        "grid mechanism: snap + secure noise": median_seconds(lambda: mech.release(x, secure), repeats),
        "same sampler, seeded numpy stream (simulation)": median_seconds(
            lambda: seeded.discrete_gaussian(sigma, dim), repeats
        ),
        BASELINE: median_seconds(lambda: rng.normal(size=dim), repeats),
    }
    if exact:
        rows[EXACT] = median_seconds(lambda: ExactSecureNoise().discrete_gaussian(sigma, dim), repeats)
    return DPBenchResult(
        dim=dim,
        sigma_grid_units=sigma,
        repeats=repeats,
        median_seconds=rows,
        aes_ctr_keystream_GBps=aes_ctr_keystream_rate(1 << 24, 3),
    )
