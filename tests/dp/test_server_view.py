"""DP against the server, which sees who took part: the worst client's rounds, unamplified, zero-out neighbours."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from dp.accounting import Sampling
from dp.distributed_accounting import INTEGER_ORDERS, DistributedDGaussRDP, SkellamRDP, rdp_to_epsilon
from dp.ledger import PrivacyLedger
from dp.sampling import poisson_cohort
from dp.server_view import (
    gaussian_orders,
    participation_bound,
    planned_server_view,
    server_view,
)
from privagg.errors import ConfigurationError
from privagg.randomness import InsecureDeterministicSecrets

DELTA = 1e-5
POISSON = Sampling.poisson(rate=0.1, population=200)


def _ledger() -> PrivacyLedger:
    return PrivacyLedger(delta=DELTA, accountants=("rdp",))  # the PRV accountant is slow and not needed here


def _opacus_unsampled(z: float, k: int, orders: list[float]) -> float:
    """Opacus's own RDP of the Gaussian at sampling rate 1, composed k times, and its conversion."""
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    rdp = compute_rdp(q=1.0, noise_multiplier=z, steps=k, orders=orders)
    eps, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=DELTA)
    return float(eps)


@pytest.mark.parametrize(("z", "k"), [(0.8, 1), (0.8, 13), (1.0, 5), (2.5, 30), (5.0, 3)])
def test_known_answer_k_unamplified_gaussian_rounds_are_opacus_at_q_1(z: float, k: int) -> None:
    led = _ledger()
    for r in range(1, 31):  # 30 rounds at q = 0.1; client 7 is in exactly k of them
        led.record(round=r, noise_multiplier=z, sampling=POISSON, roster=[7, 8] if r <= k else [8 + r])
    view = server_view(led)
    assert view.worst_rounds == k and view.rounds == 30 and view.unknown_rosters == 0
    assert view.epsilon == pytest.approx(_opacus_unsampled(z, k, list(gaussian_orders())), rel=1e-12)
    # Opacus's accountant at q = 1 with its default orders: ours adds larger orders, which can only lower it
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(z, 1.0, k)]
    assert view.epsilon <= acc.get_epsilon(DELTA) + 1e-12


def test_the_worst_client_of_heterogeneous_rounds_is_each_clients_own_composition() -> None:
    led = _ledger()
    # client 1: two rounds at z = 0.6; client 2: four rounds at z = 2 (more rounds, less loss)
    for r, z in enumerate([0.6, 0.6, 2.0, 2.0, 2.0, 2.0], start=1):
        led.record(round=r, noise_multiplier=z, sampling=POISSON, roster=[1] if z < 1 else [2])
    orders = list(gaussian_orders())
    one, two = _opacus_unsampled(0.6, 2, orders), _opacus_unsampled(2.0, 4, orders)
    assert one > two
    view = server_view(led)
    assert view.epsilon == pytest.approx(one, rel=1e-12) and view.worst_rounds == 2


def test_server_view_is_at_least_the_amplified_figure_on_the_same_ledger() -> None:
    secrets = InsecureDeterministicSecrets(11)
    gauss, dist = _ledger(), _ledger()
    mech = DistributedDGaussRDP(l2_sensitivity=400.0, sigma=60.0, shares=10, dim=1000)
    for r in range(1, 31):
        roster = poisson_cohort(200, 0.1, secrets=secrets)
        gauss.record(round=r, noise_multiplier=1.0, sampling=POISSON, roster=roster)
        dist.record(round=r, noise_multiplier=mech.noise_multiplier, sampling=POISSON, mechanism=mech, roster=roster)
    for led in (gauss, dist):
        view = server_view(led)
        assert view.worst_rounds == max(led.participation_counts().values()) >= 3
        assert math.isfinite(led.epsilon("rdp")) and view.epsilon > led.epsilon("rdp")


@pytest.mark.parametrize("kind", ["gauss", "dgauss", "skellam"])
def test_at_q_1_both_figures_are_equal(kind: str) -> None:
    every = Sampling.poisson(rate=1.0, population=5)
    mech = {
        "gauss": None,
        "dgauss": DistributedDGaussRDP(l2_sensitivity=300.0, sigma=60.0, shares=5, dim=100),
        "skellam": SkellamRDP(l2_sensitivity=300.0, l1_sensitivity=3000.0, mu=3.6e5),
    }[kind]
    z = 1.3 if mech is None else mech.noise_multiplier
    led = _ledger()
    for r in range(1, 9):
        led.record(round=r, noise_multiplier=z, sampling=every, mechanism=mech, roster=range(5))
    view = server_view(led)
    assert view.worst_rounds == 8
    assert view.epsilon == pytest.approx(led.epsilon("rdp"), rel=1e-9)


def test_fixed_size_sampling_uses_the_zero_out_shift_half_the_replace_one_sensitivity() -> None:
    fixed = Sampling.fixed(sample_size=10, population=100)
    led = _ledger()
    for r in range(1, 4):
        led.record(round=r, noise_multiplier=1.0, sampling=fixed, roster=[3])
    # z is relative to 2 * clip; the zero-out shift is clip: the Gaussian of multiplier 2
    assert server_view(led).epsilon == pytest.approx(_opacus_unsampled(2.0, 3, list(gaussian_orders())), rel=1e-12)


def test_rounds_without_a_roster_count_for_every_client_and_a_noiseless_round_is_infinite() -> None:
    led = _ledger()
    for r in range(1, 4):
        led.record(round=r, noise_multiplier=1.0, sampling=POISSON, roster=[1])
    led.record(round=4, noise_multiplier=1.0, sampling=POISSON)  # a driver that passed no roster
    led.record(round=5, noise_multiplier=1.0, sampling=POISSON, roster=[2])
    view = server_view(led)
    assert (view.worst_rounds, view.unknown_rosters) == (4, 1)
    assert view.epsilon == pytest.approx(_opacus_unsampled(1.0, 4, list(gaussian_orders())), rel=1e-12)
    led.record(round=6, noise_multiplier=0.0, sampling=POISSON, roster=[9])
    assert math.isinf(server_view(led).epsilon)
    assert server_view(_ledger()).epsilon == 0.0


def test_rosters_are_durable_with_the_ledger_and_never_in_its_rows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    led = _ledger()
    led.record(round=1, noise_multiplier=1.0, sampling=POISSON, roster=[4, 2, 2], clip_norm=0.5)
    led.record(round=2, noise_multiplier=1.0, sampling=POISSON, roster=[4])
    assert led.entries[0].roster == (2, 4) and led.participation_counts() == {2: 1, 4: 2}
    assert all("roster" not in row and 4 not in row.values() for row in led.rows())
    path = tmp_path / "ledger.json"
    led.save(path)
    again = _ledger()
    again.load(path)
    assert again.participation_counts() == {2: 1, 4: 2} and server_view(again) == server_view(led)
    data = json.loads(path.read_text())
    del data["entries"][1]["roster"]  # a ledger written before rosters: the round counts for everyone
    path.write_text(json.dumps(data))
    older = _ledger()
    older.load(path)
    assert older.entries[1].roster is None and server_view(older).unknown_rosters == 1
    data["entries"][0]["roster"] = "4"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigurationError, match="roster"):
        _ledger().load(path)


@pytest.mark.parametrize(("n", "t", "q"), [(1000, 30, 0.1), (100, 200, 0.05), (10, 5, 1.0), (10**6, 100, 0.01)])
def test_participation_bound_is_the_smallest_k_of_the_union_bound(n: int, t: int, q: float) -> None:
    k = participation_bound(population=n, rounds=t, rate=q)
    assert n * stats.binom.sf(k, t, q) <= 1e-3
    assert k == 0 or n * stats.binom.sf(k - 1, t, q) > 1e-3
    if q == 1.0:
        assert k == t


def test_planned_bound_of_the_default_run_and_of_a_distributed_mechanism() -> None:
    planned = planned_server_view(population=1000, rounds=30, rate=0.1, delta=DELTA, noise_multiplier=0.78)
    assert planned.max_rounds == 13
    assert planned.epsilon == pytest.approx(_opacus_unsampled(0.78, 13, list(gaussian_orders())), rel=1e-12)
    assert "probability >= 0.999" in planned.describe() and "13 of 30" in planned.describe()
    mech = DistributedDGaussRDP(l2_sensitivity=400.0, sigma=60.0, shares=10, dim=1000)
    dist = planned_server_view(population=1000, rounds=30, rate=0.1, delta=DELTA, mechanism=mech)
    curve = 13 * mech.rdp(np.asarray(INTEGER_ORDERS, dtype=float))
    assert dist.epsilon == pytest.approx(rdp_to_epsilon(INTEGER_ORDERS, curve, DELTA), rel=1e-12)
    with pytest.raises(ConfigurationError):
        planned_server_view(population=1000, rounds=30, rate=0.1, delta=DELTA)


def test_participation_is_counted_from_the_cohorts_of_a_real_run_with_injected_secrets() -> None:
    from privagg.config import load_config
    from protocols.fedavg import FedAvgSimulation, RunConfig

    table = {
        "data": {"num_clients": 20},
        "model": {"name": "logreg"},
        "train": {"epochs": 1},
        "federation": {"rounds": 8, "sampling": "poisson", "sampling_rate": 0.25, "patience": None},
        "dp": {"noise_multiplier": 1.0, "clip_norm": 0.5, "noise": "client"},
    }
    sim = FedAvgSimulation(load_config(RunConfig, table), cohort_secrets=InsecureDeterministicSecrets(5))
    for r in range(1, 9):
        sim.run_round(r)
    expected: dict[int, int] = {}
    for h in sim.history:
        for c in h.sampled:
            expected[c] = expected.get(c, 0) + 1
    ledger = sim.aggregator.ledger  # type: ignore[attr-defined]
    assert expected and ledger.participation_counts() == expected
    assert [e.roster for e in ledger.entries] == [tuple(sorted(h.sampled)) for h in sim.history]
    view = server_view(ledger)
    k = max(expected.values())
    assert view.worst_rounds == k and view.unknown_rosters == 0
    assert view.epsilon == pytest.approx(_opacus_unsampled(1.0, k, list(gaussian_orders())), rel=1e-12)
    assert view.epsilon > ledger.epsilon("rdp")


def test_distributed_rounds_record_the_cohort() -> None:
    from dp.config import DPConfig
    from protocols.aggregation import ClientUpdate, RoundContext
    from protocols.dp_fedavg import DPFedAvg
    from protocols.secagg_aggregator import SecAggAggregator

    cfg = DPConfig(target_epsilon=8.0, delta=1e-3, clip_norm=0.5, noise="distributed", bits=16)
    agg = DPFedAvg(SecAggAggregator(secrets=InsecureDeterministicSecrets(3)), config=cfg, population=200, rounds=3)
    rng = np.random.default_rng(0)
    rosters = [(3, 5, 9, 11, 40), (), (5, 7, 8, 9, 12, 13)]
    for r, ids in enumerate(rosters, start=1):
        ups = [ClientUpdate(client_id=c, delta=rng.normal(size=20) * 0.3, num_examples=10) for c in ids]
        ctx = RoundContext(
            round=r,
            population=200,
            sampled=ids,
            sampling="poisson",
            sampling_rate=0.05,
            rng=np.random.default_rng(r),
            global_params=np.zeros(20),
        )
        agg.aggregate(ups, ctx)
    assert [e.roster for e in agg.ledger.entries] == rosters
    view = server_view(agg.ledger)
    assert view.worst_rounds == 2 and view.epsilon > agg.ledger.epsilon("rdp")
