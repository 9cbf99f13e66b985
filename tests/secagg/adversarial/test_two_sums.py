"""What the secure sum does not hide (``secagg/THREAT_MODEL.md``, "Two sums over one model"): a server
that announces the same model in two rounds and has two cohorts summed that differ by one client learns
that client's input (with deterministic local training, the same input both times)."""

from __future__ import annotations

import numpy as np
import pytest

from secagg import ClientPolicy, SecAggParams, ThreatModel, make_identities, run_round

#: these tests exercise the protocol's mechanics with the server's numbers (unsafe opt-out, on purpose)
TRUST = ClientPolicy.trust_server()

N, DIM = 8, 16


@pytest.mark.parametrize("threat", [ThreatModel.SEMI_HONEST, ThreatModel.ACTIVE])
def test_two_sums_over_one_model_differ_by_one_client(threat: ThreatModel) -> None:
    rng = np.random.default_rng(12)
    inputs = {c: rng.integers(0, 1 << 16, DIM, dtype=np.uint64) for c in range(N)}  # the same update each round
    identities = make_identities(range(N))
    digest = b"m" * 32  # one model, announced in both rounds
    sums = []
    for rnd, cohort in ((1, list(range(N))), (2, list(range(N - 1)))):
        p = SecAggParams.manual(
            num_clients=len(cohort), degree=len(cohort) - 1, threshold=len(cohort) // 2 + 1, threat=threat
        )
        rep = run_round(
            p,
            client_ids=cohort,
            inputs=inputs,
            dimension=DIM,
            round=rnd,
            model_digest=digest,
            identities=identities,
            client_policy=TRUST,
        )
        assert rep.ok and sorted(rep.survivors) == cohort
        sums.append(rep.sum.astype(np.uint64))
    mod = np.uint64(1 << p.modulus_bits)
    assert np.array_equal((sums[0] + mod - sums[1]) % mod, inputs[N - 1])  # client N-1's input, exactly
