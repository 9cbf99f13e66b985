"""Robust aggregators: one conformance class every aggregator passes, then rule-specific cases."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocols.robust as robust
from privagg.errors import ConfigurationError
from protocols.aggregation import AGGREGATORS, Aggregator, ClientUpdate, RoundContext
from protocols.fedavg import DataConfig, FedAvgSimulation, FederationConfig, ModelConfig, RunConfig


def ctx(n: int, *, seed: int = 0, d: int | None = None) -> RoundContext:
    return RoundContext.everyone(n, rng=np.random.default_rng(seed), global_params=None if d is None else np.zeros(d))


def ups(x: np.ndarray, ids: list[int] | None = None, sizes: list[int] | None = None) -> list[ClientUpdate]:
    ids = list(range(len(x))) if ids is None else ids
    sizes = [10] * len(x) if sizes is None else sizes
    return [
        ClientUpdate(client_id=i, delta=np.array(v, dtype=np.float64), num_examples=s) for i, v, s in zip(ids, x, sizes)
    ]


def honest_cloud(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1.0 + 0.1 * rng.standard_normal((n, d))


# ---------------------------------------------------------------------------------------------
# Conformance
# ---------------------------------------------------------------------------------------------


class AggregatorConformance:
    """The contract every aggregator honours. Subclasses set ``name`` and ``options``.

    ``robust``: the aggregator documents a Byzantine bound (``max_byzantine``) and accepts
    ``num_byzantine``. Noise is switched off through ``options`` where a rule adds it, so
    that "equals the mean" is exact.
    """

    name: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    robust: ClassVar[bool] = True
    n: ClassVar[int] = 11
    d: ClassVar[int] = 6

    def make(self, **kw: Any) -> Aggregator:
        agg = AGGREGATORS.get(self.name)(**{**self.options, **kw})
        return agg

    def prepare(self, agg: Aggregator, updates: list[ClientUpdate], honest: np.ndarray | None = None) -> None:
        """FLTrust: the server's root update points where the clean data points (the honest mean)."""
        rule = agg.rule if isinstance(agg, robust.Stack) else agg
        if isinstance(rule, robust.FLTrust):
            ref = np.mean([u.delta for u in updates], axis=0) if honest is None else honest.mean(axis=0)
            rule.root_update = lambda c: ref

    def run(self, agg: Aggregator, updates: list[ClientUpdate], honest: np.ndarray | None = None) -> np.ndarray:
        self.prepare(agg, updates, honest)
        res = agg.aggregate(updates, ctx(len(updates), d=self.d))
        return res.delta

    def test_registered_with_truthful_plaintext_flag(self) -> None:
        factory = AGGREGATORS.get(self.name)
        assert isinstance(factory.needs_plaintext_updates, bool)
        assert robust.secure_aggregation_compatible(self.name) is (not factory.needs_plaintext_updates)

    def test_permutation_invariance(self) -> None:
        x = honest_cloud(self.n, self.d, seed=1)
        x[:2] = -5.0 + np.arange(self.d)  # two outliers, same for both orders
        ids = list(range(100, 100 + self.n))
        perm = np.random.default_rng(2).permutation(self.n)
        a = self.run(self.make(), ups(x, ids))
        b = self.run(self.make(), ups(x[perm], [ids[i] for i in perm]))
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)

    def test_identical_honest_inputs_give_the_mean(self) -> None:
        v = np.linspace(-0.3, 0.4, self.d)
        x = np.tile(v, (self.n, 1))
        out = self.run(self.make(), ups(x))
        np.testing.assert_allclose(out, v, rtol=1e-9, atol=1e-12)

    def test_shape_dtype_contract(self) -> None:
        x = honest_cloud(self.n, self.d, seed=3).astype(np.float32)
        updates = ups(x)
        self.prepare(agg := self.make(), updates)
        res = agg.aggregate(updates, ctx(self.n, d=self.d))
        assert res.delta.shape == (self.d,)
        assert res.delta.dtype == np.float64
        assert np.all(np.isfinite(res.delta))
        assert set(res.participants) <= {u.client_id for u in updates}
        assert len(set(res.participants)) == len(res.participants)
        for u, row in zip(updates, x):  # inputs untouched
            np.testing.assert_array_equal(u.delta, row)

    def test_empty_input_is_a_clear_error(self) -> None:
        with pytest.raises(ConfigurationError, match="no client updates"):
            self.make().aggregate([], ctx(0))

    def test_mismatched_shapes_are_a_clear_error(self) -> None:
        updates = ups(honest_cloud(self.n, self.d, seed=4))
        updates[3] = ClientUpdate(client_id=3, delta=np.zeros(self.d + 1), num_examples=10)
        with pytest.raises(ConfigurationError, match="shape"):
            self.make().aggregate(updates, ctx(self.n))

    def test_duplicate_clients_are_a_clear_error(self) -> None:
        updates = ups(honest_cloud(4, self.d, seed=5), ids=[1, 2, 2, 3])
        with pytest.raises(ConfigurationError, match="duplicate"):
            self.make().aggregate(updates, ctx(4))

    def test_handles_f_up_to_its_bound(self) -> None:
        if not self.robust:
            pytest.skip("no Byzantine bound: the plain mean tolerates no Byzantine client")
        f = AGGREGATORS.get(self.name).max_byzantine(self.n)
        assert 0 <= f < self.n
        honest = honest_cloud(self.n - f, self.d, seed=6)
        bad = np.tile(np.full(self.d, 1e4), (f, 1))  # colluding outliers, far away
        x = np.vstack([bad, honest])
        out = self.run(self.make(num_byzantine=f), ups(x), honest=honest)
        assert np.all(np.isfinite(out))
        # the aggregate stays within the honest range's scale, far from the outliers
        assert np.linalg.norm(out) <= 3 * np.linalg.norm(honest, axis=1).max()

    def test_refuses_f_beyond_its_bound(self) -> None:
        if not self.robust:
            pytest.skip("no num_byzantine option")
        f = AGGREGATORS.get(self.name).max_byzantine(self.n)
        x = honest_cloud(self.n, self.d, seed=7)
        agg = self.make(num_byzantine=f + 1)
        with pytest.raises(ConfigurationError, match="tolerates at most") as e:
            self.run(agg, ups(x))
        assert e.value.field == "num_byzantine"

    def test_rejects_negative_f(self) -> None:
        if not self.robust:
            pytest.skip("no num_byzantine option")
        with pytest.raises(ConfigurationError):
            self.make(num_byzantine=-1)


class TestMean(AggregatorConformance):
    name = "mean"
    robust = False


class TestMedian(AggregatorConformance):
    name = "median"


class TestTrimmedMean(AggregatorConformance):
    name = "trimmed-mean"


class TestKrum(AggregatorConformance):
    name = "krum"


class TestMultiKrum(AggregatorConformance):
    name = "multi-krum"


class TestBulyan(AggregatorConformance):
    name = "bulyan"


class TestGeometricMedian(AggregatorConformance):
    name = "geometric-median"


class TestCenteredClipping(AggregatorConformance):
    name = "centered-clipping"


class TestNormBound(AggregatorConformance):
    name = "norm-bound"
    options: ClassVar[dict[str, Any]] = {"norm_bound": 10.0, "noise_multiplier": 0.0}


class TestFLTrust(AggregatorConformance):
    name = "fltrust"


class TestTrimmedFLTrust(AggregatorConformance):
    name = "fltrust-trim"


class TestFoolsGold(AggregatorConformance):
    name = "foolsgold"


class TestFLAME(AggregatorConformance):
    name = "flame"
    options: ClassVar[dict[str, Any]] = {"noise_lambda": 0.0}


_NOISELESS: dict[str, dict[str, Any]] = {
    "norm-bound": dict(TestNormBound.options),
    "flame": dict(TestFLAME.options),
}


def _stack_conformance(name: str) -> type[AggregatorConformance]:
    rule = name.split("+")[-1]
    attrs = {"name": name, "options": _NOISELESS.get(rule, {}), "__module__": __name__}
    return type("TestStack_" + name.replace("+", "_").replace("-", "_"), (AggregatorConformance,), attrs)


# every registered stack (nnm+krum, bucketing+median, arc+nnm+flame, ...) is held by the same contract
for _name in robust.defense_stacks():
    _cls = _stack_conformance(_name)
    globals()[_cls.__name__] = _cls


def test_every_registered_robust_aggregator_has_a_conformance_class() -> None:
    covered = {c.name for c in AggregatorConformance.__subclasses__()}
    assert set(robust.robust_aggregators()) | {"mean"} <= covered
    assert set(robust.defense_stacks()) <= covered
    stackable = [n for n in robust.robust_aggregators() if AGGREGATORS.get(n).stackable]
    assert stackable == [n for n in robust.robust_aggregators() if n != "foolsgold"]
    assert len(robust.defense_stacks()) == len(robust.STACK_PREFIXES) * len(stackable)


# ---------------------------------------------------------------------------------------------
# Rule-specific cases (tiny, known answers)
# ---------------------------------------------------------------------------------------------


def test_bounds_and_secagg_flags() -> None:
    assert robust.max_byzantine("krum", 7) == 2 and robust.max_byzantine("krum", 6) == 1
    assert robust.max_byzantine("bulyan", 7) == 1 and robust.max_byzantine("bulyan", 11) == 2
    assert robust.max_byzantine("median", 5) == 2
    assert robust.max_byzantine("fltrust", 5) == 4
    assert robust.max_byzantine("mean", 5) == 0
    assert robust.secure_aggregation_compatible("mean")
    assert robust.secure_aggregation_compatible("norm-bound")
    assert robust.byzantine_bound("mean", 5) is None and robust.byzantine_bound("krum", 7) == 2
    for name in set(robust.robust_aggregators()) - {"norm-bound"}:
        assert not robust.secure_aggregation_compatible(name), name


def test_too_few_clients_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least 3 clients"):
        robust.Krum(num_byzantine=0).aggregate(ups(np.ones((2, 3))), ctx(2))
    with pytest.raises(ConfigurationError, match="needs n >= 7"):
        robust.Bulyan(num_byzantine=1).aggregate(ups(np.ones((6, 3))), ctx(6))


def test_non_finite_updates_are_rejected() -> None:
    x = np.ones((5, 3))
    x[2, 1] = np.nan
    with pytest.raises(ConfigurationError, match="non-finite"):
        robust.CoordinateMedian().aggregate(ups(x), ctx(5))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=3, max_size=9))
def test_median_and_trimmed_mean_match_numpy(vals: list[float]) -> None:
    x = np.array(vals)[:, None] * np.array([[1.0, -2.0]])
    n = len(vals)
    med = robust.CoordinateMedian().aggregate(ups(x), ctx(n)).delta
    np.testing.assert_allclose(med, np.median(x, axis=0))
    b = (n - 1) // 2
    tm = robust.TrimmedMean(num_byzantine=b).aggregate(ups(x), ctx(n)).delta
    np.testing.assert_allclose(tm, np.sort(x, axis=0)[b : n - b].mean(axis=0), atol=1e-9)


def test_trimmed_mean_known_answer() -> None:
    x = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    out = robust.TrimmedMean(num_byzantine=1).aggregate(ups(x), ctx(5)).delta
    np.testing.assert_allclose(out, [3.0])


def test_krum_picks_the_central_update_and_multi_krum_averages_the_best() -> None:
    x = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [0.05, 0.05], [9.0, 9.0], [-9.0, 9.0]])
    res = robust.Krum(num_byzantine=2).aggregate(ups(x), ctx(7))
    assert res.participants == (4,)
    np.testing.assert_allclose(res.delta, [0.05, 0.05])
    mk = robust.MultiKrum(num_byzantine=2).aggregate(ups(x), ctx(7))
    assert set(mk.participants) == {0, 1, 2, 3, 4}
    np.testing.assert_allclose(mk.delta, x[:5].mean(axis=0))


def test_bulyan_discards_outliers() -> None:
    rng = np.random.default_rng(0)
    honest = rng.normal(0.0, 0.1, size=(9, 4))
    x = np.vstack([honest, np.full((1, 4), 50.0), np.full((1, 4), -50.0)])
    res = robust.Bulyan(num_byzantine=2).aggregate(ups(x), ctx(11))
    assert not {9, 10} & set(res.participants)
    assert np.abs(res.delta).max() < 0.3
    # identical colluding outliers can slip through the Krum stage; the trimmed stage removes them
    x2 = np.vstack([honest, np.full((2, 4), 50.0)])
    assert np.abs(robust.Bulyan(num_byzantine=2).aggregate(ups(x2), ctx(11)).delta).max() < 0.3


def test_geometric_median_of_collinear_points_is_the_middle() -> None:
    x = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [100.0, 100.0]])
    out = robust.GeometricMedian(tol=1e-10, max_iter=1000).aggregate(ups(x), ctx(5)).delta
    np.testing.assert_allclose(out, [2.0, 2.0], atol=1e-3)


def test_centered_clipping_fixed_radius_and_momentum() -> None:
    x = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [100.0, 0.0]])
    cc = robust.CenteredClipping(tau=0.5, iterations=1)
    out = cc.aggregate(ups(x), ctx(4)).delta
    np.testing.assert_allclose(out, [0.5, 0.0])  # every difference clipped to 0.5 from the centre 0
    out2 = cc.aggregate(ups(x), ctx(4)).delta  # the centre moved to the last aggregate
    np.testing.assert_allclose(out2, [1.0, 0.0])


def test_norm_bound_clips_and_adds_seeded_noise() -> None:
    x = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    nb = robust.NormBound(norm_bound=1.0)
    res = nb.aggregate(ups(x), ctx(3))
    np.testing.assert_allclose(res.delta, (np.array([0.6, 0.8]) + np.array([0.3, 0.4])) / 3)
    assert res.metrics["clipped"] == 1
    # server does not clip (secure aggregation: clients clipped): plain mean
    off = robust.NormBound(norm_bound=1.0, clip_on_server=False).aggregate(ups(x), ctx(3)).delta
    np.testing.assert_allclose(off, x.mean(axis=0))
    np.testing.assert_allclose(nb.clip(np.array([3.0, 4.0])), [0.6, 0.8])
    # noise: std = z * M / n per coordinate; seeded, tolerance 10% on 20,000 draws
    big = ups(np.zeros((4, 20_000)))
    noisy = robust.NormBound(norm_bound=2.0, noise_multiplier=0.5).aggregate(big, ctx(4, seed=1)).delta
    assert abs(noisy.std() - 0.5 * 2.0 / 4) < 0.1 * 0.25
    again = robust.NormBound(norm_bound=2.0, noise_multiplier=0.5).aggregate(big, ctx(4, seed=1)).delta
    np.testing.assert_array_equal(noisy, again)


def test_fltrust_trusts_by_direction_and_needs_a_root_update() -> None:
    g0 = np.array([1.0, 0.0])
    x = np.array([[2.0, 0.0], [0.0, 3.0], [-5.0, 0.0], [1.0, 1.0]])
    res = robust.FLTrust(root_update=lambda c: g0).aggregate(ups(x), ctx(4))
    trust = res.metrics["trust"]
    assert trust[1] == 0.0 and trust[2] == 0.0 and trust[0] == pytest.approx(1.0)
    # (1*[1,0] + cos45*[1,1]/sqrt2) / (1 + cos45)
    c = np.sqrt(0.5)
    np.testing.assert_allclose(res.delta, (np.array([1.0, 0.0]) + c * np.array([c, c])) / (1 + c))
    assert set(res.participants) == {0, 3}
    with pytest.raises(ConfigurationError, match="root update"):
        robust.FLTrust().aggregate(ups(x), ctx(4))
    with pytest.raises(ConfigurationError, match="shape"):
        robust.FLTrust(root_update=lambda c: np.zeros(3)).aggregate(ups(x), ctx(4))


def test_foolsgold_zeroes_sybils_and_keeps_diverse_clients() -> None:
    rng = np.random.default_rng(0)
    honest = rng.normal(size=(5, 20))
    sybil = rng.normal(size=20)
    x = np.vstack([honest, np.tile(sybil, (3, 1)) + 1e-6 * rng.normal(size=(3, 20))])
    fg = robust.FoolsGold()
    res = fg.aggregate(ups(x), ctx(8))
    w = np.array(res.metrics["weights"])
    assert np.all(w[5:] == 0.0)
    assert np.all(w[:5] > 0.0)
    assert set(res.participants) == set(range(5))


def test_flame_excludes_the_minority_cluster_and_clips_to_the_median_norm() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=30)
    honest = base + 0.2 * rng.normal(size=(7, 30))
    bad = -3 * base + 0.2 * rng.normal(size=(3, 30))
    x = np.vstack([honest, bad])
    res = robust.FLAME(noise_lambda=0.0).aggregate(ups(x), ctx(10))
    admitted = set(res.participants)
    assert admitted <= set(range(7)) and len(admitted) >= 10 // 2 + 1  # HDBSCAN may call an honest edge point noise
    s = np.median(np.linalg.norm(x, axis=1))
    assert res.metrics["clip_bound"] == pytest.approx(s)
    assert np.linalg.norm(res.delta) <= s + 1e-9
    noisy = robust.FLAME(noise_lambda=0.01).aggregate(ups(x), ctx(10, seed=3)).delta
    assert not np.allclose(noisy, res.delta)


def test_invalid_options_are_configuration_errors() -> None:
    for make in (
        lambda: robust.TrimmedMean(trim=-1),
        lambda: robust.MultiKrum(m=0),
        lambda: robust.GeometricMedian(nu=0.0),
        lambda: robust.CenteredClipping(tau=-1.0),
        lambda: robust.CenteredClipping(iterations=0),
        lambda: robust.NormBound(norm_bound=0.0),
        lambda: robust.NormBound(noise_multiplier=-1.0),
        lambda: robust.FoolsGold(kappa=0.0),
        lambda: robust.FLAME(noise_lambda=-1.0),
    ):
        with pytest.raises(ConfigurationError):
            make()
    with pytest.raises(ConfigurationError, match="cannot trim"):
        robust.TrimmedMean(num_byzantine=0, trim=3).aggregate(ups(np.ones((5, 2))), ctx(5))


# ---------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    st.integers(3, 9).flatmap(
        lambda n: st.tuples(
            st.lists(st.lists(st.floats(-50, 50), min_size=3, max_size=3), min_size=n, max_size=n),
            st.lists(st.floats(0.01, 5.0), min_size=n, max_size=n),
            st.integers(0, (n - 1) // 2),
        )
    )
)
def test_weighted_trimmed_mean_stays_in_the_kept_range_and_is_the_trimmed_mean_at_equal_weights(
    case: tuple[list[list[float]], list[float], int],
) -> None:
    rows, weights, trim = case
    x, w = np.array(rows), np.array(weights)
    out = robust.weighted_trimmed_mean(x, w, trim)
    s = np.sort(x, axis=0)
    n = len(x)
    assert np.all(out >= s[trim] - 1e-9) and np.all(out <= s[n - 1 - trim] + 1e-9)
    np.testing.assert_allclose(robust.weighted_trimmed_mean(x, np.ones(n), trim), s[trim : n - trim].mean(axis=0))
    with pytest.raises(ConfigurationError, match="cannot trim"):
        robust.weighted_trimmed_mean(x, w, (n + 1) // 2)


def test_weighted_trimmed_mean_known_answer() -> None:
    x = np.array([[0.0, 10.0], [1.0, -3.0], [2.0, 1.0], [100.0, 2.0]])
    w = np.array([1.0, 1.0, 3.0, 1.0])
    # column 0 keeps 1 (w 1) and 2 (w 3); column 1 keeps 1 (w 3) and 2 (w 1)
    np.testing.assert_allclose(robust.weighted_trimmed_mean(x, w, 1), [(1 + 6) / 4, (3 + 2) / 4])


@given(
    st.integers(3, 9).flatmap(
        lambda n: st.tuples(
            st.lists(st.lists(st.floats(-50, 50), min_size=3, max_size=3), min_size=n, max_size=n),
            st.lists(st.floats(0.01, 5.0), min_size=n, max_size=n),
            st.integers(0, n - 1),
            st.lists(st.floats(-60, 60), min_size=3, max_size=3),
        )
    )
)
def test_root_trimmed_mean_keeps_the_values_nearest_the_reference(
    case: tuple[list[list[float]], list[float], int, list[float]],
) -> None:
    rows, weights, drop, reference = case
    x, w, ref = np.array(rows), np.array(weights), np.array(reference)
    n = len(x)
    out = robust.root_trimmed_mean(x, w, drop, ref)
    for j in range(x.shape[1]):  # brute force: the n - drop rows nearest ref[j], the earlier row on a tie
        near = sorted(range(n), key=lambda i: (abs(x[i, j] - ref[j]), i))[: n - drop]
        np.testing.assert_allclose(out[j], np.average(x[near, j], weights=w[near]), rtol=1e-9, atol=1e-9)
    for bad in (n, -1):
        with pytest.raises(ConfigurationError, match="cannot drop"):
            robust.root_trimmed_mean(x, w, bad, ref)
    with pytest.raises(ConfigurationError, match="shape"):
        robust.root_trimmed_mean(x, w, drop, ref[:2])


def test_root_trimmed_mean_known_answer_differs_from_the_symmetric_trim() -> None:
    x = np.array([[0.0, 5.0], [1.0, -5.0], [2.0, 0.0], [3.0, 1.0], [4.0, 2.0]])
    np.testing.assert_allclose(robust.root_trimmed_mean(x, np.ones(5), 2, np.array([4.0, -4.0])), [3.0, -4.0 / 3])
    np.testing.assert_allclose(robust.root_trimmed_mean(x, np.ones(5), 1, np.array([4.0, -4.0])), [2.5, -0.5])
    np.testing.assert_allclose(robust.weighted_trimmed_mean(x, np.ones(5), 1), [2.0, 1.0])


def test_fltrust_trim_around_root_drops_what_is_far_from_the_root_update() -> None:
    """Honest values skewed to one side of a coordinate: the symmetric trim keeps the middle, the
    root-centred one the values the root update agrees with, dropping f in all (not f per side)."""
    g0 = np.array([1.0, 1.0, 1.0, 0.0])
    x = np.tile(g0, (9, 1))
    x[:, 3] = [0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 3.0, 4.0, 5.0]  # trust (cosine to g0) unaffected by coordinate 3's sign
    sym = robust.TrimmedFLTrust(root_update=lambda c: g0, num_byzantine=2, untrimmed_share=0.0)  # the default
    rooted = robust.TrimmedFLTrust(root_update=lambda c: g0, num_byzantine=2, untrimmed_share=0.0, around_root=True)
    a, b = sym.aggregate(ups(x), ctx(9)), rooted.aggregate(ups(x), ctx(9))
    scaled = x * (np.linalg.norm(g0) / np.linalg.norm(x, axis=1))[:, None]
    w = np.array(a.metrics["trust"])
    np.testing.assert_allclose(a.delta, robust.weighted_trimmed_mean(scaled, w, 2))
    np.testing.assert_allclose(b.delta, robust.root_trimmed_mean(scaled, w, 2, g0))
    assert a.metrics["trim"] == 2 and b.metrics["trim"] == 2  # t per side, against f in all
    assert b.delta[3] < a.delta[3]  # the zeros (what the root update says) weigh more
    few = rooted.aggregate(ups(np.vstack([x[:2], -g0])), ctx(3))  # two trusted: f capped so that one value stays
    assert few.metrics["trust"][2] == 0 and few.metrics["trim"] == 1
    with pytest.raises(ConfigurationError, match="around_root"):
        robust.TrimmedFLTrust(around_root=1)  # type: ignore[arg-type]


@given(
    st.integers(1, 9).flatmap(
        lambda n: st.tuples(
            st.lists(st.lists(st.integers(-20, 20), min_size=3, max_size=3), min_size=n, max_size=n),
            st.lists(st.integers(1, 5), min_size=n, max_size=n),
        )
    )
)
def test_weighted_median_is_the_midpoint_of_the_weighted_l1_minimisers(case: tuple[list[list[int]], list[int]]) -> None:
    """Brute force on exact (integer) inputs: sum_i w_i |x_i - v| is piecewise linear with its minimum
    at data points, so the minimisers are [lo, hi] with lo, hi the smallest and largest minimising value."""
    rows, weights = case
    x, w = np.array(rows, dtype=np.float64), np.array(weights, dtype=np.float64)
    out = robust.weighted_median(x, w)
    for j in range(x.shape[1]):
        cost = {float(v): float(np.sum(w * np.abs(x[:, j] - v))) for v in x[:, j]}
        best = min(cost.values())
        argmin = [v for v, c in cost.items() if c == best]
        assert out[j] == (min(argmin) + max(argmin)) / 2
    np.testing.assert_allclose(robust.weighted_median(x, np.ones(len(x))), np.median(x, axis=0))


def test_weighted_median_and_trim_reference_known_answers_and_refusals() -> None:
    x = np.array([[0.0, 4.0], [1.0, -2.0], [2.0, -1.0], [9.0, 3.0]])
    np.testing.assert_allclose(robust.weighted_median(x, np.ones(4)), [1.5, 1.0])
    # weights 1 1 3 1: half is 3; column 0 sorted 0 1 2 9 reaches 5 >= 3 at 2 from both ends -> 2;
    # column 1 sorted -2 -1 3 4 (weights 1 3 1 1): from below 4 >= 3 at -1, from above 5 >= 3 at -1
    np.testing.assert_allclose(robust.weighted_median(x, np.array([1.0, 1.0, 3.0, 1.0])), [2.0, -1.0])
    root = np.array([-5.0, 7.0])
    np.testing.assert_allclose(robust.trim_reference("root", x, np.ones(4), root), root)
    np.testing.assert_allclose(robust.trim_reference("median", x, np.ones(4), root), [1.5, 1.0])
    # blend: the root's value where root and median have the same strict sign, else the median's
    np.testing.assert_allclose(robust.trim_reference("blend", x, np.ones(4), root), [1.5, 7.0])
    np.testing.assert_allclose(robust.trim_reference("blend", x, np.ones(4), np.array([0.0, 0.5])), [1.5, 0.5])
    with pytest.raises(ConfigurationError, match="one of"):
        robust.trim_reference("mean", x, np.ones(4), root)
    for bad in (np.array([1.0, 0.0, 1.0, 1.0]), np.ones(3)):
        with pytest.raises(ConfigurationError, match="positive weights"):
            robust.weighted_median(x, bad)


def test_fltrust_trim_centred_on_the_median_is_not_led_by_a_noisy_root_update() -> None:
    """The root update is off on coordinate 3 (noise): centred on it, the trim keeps the minority
    near it; centred on the trusted median, the majority; the blend falls back to the median there
    (signs differ) and follows the root on coordinate 0 (signs agree)."""
    g0 = np.array([1.0, 1.0, 1.0, -0.5])
    x = np.tile([1.0, 1.0, 1.0, 0.0], (9, 1))
    x[:, 0] = [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
    x[:, 3] = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, -0.5, -0.6]
    scaled = x * (np.linalg.norm(g0) / np.linalg.norm(x, axis=1))[:, None]
    out = {}
    for centre in ("none", "root", "median", "blend"):
        agg = robust.TrimmedFLTrust(root_update=lambda c: g0, num_byzantine=2, untrimmed_share=0.0, trim_centre=centre)
        res = agg.aggregate(ups(x), ctx(9))
        w = np.array(res.metrics["trust"])
        assert np.all(w > 0) and res.metrics["trim"] == 2  # f per side (none) or f in all
        if centre != "none":
            ref = robust.trim_reference(centre, scaled, w, g0)
            np.testing.assert_allclose(res.delta, robust.root_trimmed_mean(scaled, w, 2, ref))
        out[centre] = res.delta
    assert out["root"][3] < scaled[:7, 3].min() <= out["median"][3]  # the root keeps the two negatives, the median none
    np.testing.assert_allclose(out["blend"][3], out["median"][3])
    assert out["blend"][0] > out["median"][0]  # near the root's (larger) value where the signs agree
    alias = robust.TrimmedFLTrust(root_update=lambda c: g0, num_byzantine=2, untrimmed_share=0.0, around_root=True)
    assert alias.trim_centre == "root" and alias.around_root
    np.testing.assert_allclose(alias.aggregate(ups(x), ctx(9)).delta, out["root"])
    for bad in ("mean", "", None):
        with pytest.raises(ConfigurationError, match="trim_centre"):
            robust.TrimmedFLTrust(trim_centre=bad)
    with pytest.raises(ConfigurationError, match="trim_centre"):
        robust.TrimmedFLTrust(around_root=True, trim_centre="median")
    assert robust.TrimmedFLTrust(around_root=True, trim_centre="root").trim_centre == "root"
    policy = robust.ServerPolicy(num_byzantine=2)
    stacked = robust.build_defense("history+support+fltrust-trim", {"trim_centre": "blend"}, policy)
    assert isinstance(stacked, robust.Stack) and isinstance(stacked.rule, robust.TrimmedFLTrust)
    assert stacked.rule.trim_centre == "blend"
    assert stacked.rule.around_root is False


def test_fltrust_trim_removes_what_aligned_colluders_add_where_fltrust_keeps_it() -> None:
    """Four colluders with an honest cosine to the root update (so an honest trust score) push one
    coordinate the honest updates leave alone: FLTrust moves it by their trust share, the trim not at all."""
    rng = np.random.default_rng(3)
    d, g0 = 8, np.zeros(8)
    g0[:4] = 1.0
    honest = np.tile(g0, (12, 1)) + 0.6 * rng.standard_normal((12, d))
    honest[:, 7] = 0.05 * rng.standard_normal(12)  # the backdoor's coordinate: honest updates hardly move it
    bad = np.tile(0.5 * g0, (4, 1)) + 0.1 * rng.standard_normal((4, d))
    bad[:, 7] = 2.0
    x = np.vstack([honest, bad])
    plain = robust.FLTrust(root_update=lambda c: g0, num_byzantine=4).aggregate(ups(x), ctx(16))
    sym = robust.TrimmedFLTrust(root_update=lambda c: g0, num_byzantine=4)
    trimmed = sym.aggregate(ups(x), ctx(16))
    rooted = robust.TrimmedFLTrust(root_update=lambda c: g0, num_byzantine=4, around_root=True).aggregate(
        ups(x), ctx(16)
    )
    assert abs(rooted.delta[7]) <= np.abs(honest[:, 7]).max() and rooted.metrics["trim"] == 4
    trust = np.array(plain.metrics["trust"])
    assert trust[12:].min() > np.median(trust[:12]) * 0.5  # the colluders are trusted like honest clients
    assert plain.delta[7] > 0.25
    assert abs(trimmed.delta[7]) <= np.abs(honest[:, 7]).max() and trimmed.metrics["trim"] == 4
    np.testing.assert_array_equal(trimmed.metrics["trust"], plain.metrics["trust"])
    assert trimmed.metrics["untrimmed"] == 0  # g0's largest |values| tie: none is above its 95% quantile
    # the trim is f, capped so that one trusted value per coordinate stays
    few = sym.aggregate(ups(x[:5]), ctx(5))
    assert few.metrics["trim"] == 2


def test_fltrust_trim_keeps_the_mean_where_the_root_update_moves_most() -> None:
    rng = np.random.default_rng(5)
    d = 40
    g0 = np.linspace(0.01, 1.0, d)  # coordinate d-1 moves most, then d-2, ...
    x = np.tile(g0, (10, 1)) + rng.standard_normal((10, d))
    fl = robust.FLTrust(root_update=lambda c: g0, num_byzantine=3).aggregate(ups(x), ctx(10))
    share = robust.TrimmedFLTrust(root_update=lambda c: g0, num_byzantine=3, untrimmed_share=0.1)
    res = share.aggregate(ups(x), ctx(10))
    none = robust.TrimmedFLTrust(root_update=lambda c: g0, num_byzantine=3, untrimmed_share=0.0).aggregate(
        ups(x), ctx(10)
    )
    top = np.abs(g0) > np.quantile(np.abs(g0), 0.9)
    assert res.metrics["untrimmed"] == int(top.sum()) == 4 and none.metrics["untrimmed"] == 0
    np.testing.assert_allclose(res.delta[top], fl.delta[top])
    np.testing.assert_allclose(res.delta[~top], none.delta[~top])
    assert not np.allclose(none.delta[top], fl.delta[top])
    everything = robust.TrimmedFLTrust(root_update=lambda c: g0, num_byzantine=3, untrimmed_share=1.0)
    np.testing.assert_allclose(everything.aggregate(ups(x), ctx(10)).delta, fl.delta)
    for bad in (-0.1, 1.5):
        with pytest.raises(ConfigurationError, match="untrimmed_share"):
            robust.TrimmedFLTrust(untrimmed_share=bad)
    st = robust.build_defense("history+support+fltrust-trim", {"root_passes": 3}, robust.ServerPolicy(num_byzantine=2))
    assert isinstance(st, robust.Stack) and isinstance(st.rule, robust.TrimmedFLTrust)
    assert st.rule.root_passes == 3 and st.rule.untrimmed_share == 0.05 and st.rule.around_root is False
    assert st.rule.trim_centre == "none"


# Built for a deployment: the server policy, and setting up on a simulation
# ---------------------------------------------------------------------------------------------


def test_robust_rules_are_listed_from_the_registry_in_definition_order() -> None:
    names = robust.robust_aggregators()
    assert names[:3] == ("median", "trimmed-mean", "krum") and names[-1] == "flame"
    assert "mean" not in names and len(set(names)) == len(names) == 12
    for n in names:
        factory = AGGREGATORS.get(n)
        assert isinstance(factory, type) and issubclass(factory, robust.RobustAggregator)


def test_server_policy_validation() -> None:
    for bad in ({"num_byzantine": -1}, {"norm_bound": 0.0}, {"noise_multiplier": -0.1}, {"root_size": 0}):
        with pytest.raises(ConfigurationError):
            robust.ServerPolicy(**bad)  # type: ignore[arg-type]


def test_build_defense_takes_what_each_rule_declares_from_the_policy() -> None:
    policy = robust.ServerPolicy(num_byzantine=2, norm_bound=3.0, noise_multiplier=0.2, root_size=7)
    krum = robust.build_defense("krum", {}, policy)
    assert isinstance(krum, robust.Krum) and krum.num_byzantine == 2
    assert robust.build_defense("krum", {"num_byzantine": 1}, policy).num_byzantine == 1  # type: ignore[attr-defined]
    nb = robust.build_defense("norm-bound", {}, policy)
    assert isinstance(nb, robust.NormBound)
    assert (nb.num_byzantine, nb.norm_bound, nb.noise_multiplier, nb.clip_on_server) == (2, 3.0, 0.2, True)
    fl = robust.build_defense("fltrust", {}, policy)
    assert isinstance(fl, robust.FLTrust) and fl.root_size == 7 and fl.num_byzantine == 2
    mean = robust.build_defense("mean", {}, policy)  # not a robust rule: it needs nothing from the policy
    assert mean.name == "mean"
    with pytest.raises(ConfigurationError, match="unknown option") as e:
        robust.build_defense("median", {"nope": 1}, policy)
    assert e.value.field == "defense_options.median.nope"
    with pytest.raises(ConfigurationError, match=r"defense_options\.mean\.nope"):
        robust.build_defense("mean", {"nope": 1}, policy)


def test_typed_options_validate_a_configuration_table() -> None:
    from protocols.aggregation import build_aggregator

    krum = build_aggregator("multi-krum", {"num_byzantine": 2, "m": 3})
    assert isinstance(krum, robust.MultiKrum) and (krum.num_byzantine, krum.m) == (2, 3)
    assert isinstance(krum.options, robust.MultiKrumOptions)
    assert robust.NormBound(robust.NormBoundOptions(norm_bound=2.0), noise_multiplier=0.5).options == (
        robust.NormBoundOptions(norm_bound=2.0, noise_multiplier=0.5)
    )
    with pytest.raises(ConfigurationError) as e:
        build_aggregator("trimmed-mean", {"trim": -1})
    assert e.value.field == "aggregation.options.trim"
    with pytest.raises(ConfigurationError) as e:
        build_aggregator("flame", {"noise_lambda": "loud"})
    assert e.value.field == "aggregation.options.noise_lambda"


def _first_round(sim: FedAvgSimulation) -> RoundContext:
    """Round 1 of a 4-client simulation, every client sampled, seeded."""
    return RoundContext.everyone(4, rng=np.random.default_rng(0), global_params=sim.global_params.copy())


def _sim(num_clients: int = 4) -> FedAvgSimulation:
    cfg = RunConfig(
        data=DataConfig(num_clients=num_clients),
        model=ModelConfig(name="logreg"),
        federation=FederationConfig(rounds=1),
    )
    return FedAvgSimulation(cfg)


def test_norm_bound_under_secure_aggregation_has_the_clients_clip() -> None:
    policy = robust.ServerPolicy(norm_bound=1.0, secure_aggregation=True)
    nb = robust.build_defense("norm-bound", {"clip_on_server": True}, policy)
    assert isinstance(nb, robust.NormBound) and nb.clip_on_server is False  # the server only sees the sum
    sim = _sim()
    nb.prepare(sim, deviating=frozenset({1}))
    (hook,) = sim.update_hooks
    out = hook(ups(np.array([[3.0, 4.0]] * 3)), ctx(3), sim)
    np.testing.assert_allclose([u.delta for u in out], [[0.6, 0.8], [3.0, 4.0], [0.6, 0.8]])
    server_side = robust.build_defense("norm-bound", {}, robust.ServerPolicy(norm_bound=1.0))
    other = _sim()
    server_side.prepare(other)
    assert other.update_hooks == []  # the server clips: nothing to install
    robust.build_defense("mean", {}, policy).prepare(other)  # no-op for the plain mean
    assert other.update_hooks == []


def test_fltrust_prepares_its_root_update_on_the_simulation() -> None:
    sim = _sim()
    fl = robust.FLTrust(root_size=20)
    fl.prepare(sim)
    assert fl.root_update is not None
    c = _first_round(sim)
    g0 = fl.root_update(c)
    assert g0.shape == sim.global_params.shape and np.linalg.norm(g0) > 0
    np.testing.assert_array_equal(g0, fl.root_update(c))  # seeded: the same sample and batch order
    given = robust.FLTrust(root_update=lambda ctx: np.zeros(2))
    given.prepare(sim)
    assert given.root_update is not None and not given.root_update(c).any()  # an explicit root update is kept
    with pytest.raises(ConfigurationError):
        robust.FLTrust(root_size=0)


def test_fltrust_root_passes_repeat_the_root_sample_and_lengthen_the_step() -> None:
    from privagg.randomness import simulation_rng

    sim = _sim()
    c = _first_round(sim)
    steps = {}
    for passes in (1, 2, 3):
        fl = robust.FLTrust(root_size=20, root_passes=passes)
        fl.prepare(sim)
        assert fl.root_update is not None
        steps[passes] = fl.root_update(c)
    # the same 20 examples, each seen ``passes`` times per epoch: no more clean data
    ds = sim.dataset
    rng = simulation_rng(sim.config.seed, "fltrust-root", int(sim.config.data.alpha * 1000))
    idx = np.tile(rng.choice(len(ds.y_train), size=20, replace=False), 2)
    want = sim.train_client(4, sim.global_params.copy(), x=ds.x_train[idx], y=ds.y_train[idx], round=1).delta
    np.testing.assert_allclose(steps[2], want)
    norms = [float(np.linalg.norm(steps[p])) for p in (1, 2, 3)]
    assert norms[0] < norms[1] < norms[2]  # more SGD steps on the server: a longer global step
    st = robust.build_defense("history+fltrust", {"root_passes": 2}, robust.ServerPolicy(num_byzantine=2))
    assert isinstance(st, robust.Stack) and isinstance(st.rule, robust.FLTrust) and st.rule.root_passes == 2
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigurationError, match="root_passes"):
            robust.FLTrust(root_passes=bad)
