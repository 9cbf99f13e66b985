"""Population mode: a federation of many clients sampled with Poisson rate q for R rounds, DP calibrated by
the accountant for (q, R, epsilon, delta); an attack sees one round (its target's cohort as sampled), the
utility column trains the whole deployment on every seed, and every table row says which mode it is."""

from __future__ import annotations

import numpy as np
import pytest

from attacks.matrix import (
    AttackMatrix,
    MatrixCell,
    attack_matrix,
    matrix_table,
    merge_matrices,
    population_case,
    utility_table,
)
from attacks.registry import Adversary, AttackCase, Population
from attacks.runner import attack_config, run_attack
from attacks.scenario import cohort_members, make_run_config
from dp.accounting import Sampling, calibrate
from privagg.errors import ConfigurationError
from protocols.training import TrainConfig

SMALL = Population(rate=0.05, rounds=40)


pytestmark = pytest.mark.usefixtures("one_quiet_thread")


def test_population_is_validated_and_parsed() -> None:
    assert Population.parse("0.03,200") == Population(rate=0.03, rounds=200)
    for bad in ("0.03", "x,200", "0.03,200,1", "0,200", "1.5,200", "0.03,0"):
        with pytest.raises(ConfigurationError):
            Population.parse(bad)
    case = population_case(population=SMALL)
    assert case.mode == "population" and case.num_clients == 1000 and case.cohort_size == 50
    assert AttackCase().mode == "cohort" and AttackCase().cohort_size == 10


def test_the_observed_cohort_is_a_poisson_sample_holding_the_target() -> None:
    case = population_case(population=SMALL, options={"target": 7})
    sizes = []
    for seed in range(40):
        members = cohort_members(case.with_(seed=seed), "s")
        assert 7 in members and list(members) == sorted(set(members))
        sizes.append(len(members) - 1)
    # the other 999 clients each join with probability 0.05: mean 49.95, sd of the mean over 40 draws ~1.1
    assert abs(np.mean(sizes) - 49.95) < 5.0 and np.std(sizes) > 2.0
    assert cohort_members(case, "s") == cohort_members(case, "s") != cohort_members(case, "t")
    assert cohort_members(AttackCase(), "s") == tuple(range(10))  # cohort mode: every client


def test_the_deployment_samples_poisson_and_calibrates_dp_for_q_and_r() -> None:
    case = population_case(clients=200, population=SMALL, defense="secagg+dp")
    fed = make_run_config(case, train=TrainConfig()).federation
    assert (fed.sampling, fed.sampling_rate, fed.rounds) == ("poisson", 0.05, 40)
    r = run_attack("imprint", case.with_(adversary=Adversary.malicious_server()))
    want = calibrate(target_epsilon=8.0, delta=1e-5, rounds=40, sampling=Sampling.poisson(rate=0.05, population=200))
    assert r.metrics["dp_noise_multiplier"] == pytest.approx(want, rel=1e-9)
    assert "Poisson cohort (rate 0.05) from 200 clients" in r.data["observation"]
    # the same cohort without DP: the malicious model reads images out of the secure sum, with DP it does not
    plain = run_attack("imprint", case.with_(defense="secagg", adversary=Adversary.malicious_server()))
    assert plain.metrics["images"] == r.metrics["images"]
    assert plain.metrics["fraction_recovered"] > 0.3 and r.metrics["fraction_recovered"] == 0.0


def test_the_population_matrix_labels_its_mode_and_gives_utility_intervals() -> None:
    base = population_case(clients=200, population=Population(rate=0.05, rounds=3))
    m = attack_matrix(("imprint",), ("none", "dp"), base=base, seeds=(0, 1), utility_rounds=1)
    header, rows = matrix_table(m)
    assert {r[header.index("mode")] for r in rows} == {"population"} and m.mode == "population"
    assert m.data["deployment"]["rounds"] == 3 and m.data["deployment"]["expected_cohort"] == 10
    assert len(m.utility_per_seed["none"]) == len(m.utility_per_seed["dp"]) == 2
    lo, hi = m.utility_gap_interval("dp")
    gaps = [100 * (a - b) for a, b in zip(m.utility_per_seed["none"], m.utility_per_seed["dp"], strict=True)]
    assert lo <= np.mean(gaps) <= hi and m.utility_gap("dp") == pytest.approx(np.mean(gaps))
    want = calibrate(target_epsilon=8.0, delta=1e-5, rounds=3, sampling=Sampling.poisson(rate=0.05, population=200))
    assert m.data["noise_multipliers"]["dp"] == pytest.approx(want, rel=1e-9)
    assert m.text.startswith("Mode: population (200 clients, Poisson sampling rate 0.05")


def test_the_command_line_population_defaults_to_a_thousand_clients() -> None:
    case, _ = attack_config({}, {"population": Population(rate=0.03, rounds=200)})
    assert case.num_clients == 1000 and case.cohort_size == 30
    case, _ = attack_config({}, {"population": Population(rate=0.1, rounds=5), "num_clients": 300})
    assert case.num_clients == 300


def test_the_command_line_text_is_parsed_with_its_flag_named() -> None:
    case, _ = attack_config({}, {"population": "0.02,50"})
    assert case.population == Population(rate=0.02, rounds=50) and case.num_clients == 1000
    with pytest.raises(ConfigurationError) as e:
        attack_config({}, {"population": "0.02"})
    assert e.value.field == "--population"


def _part(case: AttackCase, cells: list[MatrixCell], utility: dict[str, list[float]], seeds: list[int]) -> AttackMatrix:
    return AttackMatrix(
        attack="matrix",
        case=case,
        attacks=sorted({c.attack for c in cells}),
        defenses=["none", "dp"],
        cells=cells,
        utility={d: float(np.mean(v)) for d, v in utility.items()},
        utility_per_seed=utility,
        data={"seeds": seeds, "utility_rounds": 10, "mode": case.mode, "noise_multipliers": {}, "options": {}},
    )


def test_parts_merge_into_one_matrix_and_parts_of_different_runs_are_refused() -> None:
    case = population_case(population=SMALL)
    cells = [
        MatrixCell("imprint", "none", "fraction_recovered", 1.0),
        MatrixCell("imprint", "dp", "fraction_recovered", 0.0),
    ]
    a = _part(case, cells, {}, [0, 1])
    b = _part(case, [], {"none": [0.90, 0.88], "dp": [0.80, 0.86]}, [0, 1])
    m = merge_matrices([a, b])
    assert m.attacks == ["imprint"] and m.defenses == ["none", "dp"] and len(m.cells) == 2
    assert m.utility_gap("dp") == pytest.approx(6.0) and m.effective("imprint", "dp") is False
    lo, hi = m.utility_gap_interval("dp")
    assert lo < 6.0 < hi  # paired gaps 10 and 2 points: a wide interval around 6
    header, rows = utility_table(m)
    dp = rows[[r[1] for r in rows].index("dp")]
    assert dp[0] == "population" and dp[header.index("within_5_points")] is False
    assert m.tables[0][0] == "Attack x defense" and m.tables[1][0] == "Utility (population mode)"
    with pytest.raises(ConfigurationError):
        merge_matrices([a, _part(case, [], {}, [0, 2])])  # other seeds
    with pytest.raises(ConfigurationError):
        merge_matrices([a, _part(AttackCase(), [], {}, [0, 1])])  # the cohort-mode case
