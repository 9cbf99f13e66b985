"""Distributed DP through the real secure aggregation: ring sums, rounds, ledger, dropouts, refusals."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest

from dp.config import DPConfig
from dp.distributed_accounting import DistributedDGaussRDP
from dp.distributed_encoding import IntegerNoise
from dp.noise import InsecureNoiseWarning
from privagg.config import load_config
from privagg.errors import ConfigurationError, ProtocolAbort
from privagg.randomness import InsecureDeterministicSecrets
from protocols.aggregation import ClientUpdate, MeanAggregator, ModularSum, RoundContext
from protocols.dp_fedavg import DPFedAvg
from protocols.secagg_aggregator import SecAggAggregator


def ctx(r: int, ids: list[int], *, population: int = 200, q: float = 0.05, sampling: str = "poisson") -> RoundContext:
    return RoundContext(
        round=r,
        population=population,
        sampled=tuple(ids),
        sampling=sampling,
        sampling_rate=q,
        rng=np.random.default_rng(r),
        global_params=np.zeros(20),
    )


def updates(n: int, dim: int = 20, seed: int = 0) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    return [ClientUpdate(client_id=i, delta=rng.normal(size=dim) * 0.3, num_examples=10) for i in range(n)]


def dist_config(**kw: Any) -> DPConfig:
    base: dict[str, Any] = dict(target_epsilon=8.0, delta=1e-3, clip_norm=0.5, noise="distributed", bits=16)
    base.update(kw)
    return DPConfig(**base)


def secagg(**kw: Any) -> SecAggAggregator:
    return SecAggAggregator(secrets=InsecureDeterministicSecrets(3), **kw)


@pytest.mark.parametrize("threat,dropout", [("semi-honest", 0.0), ("active", 0.25)])
def test_secure_sum_is_exact_in_the_ring(threat: str, dropout: float) -> None:
    rng = np.random.default_rng(1)
    vectors = {c: rng.integers(0, 2**12, size=37, dtype=np.uint64) for c in range(8)}
    agg = secagg(threat=threat, dropout_rate=dropout, degree=10, threshold=5)
    out = agg.modular_sum(vectors, bits=12, ctx=ctx(0, list(vectors)))
    assert out.secure and len(out.participants) == 8 - round(dropout * 8)
    plain = sum(vectors[c] for c in out.participants) & np.uint64(2**12 - 1)
    np.testing.assert_array_equal(out.sum, plain)
    assert out.upload_bytes >= 37 * 12 / 8  # the bit-packed vector, plus the protocol's framing
    assert agg.rounds[-1].modulus_bits == 12


def test_plain_modular_sum_matches_and_says_it_is_not_secure() -> None:
    vectors = {c: np.full(5, 2**15 + c, dtype=np.uint64) for c in range(4)}
    out = MeanAggregator().modular_sum(vectors, bits=16, ctx=ctx(0, list(vectors)))
    np.testing.assert_array_equal(out.sum, np.full(5, (4 * 2**15 + 6) % 2**16))
    assert not out.secure


def test_the_ring_wraps_by_intent_whatever_the_cohort() -> None:
    """A modular ring: 10 clients of 4-bit ring elements sum mod 16, the wrap is the mechanism's, not an error."""
    vectors = {c: np.full(4, 15, dtype=np.uint64) for c in range(10)}
    agg = secagg(threat="semi-honest")
    out = agg.modular_sum(vectors, bits=4, ctx=ctx(0, list(vectors)))
    np.testing.assert_array_equal(out.sum, np.full(4, (10 * 15) % 16))
    assert agg.ring_params(10, 4).modular and agg.rounds[-1].modulus_bits == 4


def make(inner: Any, cfg: DPConfig | None = None, *, rounds: int = 10, population: int = 200) -> DPFedAvg:
    agg = DPFedAvg(inner, config=cfg or dist_config(), population=population, rounds=rounds)
    assert agg.distributed is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        agg.distributed.noise = IntegerNoise(seed=5)
    return agg


@pytest.mark.parametrize("mechanism", ["dgauss", "skellam"])
def test_a_round_through_secagg_is_accounted_and_publishes_no_counts(mechanism: str) -> None:
    agg = make(secagg(threat="semi-honest"), dist_config(mechanism=mechanism))
    ups = updates(10)
    res = agg.aggregate(ups, ctx(0, list(range(10))))
    m = res.metrics
    assert m["dp_noise"] == "distributed" and m["dp_mechanism"] == mechanism and m["dp_bits"] == 16
    assert 0 < m["dp_epsilon_rdp"] < 8.0 and math.isnan(m["dp_epsilon_prv"])
    assert m["dp_secure_sum"] is True and m["dp_ring_overflow_bound"] <= 1e-4
    assert not any(k.startswith("secagg_") for k in m)  # Poisson: the inner counts are withheld
    entry = agg.ledger.entries[-1]
    assert entry.info["cohort"] == "withheld" and entry.info["participants"] == "withheld"
    # the released mean is the clipped mean plus the planned noise, within 6 std per coordinate
    clipped = sum(u.delta * min(1.0, 0.5 / float(np.linalg.norm(u.delta))) for u in ups)
    expected = clipped / m["dp_denominator"]
    assert agg.distributed is not None and agg.distributed.stats[-1].upload_bytes > 0
    true_std = agg.distributed.stats[-1].noise_std / m["dp_denominator"]  # every survivor's share
    assert true_std >= m["dp_noise_std_on_mean"]  # the metric is the guaranteed noise
    assert np.all(np.abs(res.delta - expected) < 6.5 * true_std)


def test_dropouts_noise_is_calibrated_to_the_fewest_survivors() -> None:
    inner = secagg(threat="active", dropout_rate=0.3, degree=10, threshold=6)
    agg = make(inner)
    n = 10
    res = agg.aggregate(updates(n), ctx(0, list(range(n))))
    assert agg.distributed is not None and agg.distributed.params is not None
    p = agg.distributed.params
    t = inner.min_survivors(n)  # honest_fraction 1: every survivor adds a share
    assert len(res.participants) == n - 3 >= t
    # accounted: t shares of sigma / sqrt(t), i.e. exactly the planned central noise
    mech = agg.ledger.entries[-1].mechanism
    assert isinstance(mech, DistributedDGaussRDP)
    assert mech.shares == t and mech.sigma == pytest.approx(p.sigma / math.sqrt(t))
    assert res.metrics["dp_noise_std"] == pytest.approx(p.noise_std_value)
    # what the sum really carries (operator-side): every survivor's share, more than planned
    true = agg.distributed.stats[-1].noise_std
    assert true == pytest.approx(p.sigma * math.sqrt((n - 3) / t) / p.scale)


class DroppingMean(MeanAggregator):
    """An inner protocol that releases a sum of fewer survivors than it promised (a faulty protocol)."""

    def modular_sum(self, vectors: Mapping[int, np.ndarray], *, bits: int, ctx: RoundContext) -> ModularSum:
        keep = dict(list(vectors.items())[:2])
        return super().modular_sum(keep, bits=bits, ctx=ctx)


def test_a_sum_with_fewer_shares_than_promised_is_recorded_then_withheld() -> None:
    agg = make(DroppingMean())
    with pytest.raises(ProtocolAbort):
        agg.aggregate(updates(10), ctx(0, list(range(10))))
    assert len(agg.ledger.entries) == 1  # recorded before the abort
    mech = agg.ledger.entries[-1].mechanism
    assert isinstance(mech, DistributedDGaussRDP) and mech.shares == 2  # with the noise it really had


def test_an_empty_round_releases_noise_and_is_accounted() -> None:
    agg = make(MeanAggregator())
    agg.aggregate(updates(10), ctx(0, list(range(10))))
    res = agg.aggregate([], ctx(1, []))
    assert res.participants == () and np.any(res.delta != 0)
    assert len(agg.ledger.entries) == 2


def test_refusals() -> None:
    with pytest.raises(ConfigurationError):  # fixed-size sampling has no bound here
        make(MeanAggregator()).aggregate(updates(5), ctx(0, list(range(5)), sampling="fixed"))
    with pytest.raises(ConfigurationError) as info:  # too few bits for 60 clients: names the bits that work
        make(MeanAggregator(), dist_config(bits=6), population=1000).aggregate(
            updates(60), ctx(0, list(range(60)), population=1000)
        )
    assert info.value.field == "dp.bits" and "use bits >=" in str(info.value)

    class NoSum(MeanAggregator):
        def modular_sum(self, vectors: Mapping[int, np.ndarray], *, bits: int, ctx: RoundContext) -> ModularSum:
            return super(MeanAggregator, self).modular_sum(vectors, bits=bits, ctx=ctx)  # the base: refuses

    with pytest.raises(ConfigurationError):
        make(NoSum()).aggregate(updates(5), ctx(0, list(range(5))))


def test_the_budget_refuses_a_round_before_the_sum() -> None:
    agg = make(secagg(threat="semi-honest"), dist_config(budget_epsilon=0.05))
    from privagg.errors import PrivacyBudgetExceeded

    with pytest.raises(PrivacyBudgetExceeded):
        agg.aggregate(updates(10), ctx(0, list(range(10))))
    assert not agg.ledger.entries and not agg.inner.rounds  # type: ignore[attr-defined]


def test_the_ledger_is_durable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "ledger.json")
    agg = make(MeanAggregator(), dist_config(ledger_path=path))
    agg.aggregate(updates(10), ctx(0, list(range(10))))
    again = make(MeanAggregator(), dist_config(ledger_path=path))
    assert len(again.ledger.entries) == 1
    assert again.ledger.epsilon("rdp") == pytest.approx(agg.ledger.epsilon("rdp"))


@pytest.mark.slow
def test_run_config_with_distributed_noise_trains_through_secagg() -> None:
    from protocols.fedavg import FedAvgSimulation, RunConfig

    table = {
        "data": {"num_clients": 200, "partition": "iid"},
        "model": {"name": "logreg"},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "federation": {"rounds": 2, "sampling": "poisson", "sampling_rate": 0.05},
        "aggregation": {"name": "secagg", "options": {"threat": "semi-honest"}},
        "dp": {"target_epsilon": 8.0, "delta": 1e-3, "clip_norm": 0.5, "noise": "distributed", "mechanism": "skellam"},
    }
    res = FedAvgSimulation(load_config(RunConfig, table)).run()
    assert len(res.history) == 2
    assert res.history[-1].metrics["dp_noise"] == "distributed"


@pytest.mark.parametrize(("n", "degree", "threshold"), [(10, 10, 6), (40, 4, 3), (40, 10, 6)])
def test_min_survivors_is_a_bound_every_released_sum_meets(n: int, degree: int, threshold: int) -> None:
    """Double counting over the graph: no dropout pattern the unmasking can serve leaves fewer survivors."""
    from secagg import SecAggParams

    agg = secagg(threat="semi-honest", degree=degree, threshold=threshold)
    m = agg.min_survivors(n)
    p = agg.params_for(n)
    assert m >= p.threshold
    # brute force on the ring graph: greedily drop clients while every dropped one keeps t live neighbours
    k, t = p.degree, p.threshold
    if k < n - 1:
        half = k // 2
        alive = set(range(n))
        for c in range(n):  # drop every client whose neighbours stay able to serve all dropped ones
            trial = alive - {c}
            dropped = set(range(n)) - trial
            ok = all(sum(((d + j) % n in trial) for j in range(-half, half + 1) if j) >= t for d in dropped)
            if ok:
                alive = trial
        assert len(alive) >= m  # a greedy maximal dropout pattern never beats the bound
    assert isinstance(p, SecAggParams)


def test_the_rotation_seed_follows_an_insecure_simulation_seed_only() -> None:
    """The rotations are public: a seeded insecure simulation derives them from its seed (reproducible runs);
    with secure noise every run draws a fresh one from the OS CSPRNG."""
    from protocols.distributed_dp import DistributedDPRounds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        seeded = [dist_config(secure_noise=False, seed=s) for s in (3, 3, 4)]
        a, b, c = (DistributedDPRounds(cfg, population=200, rounds=10) for cfg in seeded)
    assert a.rotation_seed == b.rotation_seed != c.rotation_seed and len(a.rotation_seed) == 32
    secure = [DistributedDPRounds(dist_config(), population=200, rounds=10) for _ in range(2)]
    assert secure[0].rotation_seed != secure[1].rotation_seed


class _Floor:
    """A secure sum that releases sums of at least ``k - gap`` survivors of ``k``."""

    def __init__(self, gap: int) -> None:
        self.gap = gap

    def min_survivors(self, k: int) -> int:
        return max(1, k - self.gap)


@pytest.mark.parametrize(("n", "honest", "gap"), [(20, 0.8, 5), (12, 0.9, 3), (30, 0.7, 2), (8, 0.75, 1)])
def test_charged_noise_is_held_by_honest_survivors_when_colluders_send_none(n: int, honest: float, gap: int) -> None:
    """Red team: ``floor((1-h) n)`` colluding survivors send no noise share and honest clients drop to the
    secure sum's floor. Every sum that is released carries at least the charged shares from honest
    survivors alone; a sum with fewer is recorded with the shares it had, then withheld. (The fraction is
    assumed of each cohort; read of the population, see tests/audit/test_honest_fraction_audit.py.)"""
    from dp.accounting import Sampling
    from protocols.distributed_dp import DistributedDPRounds, dishonest_clients

    cfg = dist_config(honest_fraction=honest)
    rounds = DistributedDPRounds(cfg, population=200, rounds=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureNoiseWarning)
        rounds.noise = IntegerNoise(seed=5)
    s = Sampling.poisson(rate=0.05, population=200)
    floor = _Floor(gap)
    opened = rounds.open_round(n, round=1, sampling=s, dim=20, inner=floor)
    p, t, d = opened.params, opened.shares, dishonest_clients(cfg, n)
    assert t == floor.min_survivors(n) - d >= 1
    ring = np.zeros(p.padded, dtype=np.uint64)
    for survivors in range(floor.min_survivors(n) - 1, n + 1):  # one below the floor: a faulty protocol
        honest_shares = survivors - d  # the worst case: every colluder survived and added nothing
        if honest_shares < t:
            with pytest.raises(ProtocolAbort):
                rounds.close_round(opened, ring, sampling=s, survivors=survivors)
        else:
            rounds.close_round(opened, ring, sampling=s, survivors=survivors)
        mech = rounds.ledger.entries[-1].mechanism
        assert isinstance(mech, DistributedDGaussRDP)
        assert mech.shares <= honest_shares and mech.shares == min(honest_shares, t)
        assert mech.sigma == pytest.approx(p.sigma / math.sqrt(t))  # each honest share's size as encoded
