"""The run engine behind ``privagg run``: configure, train, and (with DP) train the baseline.

``RunConfig()`` is the main job (:class:`protocols.fedavg.RunConfig` holds its defaults);
:func:`run_config` applies a TOML file and overrides on top of it, :func:`execute_run` runs
the federation and, when DP is on, the same run without DP so the report can show the
accuracy cost. :func:`privagg.report.run.run_report` turns the :class:`RunOutcome` into a
report::

    from privagg.run import execute_run, run_config
    from privagg.report.run import run_report

    outcome = execute_run(run_config(overrides={"federation": {"rounds": 15}}), progress=False)
    run_report(outcome).write("privagg-report")
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privagg.config import override, read_toml
from protocols.fedavg import FedAvgSimulation, RunConfig, RunResult

__all__ = ["RunOutcome", "execute_run", "run_config"]


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: its result, the no-DP baseline (DP runs only) and the wall time of both."""

    config: RunConfig
    result: RunResult
    baseline: RunResult | None
    seconds: float


def run_config(toml: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """``RunConfig()`` with the settings of a TOML file, then ``overrides`` (nested tables), validated."""
    cfg = RunConfig()
    if toml is not None:
        cfg = override(cfg, read_toml(toml))
    if overrides:
        cfg = override(cfg, overrides)
    return cfg


def execute_run(cfg: RunConfig, *, progress: bool = True, baseline: bool = True) -> RunOutcome:
    """Run the configured federation and, with DP and ``baseline``, the same run without DP."""
    t0 = time.perf_counter()
    result = FedAvgSimulation(cfg).run(progress=progress, description="FedAvg")
    base = None
    if cfg.dp is not None and baseline:
        base_cfg = dataclasses.replace(cfg, dp=None)
        base = FedAvgSimulation(base_cfg).run(progress=progress, description="baseline (no DP)")
    return RunOutcome(config=cfg, result=result, baseline=base, seconds=time.perf_counter() - t0)
