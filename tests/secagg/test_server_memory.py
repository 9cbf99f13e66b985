"""What the server holds, and how the driver measures it (issue 12, server memory): compact id sets,
share deliveries read from the dealers' messages on demand, secrets rebuilt from the compact store, and
a stage close traced even when the last expected answer triggers it inside a step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.randomness import InsecureDeterministicSecrets
from secagg import EncryptedShares, SecAggParams, SecAggServer, ShareDelivery, ThreatModel, run_round, vss
from secagg.idset import IdSet
from secagg.messages import CIPHERTEXT_BYTES, DIGEST_BYTES, DeliveredShare, ShareEnvelope

ids = st.sets(st.integers(min_value=0, max_value=5000), max_size=60)


@settings(max_examples=200, deadline=None)
@given(a=ids, b=ids, probe=st.integers(min_value=-3, max_value=5003))
def test_an_idset_is_the_frozenset_of_its_ids(a: set[int], b: set[int], probe: int) -> None:
    s = IdSet(a)
    assert list(s) == sorted(a) and len(s) == len(a) and s.nbytes == 4 * len(a)
    assert (probe in s) == (probe in a) and ("1" not in s)
    assert set(s - b) == a - b and isinstance(s - b, IdSet)
    assert (set(b) <= s) == (b <= a) and (s == frozenset(a)) and set(IdSet(s)) == a
    assert list(IdSet.of_sorted(np.array(sorted(a), dtype=np.int64))) == sorted(a)
    assert [s.at(i) for i in range(len(a))] == sorted(a)


def _dealing(dealer: int, holders: list[int], rng: np.random.Generator) -> EncryptedShares:
    """A structurally valid dealing (random bytes; delivery only reads its fields)."""

    def b(n: int) -> bytes:
        return rng.bytes(n)

    envs = tuple(ShareEnvelope(v, b(32), b(32), b(CIPHERTEXT_BYTES), b(32)) for v in holders)
    return EncryptedShares(3, bytes(DIGEST_BYTES), dealer, b(32), envs, b(24), b(64))


def _naive(dealings: dict[int, EncryptedShares], recipients: frozenset[int]) -> dict[int, list[DeliveredShare]]:
    """The delivery as one list per recipient, built the obvious way (the reference)."""
    out: dict[int, list[DeliveredShare]] = {c: [] for c in recipients}
    for d in sorted(dealings):
        m = dealings[d]
        for e in m.envelopes:
            if e.recipient in recipients:
                dig = vss.dealing_digest(m)
                fields = (e.self_share_commitment, e.key_share_commitment, e.key_commitment, m.check)
                out[e.recipient].append(DeliveredShare(d, e.ciphertext, dig, *fields))
    return out


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=1, max_value=12), seed=st.integers(min_value=0, max_value=2**32 - 1), data=st.data())
def test_lazy_deliveries_are_the_naive_deliveries(n: int, seed: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    clients = list(range(0, 3 * n, 3))  # ids with gaps
    dealers = data.draw(st.sets(st.sampled_from(clients), min_size=1))
    recipients = frozenset(data.draw(st.sets(st.sampled_from(clients))))
    dealings = {}
    for d in dealers:  # holders in any order (a dealer's message keeps its own order)
        holders = [c for c in clients if c != d and rng.random() < 0.7]
        rng.shuffle(holders)
        dealings[d] = _dealing(d, holders, rng)
    want = _naive(dealings, recipients)
    got = vss.deliveries(dealings, recipients)
    assert sorted(got) == sorted(recipients)
    who = vss.delivery_map(dealings, recipients)
    for c in recipients:
        view = got[c]
        assert list(view) == want[c] and len(view) == len(want[c]) and list(who[c]) == [s.sender for s in want[c]]
        assert [view[i] for i in range(-len(view), len(view))] == want[c] + want[c]
        assert view[1:] == tuple(want[c][1:])
        lazy = ShareDelivery(3, bytes(DIGEST_BYTES), c, view)
        assert lazy.encode() == ShareDelivery(3, bytes(DIGEST_BYTES), c, tuple(want[c])).encode()
        assert ShareDelivery.decode(lazy.encode()).shares == tuple(want[c])


P = SecAggParams.manual(num_clients=8, degree=6, threshold=4, threat="semi-honest")
INPUTS = {c: np.full(16, c + 1, dtype=np.uint32) for c in range(8)}


class _BigClose(SecAggServer):
    """Allocates (and frees) 4 MB while closing the share stage."""

    def _close_shares(self):  # type: ignore[no-untyped-def]
        scratch = np.ones(1 << 20, dtype=np.uint32)
        assert int(scratch[-1]) == 1
        return super()._close_shares()


def test_a_stage_closed_by_its_last_answer_is_traced() -> None:
    """No deadline here: the last dealing closes the share stage inside ``step``; its transient counts."""
    srv = _BigClose(P, clients=range(8), dimension=16, secrets=InsecureDeterministicSecrets(1))
    rep = run_round(P, client_ids=list(range(8)), inputs=INPUTS, dimension=16, server=srv)
    assert rep.ok
    assert rep.server_peak_by_stage["collect_shares"] >= 4 << 20
    assert rep.server_peak_bytes == max(rep.server_peak_by_stage.values())


def test_after_the_masked_inputs_the_server_keeps_one_kind_of_commitment_per_owner() -> None:
    """No dealing after the share check; after the masked inputs, survivors' self-share commitments
    and dropped clients' key-share commitments only (the other kind is never revealed)."""
    srv = SecAggServer(P, clients=range(8), dimension=16, secrets=InsecureDeterministicSecrets(2))
    rep = run_round(
        P, client_ids=list(range(8)), inputs=INPUTS, dimension=16, server=srv, dropouts={"masked_input": [6, 7]}
    )
    assert rep.ok and rep.dropped == (6, 7) and srv.shares == {}
    assert sorted(srv._share_commitments["self"]) == list(rep.survivors)
    assert sorted(srv._share_commitments["key"]) == [6, 7]
    assert srv.graph is not None
    for store in srv._share_commitments.values():
        for owner, (holders, blob) in store.items():
            assert list(holders) == sorted(srv.graph.neighbours(owner)) and len(blob) == 32 * len(holders)
    assert all(isinstance(v, IdSet) for v in srv.delivered_to.values())
    want = sum(INPUTS[c].astype(np.uint64) for c in rep.survivors) % (1 << P.modulus_bits)
    assert np.array_equal(rep.sum, want)


@pytest.mark.parametrize("threat", [ThreatModel.SEMI_HONEST, ThreatModel.ACTIVE])
def test_a_share_of_the_kind_no_longer_kept_is_refused_and_attributed(threat: ThreatModel) -> None:
    """The server keeps one kind of commitment per owner after the masked inputs; a colluding client that
    also reveals the other kind (a survivor's mask-key share, a dropped client's self-mask share: the
    "both shares" attack from the client side) is refused by name before any commitment is looked up,
    the round completes with the correct sum, and nobody is exposed."""
    from attacks.protocol.conformance import complete_params
    from attacks.protocol.rewrite import run_tampered
    from secagg import UnmaskResponse
    from secagg.client_messages import RevealedShare

    p = complete_params(threat)
    swapped: list[tuple[int, int]] = []

    def swap(sender, m, rnd):  # type: ignore[no-untyped-def]
        if sender == 2 and isinstance(m, UnmaskResponse) and m.self_shares and m.key_shares:
            s, k = m.self_shares[0], m.key_shares[0]
            swapped[:] = [(s.owner, k.owner)]
            m = dataclasses.replace(
                m,
                self_shares=(*m.self_shares, RevealedShare(k.owner, k.share)),
                key_shares=(*m.key_shares, RevealedShare(s.owner, s.share)),
            )
            return [rnd.resign(m) if threat is ThreatModel.ACTIVE else m]
        return [m]

    out = run_tampered(p, attackers=(2,), client_rewrite=swap, dropouts={"masked_input": [7]})
    assert out.crash is None and out.completed and out.correct_sum() and not out.exposed()
    ((survivor, dropped),) = swapped
    assert dropped == 7
    assert out.report is not None and set(out.report.survivors) == set(range(7))
    rejected = out.rnd.server.rejected
    assert (2, f"unrequested self share of client {dropped}") in rejected
    assert (2, f"unrequested key share of client {survivor}") in rejected
