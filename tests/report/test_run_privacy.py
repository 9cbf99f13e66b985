"""The run report opens with privacy: who sees what, the threat model, measured leakage; presets."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from privagg.errors import ConfigurationError
from privagg.report.dp import guarantee, guarantee_line
from privagg.report.run import exposure_section, run_report
from privagg.run import (
    PRESETS,
    RunOutcome,
    execute_run,
    exposure_defense,
    has_privacy,
    measure_leakage,
    preset_path,
    run_config,
    without_privacy,
)
from protocols.fedavg import RunConfig

SMALL = {"data": {"num_clients": 5}, "model": {"name": "logreg"}, "federation": {"rounds": 2}}
DISTRIBUTED = {
    "aggregation": {"name": "secagg"},
    "federation": {"sampling": "poisson", "sampling_rate": 0.5},
    "dp": {"target_epsilon": 8.0, "noise": "distributed"},
}
SECAGG_CLIENT_DP = {
    "aggregation": {"name": "secagg", "options": {"clip": 16.0, "value_bits": 24}},
    "federation": {"sampling": "poisson", "sampling_rate": 0.5},
    "dp": {"target_epsilon": 8.0, "noise": "client", "clip_norm": 0.5},
}


@pytest.fixture(scope="module")
def plain() -> RunOutcome:
    return execute_run(run_config(overrides=SMALL), progress=False, leakage=True)


def test_a_plain_run_says_the_server_sees_every_update_and_measures_the_leak(plain: RunOutcome) -> None:
    report = run_report(plain)
    first = report.sections[0]
    assert first.key == "exposure" and first.title.startswith("Privacy")
    rows = dict(first.summary)
    assert rows["the server sees"].startswith("every client's update, in the clear")
    assert rows["threat model"].startswith("none: the server is trusted")
    assert rows["DP guarantee"].startswith("none")
    # measured: a malicious server facing the plain mean reads every image (seeded attack cases 0, 1, 2)
    leak = first.data["leakage"]
    assert leak["defense"] == "none" and leak["fractions"] == [1.0, 1.0, 1.0] and leak["leaks"] is True
    assert rows["measured: malicious model"].endswith("LEAKS")
    assert "modelled" in leak and rows["assumed: how measured"].startswith("attack case 'none'")
    header = dict(report.header)
    assert header["server sees"] == rows["the server sees"] and header["measured leakage"].endswith("LEAKS")
    assert report.to_dict()["exposure"]["leakage"]["fractions"] == [1.0, 1.0, 1.0]
    assert "measured: malicious model" in report._html()  # the page shows the row


def test_without_leakage_the_report_says_it_was_not_measured(plain: RunOutcome) -> None:
    report = run_report(dataclasses.replace(plain, leakage=None))
    rows = dict(report.sections[0].summary)
    assert rows["measured leakage"].startswith("not measured") and report.sections[0].data["leakage"] is None
    assert "measured leakage" not in dict(report.header)


def test_secagg_with_central_dp_names_its_page_assumptions_graph_and_guarantee() -> None:
    agg = {"name": "secagg", "options": {"threat": "semi-honest", "clip": 8.0}}
    dp = {"noise_multiplier": 1.0, "clip_norm": 0.5}
    outcome = execute_run(run_config(overrides={**SMALL, "aggregation": agg, "dp": dp}), progress=False, baseline=False)
    sec = exposure_section(outcome)
    rows = dict(sec.summary)
    assert rows["the server sees"] == (
        "only the sum of the updates of each round's survivors, without noise (central DP: the noise is added after)"
    )
    page = "secagg/THREAT_MODEL.md"
    assert rows["threat model"].startswith(page) and sec.data["threat_model_page"] == page
    assert rows["assumed: protocol mode"].startswith("semi-honest (every party is assumed to follow")
    assert rows["assumed: rates"].startswith("dropout 0, corrupted clients 0: the graph assumes no client drops")
    # the derived graph is a function of the exact cohort size, which DP keeps private: withheld
    assert rows["secure-aggregation graph"].startswith("derived per round from the cohort size: withheld under DP")
    assert rows["secure-aggregation security"].startswith("the graph is derived for 2^-40 security")
    assert "2^-20 failure" in rows["secure-aggregation security"]
    no_dp = execute_run(run_config(overrides={**SMALL, "aggregation": agg}), progress=False)
    last = no_dp.result.aggregator.rounds[-1]  # type: ignore[attr-defined]
    graph = dict(exposure_section(no_dp).summary)["secure-aggregation graph"]
    assert graph == f"degree {last.degree}, threshold {last.threshold} (derived)"
    assert rows["DP guarantee"] == guarantee_line(guarantee(outcome.result)) + " (see Privacy guarantee below)"


@pytest.mark.parametrize(
    ("overrides", "defense"),
    [
        ({}, "none"),
        ({"aggregation": {"name": "median"}}, "none"),
        ({"aggregation": {"name": "secagg"}}, "secagg"),
        ({"aggregation": {"name": "paillier"}}, "secagg"),
        ({"dp": {"noise_multiplier": 1.0}}, "none"),
        ({"aggregation": {"name": "secagg"}, "dp": {"noise_multiplier": 1.0}}, "secagg"),
        (SECAGG_CLIENT_DP, "secagg+dp"),
        (DISTRIBUTED, "distributed-dp"),
    ],
)
def test_the_measured_defense_is_what_the_server_sees(overrides: dict, defense: str) -> None:
    got, modelled = exposure_defense(run_config(overrides=overrides))
    assert got == defense and modelled
    if "paillier" in str(overrides):
        assert "assumed equivalent" in modelled
    if overrides.get("dp") and defense == "none":
        assert "central DP noise is added after" in modelled


def test_noise_inside_the_secure_sum_is_measured_to_stop_the_malicious_model() -> None:
    leak = measure_leakage(run_config(overrides=SECAGG_CLIENT_DP), seeds=(0, 1))
    assert leak.defense == "secagg+dp" and leak.exposure.fractions == (0.0, 0.0) and not leak.exposure.leaks
    no_noise = measure_leakage(run_config(overrides={"aggregation": {"name": "secagg"}}), seeds=(0, 1))
    assert no_noise.exposure.leaks and min(no_noise.exposure.fractions) >= 0.5


def test_the_measured_leak_uses_this_runs_own_noise_not_a_fixed_epsilon() -> None:
    """Client noise of multiplier 0.001 inside the secure sum stops nothing: the case runs at that noise (before,
    it ran at epsilon 8 whatever the run's noise, and reported the attack stopped)."""
    weak = {**SECAGG_CLIENT_DP, "dp": {"noise_multiplier": 0.001, "noise": "client", "clip_norm": 0.5}}
    _, modelled = exposure_defense(run_config(overrides=weak))
    assert "noise multiplier 0.001" in modelled and "epsilon 8" not in modelled
    leak = measure_leakage(run_config(overrides=weak), seeds=(0, 1))
    assert leak.defense == "secagg+dp" and leak.exposure.leaks, leak.exposure.fractions


def test_presets_ship_as_files_and_layer_under_the_config() -> None:
    for name in PRESETS:
        tomllib.loads(preset_path(name).read_text())  # each preset is a file in the package
    assert run_config(preset="plain") == RunConfig()
    hardened = run_config(preset="hardened")
    assert hardened.aggregation.name == "secagg" and hardened.aggregation.options["threat"] == "active"
    assert hardened.dp is not None and hardened.dp.noise == "distributed" and hardened.dp.target_epsilon == 8.0
    assert hardened.dp.delta * hardened.data.num_clients <= 0.01
    assert hardened.data.num_clients >= 500 and hardened.federation.sampling == "poisson"
    assert exposure_defense(hardened)[0] == "distributed-dp"
    # overrides win over the preset
    assert run_config(overrides={"federation": {"rounds": 3}}, preset="hardened").federation.rounds == 3
    assert run_config(preset="secagg").aggregation.name == "secagg"
    with pytest.raises(ConfigurationError, match="unknown preset 'nope'"):
        run_config(preset="nope")
    # a later layer naming another aggregator starts it from its own defaults (the preset's options would not fit)
    switched = run_config(overrides={"aggregation": {"name": "mean"}}, preset="hardened")
    assert switched.aggregation.name == "mean" and switched.aggregation.options == {}
    kept = run_config(overrides={"aggregation": {"name": "secagg"}}, preset="hardened")
    assert kept.aggregation.options == hardened.aggregation.options


def test_without_privacy_is_the_same_run_with_the_plain_mean_and_no_dp() -> None:
    hardened = run_config(preset="hardened")
    plain = without_privacy(hardened)
    assert plain.dp is None and plain.aggregation.name == "mean" and plain.aggregation.options == {}
    assert (plain.seed, plain.data, plain.model, plain.train, plain.federation) == (
        hardened.seed,
        hardened.data,
        hardened.model,
        hardened.train,
        hardened.federation,
    )
    assert has_privacy(hardened) and not has_privacy(plain) and has_privacy(run_config(preset="secagg"))
    robust = run_config(overrides={"aggregation": {"name": "median"}, "dp": {"noise_multiplier": 1.0}})
    assert without_privacy(robust).aggregation.name == "median"  # not a privacy mechanism: kept
