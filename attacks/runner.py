"""The attack runner: attacks looked up by name, run on cases, swept over batch sizes and defenses.

``run_attack("idlg", case)`` builds the registered attack and runs it (importing
:mod:`attacks` registers every attack); :func:`batch_size_curve` sweeps an inversion attack
over batch sizes (PSNR vs batch size); :func:`defense_matrix` runs one attack against several
defenses; :func:`run_suite` runs :data:`DEFAULT_SUITE`, the suite ``benchmarks/attack_suite.py``
times; :func:`run_configured_attack` is the engine behind ``privagg attack`` (a ``[case]`` and
an ``[attack]`` table plus command-line overrides), and reads a result without a leak against its
positive control (:func:`with_control`). :mod:`privagg.report.attacks` turns the
results into a report. No inference-attack figure comes from a run the DP budget shortened: the
attack's measurement runs refuse instead (:func:`attacks.scenario.make_run_config`, typed
:class:`~privagg.errors.PrivacyBudgetExceeded`), and the matrix's utility column says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attacks.membership import MembershipAttack, collect_membership_scores
from attacks.metrics import leak_measure, seed_interval
from attacks.registry import (
    ATTACKS,
    DEFENSES,
    Adversary,
    Attack,
    AttackCase,
    AttackResult,
    Population,
    control_defense,
)
from privagg.config import override
from privagg.errors import ConfigurationError, PrivAggError

__all__ = [
    "DEFAULT_SUITE",
    "MEMBERSHIP_GROUP",
    "BatchSizeCurve",
    "SeedStudy",
    "SuiteEntry",
    "attack_config",
    "batch_size_curve",
    "build_attack",
    "defense_matrix",
    "run_attack",
    "run_configured_attack",
    "run_suite",
    "seed_study",
    "with_control",
]


def build_attack(name: str, options: Mapping[str, Any] | None = None) -> Attack:
    """The registered attack ``name`` built with its hyper-parameters ``options``."""
    cls = ATTACKS.get(name, field="attack")
    try:
        return cls(**dict(options or {}))
    except TypeError as e:
        raise ConfigurationError(f"invalid options for attack {name!r}: {e}", field="attack") from None


def run_attack(
    name: str, case: AttackCase, *, options: Mapping[str, Any] | None = None, progress: bool = False
) -> AttackResult:
    attack = build_attack(name, options)
    if not attack.supports(case):
        raise ConfigurationError(
            f"attack {name!r} does not apply to this case ({case.dataset}, {case.run.model.name})", field="attack"
        )
    return attack.run(case, progress=progress)


@dataclass(kw_only=True)
class BatchSizeCurve(AttackResult):
    """An inversion attack per victim batch size: PSNR per size, the uniform-random-image PSNR
    per size, and the attack's result at each size (``points``)."""

    batch_sizes: list[int]
    psnr: list[float]
    random_image_psnr: list[float]
    points: list[AttackResult] = field(default_factory=list, repr=False, compare=False)


def batch_size_curve(
    name: str,
    case: AttackCase,
    *,
    batch_sizes: Sequence[int] = (1, 2, 4, 8),
    options: Mapping[str, Any] | None = None,
) -> BatchSizeCurve:
    """PSNR / SSIM / label accuracy of an inversion attack per victim batch size."""
    t0 = time.perf_counter()
    bs = [int(b) for b in batch_sizes]
    results = [run_attack(name, case.with_(batch_size=b), options=options) for b in bs]
    ps = [r.metrics["psnr"] for r in results]
    rows: list[list[Any]] = [
        [b, r.metrics["psnr"], r.metrics["ssim"], r.metrics["label_accuracy"], r.metrics["random_image_psnr"]]
        for b, r in zip(bs, results)
    ]
    metrics = {f"psnr@b{b}": p for b, p in zip(bs, ps)}
    metrics.update({f"label_accuracy@b{b}": r.metrics["label_accuracy"] for b, r in zip(bs, results)})
    return BatchSizeCurve(
        attack=name,
        case=case,
        metrics=metrics,
        tables=[
            (
                "PSNR vs batch size",
                ["batch size", "PSNR (dB)", "SSIM", "label accuracy", "random image PSNR (dB)"],
                rows,
            )
        ],
        data={"batch_sizes": bs, "psnr": ps},
        seconds=time.perf_counter() - t0,
        batch_sizes=bs,
        psnr=ps,
        random_image_psnr=[r.metrics["random_image_psnr"] for r in results],
        points=results,
    )


def defense_matrix(
    name: str, case: AttackCase, defenses: Iterable[str], *, options: Mapping[str, Any] | None = None
) -> list[AttackResult]:
    """Run ``name`` once per defense (same case otherwise)."""
    return [run_attack(name, case.with_(defense=d), options=options) for d in defenses]


#: metrics bounded to [0, 1] (their seed intervals are clipped to it)
_BOUNDED = ("fraction", "auc", "accuracy", "identifiable", "ssim")


@dataclass(kw_only=True)
class SeedStudy(AttackResult):
    """One attack on one case repeated over ``seeds``: every numeric metric's per-seed values
    (``per_seed``) and its mean with a 95% Student-t interval (``metrics[k]``, ``k_seeds_ci_low``,
    ``k_seeds_ci_high``: named apart from an attack's own intervals). ``points``: the per-seed results."""

    seeds: list[int]
    per_seed: dict[str, list[float]]
    points: list[AttackResult] = field(default_factory=list, repr=False, compare=False)


def seed_study(
    name: str, case: AttackCase, *, seeds: Sequence[int] = (0, 1, 2), options: Mapping[str, Any] | None = None
) -> SeedStudy:
    """Run ``name`` on ``case`` once per seed (the case's seed replaced); mean and 95% CI per metric."""
    if len(seeds) < 2:
        raise ConfigurationError("a seed study needs at least 2 seeds", field="seeds")
    t0 = time.perf_counter()
    points = [run_attack(name, case.with_(seed=int(s)), options=options) for s in seeds]
    keys = [k for k, v in points[0].metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    per_seed = {k: [float(p.metrics[k]) for p in points] for k in keys if all(k in p.metrics for p in points)}
    metrics: dict[str, float] = {}
    rows: list[list[Any]] = []
    for k, vals in per_seed.items():
        mean, lo, hi = seed_interval(vals)
        if any(w in k for w in _BOUNDED) and all(0.0 <= v <= 1.0 for v in vals):
            lo, hi = max(lo, 0.0), min(hi, 1.0)  # a share or an AUC: the interval stays in [0, 1]
        metrics[k] = mean
        metrics[f"{k}_seeds_ci_low"], metrics[f"{k}_seeds_ci_high"] = lo, hi
        rows.append([k, mean, lo, hi, ", ".join(f"{v:.3g}" for v in vals)])
    first = points[0]
    return SeedStudy(
        attack=name,
        case=case,
        metrics=metrics,
        tables=[
            (
                f"{name} over seeds {list(seeds)} (mean, 95% t-interval)",
                ["metric", "mean", "low", "high", "per seed"],
                rows,
            )
        ],
        data={"threat_model": first.data.get("threat_model", ""), "seeds": list(seeds)},
        success=None,
        seconds=time.perf_counter() - t0,
        text=f"{first.text} Repeated over seeds {list(seeds)}; intervals are 95% Student-t over seeds.",
        seeds=[int(s) for s in seeds],
        per_seed=per_seed,
        points=points,
    )


@dataclass(frozen=True)
class SuiteEntry:
    """One measurement of the default suite: attack, defenses, case changes, attack options, curve."""

    attack: str
    defenses: tuple[str, ...] = ("none",)
    case: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    curve: tuple[int, ...] = ()


#: Membership attacks a suite scores on one set of trained models, in report order.
MEMBERSHIP_GROUP: tuple[str, ...] = ("lira-online", "lira-offline", "shadow-models", "loss-threshold")

#: The default attack suite (``benchmarks/attack_suite.py``): every inference attack family
#: against no defense and the defenses that should stop it.
DEFAULT_SUITE: tuple[SuiteEntry, ...] = (
    SuiteEntry("idlg", ("none", "secagg", "dp", "secagg+dp"), curve=(1, 2, 4, 8)),
    SuiteEntry("inverting-gradients", ("none", "secagg", "dp")),
    SuiteEntry("dlg", ("none",)),
    SuiteEntry("lira-online", ("none", "dp"), case={"num_clients": 5, "hidden": (256,)}),
    SuiteEntry(
        "lira-online",
        ("none",),
        case={"num_clients": 5, "hidden": (256,), "options": {"target_model": "client"}},
    ),
    SuiteEntry("property-inference", ("none", "secagg")),
    SuiteEntry("protocol", ("none",), case={"adversary": Adversary.malicious_server()}),
    SuiteEntry("imprint", ("none", "secagg", "dp"), case={"adversary": Adversary.malicious_server()}),
)


def run_suite(
    entries: Sequence[SuiteEntry] = DEFAULT_SUITE, *, base: AttackCase | None = None, progress: bool = False
) -> list[AttackResult]:
    """Run the suite; membership attacks sharing a case reuse one set of trained models."""
    base = base or AttackCase()
    out: list[AttackResult] = []
    for e in entries:
        for d in e.defenses:
            case = base.with_(defense=d, **dict(e.case))
            if e.curve and DEFENSES.get(d, field="defense").exposes_updates:
                out.append(batch_size_curve(e.attack, case, batch_sizes=e.curve, options=e.options))
                continue
            attack = build_attack(e.attack, e.options)
            if isinstance(attack, MembershipAttack):
                t_collect = time.perf_counter()
                scores = collect_membership_scores(case)
                first = attack.run(case, scores=scores)
                first.seconds += time.perf_counter() - t_collect  # training the models is part of the attack
                first.data["includes_model_training"] = True
                group = [first]
                for other in MEMBERSHIP_GROUP:
                    if other != e.attack:
                        oa = build_attack(other)
                        assert isinstance(oa, MembershipAttack)
                        group.append(oa.run(case, scores=scores))
                out.extend(group)
                first.comparison = {r.attack: (r.scores, r.labels) for r in group}
            else:
                out.append(attack.run(case, progress=progress))
    _suite_controls(out)  # a defended result without a leak is read against the suite's undefended run
    return out


def with_control(
    result: AttackResult,
    name: str,
    case: AttackCase,
    *,
    options: Mapping[str, Any] | None = None,
    seeds: Sequence[int] = (),
    batch_sizes: Sequence[int] = (),
) -> AttackResult:
    """``result`` with its positive control when it shows no leak under a defense: the same attack, options,
    seeds (or batch sizes) and case under :func:`~attacks.registry.control_defense` (no defense, or the secure
    sum alone for a noised secure sum), in ``result.data["control"]`` (``defense``, ``metric``, ``value``,
    ``leaks``, or ``error`` when the control could not run). A defense stops an attack only when the control
    leaks; an attack that fails without the defense too shows nothing about it (the verdict says NOT SHOWN).
    A result that leaks, an attack that is not an inference attack, or a case without a defense is returned
    as it is."""
    measure = leak_measure(result.metrics)
    control = control_defense(case.defense)
    if not control or measure is None or measure.leaks or ATTACKS.get(name, field="attack").kind != "inference":
        return result
    ctrl_case = case.with_(defense=control)
    try:
        if seeds:
            ctrl: AttackResult = seed_study(name, ctrl_case, seeds=seeds, options=options)
        elif batch_sizes:
            ctrl = batch_size_curve(name, ctrl_case, batch_sizes=batch_sizes, options=options)
        else:
            ctrl = run_attack(name, ctrl_case, options=options)
    except PrivAggError as e:  # the control could not run: recorded (the verdict says NOT SHOWN), not hidden
        result.data["control"] = {"defense": control, "error": f"{type(e).__name__}: {e}"[:200]}
        return result
    return _attach_control(result, ctrl, seeds=list(seeds) or [case.seed])


def _attach_control(result: AttackResult, ctrl: AttackResult, *, seeds: list[int]) -> AttackResult:
    """Record ``ctrl`` (the same attack under the control defense) as ``result``'s positive control."""
    got = leak_measure(ctrl.metrics)
    record = {
        "defense": ctrl.case.defense,
        "metric": got.metric if got else "",
        "value": got.value if got else float("nan"),
        "leaks": bool(got and got.leaks),
        "seeds": seeds,
        "seconds": ctrl.seconds,
    }
    result.data["control"] = record
    result.tables.append(
        (
            f"Positive control: {result.attack} under {record['defense']} (same case, seeds and options)",
            ["defense", "metric", "value", "leaks"],
            [[record["defense"], record["metric"], record["value"], record["leaks"]]],
        )
    )
    return result


def _suite_controls(results: Sequence[AttackResult]) -> None:
    """Attach to each suite result without a leak under a defense the suite's own run of the same attack on the
    same case under the control defense, when the suite has one (else the verdict says no control ran)."""
    for r in results:
        control = control_defense(r.case.defense)
        measure = leak_measure(r.metrics)
        if not control or measure is None or measure.leaks or "control" in r.data:
            continue
        want = r.case.with_(defense=control)
        runs = [pt for q in results for pt in (q.points if isinstance(q, BatchSizeCurve) else [q])]
        match = [q for q in runs if q.attack == r.attack and q.case == want and type(q) is type(r)]
        if match:
            _attach_control(r, match[0], seeds=[r.case.seed])


def attack_config(
    config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> tuple[AttackCase, dict[str, Any]]:
    """The case and attack options of a ``privagg attack`` configuration.

    ``config`` holds a ``[case]`` table (the fields of :class:`AttackCase` that differ from
    the default case; the federation under ``[case.run]``) and an ``[attack]`` table (the
    attack's hyper-parameters); ``overrides`` (command-line flags, ``None`` = not given) are
    applied on top: ``defense``, ``batch_size``, ``dp_epsilon``, ``population`` (a
    :class:`~attacks.registry.Population` or its ``"RATE,ROUNDS"`` text; ``num_clients`` then defaults to
    :data:`attacks.matrix.POPULATION_CLIENTS`) and the federation shortcuts ``seed`` and ``num_clients``.
    """
    unknown = set(config) - {"case", "attack"}
    if unknown:
        raise ConfigurationError(f"unknown table(s) {sorted(unknown)}", field="config", accepted=["case", "attack"])
    try:  # the table overrides the default case (so [case.run] keeps the case's federation defaults)
        case = override(AttackCase(), dict(config.get("case", {})))
    except ConfigurationError as e:
        raise ConfigurationError(e.message, field=f"case.{e.field}", accepted=e.accepted) from None
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    if isinstance(changes.get("population"), str):  # the command line's RATE,ROUNDS
        changes["population"] = Population.parse(changes["population"], field="--population")
    if "population" in changes and "num_clients" not in changes:  # population mode: a population of clients
        from attacks.matrix import POPULATION_CLIENTS

        changes["num_clients"] = POPULATION_CLIENTS
    if changes:
        case = case.with_(**changes)
    return case, dict(config.get("attack", {}))


def run_configured_attack(
    name: str | None,
    config: Mapping[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    batch_sizes: Sequence[int] = (),
    seeds: Sequence[int] = (),
    matrix: bool = False,
    progress: bool = False,
) -> AttackResult:
    """``privagg attack NAME``: the attack on the configured case, its batch-size curve, its repetition
    over ``seeds`` (mean and interval), or (``matrix``) the attack x defense matrix (NAME optional)."""
    case, options = attack_config(config, overrides)
    if name and not matrix and "adversary" not in dict(config.get("case", {})):
        # an attack whose threat model is a malicious server (imprint, trap weights, fishing) gets one unless the
        # configuration names the adversary: its result states that threat model
        malicious = case.with_(adversary=Adversary.malicious_server())
        attack = build_attack(name, options)
        if not attack.supports(case) and attack.supports(malicious):
            case = malicious
    if matrix:
        from attacks.matrix import DEFAULT_MATRIX_ATTACKS, attack_matrix

        names = (name,) if name else DEFAULT_MATRIX_ATTACKS
        return attack_matrix(names, base=case, seeds=seeds or (0, 1, 2), options={n: options for n in names})
    if seeds:
        result: AttackResult = seed_study(str(name), case, seeds=seeds, options=options)
    elif batch_sizes:
        result = batch_size_curve(str(name), case, batch_sizes=batch_sizes, options=options)
    else:
        result = run_attack(str(name), case, options=options, progress=progress)
    # a result without a leak under a defense is read against its positive control (the verdict says which)
    return with_control(result, str(name), case, options=options, seeds=seeds, batch_sizes=batch_sizes)
