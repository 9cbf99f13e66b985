"""The ledger's epsilons against an independent computation (Google's dp-accounting), on the real DP-FedAvg path.

Each configuration runs :class:`protocols.dp_fedavg.DPFedAvg` round by round (the code ``privagg run``
runs) and compares what its ledger says with dp-accounting's RDP and PLD accountants fed the same
parameters: Poisson rounds (central and client noise), fixed-size rounds (replace-one, without
replacement), adaptive clipping (the released update and count noise must compose to the charged
noise multiplier: a planted fault that releases the count uncharged is caught by the same check),
the server view (each client's rounds unamplified) and the refused-round delta (the proof's coupling
probability enumerated over cohort sizes, and never below the exact total-variation distance of the
round kinds observers see).
"""

from __future__ import annotations

import math

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from dp.accounting import Sampling
from dp.clipping import MAX_WEIGHT
from dp.config import DPConfig
from dp.guarantee import ledger_refusal_delta
from dp.rounds import DPRounds, RoundPlan, count_sensitivity
from dp.server_view import server_view
from protocols.aggregation import ClientUpdate, MeanAggregator, RoundContext
from protocols.dp_fedavg import DPFedAvg
from tests.audit.planted import UnchargedCountRounds

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 257))


def _updates(ids: list[int], rng: np.random.Generator) -> list[ClientUpdate]:
    return [ClientUpdate(client_id=i, delta=rng.normal(size=8), num_examples=10) for i in ids]


def _run(cfg: DPConfig, *, population: int, rounds: int, kind: str, rate: float, seed: int = 0) -> DPFedAvg:
    """``rounds`` rounds of DPFedAvg over a plain mean; Poisson cohorts (or fixed ones of ``rate * N``)."""
    agg = DPFedAvg(MeanAggregator(weighted=False), config=cfg, population=population, rounds=rounds)
    rng = np.random.default_rng(seed)
    for r in range(1, rounds + 1):
        if kind == "poisson":
            ids = [int(i) for i in np.flatnonzero(rng.random(population) < rate)]
        else:
            ids = sorted(int(i) for i in rng.choice(population, size=round(rate * population), replace=False))
        ctx = RoundContext(r, population, tuple(ids), kind, rate, rng, np.zeros(8))
        agg.aggregate(_updates(ids, rng), ctx)
    return agg


def _dpa_epsilon(event: dpa.DpEvent, delta: float, *, pld: bool = False, replace: bool = False) -> float:
    if pld:
        acc = PLDAccountant(value_discretization_interval=1e-4)
    else:
        rel = dpa.NeighboringRelation.REPLACE_ONE if replace else dpa.NeighboringRelation.ADD_OR_REMOVE_ONE
        acc = RdpAccountant(ORDERS, neighboring_relation=rel)
    acc.compose(event)
    return float(acc.get_epsilon(delta))


@pytest.mark.parametrize(("noise", "z", "rate", "rounds"), [("central", 0.9, 0.1, 10), ("client", 2.0, 0.3, 8)])
def test_poisson_ledger_matches_dp_accounting(noise: str, z: float, rate: float, rounds: int) -> None:
    cfg = DPConfig(noise_multiplier=z, clip_norm=1.0, delta=1e-5, noise=noise, secure_noise=False, seed=3)
    agg = _run(cfg, population=60, rounds=rounds, kind="poisson", rate=rate)
    ledger = agg.ledger
    assert len(ledger.entries) == rounds and all(e.noise_multiplier == z for e in ledger.entries)
    event = dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(rate, dpa.GaussianDpEvent(z)), rounds)
    # two RDP implementations (orders and the RDP-to-DP conversion differ): within 3%
    assert ledger.epsilon("rdp") == pytest.approx(_dpa_epsilon(event, 1e-5), rel=0.03)
    # PRV (Gopi et al.) against a fine PLD: the same quantity by two numerical methods, within 3%
    assert ledger.epsilon("prv") == pytest.approx(_dpa_epsilon(event, 1e-5, pld=True), rel=0.03)
    # and RDP never reads below the (tighter) PLD value
    assert ledger.epsilon("rdp") >= _dpa_epsilon(event, 1e-5, pld=True) * 0.99


@pytest.mark.slow  # the without-replacement RDP bound costs seconds per recorded round
def test_fixed_size_ledger_matches_dp_accounting_replace_one() -> None:
    """Fixed-size cohorts: replace-one neighbours, sampled without replacement (sensitivity 2C in the noise)."""
    z, n, k, rounds = 1.5, 50, 10, 3
    cfg = DPConfig(noise_multiplier=z, clip_norm=1.0, delta=1e-5, secure_noise=False, seed=3)
    agg = _run(cfg, population=n, rounds=rounds, kind="fixed", rate=k / n)
    assert agg.ledger.entries[0].sampling == Sampling.fixed(sample_size=k, population=n)
    event = dpa.SelfComposedDpEvent(dpa.SampledWithoutReplacementDpEvent(n, k, dpa.GaussianDpEvent(z)), rounds)
    ours, theirs = agg.ledger.epsilon("rdp"), _dpa_epsilon(event, 1e-5, replace=True)
    assert ours == pytest.approx(theirs, rel=0.05)


def released_noise_multiplier(plan: RoundPlan) -> float:
    """The noise multiplier the round's mechanisms release, from their sensitivities and noise std alone.

    One client moves the update sum by at most ``clip * factor * MAX_WEIGHT`` and the centred count by
    ``count_sensitivity(factor)``; jointly a Gaussian mechanism with ``mu^2`` the sum of both squares.
    """
    factor = plan.sampling.sensitivity_factor
    mu2 = (plan.clip * factor * MAX_WEIGHT / plan.mechanism.std) ** 2
    if plan.count_mechanism is not None:
        mu2 += (count_sensitivity(factor) / plan.count_mechanism.std) ** 2
    return mu2**-0.5


@pytest.mark.parametrize("rounds_cls", [DPRounds, UnchargedCountRounds])
def test_adaptive_clipping_charges_the_count_release(rounds_cls: type[DPRounds]) -> None:
    cfg = DPConfig(noise_multiplier=1.2, clip_norm=1.0, delta=1e-5, adaptive_clipping=True, secure_noise=False, seed=1)
    dpr = rounds_cls.from_config(cfg, secure_noise=False)
    s = Sampling.poisson(rate=0.2, population=100)
    plan = dpr.plan(noise_multiplier=1.2, sampling=s, cohort=20, dim=8)
    assert plan.count_mechanism is not None and plan.noise_multiplier == 1.2
    released = released_noise_multiplier(plan)
    charged_ok = released >= plan.noise_multiplier * (1 - 1e-9)
    # the library's rounds release at least the charged noise; the planted fault releases less, and is caught
    assert charged_ok is (rounds_cls is DPRounds), (released, plan.noise_multiplier)


def test_adaptive_ledger_matches_dp_accounting_of_the_released_mechanisms() -> None:
    z, rate, rounds = 1.2, 0.2, 10
    cfg = DPConfig(noise_multiplier=z, clip_norm=1.0, delta=1e-5, adaptive_clipping=True, secure_noise=False, seed=1)
    agg = _run(cfg, population=100, rounds=rounds, kind="poisson", rate=rate)
    dpr = DPRounds.from_config(cfg, secure_noise=False)
    plan = dpr.plan(noise_multiplier=z, sampling=Sampling.poisson(rate=rate, population=100), cohort=20, dim=8)
    released = released_noise_multiplier(plan)  # >= z (grid snapping adds a little)
    event = dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(rate, dpa.GaussianDpEvent(released)), rounds)
    assert agg.ledger.epsilon("rdp") == pytest.approx(_dpa_epsilon(event, 1e-5), rel=0.03)


def test_server_view_matches_dp_accounting_of_the_worst_clients_rounds() -> None:
    z, rate, rounds, n = 3.0, 0.3, 15, 20
    cfg = DPConfig(noise_multiplier=z, clip_norm=1.0, delta=1e-5, noise="client", secure_noise=False, seed=2)
    agg = _run(cfg, population=n, rounds=rounds, kind="poisson", rate=rate, seed=5)
    counts: dict[int, int] = {}
    for e in agg.ledger.entries:
        assert e.roster is not None
        for c in e.roster:
            counts[c] = counts.get(c, 0) + 1
    worst = max(counts.values())
    view = server_view(agg.ledger)
    assert view.worst_rounds == worst
    event = dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(z), worst)  # unamplified: the server sees the roster
    assert view.epsilon == pytest.approx(_dpa_epsilon(event, 1e-5), rel=0.03)
    assert view.epsilon >= _dpa_epsilon(event, 1e-5, pld=True) * 0.99


def _round_kinds(population: int, rate: float, min_cohort: int) -> tuple[float, float]:
    """By enumeration of the others' cohort size (exact binomial weights) for one round, with the kinds
    observers see (empty: noise; 1..m-1: refused; >= m: ran): the probability that the target's coin
    changes the kind (the coupling of dp/SUBSAMPLING.md), and the exact TV distance of the kind with
    and without the target (what the kind alone leaks; never above the coupling)."""
    others = population - 1
    pmf = [math.comb(others, c) * rate**c * (1 - rate) ** (others - c) for c in range(others + 1)]

    def kind(size: int) -> int:
        return 0 if size == 0 else (1 if size < min_cohort else 2)

    without, with_, coupling = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], 0.0
    for c, p in enumerate(pmf):
        without[kind(c)] += p
        with_[kind(c)] += (1 - rate) * p
        with_[kind(c + 1)] += rate * p
        coupling += rate * p * (kind(c + 1) != kind(c))
    return coupling, 0.5 * sum(abs(a - b) for a, b in zip(without, with_, strict=True))


@pytest.mark.parametrize(("population", "rate", "min_cohort"), [(60, 0.1, 3), (300, 0.05, 24), (40, 0.3, 5)])
def test_refused_round_delta_is_the_enumerated_coupling(population: int, rate: float, min_cohort: int) -> None:
    cfg = DPConfig(noise_multiplier=1.0, clip_norm=1.0, delta=1e-5, secure_noise=False, seed=0)
    agg = _run(cfg, population=population, rounds=7, kind="poisson", rate=rate)
    extra = ledger_refusal_delta(agg.ledger, population=population, min_cohort=min_cohort, empty_released=True)
    coupling, tv = _round_kinds(population, rate, min_cohort)
    assert extra == pytest.approx(min(1.0, 7 * coupling), rel=1e-9)
    assert coupling >= tv > 0  # the charged delta covers what one round's kind alone reveals
