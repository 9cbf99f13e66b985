"""``DPConfig``: the ``[dp]`` table of a run configuration, validated with precise field names."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dp.distributed import MAX_BITS, MIN_BITS, check_beta
from privagg.config import load_config
from privagg.errors import ConfigurationError

__all__ = ["DPConfig"]


def _suggest_delta(population: int) -> float:
    """A round power of ten below ``1 / population`` (``1 / (10 N)`` or smaller)."""
    return 10.0 ** math.floor(math.log10(1.0 / (10.0 * population)))


@dataclass(frozen=True)
class DPConfig:
    """Client-level DP for FedAvg.

    Give ``noise_multiplier`` directly, or ``target_epsilon`` and let the wrapper calibrate it
    for the run's rounds and sampling (the budget then defaults to ``target_epsilon``).

    * ``noise``: ``"central"`` (the server adds all the noise to the aggregate) or
      ``"client"`` (each client adds a share, so a secure-aggregation sum carries the full
      noise; assumes at least ``honest_fraction`` of each cohort is honest, see
      :mod:`protocols.dp_fedavg`; of *each cohort*: an adversary holding ``1 - h`` of the
      population exceeds it in a random cohort about half the time, so set ``h`` from a tail
      bound, as the audit's ``dp.honest`` finding computes).
    * ``weighting``: ``"uniform"`` or ``"capped"`` (``min(n_k / weight_cap, 1)``), both
      with a fixed denominator ``q * total_weight`` (``total_weight`` defaults to the population).
    * ``secure_noise=False`` with a ``seed`` gives reproducible, *insecure* simulation noise
      (warns).
    * ``reproducible_cohorts``: draw each round's cohort from the public run seed (simulation
      only: amplification by subsampling assumes a secret cohort, so the report says "cohorts
      reproducible from the seed: not private"); by default cohorts come from the OS CSPRNG.
    * ``delta`` must be at most ``1 / population`` (a larger delta allows mechanisms that
      publish one client's data outright with probability delta); ``allow_large_delta = true``
      overrides the check (the report still shows ``delta * population``).
    * ``exact_sampler``: draw the noise with :class:`dp.exact.ExactSecureNoise` (integer arithmetic only,
      no floating point; about 20x slower) instead of the default :mod:`dp.certified` sampler (exact
      discrete Gaussian: float64 decisions taken only where a margin certifies them, the rest decided
      exactly in rational arithmetic).
    * ``noise = "distributed"``: distributed DP inside secure aggregation (:mod:`dp.distributed`):
      each client clips, rotates, scales, rounds and adds an integer noise share of ``mechanism``
      (``"dgauss"``: distributed discrete Gaussian, Kairouz-Liu-Steinke 2021; ``"skellam"``:
      Agarwal-Kairouz-Liu 2021), and the secure sum runs mod ``2^bits``. The scale and the noise
      are chosen from ``target_epsilon`` (required), the rounds, the sampling rate, the cohort and
      the dimension; ``beta`` is the conditional-rounding parameter, ``clip_probability`` the
      bound on a coordinate of the sum leaving the ring, ``max_noise_inflation`` the most the
      bits may inflate the noise before the run is refused (naming the bits that work).
      Poisson sampling only; no adaptive clipping.
    * ``ledger_path``: a JSON file the privacy ledger is written to after every released round
      and resumed from when the server starts again (a restart never resets the privacy spent).
    * ``budget_against``: which guarantee the budget (:attr:`budget`) enforces before each round:
      ``"observers"`` (default) the amplified epsilon, valid against observers of the released
      models who do not see the rosters; ``"server"`` the worst client's unamplified epsilon
      against the server, which sees who took part (:mod:`dp.server_view`; client or distributed
      noise only: with central noise the server is trusted and has no guarantee to enforce).
    """

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    budget_epsilon: float | None = None
    clip_norm: float = 1.0
    noise: Literal["central", "client", "distributed"] = "central"
    honest_fraction: float = 1.0
    weighting: Literal["uniform", "capped", "examples"] = "uniform"
    weight_cap: float | None = None
    total_weight: float | None = None
    adaptive_clipping: bool = False
    target_quantile: float = 0.5
    clip_learning_rate: float = 0.2
    count_noise_std: float | None = None
    accountant: Literal["rdp", "prv"] = "rdp"
    secure_noise: bool = True
    seed: int | None = None
    grid_resolution: float = 1000.0
    reproducible_cohorts: bool = False
    allow_large_delta: bool = False
    ledger_path: str | None = None
    exact_sampler: bool = False
    mechanism: Literal["dgauss", "skellam"] = "dgauss"
    bits: int = 16
    beta: float = math.exp(-0.5)
    clip_probability: float = 1e-4
    max_noise_inflation: float = 1.2
    budget_against: Literal["observers", "server"] = "observers"

    def __post_init__(self) -> None:
        def bad(field: str, msg: str, accepted: Any = None) -> ConfigurationError:
            return ConfigurationError(msg, field=field, accepted=accepted)

        if self.noise_multiplier is None and self.target_epsilon is None:
            raise bad("noise_multiplier", "give noise_multiplier or target_epsilon")
        if self.noise_multiplier is not None and self.target_epsilon is not None:
            raise bad("target_epsilon", "give noise_multiplier or target_epsilon, not both")
        if self.noise_multiplier is not None and not (
            self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)
        ):
            raise bad("noise_multiplier", f"must be finite and > 0, got {self.noise_multiplier}")
        if self.target_epsilon is not None and not (self.target_epsilon > 0 and math.isfinite(self.target_epsilon)):
            raise bad("target_epsilon", f"must be finite and > 0, got {self.target_epsilon}")
        if not 0 < self.delta < 1:
            raise bad("delta", f"must be in (0, 1), got {self.delta}")
        if self.budget_against not in ("observers", "server"):
            raise bad("budget_against", f"got {self.budget_against!r}", accepted=["observers", "server"])
        if self.budget_against == "server" and self.noise == "central":
            raise bad(
                "budget_against",
                "central noise gives no guarantee against the server (it sees the aggregate before the noise)",
                accepted=["observers"],
            )
        if self.budget_epsilon is not None and not self.budget_epsilon > 0:
            raise bad("budget_epsilon", f"must be > 0, got {self.budget_epsilon}")
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise bad("clip_norm", f"must be finite and > 0, got {self.clip_norm}")
        if not 0 < self.honest_fraction <= 1:
            raise bad("honest_fraction", f"must be in (0, 1], got {self.honest_fraction}")
        if self.honest_fraction < 1 and self.noise == "central":
            raise bad("honest_fraction", "only meaningful with noise = 'client' or 'distributed'")
        if self.weighting == "examples":
            raise bad(
                "weighting",
                "example-count weights n_k / sum(n) have no a-priori bound, so no finite sensitivity: "
                "use 'capped' (min(n_k / weight_cap, 1), fixed denominator) or 'uniform'",
                accepted=["uniform", "capped"],
            )
        if self.weighting == "capped" and (self.weight_cap is None or not self.weight_cap > 0):
            raise bad("weight_cap", "capped weighting needs weight_cap > 0 (examples at which a weight reaches 1)")
        if self.weighting == "uniform" and self.weight_cap is not None:
            raise bad("weight_cap", "only used with weighting = 'capped'")
        if self.total_weight is not None and not self.total_weight > 0:
            raise bad("total_weight", f"must be > 0, got {self.total_weight}")
        if not 0 < self.target_quantile < 1:
            raise bad("target_quantile", f"must be in (0, 1), got {self.target_quantile}")
        if not self.clip_learning_rate > 0:
            raise bad("clip_learning_rate", f"must be > 0, got {self.clip_learning_rate}")
        if self.count_noise_std is not None and not self.count_noise_std > 0:
            raise bad("count_noise_std", f"must be > 0, got {self.count_noise_std}")
        if self.count_noise_std is not None and not self.adaptive_clipping:
            raise bad("count_noise_std", "only used with adaptive_clipping = true")
        if self.secure_noise and self.seed is not None:
            raise bad("seed", "a noise seed makes noise predictable; set secure_noise = false to ask for it explicitly")
        if not self.secure_noise and self.seed is None:
            raise bad("seed", "secure_noise = false needs an explicit seed (reproducible simulation only)")
        if self.exact_sampler and not self.secure_noise:
            raise bad("exact_sampler", "the exact sampler draws secure noise only (secure_noise = true)")
        if not self.grid_resolution >= 1:
            raise bad("grid_resolution", f"must be >= 1, got {self.grid_resolution}")
        self._check_distributed(bad)

    def _check_distributed(self, bad: Any) -> None:
        defaults = DPConfig.__dataclass_fields__
        if self.noise != "distributed":
            for name in ("mechanism", "bits", "beta", "clip_probability", "max_noise_inflation"):
                if getattr(self, name) != defaults[name].default:
                    raise bad(name, "only used with noise = 'distributed'")
            return
        if self.target_epsilon is None:
            raise bad(
                "target_epsilon",
                "distributed DP chooses its scale and noise from target_epsilon (give it instead of noise_multiplier)",
            )
        if self.adaptive_clipping:
            raise bad("adaptive_clipping", "not available with noise = 'distributed' (a fixed clip_norm)")
        if self.exact_sampler and self.mechanism != "dgauss":
            raise bad("exact_sampler", "the exact sampler draws discrete Gaussians (mechanism = 'dgauss')")
        if self.accountant != "rdp":
            raise bad("accountant", "distributed DP is accounted by its own RDP bounds", accepted=["rdp"])
        if not (isinstance(self.bits, int) and MIN_BITS <= self.bits <= MAX_BITS):
            raise bad("bits", f"got {self.bits!r}", accepted=f"{MIN_BITS}..{MAX_BITS}")
        check_beta(self.beta, field="beta")  # above MAX_BETA a client's rounding may give up on its update
        if not 0 < self.clip_probability < 1:
            raise bad("clip_probability", f"must be in (0, 1), got {self.clip_probability}")
        if not self.max_noise_inflation > 1:
            raise bad("max_noise_inflation", f"must be > 1, got {self.max_noise_inflation}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], *, path: str = "dp") -> DPConfig:
        """Validate a ``[dp]`` table; errors name the field as ``dp.<field>``."""
        return load_config(cls, options, path=path)

    def check_population(self, population: int | None) -> None:
        """Refuse ``delta > 1 / population`` unless ``allow_large_delta`` (:class:`ConfigurationError`)."""
        if population is None or self.allow_large_delta or self.delta * population <= 1.0:
            return
        raise ConfigurationError(
            f"delta {self.delta:g} exceeds 1/population = 1/{population} (delta * population = "
            f"{self.delta * population:.3g}): a mechanism could then publish one client's data outright; "
            f"set dp.delta <= {1.0 / population:.3g} (e.g. {_suggest_delta(population):g}), "
            "or dp.allow_large_delta = true to accept it knowingly",
            field="dp.delta",
        )

    @property
    def budget(self) -> float | None:
        """The epsilon budget enforced before each round (``budget_epsilon`` or ``target_epsilon``)."""
        return self.budget_epsilon if self.budget_epsilon is not None else self.target_epsilon
