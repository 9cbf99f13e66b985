"""The adversarial conformance suite: one test per attack class of issue 12 and per earlier one.

Every case drives the REAL client and server state machines through the in-memory driver;
the attack only rewrites their messages (``attacks.protocol.rewrite``). Each test asserts
the exact outcome the threat model promises: a typed abort with nothing reconstructible,
or the correct sum without the excluded party. Holes still open are strict xfails: the test
states the correct outcome and flips (XPASS -> failure) the day the hole is closed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from attacks.protocol.client_attacks import attributed
from attacks.protocol.conformance import ROUND_ATTACKS, round_attack, run_round_attacks
from attacks.protocol.rewrite import Tampered, run_tampered
from attacks.protocol.server_attacks import POLICY
from secagg import SecAggParams, ThreatModel

ACTIVE, SEMI = ThreatModel.ACTIVE, ThreatModel.SEMI_HONEST

#: holes not closed yet (issue 12); each entry is the reason of a strict xfail
OPEN: dict[str, str] = {}

CASES = [
    pytest.param(
        name,
        tm,
        id=f"{name}-{tm.value}",
        marks=[pytest.mark.xfail(strict=True, reason=OPEN[name])] if name in OPEN else [],
    )
    for name in ROUND_ATTACKS.names()
    for tm in ROUND_ATTACKS.get(name).threats
]


@pytest.mark.parametrize(("name", "threat"), CASES)
def test_promised_outcome(name: str, threat: ThreatModel) -> None:
    """Each attack class ends as the threat model promises (see the case's ``promise``)."""
    attack = round_attack(name)
    out = attack.play(threat)
    assert out.crash is None, out.crash
    assert attack.held(out), f"{attack.promise} -- but: {out.summary()}"


def _reasons(out: Tampered) -> str:
    return " | ".join(out.abort_reasons())


# ---------------------------------------------------------------------------- exact outcomes
def test_ghost_advertisement_refused_by_every_client_at_the_roster() -> None:
    out = round_attack("ghost-advertisement").play(ACTIVE)
    honest = [c for c in out.rnd.honest if c != 11]
    assert {out.client_aborts[c].reason for c in honest} == {"advertisement of client 11 has no valid signature"}
    assert {out.client_aborts[c].stage for c in honest} == {"await_roster"}
    assert not out.exposed()


@pytest.mark.parametrize("threat", [SEMI, ACTIVE])
@pytest.mark.parametrize(
    ("name", "key"), [("low-order-key", "mask_public_key"), ("zero-encryption-key", "enc_public_key")]
)
def test_invalid_key_refused_at_advertisement_and_round_completes(name: str, key: str, threat: ThreatModel) -> None:
    out = round_attack(name).play(threat)
    assert out.completed and out.correct_sum(without=[3]) and not out.honest_aborts
    assert (3, f"client 3 advertised an invalid {key} (low order or non-canonical)") in out.rnd.server.rejected


@pytest.mark.parametrize("threat", [SEMI, ACTIVE])
def test_share_outside_the_field_is_refused_and_attributed(threat: ThreatModel) -> None:
    out = round_attack("share-out-of-field").play(threat)
    assert out.crash is None and out.correct_sum() and attributed(out, 1)
    assert set(out.report.survivors) == set(range(8))  # type: ignore[union-attr]


@pytest.mark.parametrize("threat", [SEMI, ACTIVE])
def test_huge_round_is_refused_typed_and_round_completes(threat: ThreatModel) -> None:
    out = round_attack("huge-round").play(threat)
    assert out.crash is None and out.correct_sum(without=[2])
    assert any("out of range" in r for _, r in out.rnd.server.rejected)


@pytest.mark.parametrize("threat", [SEMI, ACTIVE])
def test_oversized_message_refused_whole(threat: ThreatModel) -> None:
    out = round_attack("oversized-message").play(threat)
    assert out.correct_sum() and len(out.rnd.server.rejected) == 1
    assert "does not fit" in out.rnd.server.rejected[0][1]


def test_ring_overflow_roster_larger_than_the_setup_is_refused() -> None:
    out = round_attack("ring-overflow").play(ACTIVE)
    assert not out.completed and not out.exposed() and len(out.honest_aborts) == 12
    assert {e.stage for e in out.honest_aborts.values()} == {"await_roster"}


@pytest.mark.parametrize("threat", [SEMI, ACTIVE])
def test_inconsistent_dealer_is_proven_and_excluded_before_masking(threat: ThreatModel) -> None:
    """Item 6: client 2 deals client 0 a self share off its polynomial (commitments, challenge and
    check polynomials recomputed, re-signed). Client 0's check fails on receipt; its complaint (the
    pairwise key) proves it; client 2 is excluded before anyone masks and named; the round completes
    with the exact sum of the others, no honest client aborts and nothing honest is reconstructible."""
    from secagg import ShareCheck

    out = round_attack("inconsistent-dealer").play(threat)
    srv = out.rnd.server
    assert out.crash is None and out.completed and out.correct_sum(without=[2])
    assert srv.excluded == {
        2: "client 2 dealt client 0 shares off its polynomials (the verifiable-sharing check fails)"
    }
    assert out.report is not None and 2 not in out.report.survivors + out.report.dropped
    assert set(out.report.survivors) == set(range(8)) - {2}
    assert not out.honest_aborts and not out.exposed() and srv.rejected == []
    complaints = {m.sender: [c.dealer for c in m.complaints] for m in out.rnd.observed if isinstance(m, ShareCheck)}
    assert complaints == {c: ([2] if c == 0 else []) for c in range(8)}  # only the victim complained, once


def test_double_listing_and_fake_dropout_abort_at_unmask() -> None:
    out = round_attack("double-listing").play(ACTIVE)
    assert "a client is listed both as survivor and as dropped" in _reasons(out) and not out.exposed()
    out = round_attack("fake-dropout").play(ACTIVE)
    assert "this client is missing from the survivor list" in _reasons(out) and not out.exposed()


def test_key_substitution_aborts_the_target_and_its_neighbours() -> None:
    out = round_attack("key-substitution").play(ACTIVE)
    assert out.client_aborts[0].reason == "the roster does not hold this client's own advertisement unchanged"
    assert all(out.client_aborts[c].stage == "await_roster" for c in range(8))


def test_replays_are_refused() -> None:
    out = round_attack("replay-round").play(ACTIVE)
    assert {e.reason for e in out.honest_aborts.values()} == {"message of round 0, this is round 1"}
    out = round_attack("replay-session").play(ACTIVE)
    assert out.client_aborts[0].reason == "message of another session"
    assert out.correct_sum(without=[0]) and not out.exposed()


def test_downgrade_and_model_inconsistency_refused_at_setup_or_roster() -> None:
    out = round_attack("downgrade").play(ACTIVE)
    assert {e.reason for e in out.honest_aborts.values()} == {
        "server asked for semi-honest mode, this client requires active"
    }
    out = round_attack("model-inconsistency").play(ACTIVE)
    assert all("joined a different configuration or model" in e.reason for e in out.honest_aborts.values())
    assert len(out.honest_aborts) == 8 and not out.exposed()


def test_forged_consistency_and_selective_unmask_reveal_nothing() -> None:
    for name in ("forged-consistency", "selective-unmask"):
        out = round_attack(name).play(ACTIVE)
        assert not out.completed and not out.exposed(), name
    out = round_attack("selective-unmask").play(ACTIVE)
    assert any("signed the survivor set" in e.reason for e in out.honest_aborts.values())


# ---------------------------------------------------------------------------- the suite as a whole
def test_every_case_runs_in_the_modes_it_covers() -> None:
    semi = {o.attack for o in run_round_attacks(SEMI, names=["huge-round", "downgrade"])}
    assert semi == {"huge-round"}  # the server's deviations are the active mode's promise only
    for name in ROUND_ATTACKS.names():
        a = round_attack(name)
        assert a.title and a.promise and ACTIVE in a.threats, name


# ---------------------------------------------------------------------------- overflow at N > 1024
def _n1100() -> SecAggParams:
    return SecAggParams.derive(num_clients=1100, dropout_rate=0.05, corruption_rate=0.01, threat=ACTIVE)


@pytest.mark.slow
def test_no_overflow_above_1024_clients() -> None:
    """1,100 clients at the largest 16-bit input: the ring is sized for the sum (27 bits), exact."""
    p = _n1100()
    top = (1 << p.value_bits) - 1
    out = run_tampered(p, inputs={c: np.full(4, top, dtype=np.uint64) for c in range(1100)}, dimension=4)
    assert out.correct_sum() and int(out.report.sum[0]) == 1100 * top  # type: ignore[union-attr,index]


def test_setup_claiming_1024_clients_for_a_roster_of_1100_is_refused() -> None:
    """The server claims 1,024 clients (a 26-bit ring) and rosters 1,100: the sum would wrap."""
    p = _n1100()
    small = SecAggParams.manual(num_clients=1024, degree=p.degree, threshold=p.threshold, threat=ACTIVE)

    def server(rnd):  # type: ignore[no-untyped-def]
        s = rnd.server
        s.params, s.setup = small, dataclasses.replace(s.setup, params=small)
        return s

    out = run_tampered(p, server=server, dimension=4, server_screens=False)
    assert out.crash is None and not out.completed and not out.exposed()
    assert len(out.honest_aborts) == 1100 and {e.stage for e in out.honest_aborts.values()} == {"await_roster"}


def test_policy_cases_stop_at_the_clients_checks() -> None:
    out = round_attack("weak-parameters").play(ACTIVE)
    assert {e.reason for e in out.honest_aborts.values()} == {
        "degree 2 / threshold 2 is weaker than this client derives for 12 clients (degree 10, threshold 8: "
        "2^-8 at dropout 0.02, corruption 0.02)"
    }
    out = round_attack("roster-shrinking").play(ACTIVE)
    assert out.client_aborts[0].stage == "await_roster" and not out.exposed()
    assert "below this client's minimum cohort of 40" in out.client_aborts[0].reason


def test_the_policy_accepts_what_it_derives() -> None:
    """Control: with the suite's policy an honest round over the derived parameters completes."""
    p = POLICY.required(12, ACTIVE)
    out = run_tampered(p, client_policy=POLICY)
    assert out.completed and out.correct_sum() and not out.client_aborts


@pytest.mark.parametrize("name", ["weak-parameters", "roster-shrinking"])
def test_without_a_client_policy_the_server_picks_the_parameters(name: str) -> None:
    """A deployment whose clients hold no policy is not protected: the audit runs it that way."""
    assert round_attack(name).run(ACTIVE, client_policy=True).held
    assert not round_attack(name).run(ACTIVE, client_policy=False).held
