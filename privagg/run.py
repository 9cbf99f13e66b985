"""The run engine behind ``privagg run``: configure, train, (with DP) train the baseline, measure leakage.

``RunConfig()`` is the main job (:class:`protocols.fedavg.RunConfig` holds its defaults);
:func:`run_config` applies a named preset (``privagg/presets/<name>.toml``, :data:`PRESETS`),
a TOML file and overrides on top of it, in that order. :func:`execute_run` runs the
federation, when DP is on the same run without DP so the report can show the accuracy cost,
and (``leakage=True``) one cheap measurement of what this configuration's server could learn:
the malicious-model attack (:func:`attacks.imprint.malicious_model_exposure`) against the
defense that models what the server sees (:func:`exposure_defense`).
:func:`privagg.report.run.run_report` turns the :class:`RunOutcome` into a report::

    from privagg.run import execute_run, run_config
    from privagg.report.run import run_report

    outcome = execute_run(run_config(overrides={"federation": {"rounds": 15}}), progress=False)
    run_report(outcome).write("privagg-report")
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from attacks.imprint import MaliciousModelExposure, malicious_model_exposure
from dp import InsecureNoiseWarning
from privagg.config import override, read_toml
from privagg.errors import ConfigurationError
from protocols.fedavg import FedAvgSimulation, RunConfig, RunResult

__all__ = [
    "PRESETS",
    "Leakage",
    "RunOutcome",
    "execute_run",
    "exposure_defense",
    "measure_leakage",
    "preset_path",
    "run_config",
]

#: named configurations of ``privagg run --preset NAME`` (``plain`` is ``RunConfig()``)
PRESETS: dict[str, str] = {
    "plain": "FedAvg with the plain mean on digits, 20 non-IID clients (the default main job; no privacy)",
    "secagg": "the default run under active secure aggregation (the server learns only the sum; no DP)",
    "hardened": (
        "active secure aggregation + client-level DP (epsilon 8, noise added by the clients inside the "
        "secure sum), digits over 1,000 clients, secret Poisson sampling; slow: about 6 s a round for "
        "~200 clients, 60 rounds, plus the same run without DP (--no-baseline halves it)"
    ),
}

#: aggregators whose server learns only the sum of the updates
SUM_ONLY = ("secagg", "paillier")


def preset_path(name: str) -> Path:
    """The TOML file of preset ``name`` (shipped in ``privagg/presets``)."""
    if name not in PRESETS:
        raise ConfigurationError(f"unknown preset {name!r}", field="--preset", accepted=", ".join(PRESETS))
    return Path(str(resources.files("privagg") / "presets" / f"{name}.toml"))


@dataclass(frozen=True)
class Leakage:
    """A measured leakage figure: the attack, what it was run against and what the run is modelled by.

    ``defense`` is the attack-case defense standing for this run's server view; ``modelled``
    says in words what is assumed in that mapping (the attack runs on its own small digits
    case, not on this run's clients).
    """

    defense: str
    modelled: str
    exposure: MaliciousModelExposure
    seconds: float


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: its result, the no-DP baseline (DP runs only), the leakage measured, the wall time."""

    config: RunConfig
    result: RunResult
    baseline: RunResult | None
    seconds: float
    leakage: Leakage | None = None


def run_config(
    toml: str | Path | None = None, overrides: Mapping[str, Any] | None = None, *, preset: str | None = None
) -> RunConfig:
    """``RunConfig()`` with a preset, then a TOML file's settings, then ``overrides`` (nested tables), validated."""
    cfg = RunConfig()
    if preset is not None:
        cfg = override(cfg, read_toml(preset_path(preset)))
    if toml is not None:
        cfg = override(cfg, read_toml(toml))
    if overrides:
        cfg = override(cfg, overrides)
    return cfg


def exposure_defense(cfg: RunConfig) -> tuple[str, str]:
    """The attack-case defense that models what this run's server sees, and the assumption in words.

    Sum-only aggregators (secagg, paillier) -> ``secagg`` (the server sees the exact sum), or
    ``secagg+dp`` when the clients add the DP noise inside the sum (``client`` / ``distributed``);
    every other aggregator -> ``none`` (the server sees each update; central DP noise comes after).
    """
    dp = cfg.dp
    name = cfg.aggregation.name
    if name in SUM_ONLY:
        if dp is not None and dp.noise in ("client", "distributed"):
            eps = dp.target_epsilon if dp.target_epsilon is not None else 8.0
            return "secagg+dp", (
                f"modelled as client-noised secure aggregation at epsilon {eps:g} with the attack case's own "
                "calibration (assumed comparable to this run's noise)"
            )
        how = (
            "paillier releases only the sum, like secure aggregation (assumed equivalent)" if name == "paillier" else ""
        )
        return "secagg", "modelled as secure aggregation without noise in the sum" + (f"; {how}" if how else "")
    central = "; central DP noise is added after the server has seen the updates" if dp is not None else ""
    return "none", f"the server sees every client's update{central}"


def measure_leakage(cfg: RunConfig, *, seeds: tuple[int, ...] = (0, 1, 2)) -> Leakage:
    """The malicious-model (imprint) attack against the defense modelling ``cfg``'s server view (~1 s)."""
    defense, modelled = exposure_defense(cfg)
    eps = cfg.dp.target_epsilon if cfg.dp is not None and cfg.dp.target_epsilon is not None else 8.0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # the attack case draws seeded simulation noise (and warns so): a measurement, not a release
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        exp = malicious_model_exposure(defense, num_clients=10, seeds=seeds, dp_epsilon=eps)
    return Leakage(defense=defense, modelled=modelled, exposure=exp, seconds=time.perf_counter() - t0)


def execute_run(cfg: RunConfig, *, progress: bool = True, baseline: bool = True, leakage: bool = False) -> RunOutcome:
    """Run the federation; with DP and ``baseline`` the same run without DP; with ``leakage`` one attack."""
    t0 = time.perf_counter()
    result = FedAvgSimulation(cfg).run(progress=progress, description="FedAvg")
    base = None
    if cfg.dp is not None and baseline:
        base_cfg = dataclasses.replace(cfg, dp=None)
        base = FedAvgSimulation(base_cfg).run(progress=progress, description="baseline (no DP)")
    leak = measure_leakage(cfg) if leakage else None
    return RunOutcome(config=cfg, result=result, baseline=base, seconds=time.perf_counter() - t0, leakage=leak)
