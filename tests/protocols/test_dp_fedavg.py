"""DP-FedAvg wrapper: clipping, sensitivity under weighting, client/central noise, budget, adaptive clip."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from dp.accounting import Sampling, epsilon_for
from dp.config import DPConfig
from dp.noise import SecureNoise
from privagg.errors import ConfigurationError, PrivacyBudgetExceeded, ProtocolAbort
from privagg.randomness import InsecureDeterministicSecrets
from privagg.report.aggregators import aggregator_sections
from privagg.report.dp import accuracy_cost_section, dp_warnings, sample_level_section
from protocols.aggregation import AggregateResult, ClientUpdate, MeanAggregator, RoundContext, build_aggregator
from protocols.dp_fedavg import DPFedAvg, SampleLevelDP, sampling_from_context, wrap_with_dp


def noise(seed: int = 0) -> SecureNoise:
    return SecureNoise(secrets=InsecureDeterministicSecrets(seed))


def ctx(
    ids: Sequence[int], *, population: int, sampling: str = "poisson", rate: float | None = None, r: int = 1
) -> RoundContext:
    q = rate if rate is not None else len(ids) / population
    return RoundContext(
        round=r,
        population=population,
        sampled=tuple(ids),
        sampling=sampling,
        sampling_rate=q,
        rng=np.random.default_rng(r),
    )


class Recording(MeanAggregator):
    """The plain mean, remembering what it was given (what a server without secagg would see)."""

    def __init__(self) -> None:
        super().__init__(weighted=True)
        self.seen: list[list[ClientUpdate]] = []

    def aggregate(self, updates, ctx):  # type: ignore[no-untyped-def]
        self.seen.append(list(updates))
        return super().aggregate(updates, ctx)


class Dropping(MeanAggregator):
    """The mean over survivors: clients in ``drop`` never deliver (as under secure aggregation dropouts).

    It declares the fewest survivors it releases a sum for (``floor``, default: all but ``drop``),
    as a secure-aggregation threshold does; ``calls`` counts the sums it computed.
    """

    def __init__(self, drop: set[int], floor: int | None = None) -> None:
        super().__init__(weighted=False)
        self.drop = drop
        self.floor = floor
        self.calls = 0

    def min_survivors(self, n: int) -> int:
        return n - len(self.drop) if self.floor is None else self.floor

    def aggregate(self, updates, ctx):  # type: ignore[no-untyped-def]
        self.calls += 1
        alive = [u for u in updates if u.client_id not in self.drop]
        res = super().aggregate(alive, ctx)
        return AggregateResult(delta=res.delta, participants=res.participants)


class Robust(MeanAggregator):
    needs_plaintext_updates = True


def updates(
    n: int, d: int, *, scale: float = 1.0, seed: int = 0, examples: Sequence[int] | None = None
) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)
    ex = examples if examples is not None else [10] * n
    return [ClientUpdate(i, rng.normal(size=d) * scale * (i + 1), int(ex[i])) for i in range(n)]


def test_clipping_bound_holds_for_every_client() -> None:
    inner = Recording()
    agg = DPFedAvg(inner, config=DPConfig(noise_multiplier=1.0, clip_norm=0.3), noise_sampler=noise())
    ups = updates(12, 40, scale=1.0)
    res = agg.aggregate(ups, ctx(range(12), population=100))
    (seen,) = inner.seen
    assert all(np.linalg.norm(u.delta) <= 0.3 for u in seen)  # central noise: inner sees clipped updates
    assert all(u.num_examples == 1 for u in seen)
    # every update was clipped, but the exact clipped fraction is not a DP output
    assert "dp_clipped_fraction" not in res.metrics and agg.ledger.rows()[0]["clipped_fraction"] == "withheld"
    assert res.metrics["dp_clip_norm"] == 0.3


@pytest.mark.parametrize(
    ("sampling", "weighting", "extra", "factor"),
    [
        ("poisson", "uniform", {}, 1.0),
        ("fixed", "uniform", {}, 2.0),
        ("poisson", "capped", {"weight_cap": 40.0, "total_weight": 60.0}, 1.0),
        ("fixed", "capped", {"weight_cap": 40.0}, 2.0),
    ],
)
def test_noise_scale_matches_sensitivity_under_weighting(
    sampling: str, weighting: str, extra: dict, factor: float
) -> None:
    # zero updates: the released delta is pure noise / denominator. Its empirical std over
    # d = 100k coordinates must match z * (factor * C * max_w + g sqrt(d)) / (q W) within 2 %
    # (std error of a std estimate is 1/sqrt(2d) = 0.22 %).
    d, n, pop, z, clip = 100_000, 10, 200, 1.7, 0.4
    ups = [ClientUpdate(i, np.zeros(d), 5 + 10 * i) for i in range(n)]
    agg = DPFedAvg(
        MeanAggregator(),
        config=DPConfig(noise_multiplier=z, clip_norm=clip, weighting=weighting, **extra),  # type: ignore[arg-type]
        noise_sampler=noise(3),
    )
    res = agg.aggregate(ups, ctx(range(n), population=pop, sampling=sampling))
    q = n / pop
    total_weight = extra.get("total_weight", pop)
    sens = factor * clip
    assert res.metrics["dp_sensitivity"] == pytest.approx(sens)
    g = res.metrics["dp_grid"]
    expected_std = z * (sens + g * math.sqrt(d)) / (q * total_weight)
    assert res.delta.std() == pytest.approx(expected_std, rel=0.02)
    assert res.metrics["dp_noise_std_on_mean"] == pytest.approx(expected_std)


def test_weighted_estimate_is_fixed_denominator_sum() -> None:
    # with negligible noise the estimate is sum_k min(n_k/cap, 1) clip(delta_k) / (q W)
    d, pop = 30, 50
    ups = updates(5, d, scale=0.01, examples=[1, 5, 20, 40, 100])
    agg = DPFedAvg(
        MeanAggregator(),
        config=DPConfig(noise_multiplier=1e-7, clip_norm=10.0, weighting="capped", weight_cap=20.0, total_weight=25.0),
        noise_sampler=noise(),
    )
    res = agg.aggregate(ups, ctx(range(5), population=pop))
    w = np.minimum(np.array([1, 5, 20, 40, 100]) / 20.0, 1.0)
    want = (w[:, None] * np.stack([u.delta for u in ups])).sum(0) / (5 / pop * 25.0)
    # exact up to the noise grid: snapping moves each coordinate by <= g/2 before the division
    np.testing.assert_allclose(res.delta, want, atol=res.metrics["dp_grid"] / 2 / res.metrics["dp_denominator"] + 1e-5)
    prv = agg.ledger.epsilon("prv")
    assert math.isinf(prv) or prv > 100


def test_budget_stops_a_round_before_overspending() -> None:
    d, pop = 20, 100
    agg = DPFedAvg(MeanAggregator(), config=DPConfig(noise_multiplier=1.0, budget_epsilon=3.0), noise_sampler=noise())
    done = 0
    with pytest.raises(PrivacyBudgetExceeded):
        for r in range(1, 200):
            agg.aggregate(updates(10, d, seed=r), ctx(range(10), population=pop, r=r))
            done += 1
    s = Sampling.poisson(rate=0.1, population=pop)
    assert len(agg.ledger.entries) == done
    assert epsilon_for(noise_multiplier=1.0, sampling=s, rounds=done, delta=1e-5) <= 3.0
    assert epsilon_for(noise_multiplier=1.0, sampling=s, rounds=done + 1, delta=1e-5) > 3.0


def test_target_epsilon_calibrates_and_never_exceeds() -> None:
    pop, rounds = 100, 8
    agg = DPFedAvg(MeanAggregator(), config=DPConfig(target_epsilon=2.0), rounds=rounds, noise_sampler=noise())
    for r in range(1, rounds + 1):
        res = agg.aggregate(updates(10, 8, seed=r), ctx(range(10), population=pop, r=r))
    assert res.metrics["dp_epsilon_rdp"] <= 2.0
    assert res.metrics["dp_epsilon_rdp"] > 1.9  # calibrated, not wildly over-noised
    with pytest.raises(PrivacyBudgetExceeded):
        agg.aggregate(updates(10, 8), ctx(range(10), population=pop, r=rounds + 1))


def test_the_ledger_keeps_both_accountants_and_the_metrics_the_configured_one() -> None:
    agg = DPFedAvg(MeanAggregator(), config=DPConfig(noise_multiplier=1.2), noise_sampler=noise())
    res = agg.aggregate(updates(4, 8), ctx(range(4), population=4 * 3383 // 120))
    assert "dp_epsilon_prv" not in res.metrics  # PRV (~0.8 s) is computed when asked, not every round
    assert agg.ledger.epsilon("prv") < res.metrics["dp_epsilon_rdp"] == agg.ledger.epsilon("rdp")
    asked = DPFedAvg(MeanAggregator(), config=DPConfig(noise_multiplier=1.2, accountant="prv"), noise_sampler=noise())
    res = asked.aggregate(updates(4, 8), ctx(range(4), population=4 * 3383 // 120))
    assert res.metrics["dp_epsilon_prv"] == asked.ledger.epsilon("prv") < res.metrics["dp_epsilon_rdp"]
    fixed = DPFedAvg(MeanAggregator(), config=DPConfig(noise_multiplier=1.2), noise_sampler=noise())
    res = fixed.aggregate(updates(4, 8), ctx(range(4), population=40, sampling="fixed"))
    assert math.isnan(fixed.ledger.epsilon("prv")) and res.metrics["dp_epsilon_rdp"] > 0


def test_client_side_noise_sum_carries_full_noise() -> None:
    # each of n clients adds a share std^2 / n; the inner (plain mean, standing in for secagg)
    # sees individual shares, and the sum has the full variance (within 3 %, d = 50k)
    d, n, pop, z, clip = 50_000, 8, 80, 1.3, 0.5
    inner = Recording()
    agg = DPFedAvg(inner, config=DPConfig(noise_multiplier=z, clip_norm=clip, noise="client"), noise_sampler=noise(5))
    ups = [ClientUpdate(i, np.zeros(d), 1) for i in range(n)]
    res = agg.aggregate(ups, ctx(range(n), population=pop))
    g = res.metrics["dp_grid"]
    full = z * (clip + g * math.sqrt(d))
    for u in inner.seen[0]:
        assert u.delta.std() == pytest.approx(full / math.sqrt(n), rel=0.03)
    assert (res.delta * (n / pop * pop)).std() == pytest.approx(full, rel=0.03)
    assert res.metrics["dp_noise_multiplier_effective"] == z


def test_client_side_noise_dropouts_reduce_accounted_noise_or_abort() -> None:
    d, n, pop, z = 16, 10, 100, 2.0
    agg = DPFedAvg(Dropping({0, 1}), config=DPConfig(noise_multiplier=z, noise="client"), noise_sampler=noise())
    res = agg.aggregate(updates(n, d), ctx(range(n), population=pop))
    assert res.participants == tuple(range(2, 10))
    assert res.metrics["dp_noise_multiplier_effective"] == z
    assert agg.ledger.entries[-1].noise_multiplier == z
    # honest fraction 0.5: t = 5 shares needed, up to 5 dishonest; 6 survivors -> at least 1 honest
    agg = DPFedAvg(
        Dropping({0, 1, 2, 3}),
        config=DPConfig(noise_multiplier=z, noise="client", honest_fraction=0.5),
        noise_sampler=noise(),
    )
    res = agg.aggregate(updates(n, d), ctx(range(n), population=pop))
    assert res.metrics["dp_noise_multiplier_effective"] == z
    assert res.metrics["dp_noise_std"] == res.metrics["dp_noise_std_planned"]
    # an inner protocol that may release 5 survivors, up to 5 dishonest: no honest noise guaranteed ->
    # refused before the inner aggregation runs, nothing released, nothing recorded
    inner = Dropping({0, 1, 2, 3, 4})
    agg = DPFedAvg(
        inner, config=DPConfig(noise_multiplier=z, noise="client", honest_fraction=0.5), noise_sampler=noise()
    )
    with pytest.raises(ProtocolAbort, match="honest"):
        agg.aggregate(updates(n, d), ctx(range(n), population=pop))
    assert agg.ledger.entries == [] and inner.calls == 0
    # an inner protocol that promised 8 survivors and released 6: recorded truthfully, then withheld
    inner = Dropping({0, 1, 2, 3}, floor=8)
    agg = DPFedAvg(inner, config=DPConfig(noise_multiplier=z, noise="client"), noise_sampler=noise())
    with pytest.raises(ProtocolAbort, match="withheld"):
        agg.aggregate(updates(n, d), ctx(range(n), population=pop))
    assert inner.calls == 1 and agg.ledger.entries[0].noise_multiplier == pytest.approx(z * math.sqrt(6 / 8))


def test_adaptive_clip_moves_the_right_way() -> None:
    pop, n = 400, 100
    big = [ClientUpdate(i, np.full(4, 10.0), 1) for i in range(n)]  # norm 20 >> clip 1: all clipped
    agg = DPFedAvg(
        MeanAggregator(),
        config=DPConfig(noise_multiplier=1.0, clip_norm=1.0, adaptive_clipping=True),
        noise_sampler=noise(),
    )
    clips = [agg.clipper.clip]  # type: ignore[union-attr]
    for r in range(1, 4):
        res = agg.aggregate(big, ctx(range(n), population=pop, r=r))
        clips.append(res.metrics["dp_next_clip_norm"])
    assert clips[0] < clips[1] < clips[2] < clips[3]  # up when most updates are clipped
    # the count's privacy cost is in the accounting: update noise multiplier > the accounted one
    assert res.metrics["dp_update_noise_multiplier"] > res.metrics["dp_noise_multiplier"] == 1.0
    small = [ClientUpdate(i, np.full(4, 1e-3), 1) for i in range(n)]
    agg = DPFedAvg(
        MeanAggregator(),
        config=DPConfig(noise_multiplier=1.0, clip_norm=1.0, adaptive_clipping=True),
        noise_sampler=noise(1),
    )
    res = agg.aggregate(small, ctx(range(n), population=pop))
    assert res.metrics["dp_next_clip_norm"] < 1.0  # down when nearly all pass unclipped


def test_adaptive_with_client_noise_hides_the_count() -> None:
    inner = Recording()
    pop, n = 400, 100
    agg = DPFedAvg(
        inner,
        config=DPConfig(noise_multiplier=1.0, clip_norm=1.0, adaptive_clipping=True, noise="client"),
        noise_sampler=noise(),
    )
    ups = [ClientUpdate(i, np.full(4, 10.0), 1) for i in range(n)]
    res = agg.aggregate(ups, ctx(range(n), population=pop))
    assert all(u.delta.shape == (5,) for u in inner.seen[0])  # the indicator travels inside the sum
    assert res.delta.shape == (4,)
    assert res.metrics["dp_next_clip_norm"] > 1.0


def test_registry_wrap_and_refusals(tmp_path: Path) -> None:
    agg = build_aggregator("dp-fedavg", {"inner": "mean", "dp": {"noise_multiplier": 1.0}})
    assert isinstance(agg, DPFedAvg) and isinstance(agg.inner, MeanAggregator)
    assert isinstance(agg.sampler, SecureNoise) and agg.sampler.secure  # secure noise by default
    agg = build_aggregator(
        "dp-fedavg",
        {"inner": "mean", "inner_options": {"weighted": False}, "dp": {"target_epsilon": 2.0}, "rounds": 4},
    )
    assert isinstance(agg, DPFedAvg) and agg.inner.weighted is False and agg.rounds == 4  # type: ignore[attr-defined]
    with pytest.raises(ConfigurationError) as info:
        build_aggregator("dp-fedavg", {"dp": {"noise_multiplier": -2.0}})
    assert info.value.field == "aggregation.options.dp.noise_multiplier"
    with pytest.raises(ConfigurationError) as info:
        build_aggregator("dp-fedavg", {"inner": "mean"})
    assert info.value.field == "aggregation.options.dp"
    with pytest.raises(ConfigurationError) as info:
        build_aggregator("dp-fedavg", {"noise_multiplier": 1.0})  # the DP settings are a table of their own
    assert info.value.field == "aggregation.options.noise_multiplier"
    with pytest.raises(ConfigurationError) as info:
        build_aggregator("dp-fedavg", {"inner": "nope", "dp": {"noise_multiplier": 1.0}})
    assert info.value.field == "aggregation.options.inner.name"
    wrapped = wrap_with_dp(MeanAggregator(), DPConfig(target_epsilon=2.0, clip_norm=0.2), population=50, rounds=5)
    assert isinstance(wrapped, DPFedAvg) and wrapped.config.clip_norm == 0.2
    assert wrapped.population == 50 and wrapped.rounds == 5
    with pytest.raises(ConfigurationError) as info:
        DPFedAvg(MeanAggregator(), config={"noise_multiplier": 1.0})  # type: ignore[arg-type]
    assert info.value.field == "dp"
    with pytest.raises(ConfigurationError, match="not a"):
        DPFedAvg(Robust(), config=DPConfig(noise_multiplier=1.0))
    with pytest.raises(ConfigurationError):
        DPFedAvg(MeanAggregator(), config=DPConfig(target_epsilon=1.0)).aggregate(
            updates(3, 4), ctx(range(3), population=10)
        )
    with pytest.raises(ConfigurationError, match="prv"):
        DPFedAvg(
            MeanAggregator(), config=DPConfig(target_epsilon=5.0, accountant="prv"), rounds=3, noise_sampler=noise()
        ).aggregate(updates(3, 4), ctx(range(3), population=10, sampling="fixed"))
    agg = DPFedAvg(MeanAggregator(), config=DPConfig(noise_multiplier=1.0), noise_sampler=noise())
    agg.aggregate(updates(3, 4), ctx(range(3), population=10))
    with pytest.raises(ConfigurationError, match="sampling"):
        agg.aggregate(updates(3, 4), ctx(range(3), population=10, sampling="fixed", r=2))
    with pytest.warns(UserWarning, match="public seed"):
        DPFedAvg(MeanAggregator(), config=DPConfig(noise_multiplier=1.0, secure_noise=False, seed=1))


def test_sampling_from_context() -> None:
    s = sampling_from_context(ctx([1, 2], population=10, sampling="fixed"))
    assert s.kind == "fixed" and s.sample_size == 2 and s.population == 10
    p = sampling_from_context(ctx([1], population=10, rate=0.3))
    assert p.kind == "poisson" and p.rate == 0.3


def test_report_sections(tmp_path: Path) -> None:
    agg = DPFedAvg(MeanAggregator(), config=DPConfig(noise_multiplier=1.0, budget_epsilon=50.0), noise_sampler=noise())
    for r in range(1, 4):
        agg.aggregate(updates(5, 6, seed=r), ctx(range(5), population=50, r=r))
    (sec,) = aggregator_sections(agg)  # the inner mean adds no section
    assert sec.key == "dp" and "Client-level" in sec.text
    assert sec.title == "Differential privacy (client-level DP-FedAvg)"
    assert [r["round"] for r in sec.data["ledger"]] == [1, 2, 3] and sec.data["config"]["budget_epsilon"] == 50.0
    assert len(sec.data["ledger"]) == 3 and len(sec.tables[0][2]) == 3
    (fig,) = sec.figures
    fig.draw(tmp_path / fig.filename)
    assert (tmp_path / fig.filename).stat().st_size > 1000


def test_sample_level_dp_trainer_trains_and_accounts() -> None:
    import torch

    from protocols.training import TrainConfig

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = torch.nn.Sequential(torch.nn.Linear(5, 2))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.warns(UserWarning, match="CSPRNG"):
        trainer = SampleLevelDP(noise_multiplier=1.0, max_grad_norm=1.0)
    g = torch.Generator().manual_seed(0)
    trainer(model, x, y, TrainConfig(epochs=2, batch_size=16, lr=0.1), generator=g)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    e1 = trainer.epsilon()
    trainer(model, x, y, TrainConfig(epochs=2, batch_size=16, lr=0.1), generator=g)
    assert 0 < e1 < trainer.epsilon()  # same client data: the two calls compose
    assert len(trainer.accountants) == 1
    assert trainer.epsilons() == [trainer.epsilon()]
    sec = sample_level_section(trainer)
    assert sec.data["epsilon_per_client"] == [trainer.epsilon()] and "single training example" in sec.text
    # Opacus worked on a copy: the caller's model carries no grad-sample hooks afterwards
    assert type(model) is torch.nn.Sequential
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_fedavg_simulation_with_dp_table(tmp_path: Path) -> None:
    # the real loop: RunConfig's [dp] table -> wrap_with_dp -> DP-FedAvg rounds, report sections
    from privagg.config import load_config
    from privagg.report import Report
    from protocols.fedavg import FedAvgSimulation, RunConfig

    base = {"data": {"num_clients": 20}, "model": {"name": "logreg"}, "federation": {"rounds": 2}}
    cfg = load_config(RunConfig, {**base, "dp": {"target_epsilon": 50.0, "clip_norm": 0.5}})
    sim = FedAvgSimulation(cfg)
    assert isinstance(sim.aggregator, DPFedAvg)
    res = sim.run()
    m = res.history[-1].metrics
    assert 0 < m["dp_epsilon_rdp"] <= 50.0 and m["dp_clip_norm"] == 0.5 and m["dp_secure_noise"]
    baseline = FedAvgSimulation(load_config(RunConfig, base)).run()
    report = Report("dp test")
    for sec in [*aggregator_sections(sim.aggregator), accuracy_cost_section(res, baseline)]:
        report.add(sec)
    out = report.write(tmp_path / "report")
    assert (out / "dp_epsilon.png").exists() and (out / "dp_accuracy_cost.png").exists()
    assert "accuracy_cost" in (out / "report.json").read_text()
    cost = accuracy_cost_section(res, baseline)
    assert cost.data["cohorts"] == "secret (OS CSPRNG)" and cost.data["delta_times_population"] == pytest.approx(20e-5)
    # a useless DP run: every update clipped, the model near chance; one line each, naming the knob
    useless = FedAvgSimulation(load_config(RunConfig, {**base, "dp": {"noise_multiplier": 50.0, "clip_norm": 1e-4}}))
    lines = dp_warnings(useless.run(), baseline)
    assert any(("near chance" in w or "accuracy points" in w) and "dp.target_epsilon" in w for w in lines)
    assert any("clips every update" in w and "dp.clip_norm" in w for w in lines)
    assert dp_warnings(baseline, baseline) == []  # a model well above chance, nothing clipped: silent
    with pytest.raises(ConfigurationError) as info:
        FedAvgSimulation(load_config(RunConfig, {**base, "dp": {"noise_multiplier": 0}}))
    assert info.value.field == "dp.noise_multiplier"


def test_client_noise_refuses_an_inner_range_that_would_clip_the_noise() -> None:
    class Ranged(MeanAggregator):
        """A mean whose encoder holds coordinates in [-clip, clip] (like secagg/paillier)."""

        def __init__(self, clip: float) -> None:
            super().__init__(weighted=False)
            self.clip = clip

    ups = updates(10, 50)
    c = ctx(range(10), population=100)
    with pytest.raises(ConfigurationError) as info:
        DPFedAvg(
            Ranged(1.0), config=DPConfig(noise_multiplier=3.0, clip_norm=0.5, noise="client"), noise_sampler=noise()
        ).aggregate(ups, c)
    assert info.value.field == "aggregation.clip"
    # wide enough: accepted; central noise never needs it (the inner sees clipped updates only)
    DPFedAvg(
        Ranged(20.0), config=DPConfig(noise_multiplier=3.0, clip_norm=0.5, noise="client"), noise_sampler=noise()
    ).aggregate(ups, c)
    DPFedAvg(Ranged(1.0), config=DPConfig(noise_multiplier=3.0, clip_norm=0.5), noise_sampler=noise()).aggregate(ups, c)
