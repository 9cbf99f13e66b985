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
from secagg import ClientPolicy, EncryptedShares, SecAggParams, SecAggServer, ShareDelivery, ThreatModel, run_round, vss
from secagg.idset import IdSet
from secagg.messages import CIPHERTEXT_BYTES, DIGEST_BYTES, DeliveredShare, ShareEnvelope

#: these tests exercise the protocol's mechanics with the server's numbers (unsafe opt-out, on purpose)
TRUST = ClientPolicy.trust_server()

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

    envs = tuple(ShareEnvelope(v, b(32), b(CIPHERTEXT_BYTES)) for v in holders)
    return EncryptedShares(3, bytes(DIGEST_BYTES), dealer, b(32), envs, b(12), b(64))


def _naive(dealings: dict[int, EncryptedShares], recipients: frozenset[int]) -> dict[int, list[DeliveredShare]]:
    """The delivery as one list per recipient, built the obvious way (the reference)."""
    out: dict[int, list[DeliveredShare]] = {c: [] for c in recipients}
    for d in sorted(dealings):
        m = dealings[d]
        for e in m.envelopes:
            if e.recipient in recipients:
                out[e.recipient].append(DeliveredShare(d, e.ciphertext, vss.dealing_digest(m), e.leaf, m.check))
    return out


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=1, max_value=12), seed=st.integers(min_value=0, max_value=2**32 - 1), data=st.data())
def test_lazy_deliveries_are_the_naive_deliveries(n: int, seed: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    clients = list(range(0, 3 * n, 3))  # ids with gaps
    dealers = data.draw(st.sets(st.sampled_from(clients), min_size=1))
    recipients = frozenset(data.draw(st.sets(st.sampled_from(clients))))
    dealings = {}
    for d in dealers:  # holders ascending (the server refuses any other order)
        holders = [c for c in clients if c != d and rng.random() < 0.7]
        dealings[d] = _dealing(d, holders, rng)
    want = _naive(dealings, recipients)
    got = vss.deliveries(dealings, recipients)
    assert sorted(got) == sorted(recipients)
    for c in recipients:
        view = got[c]
        assert list(view) == want[c] and len(view) == len(want[c])
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
    rep = run_round(P, client_ids=list(range(8)), inputs=INPUTS, dimension=16, server=srv, client_policy=TRUST)
    assert rep.ok
    assert rep.server_peak_by_stage["collect_shares"] >= 4 << 20
    assert rep.server_peak_bytes == max(rep.server_peak_by_stage.values())


def test_after_the_share_check_the_server_keeps_only_the_leaves() -> None:
    """After the share check every dealing of U2 is its leaves (32 bytes per holder, ascending holders,
    no ciphertext), the id sets are compact, and the round's sum is right."""
    srv = SecAggServer(P, clients=range(8), dimension=16, secrets=InsecureDeterministicSecrets(2))
    rep = run_round(
        P,
        client_ids=list(range(8)),
        inputs=INPUTS,
        dimension=16,
        server=srv,
        dropouts={"masked_input": [6, 7]},
        client_policy=TRUST,
    )
    assert rep.ok and rep.dropped == (6, 7) and sorted(srv.shares) == sorted(rep.survivors + rep.dropped)
    assert srv.graph is not None
    for owner, dealing in srv.shares.items():
        assert list(dealing.holders) == sorted(srv.graph.neighbours(owner))
        assert len(dealing.leaves) == 32 * len(dealing.holders)
        with pytest.raises(ValueError, match="dropped"):
            dealing.ciphertext(0)
    for c in srv.shared:  # the views: every dealer of U2 that addressed c
        assert set(srv.delivered_to[c]) == set(srv.graph.neighbours(c)) & srv.shared
        assert all(d in srv.delivered_to[c] for d in srv.shared if d in srv.graph.neighbours(c))
    want = sum(INPUTS[c].astype(np.uint64) for c in rep.survivors) % (1 << P.modulus_bits)
    assert np.array_equal(rep.sum, want)


def test_a_dealing_holds_what_its_accounting_says() -> None:
    """The server's accounting of a dealing is its real memory: leaf + ciphertext + 4 bytes per envelope
    (plus fixed fields), measured with tracemalloc (within 10% and 2 KB), and the leaves alone after the
    share check; envelopes out of ascending order are refused."""
    import tracemalloc

    from secagg.dealings import Dealing

    rng = np.random.default_rng(5)
    msgs = [_dealing(d, [h for h in range(300) if h != d], rng) for d in range(20)]
    tracemalloc.start()
    try:
        held = [Dealing(m) for m in msgs]
        real, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    counted = sum(d.nbytes for d in held)
    per_envelope = 32 + CIPHERTEXT_BYTES + 4
    assert counted >= 20 * 299 * per_envelope
    assert abs(real - counted) <= 0.1 * counted + 2048 * 20
    assert sum(d.leaves_only().nbytes for d in held) < 20 * 299 * (32 + 4) + 20 * 300
    with pytest.raises(ValueError, match="ascending"):
        Dealing(dataclasses.replace(msgs[0], envelopes=msgs[0].envelopes[::-1]))


@pytest.mark.parametrize("threat", [ThreatModel.SEMI_HONEST, ThreatModel.ACTIVE])
def test_a_share_of_the_kind_no_longer_kept_is_refused_and_attributed(threat: ThreatModel) -> None:
    """After the masked inputs the server asks for one kind of share per owner; a colluding client that
    also reveals the other kind (a survivor's mask-key share, a dropped client's self-mask share: the
    "both shares" attack from the client side) is refused by name before any leaf is looked up,
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
