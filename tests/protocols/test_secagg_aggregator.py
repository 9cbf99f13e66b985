import numpy as np
import pytest

from privagg.errors import ConfigurationError
from protocols.aggregation import AGGREGATORS, ClientUpdate, MeanAggregator, RoundContext
from protocols.secagg_aggregator import SecAggAggregator


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
    sec = agg.report_sections()
    assert sec and sec[0].key == "secagg" and sec[0].tables[0][2][0][2] == 9


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
    ],
)
def test_option_validation(kwargs):
    with pytest.raises(ConfigurationError):
        SecAggAggregator(**kwargs)
