"""Red team: an active-mode client of the core without a policy of its own (``secagg/THREAT_MODEL.md``,
"Parameters are the client's").

The attack: a malicious server sets up degree 2 / threshold 2 over a cohort of three real
``SecAggClient`` parties: the target (0), an honest client (1) and a client colluding with the server (2),
and ignores the honest client's masked input (it "drops out"). The round completes with the sum of the
target and the colluder; the colluder knows its own input, so the server learns the target's input
exactly. Before the fix an active client without a policy ran this round; now it cannot be built
without one, and only the loudly named opt-out :meth:`secagg.ClientPolicy.trust_server` (the attack
harness's positive control) lets the round run, and leak.
"""

from __future__ import annotations

import numpy as np
import pytest

from privagg.errors import ConfigurationError
from secagg import ClientPolicy, MaskedInput, SecAggParams, SecAggServer, run_round
from secagg.messages import ClientMessage

TARGET, HONEST, COLLUDER, DIM = 0, 1, 2, 8
INPUTS = {c: np.random.default_rng(40 + c).integers(0, 1 << 16, DIM, dtype=np.uint64) for c in range(3)}


def _weak(claimed: int) -> SecAggParams:
    """The server's setup: degree 2 / threshold 2, claiming ``claimed`` clients (the roster is 3)."""
    return SecAggParams.manual(num_clients=claimed, degree=2, threshold=2)


class _MaliciousServer(SecAggServer):
    """The attacker's server: it skips its own rule of ``threshold + 1`` clients per stage (only the
    clients' checks stand)."""

    def _need(self, ids: object, what: str) -> None:
        return None


def _ignore_honest_masked_input(sender: int, msg: ClientMessage) -> list[ClientMessage]:
    return [] if sender == HONEST and isinstance(msg, MaskedInput) else [msg]


def _attack(params: SecAggParams, **policy: object) -> np.ndarray | None:
    """Drive the round; return what the server and the colluder rebuild as the target's input."""
    rep = run_round(
        params,
        client_ids=[TARGET, HONEST, COLLUDER],
        inputs=INPUTS,
        dimension=DIM,
        server=_MaliciousServer(params, clients=[TARGET, HONEST, COLLUDER], dimension=DIM, screen_senders=False),
        client_hook=_ignore_honest_masked_input,
        measure_memory=False,
        **policy,  # type: ignore[arg-type]
    )
    if not rep.ok:
        return None
    assert rep.sum is not None and sorted(rep.survivors) == [TARGET, COLLUDER]
    mod = np.uint64(1 << params.modulus_bits)
    return (rep.sum.astype(np.uint64) + mod - INPUTS[COLLUDER]) % mod  # the colluder subtracts its own input


@pytest.mark.parametrize("claimed", [3, 12])
def test_active_client_without_policy_is_refused(claimed: int) -> None:
    """Failed on HEAD 4fc272e: the round completed and the recovered vector equalled the target's input."""
    try:
        recovered = _attack(_weak(claimed))
    except ConfigurationError as e:
        assert e.field == "client_policy" and "trust_server" in str(e) and "ClientPolicy(" in str(e)
        return
    assert recovered is None or not np.array_equal(recovered, INPUTS[TARGET]), (
        f"the server and one colluder recovered the target's exact input {recovered.tolist()}"
    )
    pytest.fail("an active client without a policy ran a round")


@pytest.mark.parametrize("claimed", [3, 12])
def test_trust_server_opt_out_leaks_the_exact_input(claimed: int) -> None:
    """The positive control: clients that trust the server's numbers hand over the target's input."""
    recovered = _attack(_weak(claimed), client_policy=ClientPolicy.trust_server())
    assert recovered is not None
    assert np.array_equal(recovered, INPUTS[TARGET])


@pytest.mark.parametrize("claimed", [3, 12])
def test_a_policy_refuses_the_weak_setup(claimed: int) -> None:
    """With a policy (population of at least 8, 5 % colluders), every client refuses the setup; nothing leaks."""
    policy = ClientPolicy(min_clients=8, dropout_rate=0.05, corruption_rate=0.05)
    rep = run_round(
        _weak(claimed),
        client_ids=[TARGET, HONEST, COLLUDER],
        inputs=INPUTS,
        dimension=DIM,
        client_hook=_ignore_honest_masked_input,
        measure_memory=False,
        client_policy=policy,
    )
    assert not rep.ok and rep.sum is None
    assert set(rep.client_aborts) == {TARGET, HONEST, COLLUDER}
    assert all(e.stage == "await_setup" for e in rep.client_aborts.values())
