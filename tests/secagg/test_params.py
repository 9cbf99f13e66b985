import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.encoding import sum_bits
from privagg.errors import ConfigurationError
from secagg import ClientPolicy, SecAggParams, ThreatModel

#: these tests exercise the protocol's mechanics with the server's numbers (unsafe opt-out, on purpose)
TRUST = ClientPolicy.trust_server()


def test_flower_defaults_are_valid():
    p = SecAggParams.manual(num_clients=100, degree=14, threshold=10, threat="semi-honest")
    assert p.modulus_bits == sum_bits(100, 16)
    assert p.threat is ThreatModel.SEMI_HONEST
    assert not p.complete_graph


@pytest.mark.parametrize(
    ("n", "delta", "gamma", "threat"),
    [
        (100, 0.1, 0.0, "semi-honest"),
        (100, 0.1, 0.05, "active"),
        (1000, 0.1, 0.05, "active"),
        (1000, 0.3, 0.0, "active"),
    ],
)
def test_derive_meets_its_own_bounds(n, delta, gamma, threat):
    p = SecAggParams.derive(num_clients=n, dropout_rate=delta, corruption_rate=gamma, threat=threat)
    assert p.failure_log2(delta) <= -20
    assert p.security_log2(gamma, delta) <= -40
    assert 2 * p.threshold > p.degree + 1
    # minimal: the next smaller even degree cannot meet both bounds with any threshold
    if p.degree > 2 and not p.complete_graph:
        k = p.degree - 2
        ok = False
        for t in range((k + 1) // 2 + 1, k + 1):
            q = SecAggParams.manual(num_clients=n, degree=k, threshold=t, threat=threat)
            if q.failure_log2(delta) <= -20 and q.security_log2(gamma, delta) <= -40:
                ok = True
        assert not ok


def test_derive_small_population_uses_complete_graph():
    p = SecAggParams.derive(num_clients=3, dropout_rate=1e-8, corruption_rate=0.0)
    assert p.complete_graph and p.degree == 2 and p.threshold == 2
    q = SecAggParams.derive(num_clients=8, dropout_rate=0.001, corruption_rate=0.0)
    assert q.degree == 6 and q.threshold == 4  # the ring already meets both bounds


def test_derive_impossible_says_what_would_work():
    with pytest.raises(ConfigurationError) as e:
        SecAggParams.derive(num_clients=50, dropout_rate=0.6, corruption_rate=0.2)
    assert "dropout" in str(e.value)
    assert "work for 50 clients" in (e.value.accepted or "")


@pytest.mark.parametrize(
    ("kwargs", "field", "hint"),
    [
        ({"degree": 14, "threshold": 7}, "threshold", "8..14"),  # two disjoint reconstructions
        ({"degree": 14, "threshold": 15}, "threshold", "1..14"),
        ({"degree": 13, "threshold": 10}, "degree", "12 or 14"),  # odd: ring needs k/2 per side
        ({"degree": 1, "threshold": 1}, "degree", None),  # disconnected
        ({"degree": 100, "threshold": 60}, "degree", "2..99"),
        ({"degree": 14, "threshold": 10, "modulus_bits": 20}, "modulus_bits", "23..62"),  # the sum would wrap
    ],
)
def test_manual_validation(kwargs, field, hint):
    with pytest.raises(ConfigurationError) as e:
        SecAggParams.manual(num_clients=100, **kwargs)
    assert e.value.field == field
    if hint:
        assert hint in (e.value.accepted or "")


def test_bad_threat_and_rates():
    with pytest.raises(ConfigurationError):
        SecAggParams.derive(num_clients=10, dropout_rate=0.1, corruption_rate=0.0, threat="paranoid")
    with pytest.raises(ConfigurationError):
        SecAggParams.derive(num_clients=10, dropout_rate=1.2, corruption_rate=0.0)
    with pytest.raises(ConfigurationError):
        SecAggParams.derive(num_clients=1, dropout_rate=0.1, corruption_rate=0.0)


def test_analysis_numbers_are_log2_probabilities():
    p = SecAggParams.manual(num_clients=100, degree=14, threshold=10)
    f = p.failure_log2(0.1)
    assert -20 < f <= 0  # Flower's defaults fail a 10%-dropout round far more often than 2^-20
    assert math.isinf(p.security_log2(0.0, 0.0)) or p.security_log2(0.0, 0.0) < -40


def test_grinding_bits_raise_the_privacy_target():
    """Retries of the graph (omitted clients, nonces, colluders' fresh keys): 2**g tries cost g bits."""
    base = SecAggParams.derive(num_clients=100, dropout_rate=0.1, corruption_rate=0.05)
    ground = SecAggParams.derive(num_clients=100, dropout_rate=0.1, corruption_rate=0.05, grinding_bits=20)
    same = SecAggParams.derive(num_clients=100, dropout_rate=0.1, corruption_rate=0.05, security_bits=60)
    assert ground == same and ground.degree > base.degree
    assert ground.security_log2(0.05, 0.1) <= -60 < base.security_log2(0.05, 0.1)
    with pytest.raises(ConfigurationError, match="grinding_bits"):
        SecAggParams.derive(num_clients=100, dropout_rate=0.1, corruption_rate=0.05, grinding_bits=-1)


def test_client_policy_accounts_for_grinding():
    from secagg import ClientPolicy

    plain = ClientPolicy(min_clients=50, dropout_rate=0.1, corruption_rate=0.05)
    ground = ClientPolicy(min_clients=50, dropout_rate=0.1, corruption_rate=0.05, grinding_bits=20)
    weak_for_grinding = plain.required(100, "active")
    assert plain.setup_fault(weak_for_grinding) is None
    assert "weaker" in (ground.setup_fault(weak_for_grinding) or "")
    assert ground.setup_fault(ground.required(100, "active")) is None
    with pytest.raises(ConfigurationError, match="grinding_bits"):
        ClientPolicy(min_clients=50, dropout_rate=0.1, corruption_rate=0.05, grinding_bits=999)


def test_modular_ring_wraps_by_intent_and_travels_in_the_setup():
    """``modular=True``: inputs are any elements of Z_{2**b}, the sum wraps mod 2**b (distributed DP)."""
    import numpy as np

    from privagg.errors import ConfigurationError
    from secagg import RoundSetup, run_round

    p = SecAggParams.manual(num_clients=6, degree=5, threshold=4, value_bits=12, modular=True)
    assert p.modulus_bits == 12 and p.modular
    assert RoundSetup.decode(RoundSetup(0, p, 4, bytes(32)).encode()).params == p
    with pytest.raises(ConfigurationError, match="exactly its width"):
        SecAggParams(num_clients=6, degree=5, threshold=4, modulus_bits=13, value_bits=12, modular=True)
    with pytest.raises(ConfigurationError, match="would wrap"):  # without the flag the ring must hold the sum
        SecAggParams(num_clients=6, degree=5, threshold=4, modulus_bits=12, value_bits=12)
    d = SecAggParams.derive(num_clients=50, dropout_rate=0.05, corruption_rate=0.02, value_bits=14, modular=True)
    assert (d.modulus_bits, d.modular) == (14, True)
    rng = np.random.default_rng(0)
    inputs = {c: rng.integers(0, 1 << 12, 4, dtype=np.uint64) for c in range(6)}
    rep = run_round(p, client_ids=list(range(6)), inputs=inputs, dimension=4, client_policy=TRUST)
    assert rep.ok and np.array_equal(rep.sum, sum(inputs.values()) % (1 << 12))


@pytest.mark.parametrize(("n", "k", "t"), [(6, 2, 2), (8, 4, 3), (9, 4, 4), (10, 6, 4), (7, 6, 4), (10, 4, 3)])
def test_min_survivors_is_a_lower_bound_of_every_releasable_survivor_set(n: int, k: int, t: int) -> None:
    """Brute force on the real ring: no survivor set smaller than ``min_survivors`` lets the server
    rebuild every dropped key (t shares of surviving neighbours) and every survivor's self-mask seed
    (t shares among surviving neighbours and itself). A DP mod bounding noise shares by it is safe."""
    from itertools import combinations

    from secagg.crypto import NeighbourGraph

    p = SecAggParams.manual(num_clients=n, degree=k, threshold=t)
    g = NeighbourGraph(range(n), session=b"s" * 32, degree=k)
    nb = {c: set(g.neighbours(c)) for c in range(n)}

    def releasable(s: set[int]) -> bool:
        return all(len(nb[w] & s) >= t for w in set(range(n)) - s) and all(len(nb[c] & s) + 1 >= t for c in s)

    smallest = next(m for m in range(n + 1) if any(releasable(set(c)) for c in combinations(range(n), m)))
    assert t <= p.min_survivors(n) <= smallest
    assert p.min_survivors(2) == 2 and p.min_survivors(n) <= n


def test_over_ring_keeps_the_graph_and_wraps_in_the_ring() -> None:
    base = SecAggParams.manual(num_clients=40, degree=12, threshold=8, threat="active")
    ring = base.over_ring(14)
    assert (ring.num_clients, ring.degree, ring.threshold, ring.threat) == (40, 12, 8, base.threat)
    assert ring.modular and ring.modulus_bits == 14 and ring.value_bits == 14
    assert ring.min_survivors(40) == base.min_survivors(40)


@settings(max_examples=200, deadline=None)
@given(start=st.integers(1, 50), threshold=st.integers(1, 300), limit=st.integers(1, 300))
def test_smallest_cohort_finds_the_first_cohort_with_parameters(start: int, threshold: int, limit: int) -> None:
    """Against a monotone oracle: the smallest n in [start, limit] it accepts, or None; one call when
    ``start`` works (the common case costs one derivation)."""
    from secagg.params import smallest_cohort

    calls: list[int] = []

    def params_for(n: int) -> int:
        calls.append(n)
        assert start <= n <= limit  # never asks outside the range
        if n < threshold:
            raise ConfigurationError("too small", field="num_clients")
        return n

    want = max(start, threshold) if max(start, threshold) <= limit else None
    assert smallest_cohort(params_for, start=start, limit=limit) == want
    if start >= threshold and start <= limit:
        assert calls == [start]
