"""DP noise bench engine: secure noise throughput, measured side by side in one run.

Compares, on the same vector length: the secure discrete Gaussian (:mod:`dp.certified`: exact,
certified float64 decisions with an exact rational fallback, AES-256-CTR keyed by a fresh
``os.urandom`` seed), the full grid mechanism (snap + secure noise), the same sampler on a
seeded numpy stream (simulation mode), numpy's floating-point ``Generator.normal`` (insecure
baseline, for scale) and, with ``exact``, the integer-only CKS sampler (:mod:`dp.exact`).
The samplers are timed in alternation (one call of each per repetition, ``repeats`` times),
and the medians are compared; the load average is read before and after. The raw keystream
rates of AES-256-CTR and ChaCha20 (both OpenSSL, through ``cryptography``, timed in
alternation) say which stream cipher is the faster source of uniform bits on this machine.

Targets: secure noise for 1,000,000 coordinates in < 0.5 s, and at most 5x numpy's
``Generator.normal`` measured in the same run (issue 14).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dp.exact import ExactSecureNoise
from dp.noise import GaussianGridMechanism, InsecureNoiseWarning, SecureNoise, SeededNoise
from privagg.errors import ConfigurationError

from .timing import JsonResult, median

__all__ = [
    "DPBenchResult",
    "run_bench",
    "SECURE",
    "EXACT",
    "BASELINE",
    "TARGET_SECONDS",
    "TARGET_RATIO",
    "keystream_rates",
]

SECURE = "secure exact discrete Gaussian (certified, AES-CTR)"
GRID = "grid mechanism: snap + secure noise"
SEEDED = "same sampler, seeded numpy stream (simulation)"
EXACT = "exact CKS sampler, integer arithmetic only (AES-CTR)"
BASELINE = "numpy Generator.normal (insecure float baseline)"
#: secure noise for 1,000,000 coordinates should take less than this
TARGET_SECONDS = 0.5
#: ... and at most this many times numpy's Generator.normal, measured in the same run
TARGET_RATIO = 5.0


def keystream_rates(nbytes: int = 1 << 24, repeats: int = 7) -> tuple[float, float]:
    """Raw OpenSSL keystream rates in GB/s, ``(AES-256-CTR, ChaCha20)``: alternating calls, the best of each.

    The buffers are touched once before timing (fresh pages would be counted otherwise). The
    best, not the median: one call is a few milliseconds, and on a loaded machine a call that
    loses its core for a time slice takes several times longer (bimodal), which says nothing
    about the cipher.
    """
    zeros = np.zeros(nbytes, dtype=np.uint8)
    out = np.zeros(nbytes + 16, dtype=np.uint8)
    key = os.urandom(32)
    ciphers = {
        "aes": Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor(),
        "chacha20": Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor(),
    }
    rows = {name: (lambda enc=enc: enc.update_into(zeros.data, out.data)) for name, enc in ciphers.items()}
    for fn in rows.values():
        fn()
    best = _alternating_times(rows, repeats)
    return nbytes / min(best["aes"]) / 1e9, nbytes / min(best["chacha20"]) / 1e9


@dataclass(frozen=True, slots=True)
class DPBenchResult(JsonResult):
    """Median seconds per sampler (``median_seconds``, in the order measured) and the keystream rates.

    ``load_average`` (1-minute, before and after) and the ChaCha20 rate are shown by the CLI;
    the JSON record keeps its published keys.
    """

    dim: int
    sigma_grid_units: float
    repeats: int
    median_seconds: Mapping[str, float]
    aes_ctr_keystream_GBps: float
    target_seconds: float = TARGET_SECONDS
    chacha20_keystream_GBps: float = float("nan")
    load_average: tuple[float, float] = (float("nan"), float("nan"))
    target_ratio: float = TARGET_RATIO

    @property
    def ratio_to_numpy_normal(self) -> dict[str, float]:
        base = self.median_seconds[BASELINE]
        return {k: v / base for k, v in self.median_seconds.items()}

    @property
    def secure_meets_target(self) -> bool:
        return self.median_seconds[SECURE] < self.target_seconds

    @property
    def secure_meets_ratio_target(self) -> bool:
        return self.ratio_to_numpy_normal[SECURE] <= self.target_ratio

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


def _alternating_times(rows: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """One timed call of each function per repetition, ``repeats`` times: the seconds per function."""
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(repeats):
        for name, fn in rows.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def _alternating_medians(rows: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """:func:`_alternating_times`, the median per function."""
    return {k: median(v) for k, v in _alternating_times(rows, repeats).items()}


def run_bench(*, dim: int = 1_000_000, sigma: float = 1e6, repeats: int = 7, exact: bool = False) -> DPBenchResult:
    """Time every sampler on ``dim`` coordinates of noise with std ``sigma`` grid units, in alternation.

    ``exact`` adds the integer-only CKS sampler (:class:`dp.exact.ExactSecureNoise`, slower).
    """
    if dim < 1 or repeats < 1 or not sigma > 0:
        raise ConfigurationError("dim and repeats must be >= 1, sigma > 0", field="bench")
    load_before = os.getloadavg()[0]
    secure = SecureNoise()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        seeded = SeededNoise(0)
    mech = GaussianGridMechanism.create(sensitivity=1.0, noise_multiplier=1.0, dim=dim)
    x = np.random.default_rng(0).normal(size=dim) * 1e-3
    rng = np.random.default_rng(0)
    secure.discrete_gaussian(sigma, 1000)  # warm-up (imports, OpenSSL init)
    rows: dict[str, Callable[[], object]] = {
        SECURE: lambda: secure.discrete_gaussian(sigma, dim),
        GRID: lambda: mech.release(x, secure),
        SEEDED: lambda: seeded.discrete_gaussian(sigma, dim),
        BASELINE: lambda: rng.normal(size=dim),
    }
    if exact:
        rows[EXACT] = lambda: ExactSecureNoise().discrete_gaussian(sigma, dim)
    medians = _alternating_medians(rows, repeats)
    aes, chacha20 = keystream_rates(1 << 24, 7)
    return DPBenchResult(
        dim=dim,
        sigma_grid_units=sigma,
        repeats=repeats,
        median_seconds=medians,
        aes_ctr_keystream_GBps=aes,
        chacha20_keystream_GBps=chacha20,
        load_average=(load_before, os.getloadavg()[0]),
    )
