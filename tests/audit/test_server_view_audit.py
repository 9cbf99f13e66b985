"""The audit states DP against the server from the planned unamplified bound, never from the amplified figure."""

from __future__ import annotations

from typing import Any

import pytest

from dp.server_view import participation_bound, planned_server_view
from privagg.audit import AuditConfig
from privagg.audit.engine import check_dp


def _cfg(dp: dict[str, Any], num_clients: int = 1000) -> AuditConfig:
    dep = {"num_clients": num_clients, "model_params": 650, "threat": "active"}
    return AuditConfig.from_mapping({"protocol_attacks": False, "deployment": dep, "dp": dp})


DEFAULT = {"target_epsilon": 8.0, "sampling_rate": 0.1, "rounds": 30, "clip_norm": 0.5}


@pytest.mark.parametrize("noise", ["client", "distributed"])
def test_the_default_plan_warns_with_the_server_figure(noise: str) -> None:
    findings, _ = check_dp(_cfg({**DEFAULT, "noise": noise}))
    by_id = {f.id: f for f in findings}
    budget, server = by_id["dp.budget"], by_id["dp.server"]
    amplified = budget.data["epsilon"]["rdp"]
    assert budget.severity == "pass" and amplified <= 8.0
    assert "against observers of the released models who do not see the rosters" in budget.title
    assert "the server" not in budget.title
    eps = server.data["epsilon"]
    assert server.severity == "warn" and eps > 2 * 8.0
    assert f"epsilon {eps:.3g}" in server.title and "x the target epsilon 8" in server.title
    assert server.data["max_rounds"] == participation_bound(population=1000, rounds=30, rate=0.1) == 13
    assert "probability >= 0.999" in server.detail and f"amplified epsilon {amplified:.3g}" in server.detail
    if noise == "client":  # the Gaussian of the calibrated multiplier, 13 rounds unamplified
        z = float(budget.detail.split("noise multiplier ")[1].split(",")[0])
        planned = planned_server_view(population=1000, rounds=30, rate=0.1, delta=1e-5, noise_multiplier=z)
        assert eps == pytest.approx(planned.epsilon, rel=1e-4)


def test_central_noise_says_the_server_is_trusted_never_pass() -> None:
    findings, _ = check_dp(_cfg({**DEFAULT, "noise": "central"}))
    server = next(f for f in findings if f.id == "dp.server")
    assert server.severity == "warn" and "the server is trusted" in server.title


def test_every_client_in_every_round_passes_with_the_figure_it_states() -> None:
    # q = 1: nothing to amplify, both figures agree, and the server view passes on its own figure
    findings, _ = check_dp(_cfg({"noise_multiplier": 4.0, "noise": "client", "sampling_rate": 1.0, "rounds": 5}, 10))
    by_id = {f.id: f for f in findings}
    server = by_id["dp.server"]
    assert server.severity == "pass" and server.data["max_rounds"] == 5
    assert server.data["epsilon"] == pytest.approx(by_id["dp.budget"].data["epsilon"]["rdp"], rel=1e-9)


def test_no_pass_about_the_server_comes_from_the_amplified_figure() -> None:
    for noise in ("client", "distributed", "central"):
        budget = next(f for f in check_dp(_cfg({**DEFAULT, "noise": noise}))[0] if f.id == "dp.budget")
        assert "against observers of the released models" in budget.title
        for f in check_dp(_cfg({**DEFAULT, "noise": noise}))[0]:
            if f.severity == "pass" and "against the server" in f.title.lower():
                # only dp.server may pass about the server, and only on its own (unamplified) figure
                assert f.id == "dp.server" and f.data["epsilon"] != f.data["amplified_epsilon"]
