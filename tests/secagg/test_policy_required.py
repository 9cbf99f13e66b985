"""An active-mode client of the core holds a :class:`ClientPolicy` (``secagg/THREAT_MODEL.md``): without one,
:class:`SecAggClient`, :func:`run_round` and the driver's pools refuse to start (a typed
:class:`ConfigurationError` naming the policy and what to pass). The one opt-out,
``ClientPolicy.trust_server()``, is named as what it is and accepts every setup the server sends; the red
team is ``tests/secagg/adversarial/test_no_policy_red_team.py``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from privagg.errors import ConfigurationError, ProtocolAbort
from secagg import (
    ClientPolicy,
    ClientStage,
    KeyAdvertisement,
    RoundSetup,
    SecAggClient,
    SecAggParams,
    ThreatModel,
    TrustServer,
    make_identities,
    run_round,
)
from secagg.params import checked_policy
from secagg.pools import ClientSpec

M = 8
KEYS, DIRECTORY = make_identities([0])
POLICY = ClientPolicy(min_clients=8, dropout_rate=0.05, corruption_rate=0.05)
TRUST = ClientPolicy.trust_server()


def _active_client(**kw: object) -> SecAggClient:
    return SecAggClient(0, identity_key=KEYS[0], directory=DIRECTORY, **kw)  # type: ignore[arg-type]


def _says_what_to_pass(e: ConfigurationError) -> None:
    assert "ClientPolicy(min_clients=" in str(e) and "ClientPolicy.trust_server()" in str(e)
    assert "unsafe" in str(e)


# ---------------------------------------------------------------------------- abort paths
def test_an_active_client_without_a_policy_is_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        _active_client()
    assert info.value.field == "policy"
    _says_what_to_pass(info.value)


@pytest.mark.parametrize("wrong", [{"min_clients": 8}, "trust-server", 0.05, True])
def test_an_active_client_with_something_else_as_policy_is_refused(wrong: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        _active_client(policy=wrong)
    assert info.value.field == "policy" and type(wrong).__name__ in str(info.value)


def test_run_round_in_active_mode_without_a_policy_is_refused_before_anything_runs() -> None:
    p = SecAggParams.manual(num_clients=4, degree=3, threshold=3)
    asked: list[int] = []

    def inputs(c: int) -> np.ndarray:
        asked.append(c)
        return np.zeros(M, dtype=np.uint64)

    for workers in (1, 2):  # no worker process is forked either
        with pytest.raises(ConfigurationError) as info:
            run_round(p, client_ids=range(4), inputs=inputs, dimension=M, workers=workers)
        assert info.value.field == "client_policy"
        _says_what_to_pass(info.value)
    assert asked == []


def test_a_pool_spec_in_active_mode_without_a_policy_is_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        ClientSpec(threat=ThreatModel.ACTIVE, keys={}, directory={}, round=0, hardened=True)
    assert info.value.field == "client_policy"
    ClientSpec(threat=ThreatModel.ACTIVE, keys={}, directory={}, round=0, hardened=True, policy=POLICY)
    ClientSpec(threat=ThreatModel.ACTIVE, keys={}, directory={}, round=0, hardened=True, policy=TRUST)


def test_semi_honest_mode_is_unchanged() -> None:
    """The server is honest by assumption: no policy needed (one given is still checked)."""
    assert SecAggClient(0, threat="semi-honest").policy is None
    assert SecAggClient(0, threat="semi-honest", policy=TRUST).policy is None
    assert SecAggClient(0, threat="semi-honest", policy=POLICY).policy is POLICY
    p = SecAggParams.manual(num_clients=4, degree=3, threshold=3, threat="semi-honest")
    inputs = {c: np.full(M, c, dtype=np.uint64) for c in range(4)}
    rep = run_round(p, client_ids=range(4), inputs=inputs, dimension=M, measure_memory=False)
    assert rep.ok and rep.sum is not None and np.array_equal(rep.sum, np.full(M, 6))


# ---------------------------------------------------------------------------- the opt-out is visible
def test_the_opt_out_is_one_named_object_that_holds_no_policy() -> None:
    assert isinstance(TRUST, TrustServer) and TRUST is ClientPolicy.trust_server()
    assert repr(TRUST) == "ClientPolicy.trust_server()"
    assert checked_policy(TRUST, ThreatModel.ACTIVE) is None  # what the client checks against: nothing
    assert _active_client(policy=TRUST).policy is None
    assert _active_client(policy=POLICY).policy is POLICY


def test_the_audit_reports_an_active_deployment_without_a_policy_as_fail() -> None:
    """Clients built with the opt-out are a deployment with ``client_policy = false``: a FAIL."""
    from privagg.audit.client_policy import check_client_policy
    from privagg.audit.config import Deployment

    (f,) = check_client_policy(Deployment(threat=ThreatModel.ACTIVE, client_policy=False))
    assert f.id == "secagg.client-policy" and f.severity == "fail" and "trust_server()" in f.detail
    assert check_client_policy(Deployment(threat=ThreatModel.ACTIVE, client_policy=True)) == []


# ---------------------------------------------------------------------------- property
@st.composite
def _policies(draw: st.DrawFn) -> ClientPolicy:
    return ClientPolicy(
        min_clients=draw(st.integers(2, 40)),
        dropout_rate=draw(st.sampled_from([0.0, 0.01, 0.05, 0.1])),
        corruption_rate=draw(st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.2])),
        security_bits=draw(st.integers(4, 40)),
        failure_bits=draw(st.integers(2, 20)),
    )


@st.composite
def _setups(draw: st.DrawFn) -> tuple[int, int, int]:
    """Any structurally valid (population, degree, threshold) a server may send."""
    n = draw(st.integers(3, 48))
    k = draw(st.sampled_from([*range(2, n - 1, 2), n - 1]))
    t = draw(st.integers((k + 1) // 2 + 1, k))
    return n, k, t


@settings(max_examples=80, deadline=None)
@given(policy=_policies(), setup=_setups(), threat=st.sampled_from(list(ThreatModel)))
@example(policy=POLICY, setup=(12, 2, 2), threat=ThreatModel.ACTIVE)  # the red team's graph
@example(policy=POLICY, setup=(3, 2, 2), threat=ThreatModel.ACTIVE)  # and its cohort
def test_a_policy_refuses_every_setup_it_forbids_and_the_opt_out_accepts_it(
    policy: ClientPolicy, setup: tuple[int, int, int], threat: ThreatModel
) -> None:
    n, k, t = setup
    params = SecAggParams.manual(num_clients=n, degree=k, threshold=t, threat=threat)
    msg = RoundSetup(round=0, params=params, dimension=M, model_digest=bytes(32))
    active = threat is ThreatModel.ACTIVE
    ids = {"identity_key": KEYS[0], "directory": DIRECTORY} if active else {}
    why = policy.setup_fault(msg.params)
    event("forbidden" if why is not None else "allowed")
    holder = SecAggClient(0, threat=threat, policy=policy, **ids)  # type: ignore[arg-type]
    if why is None:
        assert [type(m) for m in holder.step(msg)] == [KeyAdvertisement]
    else:
        with pytest.raises(ProtocolAbort) as info:
            holder.step(msg)
        assert info.value.reason == why and info.value.stage == "await_setup"
        assert holder.stage is ClientStage.ABORTED
    trusting = SecAggClient(0, threat=threat, policy=TRUST, **ids)  # type: ignore[arg-type]
    assert [type(m) for m in trusting.step(msg)] == [KeyAdvertisement]
    assert trusting.stage is ClientStage.AWAIT_ROSTER
