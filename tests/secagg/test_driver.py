import numpy as np

from privagg.encoding import packed_size
from secagg import ClientPolicy, SecAggParams, run_round

#: these tests exercise the protocol's mechanics with the server's numbers (unsafe opt-out, on purpose)
TRUST = ClientPolicy.trust_server()


def _round(n: int, m: int, threat: str = "active"):
    p = SecAggParams.manual(num_clients=n, degree=4, threshold=3, threat=threat)
    rng = np.random.default_rng(n)
    base = [rng.integers(0, 2**16, m, dtype=np.uint64) for _ in range(3)]
    rep = run_round(
        p,
        client_ids=list(range(n)),
        inputs=lambda c: base[c % 3],
        dimension=m,
        dropouts={"masked_input": [0]},
        client_policy=TRUST,
    )
    return rep, p, base


def test_report_costs_and_correctness():
    m = 5000
    rep, p, base = _round(10, m)
    assert rep.ok
    want = sum(base[c % 3] for c in rep.survivors) % (1 << p.modulus_bits)
    assert np.array_equal(rep.sum, want)
    assert set(rep.stage_seconds) == {
        "advertise",
        "reveal",
        "share_keys",
        "check_shares",
        "masked_input",
        "consistency",
        "unmask",
    }
    for c in rep.survivors:
        assert rep.bytes_sent[c] > packed_size(m, p.modulus_bits)
        assert rep.bytes_received[c] > 0
    assert rep.bytes_sent[0] < packed_size(m, p.modulus_bits)  # client 0 never uploaded its vector
    # the server also sends to clients that have dropped (they never receive it)
    assert rep.bytes_sent["server"] >= sum(v for k, v in rep.bytes_received.items() if k != "server")
    assert rep.client_upload_bytes() > 0 and rep.round_seconds > 0


def test_server_memory_does_not_grow_with_clients():
    """The server adds masked vectors as they arrive: its peak is O(M), not O(N M)."""
    m = 100_000
    one_vector = 8 * m
    peaks = {}
    for n in (6, 24):
        rep, _, _ = _round(n, m, threat="semi-honest")
        assert rep.ok
        peaks[n] = rep.server_peak_bytes
    assert peaks[24] < 4 * one_vector
    assert peaks[24] < 1.5 * peaks[6]


def test_worker_processes_give_the_same_protocol():
    m, n = 2000, 9
    p = SecAggParams.manual(num_clients=n, degree=4, threshold=3, threat="active")
    rng = np.random.default_rng(3)
    inputs = {c: rng.integers(0, 2**16, m, dtype=np.uint64) for c in range(n)}
    rep = run_round(
        p,
        client_ids=list(range(n)),
        inputs=inputs,
        dimension=m,
        dropouts={"masked_input": [1], "unmask": [2]},
        workers=2,
        client_policy=TRUST,
    )
    assert rep.ok
    assert np.array_equal(rep.sum, sum(inputs[c] for c in rep.survivors) % (1 << p.modulus_bits))
    assert rep.survivors == tuple(c for c in range(n) if c != 1)


def test_worker_processes_report_client_aborts():
    import dataclasses

    from secagg import Envelope, UnmaskRequest

    def both(env):
        if isinstance(env.message, UnmaskRequest):
            m = env.message
            return [Envelope(env.recipient, dataclasses.replace(m, dropped=m.survivors))]
        return [env]

    p = SecAggParams.manual(num_clients=6, degree=4, threshold=3, threat="semi-honest")
    inputs = {c: np.zeros(10, dtype=np.uint64) for c in range(6)}
    rep = run_round(
        p, client_ids=list(range(6)), inputs=inputs, dimension=10, server_hook=both, workers=2, client_policy=TRUST
    )
    assert not rep.ok and len(rep.client_aborts) == 6


def test_server_observer_sees_what_the_server_receives():
    from secagg import KeyAdvertisement, MaskedInput, UnmaskResponse

    p = SecAggParams.manual(num_clients=6, degree=4, threshold=3, threat="semi-honest")
    inputs = {c: np.full(10, c, dtype=np.uint64) for c in range(6)}
    seen: list[object] = []
    rep = run_round(
        p,
        client_ids=list(range(6)),
        inputs=inputs,
        dimension=10,
        server_observer=seen.append,
        measure_memory=False,
        client_policy=TRUST,
    )
    assert rep.ok
    kinds = [type(m) for m in seen]
    for kind in (KeyAdvertisement, MaskedInput, UnmaskResponse):
        assert kinds.count(kind) == 6
    masked = {m.sender: m for m in seen if isinstance(m, MaskedInput)}
    assert not np.array_equal(masked[1].values(), inputs[1])  # the server only ever sees masked inputs


def test_external_clients_join_a_cohort_of_the_callers_choice():
    """A study's own clients (e.g. a malicious server's Sybils) run next to the driver's."""
    import pytest

    from privagg.errors import ConfigurationError
    from secagg import SecAggClient, SecAggServer

    p = SecAggParams.manual(num_clients=4, degree=3, threshold=3, threat="semi-honest")
    inputs = {c: np.full(8, c + 1, dtype=np.uint64) for c in range(4)}
    own = {}
    for s in (10, 11, 12):
        own[s] = SecAggClient(s, threat="semi-honest")
        own[s].set_input(np.zeros(8, dtype=np.uint64))
    server = SecAggServer(p, clients=[2, 10, 11, 12], dimension=8)
    rep = run_round(
        p,
        client_ids=list(range(4)),
        inputs=inputs,
        dimension=8,
        server=server,
        external_clients=own,
        measure_memory=False,
        client_policy=TRUST,
    )
    assert rep.ok and rep.survivors == (2, 10, 11, 12) and rep.sum is not None
    assert np.array_equal(rep.sum, inputs[2])  # the sum is client 2's input alone
    assert rep.bytes_sent[10] > 0 and rep.bytes_received[0] == 0  # client 0 was never invited
    with pytest.raises(ConfigurationError):
        run_round(
            p, client_ids=list(range(4)), inputs=inputs, dimension=8, external_clients={3: own[10]}, client_policy=TRUST
        )
    with pytest.raises(ConfigurationError):
        run_round(
            p,
            client_ids=list(range(4)),
            inputs=inputs,
            dimension=8,
            external_clients=own,
            workers=2,
            client_policy=TRUST,
        )


def test_deliveries_stream_in_batches(monkeypatch):
    """With a tiny batch every server message is handed to the clients on its own (what the driver holds
    encoded at once is one batch): the round is the same, workers or not."""
    import secagg.driver as drv
    from secagg.pools import LocalPool, WorkerPool

    calls = []
    for cls in (LocalPool, WorkerPool):
        real = cls.run

        def counted(self, items, *, set_inputs, real=real):
            calls.append(len(items))
            yield from real(self, items, set_inputs=set_inputs)

        monkeypatch.setattr(cls, "run", counted)
    monkeypatch.setattr(drv, "_BATCH_BYTES", 1)
    p = SecAggParams.manual(num_clients=10, degree=4, threshold=3, threat="active")
    base = {c: np.full(64, c + 1, dtype=np.uint64) for c in range(10)}
    for workers in (1, 2):
        calls.clear()
        rep = run_round(
            p,
            client_ids=list(range(10)),
            inputs=base,
            dimension=64,
            dropouts={"masked_input": [0]},
            workers=workers,
            client_policy=TRUST,
        )
        assert rep.ok and np.array_equal(rep.sum, sum(base[c] for c in rep.survivors) % (1 << p.modulus_bits))
        assert calls and max(calls) == 1 and len(calls) >= 7 * 9  # one call per message, every stage
