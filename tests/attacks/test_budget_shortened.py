"""An attack figure is never measured silently on a run the DP budget shortened.

* an attack's measurement runs (``attacks.scenario.make_run_config``) need every round they ask
  for: a round the budget refuses raises :class:`PrivacyBudgetExceeded` (and a matrix cell records
  the refusal), where the run loop alone would stop early;
* the matrix's utility column keeps the shortened run (the deployment's budget did run out) and says so:
  ``utility_budget_stops``, the utility table's ``shortened`` column and a sentence of the text.
"""

from __future__ import annotations

import pytest

from attacks.matrix import attack_matrix, utility_table
from attacks.registry import AttackCase
from attacks.scenario import make_run_config
from privagg.errors import PrivacyBudgetExceeded
from protocols.fedavg import FedAvgSimulation
from protocols.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_quiet_thread")

ROUNDS = 4


def _short_budget_case() -> AttackCase:
    """DP calibrated for epsilon 8 over the run's rounds, but a budget of 4: it runs out before the end."""
    return AttackCase.create(num_clients=10, options={"dp": {"budget_epsilon": 4.0}})


def test_an_attack_measurement_run_refuses_rather_than_shortening() -> None:
    case = _short_budget_case().with_(defense="dp")
    cfg = make_run_config(case, train=TrainConfig(epochs=1, batch_size=32, lr=0.1), rounds=ROUNDS)
    assert cfg.federation.budget_exhausted == "refuse"
    with pytest.raises(PrivacyBudgetExceeded, match=rf"needs all {ROUNDS} rounds; the DP budget refused round \d"):
        FedAvgSimulation(cfg).run()
    plain = make_run_config(case.with_(defense="none"), train=TrainConfig(), rounds=ROUNDS)
    assert len(FedAvgSimulation(plain).run().history) == ROUNDS  # no DP, no budget: nothing refused


def test_the_matrix_utility_of_a_shortened_run_says_so() -> None:
    m = attack_matrix((), ("dp",), base=_short_budget_case(), seeds=(0, 1), utility_rounds=ROUNDS)
    stops = m.utility_budget_stops
    assert stops["none"] == [None, None]
    assert all(r is not None and 1 < r <= ROUNDS for r in stops["dp"])  # stopped, after at least one round
    assert m.shortened("none") == "" and "the DP budget stopped it" in m.shortened("dp")
    for seed, r in zip((0, 1), stops["dp"], strict=True):
        assert f"seed {seed}: before round {r}" in m.shortened("dp")
    header, rows = utility_table(m)
    by_defense = {row[header.index("defense")]: row for row in rows}
    assert by_defense["dp"][header.index("shortened")] == m.shortened("dp")
    assert by_defense["none"][header.index("shortened")] == ""
    assert f"Utility of dp: {m.shortened('dp')}." in m.text
    assert m.data["utility_budget_stops"]["dp"] == stops["dp"]
