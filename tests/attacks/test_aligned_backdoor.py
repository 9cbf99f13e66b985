"""The aligning model-replacement attacker against the issue-18 stacks, end to end (one seeded run each).

Development seed 1003 (not a reported seed): four omniscient attackers who turn their update to a
cosine of 0.4 with the honest consensus got 99.5% backdoor through ``history+support+fltrust``;
``history+support+fltrust-trim`` (FLTrust's trusted updates trimmed by ``f`` per coordinate) holds
it under 5%. The record: ``benchmarks/results/robustness/session7/exploration/``.
"""

from __future__ import annotations

import pytest

from attacks.robustness import RobustnessConfig, run_cell


def _aligned(defense: str) -> tuple[float, float]:
    cfg = RobustnessConfig(
        defenses=(defense,),
        attacks=("model-replacement",),
        attack_options={"model-replacement": {"align": 0.4}},
        defense_options={defense: {"root_passes": 3}},
    ).with_run({"seed": 1003})
    r = run_cell(cfg, "model-replacement", defense, 0.2, 0.5, knowledge="omniscient")
    assert r.status == "ok" and r.attack_success_rate is not None
    return r.attack_success_rate, r.accuracy


@pytest.mark.slow  # two 30-round runs of the default task: a few seconds each on a quiet core
def test_the_trimmed_rule_stops_the_aligned_backdoor_that_passes_plain_fltrust() -> None:
    plain_asr, _ = _aligned("history+support+fltrust")
    trim_asr, trim_acc = _aligned("history+support+fltrust-trim")
    assert plain_asr > 0.5
    assert trim_asr <= 0.05 and trim_acc > 0.85
