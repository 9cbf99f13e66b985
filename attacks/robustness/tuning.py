"""The tuning step: each defense's hyperparameters chosen by worst-case accuracy on a validation seed.

Every defense declares the candidate values of its hyperparameters (``tuning_grid``: a rule's,
plus its pre-aggregators' for a stack, e.g. ``bucket_size``). :func:`tune` runs, on a
*validation seed* that the reported runs do not use, every candidate against the clean
baseline and every attack of the sweep (every round, the attackers' partial knowledge), and
keeps, per defense, the candidate with the highest worst-case accuracy over the attacks
(:func:`choose`). Worst cases within ``tolerance`` (default one point) of the best are ties,
which the higher clean accuracy breaks, then the grid's order: one run's accuracy on these
tasks' 360 to 1,000 test examples has a binomial standard error of about one point, so a
smaller gap in the worst case is not a measured difference, while the clean accuracy is a
target of its own. :meth:`TuningResult.apply`
puts the chosen values into the sweep's ``defense_options``; the report shows them.
Defenses without a grid are not tuned. Options the sweep already fixes for a defense
(``defense_options``) are kept, not searched.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from attacks.robustness.config import NO_ATTACK, Cell, RobustnessConfig
from attacks.robustness.runner import CellResult, run_jobs
from privagg.errors import ConfigurationError
from protocols.aggregation import AGGREGATORS

__all__ = ["DEFAULT_TOLERANCE", "Trial", "TuningResult", "candidates", "choose", "tune"]

#: Worst-case accuracies this close to the best are ties (about one binomial standard error).
DEFAULT_TOLERANCE = 0.01


def candidates(defense: str, fixed: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The option sets the tuning step tries for ``defense``: the product of its grid, minus ``fixed`` options."""
    grid: Mapping[str, tuple[Any, ...]] = getattr(AGGREGATORS.get(defense, field="defenses"), "tuning_grid", {})
    keys = [k for k in grid if k not in (fixed or {})]
    if not keys:
        return []
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


@dataclass(frozen=True)
class Trial:
    """One candidate of one defense on the validation seed: its clean and worst-case accuracy."""

    defense: str
    options: dict[str, Any]
    clean_accuracy: float
    worst_accuracy: float
    worst_attack: str


@dataclass(frozen=True)
class TuningResult:
    """The chosen options per tuned defense, every trial, the validation seed they were measured on,
    and the ``tolerance`` within which worst cases tied (:func:`choose`)."""

    validation_seed: int
    chosen: dict[str, dict[str, Any]]
    trials: list[Trial] = field(default_factory=list)
    tolerance: float = DEFAULT_TOLERANCE

    def apply(self, cfg: RobustnessConfig) -> RobustnessConfig:
        """``cfg`` with the chosen options added to its ``defense_options`` (options it fixed win)."""
        merged = {k: dict(v) for k, v in cfg.defense_options.items()}
        for d, opts in self.chosen.items():
            merged[d] = {**opts, **merged.get(d, {})}
        return replace(cfg, defense_options=merged)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "defense": t.defense,
                "options": t.options,
                "clean_accuracy": t.clean_accuracy,
                "worst_accuracy": t.worst_accuracy,
                "worst_attack": t.worst_attack,
                "chosen": self.chosen.get(t.defense) == t.options,
            }
            for t in self.trials
        ]


def _finite(v: float) -> float:
    return v if math.isfinite(v) else -1.0


def choose(trials: list[Trial], tolerance: float = DEFAULT_TOLERANCE) -> dict[str, dict[str, Any]]:
    """Per defense, the options of the trial with the best worst case; worst cases within
    ``tolerance`` of the best tie, broken by the higher clean accuracy, then the first trial."""
    if not tolerance >= 0:
        raise ConfigurationError(f"must be >= 0, got {tolerance!r}", field="tolerance")
    chosen: dict[str, dict[str, Any]] = {}
    for d in dict.fromkeys(t.defense for t in trials):
        mine = [t for t in trials if t.defense == d]
        best = max(_finite(t.worst_accuracy) for t in mine)
        near = [t for t in mine if _finite(t.worst_accuracy) >= best - tolerance - 1e-12]
        pick = max(near, key=lambda t: _finite(t.clean_accuracy))  # max keeps the first of equals
        chosen[d] = dict(pick.options)
    return chosen


def tune(
    cfg: RobustnessConfig,
    *,
    validation_seed: int,
    workers: int = 1,
    on_result: Callable[[CellResult], None] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> TuningResult:
    """Choose each defense's options of ``cfg`` by worst-case accuracy over its attacks on ``validation_seed``.

    Runs, per candidate, the clean baseline and every attack of ``cfg`` (every round, partial
    knowledge) at the first malicious fraction and alpha. ``validation_seed`` must differ
    from the reported seed ``cfg.run.seed``. ``tolerance``: see :func:`choose`.
    """
    if not tolerance >= 0:
        raise ConfigurationError(f"must be >= 0, got {tolerance!r}", field="tolerance")
    if validation_seed == cfg.run.seed:
        raise ConfigurationError(
            f"the validation seed must differ from the reported seed {cfg.run.seed}", field="validation_seed"
        )
    val = cfg.with_run({"seed": validation_seed})
    frac, alpha = val.malicious[0], val.alphas[0]
    attacks = [a for a in val.attacks if a != NO_ATTACK]
    plan: list[tuple[str, dict[str, Any]]] = []
    jobs: list[tuple[RobustnessConfig, Cell]] = []
    for d in val.defenses:
        fixed = val.defense_options.get(d, {})
        for opts in candidates(d, fixed):
            trial_cfg = replace(val, defense_options={**val.defense_options, d: {**fixed, **opts}})
            plan.append((d, opts))
            jobs.extend((trial_cfg, Cell(a, d, frac, alpha)) for a in (NO_ATTACK, *attacks))
    results = run_jobs(jobs, workers=workers, on_result=on_result)
    per = 1 + len(attacks)
    trials: list[Trial] = []
    for k, (d, opts) in enumerate(plan):
        chunk = results[k * per : (k + 1) * per]
        clean = chunk[0].accuracy if chunk[0].status == "ok" else math.nan
        attacked = [r for r in chunk[1:] if r.status == "ok"]
        worst = min(attacked, key=lambda r: r.accuracy) if attacked else None
        trials.append(
            Trial(
                defense=d,
                options=opts,
                clean_accuracy=clean,
                worst_accuracy=worst.accuracy if worst is not None else (clean if not attacks else math.nan),
                worst_attack=worst.attack if worst is not None else "-",
            )
        )
    return TuningResult(
        validation_seed=validation_seed, chosen=choose(trials, tolerance), trials=trials, tolerance=tolerance
    )
