"""The server rebuilds every secret of the unmask stage in one vectorised pass (``Unmasking._reconstruct_all``):
the same sum as one by one, and the same abort, naming the same client, when shares are short or bad."""

from __future__ import annotations

import numpy as np
import pytest

from secagg import SecAggParams, SecAggServer, run_round

N, M = 8, 16
P = SecAggParams.manual(num_clients=N, degree=6, threshold=4, threat="semi-honest")
INPUTS = {c: np.full(M, c + 1, dtype=np.uint32) for c in range(N)}


class _Tampering(SecAggServer):
    """Edits the valid revealed shares it rebuilds from: ``short`` owners lose all but one, ``bad`` owners
    get one share replaced by another field element (the rebuilt limbs are then not 16-bit, or, when the
    change is small, the secret misses its commitment: either way the dealer is named)."""

    def __init__(self, *, short: tuple[int, ...] = (), bad: tuple[int, ...] = ()) -> None:
        super().__init__(P, clients=range(N), dimension=M)
        self.short, self.bad = short, bad

    def _rows_of(self, kind: str, owner: int) -> tuple[np.ndarray, np.ndarray]:
        hs, rows = super()._rows_of(kind, owner)
        if owner in self.short:
            return hs[:1], rows[:1]
        if owner in self.bad:
            rows = rows.copy()
            rows[int(np.argmin(hs)), 0] ^= 1
        return hs, rows


def _run(server: SecAggServer | None = None, drop: tuple[int, ...] = (5,)):
    return run_round(
        P, client_ids=list(range(N)), inputs=INPUTS, dimension=M, dropouts={"masked_input": drop}, server=server
    )


def test_the_batched_unmasking_gives_the_exact_sum() -> None:
    rep = _run()
    assert rep.ok and rep.dropped == (5,)
    want = sum(INPUTS[c].astype(np.uint64) for c in rep.survivors) % (1 << P.modulus_bits)
    assert np.array_equal(rep.sum, want)


@pytest.mark.parametrize(
    ("short", "bad", "blamed", "reason"),
    [
        ((2,), (), "server", "only 1 valid self-mask shares of client 2"),
        ((), (3,), 3, "client 3 dealt inconsistent"),
        ((1,), (0,), 0, "client 0 dealt inconsistent"),  # the first survivor in order fails first
        ((6,), (1,), 1, "client 1 dealt inconsistent"),
        ((5,), (), "server", "only 1 valid mask-key shares of client 5"),  # the dropped client's key
    ],
)
def test_the_first_failing_owner_in_order_aborts_the_round(short, bad, blamed, reason) -> None:
    rep = _run(_Tampering(short=short, bad=bad))
    assert rep.abort is not None and rep.sum is None
    assert reason in rep.abort.reason and rep.abort.party == blamed and rep.abort.stage == "collect_unmask"


def test_worker_processes_remove_the_masks_with_the_same_exact_sum() -> None:
    """``workers=2``: the server hands its mask removal to the client processes (idle meanwhile)."""
    rep = run_round(
        P, client_ids=list(range(N)), inputs=INPUTS, dimension=M, dropouts={"masked_input": (2, 5)}, workers=2
    )
    assert rep.ok and rep.dropped == (2, 5)
    want = sum(INPUTS[c].astype(np.uint64) for c in rep.survivors) % (1 << P.modulus_bits)
    assert np.array_equal(rep.sum, want)
