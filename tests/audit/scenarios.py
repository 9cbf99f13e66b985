"""The audit tasks the planted bugs are checked on: a run configuration and canaries for each.

* ``default``: :data:`privagg.audit.canaries.EMPIRICAL_DEFAULTS` (digits MLP, 20 clients,
  Poisson 0.5, noise multiplier 2, 20 rounds), 1000 canaries;
* ``capped``: the same with capped weights (``weight_cap = 20`` examples);
* ``dropouts``: client-side noise, every one of 50 clients every round, noise multiplier 1;
  500 canaries in 10 groups of 2 rounds (50 canaries per round, so an adversary dropping real
  clients removes half of each round's noise shares);
* ``alone``: canaries only, each alone in its own round (Poisson rate 1, noise multiplier 8),
  64 canaries and rounds: the worst-case dataset for a leak that needs an empty cohort.
"""

from __future__ import annotations

from typing import Any

from privagg.audit.canaries import EMPIRICAL_DEFAULTS, CanaryConfig
from privagg.run import run_config

__all__ = ["SCENARIOS", "scenario"]

SCENARIOS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default": (EMPIRICAL_DEFAULTS, {"canaries": 1000}),
    "capped": (
        {**EMPIRICAL_DEFAULTS, "dp": {**EMPIRICAL_DEFAULTS["dp"], "weighting": "capped", "weight_cap": 20.0}},
        {"canaries": 1000},
    ),
    "dropouts": (
        {
            "data": {"num_clients": 50},
            "federation": {"rounds": 20, "sampling": "all"},
            "dp": {"noise_multiplier": 1.0, "noise": "client"},
        },
        {"canaries": 500, "groups": 10},
    ),
    "alone": (
        {"federation": {"rounds": 64, "sampling": "poisson", "sampling_rate": 1.0}, "dp": {"noise_multiplier": 8.0}},
        {"canaries": 64, "groups": 64, "population": "canaries-only"},
    ),
}


def scenario(name: str, *, seed: int = 0) -> tuple[Any, CanaryConfig]:
    """The run configuration and the canaries of scenario ``name``."""
    run, canaries = SCENARIOS[name]
    return run_config(overrides=run), CanaryConfig(seed=seed, **canaries)
