"""The attack x defense matrix: every inference attack against every defense, with the utility each
defense leaves, so "the defense stops it" is never read without "at what cost".

Each cell is a :func:`attacks.runner.seed_study` (mean and 95% interval over seeds) of the
attack's leak measure — the fraction of images / updates recovered, or the AUC for
membership and property inference — under the defense, on the same case otherwise. An attack
that needs a malicious server (the imprint model) gets one; a cell the deployment refuses
(e.g. a privacy budget that cannot be met) records the refusal instead of a number. The
utility column is the test accuracy of a FedAvg model trained under each defense (same
federation, ``utility_rounds`` rounds), and the gap to the undefended model in points: a
defense only counts as effective when it stays within 5 points.

Two modes, named in every table and CSV row (``mode``):

* ``cohort`` (the default; the issue-16 matrix): the federation *is* one cohort of
  ``num_clients`` (10) clients, every client every round; DP is calibrated for that federation
  and the rounds each attack (or the utility run) takes.
* ``population`` (:func:`population_case`): the ``num_clients`` (1,000) clients are a population
  sampled with Poisson rate ``q`` for ``R`` rounds, DP is calibrated for (q, R, epsilon, delta) by the
  DP accountant as it would be deployed; each attack cell sees one round of that deployment (its
  target's cohort as sampled, the noised secure sum, the crafted model for malicious-model attacks), and
  the utility column trains the whole deployment (same q, R and noise) against the same population
  without DP, on the same seeds.

Utility is measured on every seed; the gap to the undefended model is the mean of the paired per-seed
gaps with its 95% interval, and "effective" reads the mean gap.

Positive controls: a cell without a leak says the defense *stopped* the attack only when the same attack,
seeds and options leak in the defense's control column (:func:`attacks.registry.control_defense`: no defense,
or the secure sum alone for a noised secure sum). When the control does not leak (an attack too weak for
the case) or is not in the matrix, the cell is *not shown* (:meth:`AttackMatrix.not_shown`), never
"effective".
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attacks.matrix_tables import UTILITY_TOLERANCE_POINTS, matrix_table, utility_table
from attacks.metrics import seed_interval
from attacks.registry import Adversary, AttackCase, AttackResult, Population, control_defense
from privagg.errors import ConfigurationError, PrivAggError

__all__ = [
    "DEFAULT_MATRIX_ATTACKS",
    "DEFAULT_MATRIX_OPTIONS",
    "DEFAULT_POPULATION",
    "POPULATION_CLIENTS",
    "MATRIX_DEFENSES",
    "AttackMatrix",
    "MatrixCell",
    "attack_matrix",
    "defense_utility",
    "matrix_table",
    "measure_utility",
    "merge_matrices",
    "utility_table",
    "noise_check",
    "population_case",
]

#: defenses of the matrix, in column order (those registered in :data:`attacks.registry.DEFENSES`)
MATRIX_DEFENSES: tuple[str, ...] = ("none", "secagg", "dp", "secagg+dp", "distributed-dp")
#: attacks of the default matrix (the fast ones; membership and property inference train many models or
#: need hundreds of targets: run them by name, ``privagg attack lira-online --matrix``)
DEFAULT_MATRIX_ATTACKS: tuple[str, ...] = (
    "inverting-gradients",
    "imprint",
    "trap-weights",
    "fishing",
    "disaggregation",
)
#: attack hyper-parameters of the default matrix: the strongest variant each threat model allows
DEFAULT_MATRIX_OPTIONS: dict[str, dict[str, Any]] = {"disaggregation": {"freeze_model": True}}
#: issue 15's figure: the malicious-model attack and gradient inversion recover < 5% of images under the noise
#: defense, against >= 70% under secure aggregation alone
NOISE_CHECK_ATTACKS: tuple[str, ...] = ("imprint", "inverting-gradients")
#: population mode: digits split among this many clients (IID, one or two examples each)
POPULATION_CLIENTS = 1000
#: population mode: Poisson rate 0.03 (expected cohort 30 of 1,000) for 200 rounds
DEFAULT_POPULATION = Population(rate=0.03, rounds=200)


def population_case(
    *, clients: int = POPULATION_CLIENTS, population: Population = DEFAULT_POPULATION, **axes: Any
) -> AttackCase:
    """The matrix's base case in population mode: ``clients`` clients sampled as ``population`` says
    (``axes``: further :meth:`AttackCase.create` keywords, e.g. ``dp_epsilon``)."""
    return AttackCase.create(num_clients=clients, population=population, **axes)


def _leak_metric(metrics: Mapping[str, float]) -> str:
    for key in ("fraction_recovered", "auc"):
        if key in metrics:
            return key
    return next(iter(metrics), "")


@dataclass(frozen=True)
class MatrixCell:
    """One attack against one defense: its leak measure's mean and 95% interval, or why it did not run."""

    attack: str
    defense: str
    metric: str = ""
    value: float = float("nan")
    low: float = float("nan")
    high: float = float("nan")
    per_seed: tuple[float, ...] = ()
    error: str = ""

    @property
    def leaks(self) -> bool | None:
        """Recovered anything (fractions), or better than chance (AUC >= 0.6); ``None`` when it did not run."""
        if self.error or not self.metric:
            return None
        return self.value >= 0.6 if self.metric == "auc" else self.value > 0.0


@dataclass(kw_only=True)
class AttackMatrix(AttackResult):
    """The matrix: ``cells`` (attack-major), ``utility`` (defense -> test accuracy or ``None`` if refused)."""

    attacks: list[str]
    defenses: list[str]
    cells: list[MatrixCell] = field(default_factory=list)
    utility: dict[str, float | None] = field(default_factory=dict)
    utility_errors: dict[str, str] = field(default_factory=dict)
    #: test accuracy per seed (the matrix's seeds, in order), per defense that ran
    utility_per_seed: dict[str, list[float]] = field(default_factory=dict)
    #: per defense and seed, the round the DP budget refused, which ended its utility run early (``None``: it
    #: ran every round); the utility of a shortened run is stated as such (:func:`utility_table`, the text)
    utility_budget_stops: dict[str, list[int | None]] = field(default_factory=dict)

    def shortened(self, defense: str) -> str:
        """``""``, or which seeds' utility runs the DP budget stopped, and before which round."""
        stops = self.utility_budget_stops.get(defense, [])
        hit = [(s, r) for s, r in zip(self.data.get("seeds", []), stops, strict=False) if r is not None]
        if not hit:
            return ""
        where = ", ".join(f"seed {s}: before round {r}" for s, r in hit)
        return f"trained fewer rounds than asked: the DP budget stopped it ({where})"

    @property
    def mode(self) -> str:
        """``cohort`` or ``population`` (see the module docstring)."""
        return self.case.mode

    def utility_interval(self, defense: str) -> tuple[float, float]:
        """95% Student-t interval of the defense's test accuracy over seeds (nan when unknown)."""
        vals = self.utility_per_seed.get(defense, [])
        return seed_interval(vals)[1:] if len(vals) >= 2 else (float("nan"), float("nan"))

    def utility_gap_interval(self, defense: str) -> tuple[float, float]:
        """95% interval of the paired per-seed gap (points) to the undefended model (nan when unknown)."""
        base, mine = self.utility_per_seed.get("none", []), self.utility_per_seed.get(defense, [])
        if len(base) < 2 or len(base) != len(mine):
            return float("nan"), float("nan")
        return seed_interval([100.0 * (b - a) for b, a in zip(base, mine, strict=True)])[1:]

    def cell(self, attack: str, defense: str) -> MatrixCell:
        return next(c for c in self.cells if c.attack == attack and c.defense == defense)

    def utility_gap(self, defense: str) -> float | None:
        """Accuracy points lost against the undefended model (``None`` if either is unknown)."""
        base, acc = self.utility.get("none"), self.utility.get(defense)
        return None if base is None or acc is None else 100.0 * (base - acc)

    def control(self, attack: str, defense: str) -> MatrixCell | None:
        """The positive control of a cell: the same attack, seeds and options under
        :func:`~attacks.registry.control_defense` (``None``: no control, or its column is not in the matrix)."""
        name = control_defense(defense)
        if not name or name not in self.defenses:
            return None
        return self.cell(attack, name)

    def stopped(self, attack: str, defense: str) -> bool | None:
        """The defense stops the attack: no leak under it *and* a leak in its positive control. ``False``: it
        leaks; ``None``: not shown (the cell did not run, or the control is missing, refused or did not leak:
        an attack that fails without the defense too says nothing about the defense)."""
        leaks = self.cell(attack, defense).leaks
        if leaks is None:
            return None
        if leaks:
            return False
        ctrl = self.control(attack, defense)
        return True if ctrl is not None and ctrl.leaks else None

    def not_shown(self) -> list[tuple[str, str]]:
        """The (attack, defense) cells with no leak whose positive control did not leak either (or is missing)."""
        return [
            (c.attack, c.defense)
            for c in self.cells
            if c.leaks is False and control_defense(c.defense) and self.stopped(c.attack, c.defense) is None
        ]

    def effective(self, attack: str, defense: str) -> bool | None:
        """The defense stops the attack (:meth:`stopped`: the positive control leaks) *and* keeps utility within
        5 points. ``None``: unknown, or not shown (the attack does not succeed without the defense either)."""
        stopped, gap = self.stopped(attack, defense), self.utility_gap(defense)
        if stopped is None or gap is None:
            return None
        return stopped and gap <= UTILITY_TOLERANCE_POINTS


def noise_check(
    m: AttackMatrix,
    *,
    defense: str = "distributed-dp",
    baseline: str = "secagg",
    stopped: float = 0.05,
    leaked: float = 0.70,
) -> dict[str, dict[str, Any]]:
    """Per image attack of the matrix: the fraction recovered under ``defense`` and under ``baseline``, and
    whether it is below ``stopped`` there while at least ``leaked`` here (``met``; ``None`` if a cell did
    not run). Empty when either defense is not in the matrix."""
    if defense not in m.defenses or baseline not in m.defenses:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for a in m.attacks:
        d, b = m.cell(a, defense), m.cell(a, baseline)
        if "fraction_recovered" not in (d.metric, b.metric):
            continue
        met = None if d.leaks is None or b.leaks is None else bool(d.value < stopped and b.value >= leaked)
        out[a] = {
            defense: d.value,
            baseline: b.value,
            "met": met,
            "required": a in NOISE_CHECK_ATTACKS,
            f"{defense}_ci": (d.low, d.high),
            f"{baseline}_ci": (b.low, b.high),
            f"{defense}_per_seed": d.per_seed,
            f"{baseline}_per_seed": b.per_seed,
        }
    return out


def _cell_text(check: Mapping[str, Any], defense: str) -> str:
    lo, hi = check[f"{defense}_ci"]
    seeds = ", ".join(f"{v:.2f}" for v in check[f"{defense}_per_seed"])
    return f"{check[defense]:.0%} [{lo:.0%}, {hi:.0%}]; {seeds}"


def _utility_run(case: AttackCase, *, rounds: int) -> tuple[float, float | None, int | None]:
    """Test accuracy of a FedAvg model trained under the case's defense, its DP noise multiplier, and the round
    the DP budget refused (``None``: every round ran). A deployment whose budget runs out stops training
    there: its utility is that of the shortened run, and the matrix says so (``utility_budget_stops``)."""
    from dataclasses import replace

    from attacks.scenario import make_run_config
    from protocols.dp_fedavg import DPFedAvg
    from protocols.fedavg import FedAvgSimulation
    from protocols.training import TrainConfig

    cfg = make_run_config(case, train=TrainConfig(epochs=1, batch_size=32, lr=0.1), rounds=rounds)
    cfg = replace(cfg, federation=replace(cfg.federation, budget_exhausted="stop"))
    run = FedAvgSimulation(cfg).run()
    agg, stop = run.aggregator, run.budget_stop
    noise = agg.noise_multiplier if isinstance(agg, DPFedAvg) else None
    return float(run.final_accuracy), noise, None if stop is None else int(stop.round)


def defense_utility(case: AttackCase, *, rounds: int = 10) -> float:
    """Test accuracy of a FedAvg model trained ``rounds`` rounds under the case's defense (population
    mode: the deployment's rounds, Poisson cohorts of its rate)."""
    return _utility_run(case, rounds=rounds)[0]


def attack_matrix(
    attacks: Sequence[str] = DEFAULT_MATRIX_ATTACKS,
    defenses: Sequence[str] = MATRIX_DEFENSES,
    *,
    base: AttackCase | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    options: Mapping[str, Mapping[str, Any]] | None = None,
    utility_rounds: int = 10,
    utility: bool = True,
) -> AttackMatrix:
    """Run every attack against every defense over ``seeds``; ``options[attack]`` are its hyper-parameters.
    ``utility=False`` leaves the utility column out (a part of a matrix run in batches: :func:`merge_matrices`)."""
    from attacks.runner import build_attack, seed_study

    t0 = time.perf_counter()
    base = base or AttackCase.create(num_clients=10)
    cells: list[MatrixCell] = []
    for name in attacks:
        opts = {**DEFAULT_MATRIX_OPTIONS.get(name, {}), **dict((options or {}).get(name, {}))}
        for d in defenses:
            case = base.with_(defense=d)
            if not build_attack(name, opts).supports(case):
                case = case.with_(adversary=Adversary.malicious_server())
            try:
                st = seed_study(name, case, seeds=seeds, options=opts)
            except PrivAggError as e:  # the deployment refused (budget, configuration): recorded, not hidden
                cells.append(MatrixCell(name, d, error=f"{type(e).__name__}: {e}"[:200]))
                continue
            key = _leak_metric(st.metrics)
            cells.append(
                MatrixCell(
                    name,
                    d,
                    metric=key,
                    value=st.metrics[key],
                    low=st.metrics.get(f"{key}_seeds_ci_low", float("nan")),
                    high=st.metrics.get(f"{key}_seeds_ci_high", float("nan")),
                    per_seed=tuple(st.per_seed.get(key, [])),
                )
            )
    out = AttackMatrix(
        attack="matrix",
        case=base,
        attacks=list(attacks),
        defenses=list(defenses),
        cells=cells,
        data={
            "mode": base.mode,
            "deployment": _deployment(base, utility_rounds),
            "noise_multipliers": {},
            "seeds": list(seeds),
            "utility_rounds": utility_rounds,
            "options": {n: {**DEFAULT_MATRIX_OPTIONS.get(n, {}), **dict((options or {}).get(n, {}))} for n in attacks},
        },
    )
    if utility:
        measure_utility(out, ("none", *defenses))
    return _finish(out, t0)


def measure_utility(m: AttackMatrix, defenses: Sequence[str]) -> None:
    """The utility column: each defense's test accuracy on every seed of ``m`` (a refusal is recorded)."""
    rounds, noise = int(m.data["utility_rounds"]), m.data["noise_multipliers"]
    for d in dict.fromkeys(defenses):
        try:
            runs = [_utility_run(m.case.with_(defense=d, seed=int(s)), rounds=rounds) for s in m.data["seeds"]]
        except PrivAggError as e:
            m.utility[d] = None
            m.utility_errors[d] = f"{type(e).__name__}: {e}"[:200]
            continue
        m.utility_per_seed[d] = [acc for acc, _, _ in runs]
        m.utility_budget_stops[d] = [stop for _, _, stop in runs]
        m.utility[d] = sum(m.utility_per_seed[d]) / len(runs)
        if runs[0][1] is not None:
            noise[d] = float(runs[0][1])


def merge_matrices(parts: Sequence[AttackMatrix]) -> AttackMatrix:
    """One matrix from parts run apart (the same base case, seeds and utility rounds): their cells, attacks,
    defenses and utility column; the tables and text as :func:`attack_matrix` gives them."""
    if not parts:
        raise ConfigurationError("nothing to merge", field="parts")
    first = parts[0]
    keys = ("seeds", "utility_rounds", "mode")
    for p in parts[1:]:
        if p.case != first.case or any(p.data[k] != first.data[k] for k in keys):
            raise ConfigurationError("parts of different matrices (case, seeds or rounds differ)", field="parts")
    out = AttackMatrix(
        attack="matrix",
        case=first.case,
        attacks=list(dict.fromkeys(a for p in parts for a in p.attacks)),
        defenses=list(dict.fromkeys(d for p in parts for d in p.defenses)),
        cells=[c for p in parts for c in p.cells],
        data={**first.data, "noise_multipliers": {}, "options": {}},
    )
    for p in parts:
        out.utility.update(p.utility)
        out.utility_errors.update(p.utility_errors)
        out.utility_per_seed.update(p.utility_per_seed)
        out.utility_budget_stops.update(p.utility_budget_stops)
        out.data["noise_multipliers"].update(p.data["noise_multipliers"])
        out.data["options"].update(p.data["options"])
    return _finish(out, time.perf_counter() - sum(p.seconds for p in parts))


def _finish(out: AttackMatrix, t0: float) -> AttackMatrix:
    """The text, the issue-15 check table and the matrix table of a measured matrix."""
    base = out.case
    out.text = _matrix_text(base, out.data["seeds"], int(out.data["utility_rounds"]))
    short = {d: why for d in out.utility_budget_stops if (why := out.shortened(d))}
    out.text += "".join(f" Utility of {d}: {why}." for d, why in short.items())
    out.data["utility_budget_stops"] = dict(out.utility_budget_stops)
    check = noise_check(out)
    if check:
        out.data["distributed_dp_check"] = check
        out.tables.append(
            (
                f"Issue 15: distributed DP (epsilon {base.dp_epsilon:g}) against secure aggregation alone "
                f"(met: < 5% recovered with the noise, >= 70% without)",
                [
                    "attack",
                    "distributed-dp (mean [95% CI]; per seed)",
                    "secagg (mean [95% CI]; per seed)",
                    "met",
                    "issue 15 names it",
                ],
                [
                    [a, _cell_text(v, "distributed-dp"), _cell_text(v, "secagg"), v["met"], v["required"]]
                    for a, v in check.items()
                ],
            )
        )
    cells_header, cells_rows = matrix_table(out)
    out.tables.insert(0, ("Attack x defense", cells_header, cells_rows))
    out.data["cells"] = [dict(zip(cells_header, r, strict=True)) for r in cells_rows]  # the JSON holds the matrix
    header, rows = utility_table(out)
    out.tables.insert(1, (f"Utility ({out.mode} mode)", header, rows))
    out.data["utility_table"] = [dict(zip(header, r, strict=True)) for r in rows]  # the JSON holds it too
    out.seconds = time.perf_counter() - t0
    return out


def _deployment(base: AttackCase, utility_rounds: int) -> dict[str, Any]:
    pop = base.population
    out: dict[str, Any] = {"clients": base.num_clients, "dataset": base.dataset, "epsilon": base.dp_epsilon}
    out["delta"] = base.dp_delta
    if pop is None:
        return {**out, "sampling": "every client every round", "utility_rounds": utility_rounds}
    return {
        **out,
        "sampling": "poisson",
        "rate": pop.rate,
        "expected_cohort": pop.expected_cohort(base.num_clients),
        "rounds": max(utility_rounds, pop.rounds),
    }


def _matrix_text(base: AttackCase, seeds: Sequence[int], utility_rounds: int) -> str:
    head = (
        f"Each cell: the attack's leak measure (fraction recovered, or AUC) under the defense, mean and 95% "
        f"interval over seeds {list(seeds)}; {base.dataset}. Utility: mean test accuracy over the same seeds; "
        f"effective = no leak and a mean gap within {UTILITY_TOLERANCE_POINTS:.0f} points of the undefended "
        f"model (the gap's paired 95% interval beside it), and only when the same attack leaks in the "
        f"defense's positive control (no defense; for a noised secure sum, the secure sum alone): an attack "
        f"that fails there too shows nothing about the defense (not shown). DP defenses: client-level epsilon "
        f"{base.dp_epsilon:g}, delta {base.dp_delta:g}; distributed-dp is the default distributed configuration "
        f"(discrete Gaussian shares, 16-bit ring, clip 1)."
    )
    pop = base.population
    if pop is None:
        return (
            f"Mode: cohort ({base.num_clients} clients, all of them every round). {head} DP is calibrated for this "
            f"{base.num_clients}-client federation and the rounds each attack (or the {utility_rounds}-round utility "
            f"run) takes; distributed-dp samples every client with rate 1, accounted as Poisson sampling."
        )
    rounds = max(utility_rounds, pop.rounds)
    return (
        f"Mode: population ({base.num_clients} clients, Poisson sampling rate {pop.rate:g}: expected cohort "
        f"{pop.expected_cohort(base.num_clients):g}, {rounds} rounds). {head} DP is calibrated by the accountant "
        f"for (q = {pop.rate:g}, R = {rounds}, epsilon, delta), as deployed. Each attack cell observes one round "
        f"of the deployment: its target and every other client with probability q (the cohort as sampled), "
        f"aggregated by the defense (the crafted model for malicious-model attacks). Utility: the whole "
        f"deployment ({rounds} rounds, same q and noise) trained on every seed, against the same population "
        f"without DP."
    )
