import numpy as np
import pytest

from privagg.errors import ConfigurationError
from protocols.aggregation import AGGREGATORS, ClientUpdate, MeanAggregator, RoundContext, build_aggregator
from protocols.secagg_aggregator import SecAggAggregator, SecAggOptions, SecAggRoundStats


def _ctx(r=0, seed=0, n=8):
    return RoundContext(
        round=r,
        population=n,
        sampled=tuple(range(n)),
        sampling="fixed",
        sampling_rate=1.0,
        rng=np.random.default_rng(seed),
    )


def _updates(n=8, m=50, seed=1):
    rng = np.random.default_rng(seed)
    return [ClientUpdate(c, rng.normal(0, 0.1, m), int(rng.integers(10, 100))) for c in range(n)]


@pytest.mark.parametrize("threat", ["semi-honest", "active"])
@pytest.mark.parametrize("weighted", [True, False])
def test_matches_plain_mean_within_quantisation(threat, weighted):
    ups = _updates()
    agg = AGGREGATORS.get("secagg")(threat=threat, clip=1.0, weighted=weighted, degree=4, threshold=3)
    assert agg.needs_plaintext_updates is False
    res = agg.aggregate(ups, _ctx())
    want = MeanAggregator(weighted=weighted).aggregate(ups, _ctx()).delta
    # one step per summand in the numerator; weighted adds the error of the weight sum (same order)
    step = 1.0 / (2**15 - 1)
    assert np.max(np.abs(res.delta - want)) < 4 * step
    assert res.participants == tuple(range(8))
    assert res.metrics["secagg_degree"] == 4 and res.metrics["secagg_clipped"] == 0


def test_dropouts_average_the_survivors():
    ups = _updates(n=12)
    agg = SecAggAggregator(threat="active", dropout_rate=0.25, weighted=False, degree=10, threshold=6)
    res = agg.aggregate(ups, _ctx(n=12))
    assert len(res.participants) == 9
    surv = [u for u in ups if u.client_id in res.participants]
    want = np.mean([u.delta for u in surv], axis=0)
    assert np.max(np.abs(res.delta - want)) < 2 / (2**15 - 1)
    (stats,) = agg.rounds
    assert isinstance(stats, SecAggRoundStats)
    assert (stats.clients, stats.survivors, stats.dropped) == (12, 9, 3)
    assert stats.metrics() == res.metrics and res.metrics["secagg_survivors"] == 9


def test_weighted_mean_goes_through_the_codec_with_a_public_max_weight():
    # a client above max_weight counts as max_weight examples: the codec caps its factor at 1
    ups = [ClientUpdate(c, np.full(6, 0.1 * (c + 1)), n) for c, n in enumerate([10, 20, 400])]
    res = SecAggAggregator(threat="semi-honest", max_weight=40.0).aggregate(ups, _ctx(n=3))
    w = np.array([10.0, 20.0, 40.0])
    want = (w / w.sum()) @ np.stack([u.delta for u in ups])
    assert np.max(np.abs(res.delta - want)) < 4 / (2**15 - 1)
    # without max_weight the round's largest count is the normaliser: the plain weighted mean
    res = SecAggAggregator(threat="semi-honest").aggregate(ups, _ctx(n=3))
    want = MeanAggregator().aggregate(ups, _ctx(n=3)).delta
    assert np.max(np.abs(res.delta - want)) < 4 / (2**15 - 1)


def test_clipping_is_counted():
    ups = [ClientUpdate(c, np.full(10, 5.0 if c == 0 else 0.1), 10) for c in range(5)]
    res = SecAggAggregator(clip=1.0, threat="semi-honest", weighted=False).aggregate(ups, _ctx(n=5))
    assert res.metrics["secagg_clipped"] == 10
    assert np.allclose(res.delta, (1.0 + 4 * 0.1) / 5, atol=1e-3)


def test_derived_parameters_by_default():
    agg = SecAggAggregator(threat="active", dropout_rate=0.0)
    p = agg.params_for(50)
    assert 2 * p.threshold > p.degree + 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threat": "nope"},
        {"clip": 0},
        {"value_bits": 1},
        {"dropout_rate": 1.5},
        {"degree": 4},
        {"degree": 0, "threshold": 1},
        {"drop_stage": "lunch"},
        {"max_weight": -1},
        {"workers": 0},
    ],
)
def test_option_validation(kwargs):
    with pytest.raises(ConfigurationError):
        SecAggAggregator(**kwargs)
    with pytest.raises(ConfigurationError):
        SecAggOptions(**kwargs)


def test_typed_options_by_name_and_by_keyword():
    agg = build_aggregator("secagg", {"clip": 2, "threat": "semi-honest", "degree": 4, "threshold": 3})
    assert isinstance(agg, SecAggAggregator)
    assert agg.options == SecAggOptions(clip=2.0, threat="semi-honest", degree=4, threshold=3) and agg.clip == 2.0
    assert SecAggAggregator(clip=2.0, threat="semi-honest", degree=4, threshold=3).options == agg.options
    assert SecAggAggregator.from_options(agg.options).options == agg.options
    for options, field in [
        ({"clip": "wide"}, "aggregation.options.clip"),
        ({"clip": -1.0}, "aggregation.options.clip"),
        ({"threat": "nope"}, "aggregation.options.threat"),
        ({"degree": 4}, "aggregation.options.threshold"),
        ({"colour": 1}, "aggregation.options.colour"),
    ]:
        with pytest.raises(ConfigurationError) as info:
            build_aggregator("secagg", options)
        assert info.value.field == field
    with pytest.raises(ConfigurationError, match="unknown option"):
        SecAggAggregator(colour=1)


def test_active_clients_hold_their_own_policy() -> None:
    """Active mode with derived parameters: each client derives the graph itself (issue 12)."""
    from secagg import ClientPolicy

    agg = SecAggAggregator(dropout_rate=0.1, corruption_rate=0.05, min_clients=5)
    assert agg.client_policy() == ClientPolicy(min_clients=5, dropout_rate=0.1, corruption_rate=0.05)
    # an explicit degree/threshold override is the deployer's choice: the clients accept it
    assert SecAggAggregator(degree=4, threshold=3).client_policy() is None
    assert SecAggAggregator(threat="semi-honest").client_policy() is None


def test_the_session_is_bound_to_the_round_model(monkeypatch):
    """The aggregator hands the real driver the digest of the global model of the round (it used to pass
    the all-zero digest, so the clients' model-consistency check bound nothing)."""
    import dataclasses

    import protocols.secagg_aggregator as mod
    from privagg.digest import model_digest

    seen: list[bytes] = []
    real = mod.run_round

    def spy(*args, **kwargs):
        seen.append(kwargs["model_digest"])
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, "run_round", spy)
    agg = SecAggAggregator(threat="active", clip=1.0, degree=4, threshold=3)
    theta = np.linspace(-1.0, 1.0, 50)
    res = agg.aggregate(_updates(), dataclasses.replace(_ctx(), global_params=theta))
    assert res.participants == tuple(range(8))
    other = agg.aggregate(_updates(), dataclasses.replace(_ctx(r=1), global_params=theta + 1e-3))
    assert other.participants == tuple(range(8))
    assert seen == [model_digest([theta]), model_digest([theta + 1e-3])] and seen[0] != seen[1]
    assert bytes(32) not in seen


@pytest.mark.parametrize("n", [2, 3, 5, 8, 20, 60])
@pytest.mark.parametrize("kwargs", [{"degree": 4, "threshold": 3}, {"degree": 30, "threshold": 20}, {}])
def test_min_survivors_is_the_parameters_own_bound(n, kwargs):
    """One source: the aggregator's bound is :meth:`SecAggParams.min_survivors` of the round's parameters."""
    agg = SecAggAggregator(SecAggOptions(threat="active", **kwargs))
    if n < 3:
        assert agg.min_survivors(n) == n
        return
    try:
        p = agg.params_for(n)
    except ConfigurationError:  # no parameters for this cohort (a threshold out of reach)
        return
    assert agg.min_survivors(n) == p.min_survivors(n)
    assert p.threshold <= agg.min_survivors(n) <= n


def test_clients_in_worker_processes_give_the_same_round() -> None:
    """``workers=2``: the same parties in two forked processes; the same sum, every client's own work done."""
    ups = _updates(n=16)
    one = AGGREGATORS.get("secagg")(threat="active", clip=1.0, degree=6, threshold=4)
    two = AGGREGATORS.get("secagg")(threat="active", clip=1.0, degree=6, threshold=4, workers=2)
    a, b = one.aggregate(ups, _ctx(n=16)), two.aggregate(ups, _ctx(n=16))
    np.testing.assert_array_equal(a.delta, b.delta)  # exact: the same fixed-point sum
    assert a.participants == b.participants == tuple(range(16))
    assert one.rounds[0].client_upload_bytes == two.rounds[0].client_upload_bytes
