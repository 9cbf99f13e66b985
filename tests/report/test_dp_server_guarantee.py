"""The DP guarantee says against whom: the server (it sees who took part) or an observer of the models."""

from __future__ import annotations

import math
from typing import Any

import pytest

from dp.server_view import server_view
from privagg.config import load_config
from privagg.randomness import InsecureDeterministicSecrets
from privagg.report.dp import guarantee, guarantee_line, guarantee_section
from protocols.fedavg import FedAvgSimulation, RunConfig

OLD_KEYS = {
    "unit",
    "epsilon",
    "delta",
    "accountant",
    "epsilon_by_accountant",
    "rounds",
    "sampling",
    "cohorts",
    "noise",
    "noise_sampler",
    "secure_noise",
    "budget_epsilon",
    "delta_times_population",
    "private",
}


def _run(noise: str) -> FedAvgSimulation:
    table: dict[str, Any] = {
        "data": {"num_clients": 20},
        "model": {"name": "logreg"},
        "train": {"epochs": 1},
        "federation": {"rounds": 6, "sampling": "poisson", "sampling_rate": 0.25, "patience": None},
        "dp": {"noise_multiplier": 1.0, "clip_norm": 0.5, "noise": noise},
    }
    sim = FedAvgSimulation(load_config(RunConfig, table), cohort_secrets=InsecureDeterministicSecrets(2))
    for r in range(1, 7):
        sim.run_round(r)
    return sim


@pytest.fixture(scope="module")
def client_run() -> FedAvgSimulation:
    return _run("client")


def test_client_noise_reports_both_figures_the_server_first(client_run: FedAvgSimulation) -> None:
    g = guarantee(client_run)
    assert OLD_KEYS <= set(g)  # backward compatible: new keys only added
    view = server_view(client_run.aggregator.ledger)  # type: ignore[attr-defined]
    assert g["epsilon_server"] == view.epsilon and g["server_rounds"] == view.worst_rounds
    assert g["epsilon_server"] > g["epsilon"] > 0
    line = guarantee_line(g)
    server = f"against the server (it sees who took part): ({g['epsilon_server']:.4g}, {g['delta']:g})-DP"
    observer = (
        "against an observer of the released models who does not see the rosters: "
        f"({g['epsilon']:.4g}, {g['delta']:g})-DP with amplification by sampling (assumes (A3), see dp/SUBSAMPLING.md)"
    )
    assert server in line and observer in line
    assert line.index(server) < line.index(observer)  # the first figure a reader meets is the server's
    assert f"over the worst client's {view.worst_rounds} of 6 rounds, unamplified" in line
    assert "zero-out neighbours" in line
    section = guarantee_section(client_run, not_covered=[])
    rows = dict(section.summary)
    assert section.summary[0] == ("guarantee", line)
    assert f"({g['epsilon_server']:.4g}," in rows["against the server"]
    assert section.data["epsilon_server"] == g["epsilon_server"]


def test_central_noise_says_the_server_is_trusted() -> None:
    g = guarantee(_run("central"))
    assert OLD_KEYS <= set(g) and math.isnan(g["epsilon_server"])
    line = guarantee_line(g)
    assert line.startswith(f"client-level ({g['epsilon']:.4g}, ")
    assert "the server is trusted" in line and "against observers of the released models" in line
    assert "against the server (it sees" not in line


def test_an_uncomputed_server_figure_is_never_left_implicit() -> None:
    g = {
        "epsilon": 3.0,
        "delta": 1e-5,
        "accountant": "rdp",
        "rounds": 4,
        "sampling": "Poisson sampling, q = 0.1",
        "cohorts": "secret (OS CSPRNG)",
        "secure_noise": True,
        "noise": "distributed",
    }
    line = guarantee_line(g)
    assert "against the server (it sees who took part): not computed, NOT the figure below" in line
