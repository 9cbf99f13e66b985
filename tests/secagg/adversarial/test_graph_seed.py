"""The ring is fixed by commit-then-reveal (issue 12, "the graph is not fixed before the roster").

Every attack below is a rewrite of the real parties' messages (``attacks.protocol.rewrite``) on a
sparse ring (degree 4 of 12), where the graph decides who holds whose shares.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attacks.protocol.conformance import sparse_params
from attacks.protocol.rewrite import run_tampered
from privagg.randomness import label
from secagg import EncryptedShares, Envelope, KeyAdvertisement, KeyRoster, ThreatModel, crypto, seeding
from secagg.messages import RevealSet, SeedReveal

ACTIVE = sparse_params(ThreatModel.ACTIVE)


def _no_dealing(out) -> bool:  # type: ignore[no-untyped-def]
    """Nothing about any input exists: no client dealt a share, nothing is exposed."""
    return not any(isinstance(m, EncryptedShares) for m in out.rnd.observed) and not out.exposed()


def test_known_answers_and_the_definition() -> None:
    c = seeding.commitment(round=1, client_id=2, config_hash=b"c" * 32, value=b"v" * 32)
    assert c.hex() == "18fdb326762f018bd6f50548eaac3e520fd71823f023ee0dfc9d50d96254e28a"
    assert c == hashlib.sha256(label(crypto.DOMAIN, "seed-commit", 1, 2, b"c" * 32) + b"v" * 32).digest()
    g = seeding.graph_seed(b"s" * 32, ((2, b"v" * 32), (5, b"w" * 32)))
    assert g.hex() == "fa92c0d2a23cb1f83e2a65ae950fd15ec7b13173a620d669b3449621f889c0a0"
    body = (2).to_bytes(4, "big") + b"v" * 32 + (5).to_bytes(4, "big") + b"w" * 32
    assert g == hashlib.sha256(label(crypto.DOMAIN, "graph-seed", b"s" * 32, 2) + body).digest()


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.binary(min_size=32, max_size=32), min_size=2, max_size=6, unique=True), i=st.integers(0, 5))
def test_every_contribution_moves_the_ring_seed(values: list[bytes], i: int) -> None:
    """Whoever fixed the rest, one unknown honest contribution leaves the seed unknown."""
    reveals = tuple(enumerate(values))
    i %= len(values)
    other = tuple((c, bytes(b ^ 1 for b in v) if c == i else v) for c, v in reveals)
    assert seeding.graph_seed(b"s" * 32, reveals) != seeding.graph_seed(b"s" * 32, other)


def test_honest_round_sums_exactly_on_the_revealed_ring() -> None:
    out = run_tampered(ACTIVE, seed=1)
    assert out.crash is None and out.completed and out.correct_sum() and not out.exposed()
    srv = out.rnd.server
    reveals = tuple(sorted(srv.reveals.items()))
    assert [c for c, _ in reveals] == list(range(12))
    ring = crypto.NeighbourGraph(range(12), session=seeding.graph_seed(srv.session_id, reveals), degree=4)
    assert srv.graph is not None and srv.graph.ids == ring.ids
    # the ring is not the one the roster alone (the pre-fix session-id ring) would give
    assert crypto.NeighbourGraph(range(12), session=srv.session_id, degree=4).ids != ring.ids


def test_semi_honest_has_no_reveal_stage() -> None:
    out = run_tampered(sparse_params(ThreatModel.SEMI_HONEST), seed=1)
    assert out.completed and out.correct_sum()
    assert not any(isinstance(m, SeedReveal) for m in out.rnd.observed)


def test_a_colluder_that_changes_its_contribution_after_seeing_the_others_is_refused() -> None:
    """Colluder 5 reveals another value than it committed to (one chosen once the honest values are
    in): the server refuses it, and the session aborts before anyone deals; the colluder can withhold,
    never choose."""
    seen: list[bytes] = []

    def choose(sender, m, rnd):  # type: ignore[no-untyped-def]
        if isinstance(m, SeedReveal):
            if sender != 5:
                seen.append(m.value)
                return [m]
            return [dataclasses.replace(m, value=hashlib.sha256(b"".join(seen)).digest())]
        return [m]

    out = run_tampered(ACTIVE, attackers=(5,), client_rewrite=choose, seed=2)
    assert out.crash is None and not out.completed and _no_dealing(out)
    assert "clients [5] did not reveal their graph-seed contributions" in out.abort_reasons()
    assert (5, "client 5's revealed contribution does not open its signed commitment") in out.rnd.server.rejected


def test_a_colluder_cannot_recommit_after_the_roster() -> None:
    """A second advertisement (a fresh commitment) once the roster is out is not part of the protocol."""

    def recommit(sender, m, rnd):  # type: ignore[no-untyped-def]
        if isinstance(m, SeedReveal) and sender == 5:
            adv = rnd.advertisement(5)
            fresh = rnd.resign(dataclasses.replace(adv, seed_commitment=bytes(32)))
            return [fresh, m]
        return [m]

    out = run_tampered(ACTIVE, attackers=(5,), client_rewrite=recommit, seed=3)
    assert out.completed and out.correct_sum()
    assert any(who == 5 and "unexpected KeyAdvertisement" in why for who, why in out.rnd.server.rejected)


def _reorder(m: RevealSet) -> RevealSet:
    r = list(m.reveals)
    r[0], r[1] = r[1], r[0]
    return dataclasses.replace(m, reveals=tuple(r))


def _substitute(m: RevealSet) -> RevealSet:
    return dataclasses.replace(m, reveals=tuple((c, bytes(32) if c == 3 else v) for c, v in m.reveals))


def _omit(m: RevealSet) -> RevealSet:
    return dataclasses.replace(m, reveals=tuple((c, v) for c, v in m.reveals if c != 3))


def _duplicate(m: RevealSet) -> RevealSet:
    return dataclasses.replace(m, reveals=(*m.reveals[:2], m.reveals[1], *m.reveals[3:]))  # 1 twice, not 2


def _foreign(m: RevealSet) -> RevealSet:
    return dataclasses.replace(m, reveals=(*m.reveals[:-1], (40, bytes(32))))


def _oversized(m: RevealSet) -> RevealSet:
    return dataclasses.replace(m, reveals=(*m.reveals, (40, bytes(32))))


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_reorder, "the reveal set is not exactly the roster in ascending id order"),
        (_substitute, "client 3's revealed contribution does not open its signed commitment"),
        (_omit, "the reveal set lacks the contributions of clients [3]"),
        (_duplicate, "the reveal set lacks the contributions of clients [2]"),
        (_foreign, "the reveal set lacks the contributions of clients [11]"),
        (_oversized, "RevealSet: list of 13 items does not fit the message"),  # the decoder's round limits
    ],
    ids=["reorder", "substitute", "omit", "duplicate", "foreign", "oversized"],
)
def test_a_server_that_reorders_or_substitutes_reveals_is_caught(edit, reason) -> None:  # type: ignore[no-untyped-def]
    """Sent to the target (client 0) only: it refuses to deal on that ring; nothing is exposed."""

    def tamper(env: Envelope, rnd) -> list[Envelope]:  # type: ignore[no-untyped-def]
        m = env.message
        if isinstance(m, RevealSet) and env.recipient == 0:
            return [Envelope(0, edit(m))]
        return [env]

    out = run_tampered(ACTIVE, server_rewrite=tamper, server_screens=False, seed=4)
    assert out.crash is None and not out.exposed()
    assert 0 in out.client_aborts and out.client_aborts[0].reason == reason
    assert not any(isinstance(m, EncryptedShares) and m.sender == 0 for m in out.rnd.observed)


def test_a_server_that_swaps_the_roster_after_the_reveals_is_refused() -> None:
    """Having seen every value, the server tries another roster (one colluder's entry left out, a new
    ring): the clients wait for the reveal set and refuse anything else."""

    def swap(env: Envelope, rnd) -> list[Envelope]:  # type: ignore[no-untyped-def]
        if isinstance(env.message, RevealSet):
            roster = rnd.server.roster
            advs = tuple(a for a in roster.advertisements if a.client_id != 5)
            return [Envelope(env.recipient, KeyRoster(roster.round, advs))]
        return [env]

    out = run_tampered(ACTIVE, attackers=(5,), server_rewrite=swap, server_screens=False, seed=5)
    assert out.crash is None and not out.completed and _no_dealing(out)
    assert all("unexpected KeyRoster" in e.reason for e in out.honest_aborts.values())


def test_a_withheld_reveal_aborts_the_session_before_anything_exists() -> None:
    """The residual: the last revealer (or a server withholding) can abort; that is all it buys."""
    out = run_tampered(ACTIVE, dropouts={"reveal": [7]}, seed=6)
    assert out.crash is None and not out.completed and _no_dealing(out)
    assert out.server_abort is not None and out.server_abort.stage == "collect_reveals"
    assert out.abort_reasons() == ["clients [7] did not reveal their graph-seed contributions"]


def test_a_dropout_after_revealing_is_tolerated() -> None:
    out = run_tampered(ACTIVE, dropouts={"share_keys": [7]}, seed=7)
    assert out.completed and out.correct_sum(without=(7,))


def test_advertisement_commitment_is_signed() -> None:
    """A server cannot swap an honest client's commitment: the advertisement signature covers it."""
    sub: dict[int, KeyAdvertisement] = {}

    def swap(env: Envelope, rnd) -> list[Envelope]:  # type: ignore[no-untyped-def]
        m = env.message
        if isinstance(m, KeyRoster):
            advs = tuple(
                dataclasses.replace(a, seed_commitment=bytes(32)) if a.client_id == 3 else a for a in m.advertisements
            )
            sub[env.recipient] = advs[3]
            return [Envelope(env.recipient, KeyRoster(m.round, advs))]
        return [env]

    out = run_tampered(ACTIVE, server_rewrite=swap, server_screens=False, seed=8)
    assert not out.completed and _no_dealing(out)
    assert out.client_aborts[3].reason == "the roster does not hold this client's own advertisement unchanged"
    others = [e.reason for c, e in out.client_aborts.items() if c != 3]
    assert len(others) == 11 and all("advertisement of client 3 has no valid signature" in r for r in others)
    assert np.all([a.seed_commitment == bytes(32) for a in sub.values()])
