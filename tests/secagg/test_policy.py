"""Parameters belong to the clients (issue 12, item 1): a :class:`ClientPolicy` derives the
degree and threshold the client accepts and the smallest cohort it joins; a server that sends
weaker parameters or a shrunken roster meets a typed abort with nothing revealed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.errors import ConfigurationError
from secagg import ClientPolicy, RoundSetup, SecAggParams, SecAggServer, make_identities, run_round

M = 16
N = 12
POLICY = ClientPolicy(min_clients=10, dropout_rate=0.01, corruption_rate=0.01, security_bits=16, failure_bits=8)


def _inputs(n: int = N) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(3)
    return {c: rng.integers(0, 2**10, M, dtype=np.uint64) for c in range(n)}


def _nothing_revealed(server: SecAggServer) -> bool:
    return server.revealed_self_shares == {} and server.revealed_key_shares == {}


@pytest.mark.parametrize("drops", [{}, {"masked_input": [3]}, {"share_keys": [5], "unmask": [7]}])
def test_a_round_with_the_derived_parameters_runs(drops):
    """Honest rounds pass every policy check (setup, roster, quorum), dropouts included."""
    p = POLICY.required(N, "active")
    inputs = _inputs()
    rep = run_round(p, client_ids=list(range(N)), inputs=inputs, dimension=M, client_policy=POLICY, dropouts=drops)
    assert rep.ok, rep.abort
    assert rep.client_aborts == {}
    assert np.array_equal(rep.sum, sum(inputs[c] for c in rep.survivors) % (1 << p.modulus_bits))


def test_weaker_parameters_from_the_server_are_refused_at_setup():
    """The measured attack: degree 2 / threshold 2 let the server and one colluder rebuild an input."""
    weak = SecAggParams.manual(num_clients=N, degree=2, threshold=2)
    server = SecAggServer(weak, clients=range(N), dimension=M, screen_senders=False)
    rep = run_round(weak, client_ids=list(range(N)), inputs=_inputs(), dimension=M, server=server, client_policy=POLICY)
    assert not rep.ok and _nothing_revealed(server)
    assert set(rep.client_aborts) == set(range(N))
    need = POLICY.required(N, "active")
    assert all(
        e.stage == "await_setup"
        and "weaker than this client derives" in e.reason
        and f"degree {need.degree}" in e.reason
        for e in rep.client_aborts.values()
    )


def test_a_population_below_the_minimum_is_refused_at_setup():
    small = SecAggParams.manual(num_clients=6, degree=5, threshold=5)
    server = SecAggServer(small, clients=range(6), dimension=M, screen_senders=False)
    rep = run_round(
        small, client_ids=list(range(6)), inputs=_inputs(6), dimension=M, server=server, client_policy=POLICY
    )
    assert not rep.ok and _nothing_revealed(server)
    assert all("minimum cohort is 10" in e.reason for e in rep.client_aborts.values())


def test_a_shrunken_roster_is_refused():
    """Isolation: the server keeps the target and a few (colluding) clients in the roster."""
    p = POLICY.required(N, "active")

    class Shrink(SecAggServer):
        def build_roster(self, advertisements):
            keep = {c: a for c, a in advertisements.items() if c < 6}
            return super().build_roster(keep)

    server = Shrink(p, clients=range(N), dimension=M, screen_senders=False)
    rep = run_round(p, client_ids=list(range(N)), inputs=_inputs(), dimension=M, server=server, client_policy=POLICY)
    assert not rep.ok and _nothing_revealed(server)
    assert set(rep.client_aborts) == set(range(6))
    assert all("below this client's minimum cohort of 10" in e.reason for e in rep.client_aborts.values())


def test_a_setup_at_least_as_secure_is_accepted():
    need = POLICY.required(N, "active")
    stronger = SecAggParams.manual(num_clients=N, degree=N - 1, threshold=N - 1)
    assert POLICY.setup_fault(need) is None and POLICY.setup_fault(stronger) is None
    assert stronger.security_log2(POLICY.corruption_rate, POLICY.dropout_rate) <= -POLICY.security_bits
    # same degree, threshold lowered to what the structure still allows: weaker, refused
    lower = SecAggParams.manual(num_clients=N, degree=need.degree, threshold=need.degree // 2 + 1)
    assert lower.threshold < need.threshold
    assert "weaker" in (POLICY.setup_fault(lower) or "")


def test_policy_validation():
    with pytest.raises(ConfigurationError, match="min_clients"):
        ClientPolicy(min_clients=1, dropout_rate=0.1, corruption_rate=0.1)
    with pytest.raises(ConfigurationError, match="corruption_rate"):
        ClientPolicy(min_clients=10, dropout_rate=0.1, corruption_rate=1.5)
    with pytest.raises(ConfigurationError, match="a sum < 1"):
        ClientPolicy(min_clients=10, dropout_rate=0.6, corruption_rate=0.5)
    impossible = ClientPolicy(min_clients=4, dropout_rate=0.5, corruption_rate=0.4, security_bits=200)
    assert "no parameters meet" in (
        impossible.setup_fault(SecAggParams.manual(num_clients=4, degree=3, threshold=3)) or ""
    )


def test_setup_objects_are_checked_too():
    """The check is in the client core: any driver (here a raw step) meets it."""
    from secagg import SecAggClient

    c = SecAggClient(0, threat="semi-honest", policy=POLICY)
    weak = SecAggParams.manual(num_clients=N, degree=2, threshold=2, threat="semi-honest")
    with pytest.raises(Exception, match="weaker"):
        c.step(dataclasses.replace(RoundSetup(0, weak, M, bytes(32))))


# ---------------------------------------------------------------------------- split views (item 3)
class _SplitRoster(SecAggServer):
    """Two disjoint rosters: each half runs its own sub-round, the server learns two partial sums."""

    def __init__(self, *a, halves, **kw):
        super().__init__(*a, **kw)
        self.halves = halves


def _split_hook(server_holder, halves):
    import dataclasses as dc

    from secagg import Envelope, KeyRoster

    def hook(env):
        if isinstance(env.message, KeyRoster):
            mine = next(h for h in halves if env.recipient in h)
            advs = tuple(a for a in env.message.advertisements if a.client_id in mine)
            return [Envelope(env.recipient, dc.replace(env.message, advertisements=advs))]
        return [env]

    return hook


def test_split_roster_is_refused_by_the_minimum_cohort():
    """Two disjoint rosters (two sub-rounds, two partial sums): with a policy every client refuses a
    roster below its minimum cohort before sharing anything."""
    p = POLICY.required(N, "active")
    halves = (set(range(6)), set(range(6, N)))
    server = SecAggServer(p, clients=range(N), dimension=M, screen_senders=False)
    rep = run_round(
        p,
        client_ids=list(range(N)),
        inputs=_inputs(),
        dimension=M,
        server=server,
        server_hook=_split_hook(server, halves),
        client_policy=POLICY,
    )
    assert not rep.ok and set(rep.client_aborts) == set(range(N)) and _nothing_revealed(server)
    assert all("minimum cohort" in e.reason and e.stage == "await_roster" for e in rep.client_aborts.values())


def _signed_views(n, views):
    """Consistency signatures of ``n`` clients, client c signing ``views[c]`` (a survivor tuple)."""
    from secagg import crypto

    keys, directory = make_identities(range(n))
    session = b"\x07" * 32
    sigs = tuple((c, crypto.sign(keys[c], crypto.consistency_payload(session, 0, views[c]))) for c in range(n))
    return sigs, directory, session


def test_roster_quorum_refuses_a_split_view():
    """Two honest groups signed two different views: neither reaches the quorum, nobody reveals."""
    from secagg import crypto
    from secagg.consistency import consistency_fault, roster_quorum

    n = 40
    q = roster_quorum(n, 0.05)
    assert q == 22 and roster_quorum(100, 0.05) == 53 and roster_quorum(10, 0.0) == 6
    everyone = tuple(range(n))
    view_a, view_b = tuple(range(n - 1)), everyone  # client 39 "dropped" for group A only
    views = {c: view_a if c < 20 else view_b for c in range(n)}
    sigs, directory, session = _signed_views(n, views)
    common = dict(signatures=sigs, dropped_held=(), neighbours_of={}, threshold=3, directory=directory)
    for view in (view_a, view_b):
        payload = crypto.consistency_payload(session, 0, view)
        why = consistency_fault(survivors=view, payload=payload, quorum=q, **common)
        assert why is not None and "the quorum is 22" in why
        assert consistency_fault(survivors=view, payload=payload, quorum=None, **common) is None  # no policy
    # one view signed by all: above the quorum
    sigs, directory, session = _signed_views(n, {c: everyone for c in range(n)})
    payload = crypto.consistency_payload(session, 0, everyone)
    assert (
        consistency_fault(
            signatures=sigs,
            survivors=everyone,
            dropped_held=(),
            neighbours_of={},
            threshold=3,
            directory=directory,
            payload=payload,
            quorum=q,
        )
        is None
    )
    # a forged or repeated signature never counts
    forged = tuple((c, bytes(64)) for c, _ in sigs)
    assert "quorum" in consistency_fault(
        signatures=forged,
        survivors=everyone,
        dropped_held=(),
        neighbours_of={},
        threshold=3,
        directory=directory,
        payload=payload,
        quorum=q,
    )
    assert "two consistency signatures" in consistency_fault(
        signatures=sigs + sigs[:1],
        survivors=everyone,
        dropped_held=(),
        neighbours_of={},
        threshold=3,
        directory=directory,
        payload=payload,
        quorum=q,
    )


def test_roster_quorum_is_exact_at_float_boundaries():
    """Two views must never both reach the quorum: 2 q > n + c for every roster size and rate
    (a float formula gave 63 for n = 90 at rate 0.4, where 64 are needed)."""
    import math

    from secagg.consistency import roster_quorum

    assert roster_quorum(90, 0.4) == 64 and roster_quorum(200, 0.15) == 116
    for rate in (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.45):
        for n in range(2, 1001):
            c = math.floor(rate * n + 1e-9)
            q = roster_quorum(n, rate)
            assert 2 * q > n + c and 2 * (q - 1) <= n + c, (n, rate, q)


_N_SIGNERS = 16
_SIGNED = _signed_views(_N_SIGNERS, {c: tuple(range(_N_SIGNERS)) for c in range(_N_SIGNERS)})


@settings(max_examples=120, deadline=None)
@given(
    forged=st.sets(st.integers(0, _N_SIGNERS - 1)),
    missing=st.sets(st.integers(0, _N_SIGNERS - 1)),
    quorum=st.integers(1, _N_SIGNERS + 1),
)
def test_the_quorum_check_decides_as_counting_every_signature(forged: set[int], missing: set[int], quorum: int) -> None:
    """The roster quorum stops verifying once it is reached (a cost measure): whatever signatures are forged or
    missing, it refuses exactly when fewer than ``quorum`` valid ones came, and then names the full count."""
    from secagg import crypto
    from secagg.consistency import consistency_fault

    sigs, directory, session = _SIGNED
    everyone = tuple(range(_N_SIGNERS))
    payload = crypto.consistency_payload(session, 0, everyone)
    sent = tuple((c, bytes(64) if c in forged else s) for c, s in sigs if c not in missing)
    valid = sum(1 for c, _ in sent if c not in forged)
    checked: list[int] = []
    real_verify = crypto.verify

    def counting(key: bytes, sig: bytes, data: bytes) -> bool:
        checked.append(1)
        return real_verify(key, sig, data)

    crypto.verify = counting  # type: ignore[assignment]
    try:
        why = consistency_fault(
            signatures=sent,
            survivors=everyone,
            dropped_held=(),
            neighbours_of={},
            threshold=1,
            directory=directory,
            payload=payload,
            quorum=quorum,
        )
    finally:
        crypto.verify = real_verify  # type: ignore[assignment]
    if valid >= quorum:
        assert why is None
        assert len(checked) <= quorum + len(forged)  # never more than the quorum and the forgeries met on the way
    else:
        assert why is not None and f"only {valid} clients signed" in why and f"the quorum is {quorum}" in why
        assert len(checked) == len(sent)
