"""Every planted DP bug is flagged by the canary audit; the correct mechanism is not (>= 20 seeds).

Slow: each audit is a full DP-FedAvg run (the privacy ledger's per-round accounting dominates).
The scenarios are in :mod:`tests.audit.scenarios`, the bugs in :mod:`tests.audit.planted`.
"""

from __future__ import annotations

import pytest

from privagg.audit.canaries import run_canary_audit
from tests.audit.planted import planted_aggregator
from tests.audit.scenarios import scenario

pytestmark = pytest.mark.slow

#: scenario -> (planted bug, the correct mechanism on the same task)
CASES = {
    "default": ("half-sensitivity", "none"),
    "capped": ("uncapped-weights", "none"),
    "dropouts": ("no-recalibration", "dropouts"),
    "alone": ("no-empty-noise", "none"),
}


def _audit(name: str, bug: str, seed: int):  # type: ignore[no-untyped-def]
    run, canaries = scenario(name, seed=seed)
    return run_canary_audit(run, canaries, aggregator=planted_aggregator(run, bug))


@pytest.mark.parametrize("name", sorted(CASES))
def test_planted_bug_is_flagged(name: str) -> None:
    bug, _ = CASES[name]
    result = _audit(name, bug, seed=0)
    assert result.flagged, result.verdict
    assert result.lower_bound.epsilon > result.claimed_epsilon


@pytest.mark.parametrize("name", sorted(CASES))
def test_correct_mechanism_is_not_flagged_across_seeds(name: str) -> None:
    """Lower bound <= the accountant's epsilon in >= 95% of 20 seeds (at most one flag)."""
    _, control = CASES[name]
    flagged = [seed for seed in range(20) if _audit(name, control, seed).flagged]
    assert len(flagged) <= 1, flagged
