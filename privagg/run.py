"""The run engine behind ``privagg run``: configure, train, train the same run without privacy, measure.

``RunConfig()`` is the plain main job (:class:`protocols.fedavg.RunConfig` holds its defaults);
:func:`run_config` applies a named preset (``privagg/presets/<name>.toml``, :data:`PRESETS`),
a TOML file and overrides on top of it, in that order. ``privagg run`` with no ``--config``
starts from :data:`DEFAULT_PRESET` (``hardened``). :func:`execute_run` runs the federation;
when the run has any privacy (DP, or an aggregator that hides the updates) it also runs the
same configuration without it (:func:`without_privacy`: no DP, the plain mean, same seed, data,
clients and rounds) so the report shows the measured cost; with ``leakage=True`` it measures
what an attacker learns: the malicious-model attack (:func:`attacks.imprint.malicious_model_exposure`)
against the defense that models what this configuration's server sees (:func:`exposure_defense`),
and membership inference on the final model (:func:`measure_membership`, loss threshold, the
model's utility beside it, the run without privacy beside it).
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from privagg.config import override, read_toml, split_sections
from privagg.errors import ConfigurationError

if TYPE_CHECKING:  # the engines load torch: imported where they run, so `privagg run --help` does not
    from attacks.imprint import MaliciousModelExposure
    from protocols.fedavg import FedAvgSimulation, RoundRecord, RunConfig, RunResult
    from protocols.personalization import PersonalizationComparison, PersonalizationOptions

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "SECTIONS",  # noqa: F822 (module __getattr__: built on first use)
    "Leakage",
    "Membership",
    "MembershipFigure",
    "RunOutcome",
    "execute_personalized",
    "execute_run",
    "exposure_defense",
    "has_privacy",
    "measure_leakage",
    "measure_membership",
    "membership_figure",
    "preset_path",
    "run_config",
    "run_plan",
    "without_privacy",
]

#: named configurations of ``privagg run --preset NAME`` (``plain`` is ``RunConfig()``)
PRESETS: dict[str, str] = {
    "plain": "FedAvg with the plain mean on digits, 20 non-IID clients (RunConfig(); no privacy)",
    "secagg": "the plain run under active secure aggregation (the server learns only the sum; no DP)",
    "hardened": (
        "the default: active secure aggregation + distributed client-level DP (epsilon 8, delta 1e-5; "
        "the clients add integer noise shares inside the secure sum), digits over 1,000 clients, "
        "secret Poisson sampling"
    ),
}

#: what ``privagg run`` starts from when neither ``--preset`` nor ``--config`` is given
DEFAULT_PRESET = "hardened"


def _sections() -> dict[str, type[Any]]:
    """:data:`SECTIONS` (built on first use: the personalization package loads torch)."""
    from protocols.personalization import PersonalizationOptions

    return {"personalization": PersonalizationOptions}


def __getattr__(name: str) -> Any:
    """``SECTIONS``: the extra tables of a run file, each loaded into its own frozen dataclass
    (``[personalization]``: issue 19); built on first use (PEP 562)."""
    if name == "SECTIONS":
        return _sections()
    raise AttributeError(f"module 'privagg.run' has no attribute {name!r}")


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
class MembershipFigure:
    """Loss-threshold membership inference (Yeom et al. 2018) on one final model, its utility beside it.

    Members: the training examples of every client that took part in a released round; non-members:
    the held-out test split (same distribution, never trained on). ``auc_interval``: 95% Hanley-McNeil;
    ``advantage``: the best threshold's balanced accuracy minus 1/2 (0: the attacker guesses).
    """

    auc: float
    auc_interval: tuple[float, float]
    advantage: float
    tpr_at_1pct_fpr: float
    test_accuracy: float
    train_accuracy: float
    members: int
    non_members: int

    def line(self) -> str:
        lo, hi = self.auc_interval
        return (
            f"AUC {self.auc:.3f} [{lo:.3f}, {hi:.3f}], TPR {100 * self.tpr_at_1pct_fpr:.1f}% at 1% FPR, "
            f"at test accuracy {self.test_accuracy:.3f} (train {self.train_accuracy:.3f})"
        )


@dataclass(frozen=True)
class Membership:
    """Membership inference on this run's final model and, when it ran, on the run without privacy."""

    run: MembershipFigure
    baseline: MembershipFigure | None
    seconds: float

    def verdict(self) -> str:
        text = f"membership inference (loss threshold) on the final model: {self.run.line()}"
        if self.baseline is not None:
            text += f"; without privacy: AUC {self.baseline.auc:.3f} at test accuracy {self.baseline.test_accuracy:.3f}"
        return text


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: its result, the run without privacy (when measured), what was measured, the wall time.

    ``seconds`` is the one wall time (everything :func:`execute_run` did); ``result.seconds`` and
    ``baseline.seconds`` are the two training loops alone.
    """

    config: RunConfig
    result: RunResult
    baseline: RunResult | None
    seconds: float
    leakage: Leakage | None = None
    membership: Membership | None = None


def _layer(cfg: RunConfig, table: Mapping[str, Any]) -> RunConfig:
    """``override`` that starts a fresh ``aggregation.options`` when the layer names another aggregator
    without options (the previous aggregator's options would not fit the new one)."""
    agg = table.get("aggregation")
    if isinstance(agg, Mapping) and "name" in agg and "options" not in agg and agg["name"] != cfg.aggregation.name:
        from protocols.fedavg import AggregationConfig

        cfg = dataclasses.replace(cfg, aggregation=AggregationConfig(name=cfg.aggregation.name, options={}))
    return override(cfg, table)


def run_plan(
    toml: str | Path | None = None, overrides: Mapping[str, Any] | None = None, *, preset: str | None = None
) -> tuple[RunConfig, dict[str, Any]]:
    """``RunConfig`` and the extra sections (:data:`SECTIONS`) from a preset, a TOML file and overrides.

    Layers apply in that order (a later one refines an earlier one, sections included); a layer that
    names another aggregator without its options starts that aggregator from its defaults.
    """
    from protocols.fedavg import RunConfig

    tables = [read_toml(preset_path(preset))] if preset is not None else []
    if toml is not None:
        tables.append(read_toml(toml))
    if overrides:
        tables.append(dict(overrides))
    cfg: RunConfig = RunConfig()
    sections: dict[str, Any] = {}
    for table in tables:
        rest, found = split_sections(table, _sections(), current=sections)
        if rest:
            cfg = _layer(cfg, rest)
        sections.update(found)
    return cfg, sections


def run_config(
    toml: str | Path | None = None, overrides: Mapping[str, Any] | None = None, *, preset: str | None = None
) -> RunConfig:
    """``RunConfig()`` with a preset, then a TOML file's settings, then ``overrides`` (nested tables), validated
    (:func:`run_plan` without its extra sections)."""
    return run_plan(toml, overrides, preset=preset)[0]


def execute_personalized(cfg: RunConfig, options: PersonalizationOptions) -> PersonalizationComparison:
    """A ``[personalization]`` run: the chosen algorithm beside FedAvg and FedAvg + fine-tuning (same clients)."""
    from protocols.personalization import compare_personalization

    return compare_personalization(cfg, options)


def has_privacy(cfg: RunConfig) -> bool:
    """Whether the run protects anything: DP, or an aggregator whose server sees only the sum."""
    return cfg.dp is not None or cfg.aggregation.name in SUM_ONLY


def without_privacy(cfg: RunConfig) -> RunConfig:
    """The same run without privacy: no DP, and the plain mean instead of a sum-only aggregator (same seed,
    data, clients, sampling, training and rounds; other aggregators, e.g. robust rules, are kept)."""
    from protocols.fedavg import AggregationConfig

    agg = AggregationConfig() if cfg.aggregation.name in SUM_ONLY else cfg.aggregation
    return dataclasses.replace(cfg, dp=None, aggregation=agg)


def _client_noise_case(cfg: RunConfig) -> tuple[dict[str, Any], str]:
    """The attack case's options with this run's per-round client noise (its noise multiplier, or the one it
    calibrates for its plan), never a fixed epsilon: a crafted model is answered in one round."""
    from attacks.imprint import client_noise_case
    from dp import calibrate
    from dp.sampling import federation_sampling

    dp, fed = cfg.dp, cfg.federation
    assert dp is not None
    sampling = federation_sampling(fed, cfg.data.num_clients)
    z = dp.noise_multiplier
    if z is None:
        assert dp.target_epsilon is not None
        z = calibrate(target_epsilon=dp.target_epsilon, delta=dp.delta, rounds=fed.rounds, sampling=sampling,
                      accountant=dp.accountant)  # fmt: skip
    return client_noise_case(z, sampling.sensitivity_factor)


def exposure_defense(cfg: RunConfig) -> tuple[str, str]:
    """The attack-case defense that models what this run's server sees, and the assumption in words.

    Sum-only aggregators (secagg, paillier) -> ``secagg`` (the server sees the exact sum),
    ``secagg+dp`` when the clients add Gaussian DP noise shares inside the sum (``client``), or
    ``distributed-dp`` (the real distributed-DP path) for ``distributed``;
    every other aggregator -> ``none`` (the server sees each update; central DP noise comes after).
    """
    dp = cfg.dp
    name = cfg.aggregation.name
    if name in SUM_ONLY:
        if dp is not None and dp.noise == "distributed":
            eps = dp.target_epsilon if dp.target_epsilon is not None else 8.0
            same = dp.mechanism == "dgauss" and dp.bits == 16
            return "distributed-dp", (
                f"the attack case runs the real distributed-DP path (dgauss shares, 16-bit ring) at epsilon {eps:g}, "
                "calibrated for its own cohort and rounds"
                + ("" if same else f"; this run's {dp.mechanism} at {dp.bits} bits is assumed comparable")
            )
        if dp is not None and dp.noise == "client":
            return "secagg+dp", "modelled as client-noised secure aggregation " + _client_noise_case(cfg)[1]
        how = (
            "paillier releases only the sum, like secure aggregation (assumed equivalent)" if name == "paillier" else ""
        )
        return "secagg", "modelled as secure aggregation without noise in the sum" + (f"; {how}" if how else "")
    central = "; central DP noise is added after the server has seen the updates" if dp is not None else ""
    return "none", f"the server sees every client's update{central}"


def measure_leakage(cfg: RunConfig, *, seeds: tuple[int, ...] = (0, 1, 2)) -> Leakage:
    """The malicious-model (imprint) attack against the defense modelling ``cfg``'s server view (~1 s)."""
    from attacks.imprint import malicious_model_exposure
    from dp.noise import InsecureNoiseWarning

    defense, modelled = exposure_defense(cfg)
    eps = cfg.dp.target_epsilon if cfg.dp is not None and cfg.dp.target_epsilon is not None else 8.0
    options = _client_noise_case(cfg)[0] if defense == "secagg+dp" else None  # this run's own per-round noise
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # the attack case draws seeded simulation noise (and warns so): a measurement, not a release
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        exp = malicious_model_exposure(defense, num_clients=10, seeds=seeds, dp_epsilon=eps, options=options)
    return Leakage(defense=defense, modelled=modelled, exposure=exp, seconds=time.perf_counter() - t0)


def _losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return lse - z[np.arange(len(labels)), labels]


def membership_figure(sim: FedAvgSimulation, params: np.ndarray, history: Sequence[RoundRecord]) -> MembershipFigure:
    """Loss-threshold membership inference on the model ``params`` of ``sim`` (see :class:`MembershipFigure`)."""
    from attacks.metrics import auc_interval, membership_metrics
    from protocols.models import set_flat_params
    from protocols.training import predict_logits

    took_part = sorted({int(c) for h in history for c in h.participants})
    if not took_part:
        raise ConfigurationError("no client took part in a released round: no member to test", field="membership")
    ds = sim.dataset
    members = np.concatenate([np.asarray(sim.client_indices[c], dtype=np.int64) for c in took_part])
    model = sim.model
    set_flat_params(model, params)
    logits_in = predict_logits(model, ds.x_train[members])
    logits_out = predict_logits(model, ds.x_test)
    y_in, y_out = ds.y_train[members], ds.y_test
    scores = -np.concatenate([_losses(logits_in, y_in), _losses(logits_out, y_out)])
    labels = np.concatenate([np.ones(len(y_in), dtype=bool), np.zeros(len(y_out), dtype=bool)])
    m = membership_metrics(scores, labels)
    set_flat_params(model, sim.global_params)
    return MembershipFigure(
        auc=m["auc"],
        auc_interval=auc_interval(m["auc"], len(y_in), len(y_out)),
        advantage=m["accuracy"] - 0.5,
        tpr_at_1pct_fpr=m["tpr@1%fpr"],
        test_accuracy=float((logits_out.argmax(1) == y_out).mean()),
        train_accuracy=float((logits_in.argmax(1) == y_in).mean()),
        members=len(y_in),
        non_members=len(y_out),
    )


def measure_membership(sim: FedAvgSimulation, baseline: FedAvgSimulation | None = None) -> Membership:
    """Membership inference on ``sim``'s final model and on ``baseline``'s (the run without privacy)."""
    t0 = time.perf_counter()
    run = membership_figure(sim, sim.global_params, sim.history)
    base = None
    if baseline is not None and any(h.participants for h in baseline.history):
        base = membership_figure(baseline, baseline.global_params, baseline.history)
    return Membership(run=run, baseline=base, seconds=time.perf_counter() - t0)


def execute_run(cfg: RunConfig, *, progress: bool = True, baseline: bool = True, leakage: bool = False) -> RunOutcome:
    """Run the federation; when it has privacy and ``baseline``, the same run without privacy
    (:func:`without_privacy`; over the rounds the DP budget allowed when it stopped the run,
    ``result.budget_stop``); with ``leakage`` the imprint attack and membership inference."""
    from protocols.fedavg import FedAvgSimulation

    t0 = time.perf_counter()
    sim = FedAvgSimulation(cfg)
    result = sim.run(progress=progress, description="FedAvg")
    base_sim = None
    base = None
    if has_privacy(cfg) and baseline and sim.history:  # none when the budget refused round 1
        base_cfg = without_privacy(cfg)
        if result.budget_stop is not None:  # compare like with like: the rounds the budget allowed
            fed = dataclasses.replace(base_cfg.federation, rounds=len(sim.history))
            base_cfg = dataclasses.replace(base_cfg, federation=fed)
        base_sim = FedAvgSimulation(base_cfg, dataset=sim.dataset)
        base = base_sim.run(progress=progress, description="without privacy")
    leak = measure_leakage(cfg) if leakage else None
    member = None
    if leakage and any(h.participants for h in sim.history):
        member = measure_membership(sim, base_sim)
    return RunOutcome(
        config=cfg,
        result=result,
        baseline=base,
        seconds=time.perf_counter() - t0,
        leakage=leak,
        membership=member,
    )
