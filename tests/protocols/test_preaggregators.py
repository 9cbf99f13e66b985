"""Pre-aggregators (NNM, bucketing, ARC) and defense stacks: known answers, bounds, seeded shuffles.

The shared contract (permutation invariance, bounds, errors) of every registered stack is in
``test_robust.py``'s :class:`AggregatorConformance`; here are the stage-specific facts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocols.robust as robust
from privagg.errors import ConfigurationError
from protocols.aggregation import AGGREGATORS, ClientUpdate, RoundContext, build_aggregator


def ctx(n: int, *, seed: int = 0) -> RoundContext:
    return RoundContext.everyone(n, rng=np.random.default_rng(seed))


def ups(x: np.ndarray, ids: list[int] | None = None) -> list[ClientUpdate]:
    ids = list(range(len(x))) if ids is None else ids
    return [ClientUpdate(client_id=i, delta=np.asarray(v, dtype=np.float64), num_examples=5) for i, v in zip(ids, x)]


def members(n: int) -> list[frozenset[int]]:
    return [frozenset({i}) for i in range(n)]


def test_nnm_known_answer() -> None:
    x = np.array([[0.0], [1.0], [2.0], [10.0]])
    out, mem = robust.NNM().apply(x, members(4), 1, np.random.default_rng(0))
    # n - f = 3 nearest neighbours, itself included
    np.testing.assert_allclose(out[:, 0], [1.0, 1.0, 1.0, 13.0 / 3])
    assert mem[0] == {0, 1, 2} and mem[3] == {1, 2, 3}
    same, _ = robust.NNM().apply(x, members(4), 0, np.random.default_rng(0))
    np.testing.assert_allclose(same, np.tile(x.mean(axis=0), (4, 1)))  # f = 0: everyone mixes with everyone


def test_arc_clips_the_largest_to_the_next_norm() -> None:
    x = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 40.0], [50.0, 0.0]])
    out, _ = robust.ARC().apply(x, members(5), 1, np.random.default_rng(0))
    # k = floor(2 * 1 * 4 / 5) = 1: only the largest (50) is clipped, to the next norm (40)
    np.testing.assert_allclose(out, [[1, 0], [0, 2], [3, 0], [0, 40], [40, 0]])
    out2, _ = robust.ARC().apply(x, members(5), 2, np.random.default_rng(0))
    # k = floor(2 * 2 * 3 / 5) = 2: 50 and 40 clipped to 3
    np.testing.assert_allclose(out2, [[1, 0], [0, 2], [3, 0], [0, 3], [3, 0]])
    none, _ = robust.ARC().apply(x, members(5), 0, np.random.default_rng(0))
    np.testing.assert_array_equal(none, x)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 23), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_bucketing_partitions_every_client_once(n: int, s: int, seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=(n, 3))
    b = robust.Bucketing(bucket_size=s)
    out, mem = b.apply(x, members(n), 0, np.random.default_rng(seed))
    assert len(out) == math.ceil(n / s) == b.passes(n, 0)[0]
    assert sorted(i for m in mem for i in m) == list(range(n))  # a partition
    for row, m in zip(out, mem):
        np.testing.assert_allclose(row, x[sorted(m)].mean(axis=0))
    assert np.sum([len(m) for m in mem] * np.ones(1)) == n


def test_bucketing_shuffle_comes_from_the_injected_generator() -> None:
    x = np.arange(12.0)[:, None]
    b = robust.Bucketing(bucket_size=3)
    a1 = b.apply(x, members(12), 0, np.random.default_rng(5))[1]
    a2 = b.apply(x, members(12), 0, np.random.default_rng(5))[1]
    other = [b.apply(x, members(12), 0, np.random.default_rng(s))[1] for s in range(6, 12)]
    assert a1 == a2  # same seed, same buckets
    assert any(o != a1 for o in other)  # the buckets do depend on the generator


def test_stack_bounds_compose_stage_by_stage() -> None:
    # bucketing s=2 over n=20 gives 10 buckets, up to f of them spoiled: the rule's bound at 10
    assert AGGREGATORS.get("bucketing+median").max_byzantine(20) == 4  # median tolerates 4 of 10
    assert AGGREGATORS.get("bucketing+krum").max_byzantine(20) == 3  # Krum tolerates (10 - 3) // 2
    assert AGGREGATORS.get("nnm+krum").max_byzantine(20) == 8  # min(NNM 9, Krum 8)
    assert AGGREGATORS.get("arc+nnm+bulyan").max_byzantine(20) == 4
    assert AGGREGATORS.get("nnm+fltrust").max_byzantine(20) == 9  # NNM needs an honest majority
    s3 = build_aggregator("bucketing+median", {"bucket_size": 3})
    assert isinstance(s3, robust.Stack) and s3.bound(20) == 3  # 7 buckets: median tolerates 3
    with pytest.raises(ConfigurationError, match="tolerates at most 3") as e:
        build_aggregator("bucketing+median", {"bucket_size": 3, "num_byzantine": 4}).aggregate(
            ups(np.ones((20, 2))), ctx(20)
        )
    assert e.value.field == "num_byzantine"


def test_stack_options_are_the_rule_and_stage_options() -> None:
    agg = build_aggregator("bucketing+trimmed-mean", {"bucket_size": 3, "trim": 1, "num_byzantine": 2})
    assert isinstance(agg, robust.Stack) and agg.name == "bucketing+trimmed-mean"
    assert isinstance(agg.pre[0], robust.Bucketing) and agg.pre[0].bucket_size == 3
    assert isinstance(agg.rule, robust.TrimmedMean) and agg.rule.trim == 1
    with pytest.raises(ConfigurationError) as e:
        build_aggregator("bucketing+trimmed-mean", {"bucket_size": 0})
    assert e.value.field == "aggregation.options.bucket_size"
    with pytest.raises(ConfigurationError, match="unknown"):
        build_aggregator("nnm+median", {"bucket_size": 2})
    assert "foolsgold" in robust.robust_aggregators() and "nnm+foolsgold" not in AGGREGATORS
    with pytest.raises(ConfigurationError, match="no pre-aggregator"):
        robust.stack_class(("nnm",), "foolsgold")
    with pytest.raises(ConfigurationError, match="not a robust rule"):
        robust.stack_class(("nnm",), "mean")


def test_stack_from_policy_lets_the_rule_take_what_it_declares() -> None:
    policy = robust.ServerPolicy(num_byzantine=3, norm_bound=1.5, noise_multiplier=0.0, root_size=9)
    nb = robust.build_defense("arc+norm-bound", {}, policy)
    assert isinstance(nb, robust.Stack) and nb.num_byzantine == 3
    assert isinstance(nb.rule, robust.NormBound) and nb.rule.norm_bound == 1.5
    fl = robust.build_defense("arc+fltrust", {"root_size": 4}, policy)
    assert isinstance(fl, robust.Stack) and isinstance(fl.rule, robust.FLTrust) and fl.rule.root_size == 4


def test_typed_stack_and_participants() -> None:
    x = np.vstack([np.full((6, 2), 1.0), np.full((1, 2), 100.0)])
    stack = robust.Stack([robust.NNM()], robust.Krum(), num_byzantine=1)
    assert stack.name == "nnm+krum"
    res = stack.aggregate(ups(x, ids=[10, 11, 12, 13, 14, 15, 16]), ctx(7))
    np.testing.assert_allclose(res.delta, [1.0, 1.0])
    assert 16 not in res.participants and res.metrics["rule_f"] == 1
    with pytest.raises(ConfigurationError):
        robust.Stack([], robust.Krum())


def test_nnm_pulls_honest_updates_together_and_arc_bounds_a_boosted_one() -> None:
    rng = np.random.default_rng(1)
    honest = rng.normal(size=(16, 20))
    boosted = 20 * rng.normal(size=(4, 20))
    x = np.vstack([honest, boosted])
    mixed, _ = robust.NNM().apply(x, members(20), 4, rng)
    spread = lambda a: float(np.mean(np.linalg.norm(a - a.mean(axis=0), axis=1)))  # noqa: E731
    assert spread(mixed[:16]) < 0.5 * spread(honest)
    clipped, _ = robust.ARC().apply(x, members(20), 4, rng)
    assert np.linalg.norm(clipped, axis=1).max() <= np.sort(np.linalg.norm(honest, axis=1))[-1] + 1e-9


def test_normalize_equalises_norms_to_the_median() -> None:
    x = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 0.0], [-0.1, 0.0], [0.0, 20.0]])
    out, _ = robust.Normalize().apply(x, members(5), 2, np.random.default_rng(0))
    med = float(np.median(np.linalg.norm(x, axis=1)))  # 1.0
    np.testing.assert_allclose(out, [[0.6 * med, 0.8 * med], [0, med], [0, 0], [-med, 0], [0, med]])
    # a small update pointing against the others is no longer everyone's nearest neighbour
    # heterogeneous honest updates: a shared direction c plus one private direction each
    d = 12
    c = np.zeros(d)
    c[-1] = 1.0
    honest = 0.3 * c + np.eye(d)[:5]
    ipm = -0.05 * c[None, :]  # small, against the shared direction
    x2 = np.vstack([honest, ipm])
    _, raw_mem = robust.NNM().apply(x2, members(6), 1, np.random.default_rng(0))
    assert all(5 in m for m in raw_mem[:5])  # raw L2: the tiny update is every honest update's neighbour
    eq, _ = robust.Normalize().apply(x2, members(6), 1, np.random.default_rng(0))
    _, eq_mem = robust.NNM().apply(eq, members(6), 1, np.random.default_rng(0))
    assert all(5 not in m for m in eq_mem[:5])


def test_history_drops_a_colluding_group_whatever_its_scale_and_noise() -> None:
    # heterogeneous honest clients: a private direction each (plus a little shared drift);
    # four colluders share one goal b but each hides it under fresh noise every round,
    # rescaled to a different norm; one honest pair has near-identical label mixes (a twin)
    rng = np.random.default_rng(3)
    n, d, f = 20, 200, 4
    private = rng.normal(size=(n, d))
    private[1] = private[0] + 0.3 * rng.normal(size=d)  # the honest twin of client 0
    b = rng.normal(size=d)
    bad = [16, 17, 18, 19]
    stage = robust.History()
    for r in range(8):
        x = private + 0.5 * rng.normal(size=(n, d))
        for i, c in enumerate(bad):
            x[c] = (b + 3.0 * rng.normal(size=d)) * (0.1 + 3 * i)  # noise 3x the goal, any scale
        out, mem = stage.apply(x, members(n), f, rng)
        kept = {next(iter(m)) for m in mem}
        assert len(out) == n - f and len(kept) == n - f
    assert not kept & set(bad)  # after a few rounds the shared goal dominates each colluder's history
    assert {0, 1} <= kept  # one look-alike partner is not a group of f
    # what it passes on, its bound in a stack, and where it must sit
    assert stage.passes(20, 4) == (16, 4)
    assert AGGREGATORS.get("history+nnm+fltrust").max_byzantine(20) == 6  # NNM over the 20 - f kept
    with pytest.raises(ConfigurationError, match="first stage"):
        stage.apply(x[:2], [frozenset({0, 1}), frozenset({2})], 1, rng)


def test_history_is_keyed_by_client_and_scale_free() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 5))
    a, b = robust.History(), robust.History()
    ids = [frozenset({c}) for c in (7, 3, 9, 1, 4, 8)]
    sa = a.scores(x, [7, 3, 9, 1, 4, 8], group=2)
    sb = b.scores(x * np.array([[1.0], [10.0], [0.1], [5.0], [2.0], [1e3]]), [7, 3, 9, 1, 4, 8], group=2)
    np.testing.assert_allclose(sa, sb)  # unit norms: rescaling an update changes nothing
    out, mem = robust.History().apply(x, ids, 0, rng)
    assert out is x and mem == ids  # f = 0 drops nobody
    # a second round adds to each client's own history, whatever the order of the rows; the
    # round's median unit update (the direction everyone shares) is taken out first
    a.scores(x[::-1], [8, 4, 1, 9, 3, 7], group=2)
    units = x / np.linalg.norm(x, axis=1)[:, None]
    np.testing.assert_allclose(a._history[7], 2 * (units[0] - np.median(units, axis=0)))


def test_history_centre_option_reaches_the_stage_through_the_stack() -> None:
    agg = build_aggregator("history+fltrust", {"centre": False})
    assert isinstance(agg, robust.Stack) and isinstance(agg.pre[0], robust.History)
    assert agg.pre[0].centre is False and build_aggregator("history+fltrust", {}).pre[0].centre is True
    with pytest.raises(ConfigurationError) as e:
        build_aggregator("history+nnm+krum", {"centre": "yes"})
    assert e.value.field == "aggregation.options.centre"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4)) + 3.0  # a large shared component
    plain = robust.History(centre=False)
    plain.scores(x, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(plain._history[2], x[2] / np.linalg.norm(x[2]))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(3, 12),
    d=st.integers(1, 16),
    f=st.integers(0, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_support_zeroes_what_only_f_updates_move_and_keeps_the_rest(n: int, d: int, f: int, seed: int) -> None:
    f = min(f, n - 1)
    rng = np.random.default_rng(seed)
    # honest rows move a random subset of coordinates; the f Byzantine rows send anything, everywhere
    x = rng.normal(size=(n, d)) * (rng.random((n, d)) < 0.5)
    x[n - f :] = rng.normal(size=(f, d)) * 10.0
    honest_support = np.count_nonzero(x[: n - f], axis=0)
    out, mem = robust.Support().apply(x, members(n), f, rng)
    assert mem == members(n) and out.shape == x.shape
    support = np.count_nonzero(x, axis=0)
    np.testing.assert_array_equal(out[:, support > f], x[:, support > f])  # kept coordinates are untouched
    if f > 0:
        assert not out[:, support <= f].any()
        assert not out[:, honest_support == 0].any()  # no honest mover: nothing the attackers send gets through
    else:
        np.testing.assert_array_equal(out, x)  # f = 0 changes nothing


def test_support_known_answer_and_its_stack() -> None:
    x = np.array(
        [
            [1.0, 0.0, 0.0, 2.0],
            [1.0, 0.0, 5.0, 0.0],
            [1.0, 7.0, 5.0, 0.0],
            [-1.0, 0.0, 0.0, 0.0],
        ]
    )
    out, _ = robust.Support().apply(x, members(4), 1, np.random.default_rng(0))
    want = x.copy()
    want[:, [1, 3]] = 0.0  # coordinates 1 and 3 are moved by one update each: at most f
    np.testing.assert_array_equal(out, want)
    out2, _ = robust.Support().apply(x, members(4), 2, np.random.default_rng(0))
    np.testing.assert_array_equal(out2[:, 0], x[:, 0])
    assert not out2[:, 1:].any()
    assert robust.Support.max_byzantine(20) == 19 and robust.Support().passes(20, 4) == (20, 4)
    agg = build_aggregator("history+support+fltrust", {"root_passes": 2})
    assert isinstance(agg, robust.Stack) and [p.name for p in agg.pre] == ["history", "support"]
    assert AGGREGATORS.get("history+support+fltrust").max_byzantine(20) == 9  # history's honest majority
