"""Codec v5's leaves (``secagg.vss``: one leaf hash per share envelope, signed in the dealing digest and
bound into the share ciphertext): a dealer or a server that moves a leaf, an envelope or a digest
gets an exact outcome, on the real parties through the in-memory driver.

- a dealer that signs a leaf its shares miss is proven faulty and excluded (the round completes
  without it);
- a dealer that encrypts under a leaf it did not sign, a server that forwards a wrong leaf, swaps two
  holders' envelopes, or replays an envelope, a dealing or an exclusion of another session: the
  holders concerned abort (typed) without revealing a key, nobody is excluded without a proof, and
  the round completes with the exact sum of the others (or aborts, typed, with nothing exposed).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
import pytest

from attacks.protocol.client_attacks import off_polynomial_rewrite, open_own_dealing
from attacks.protocol.conformance import complete_params
from attacks.protocol.rewrite import Tampered, TamperedRound, run_tampered
from secagg import EncryptedShares, Envelope, MaskRequest, ShareCheck, ShareDelivery, ThreatModel, crypto, vss
from secagg.messages import ClientMessage

ACTIVE = ThreatModel.ACTIVE
DEALER, VICTIM, OTHER = 2, 0, 5
TAG_FAILED = "a signature, tag or key check failed"


def _reseal(m: EncryptedShares, rnd: TamperedRound, *, signed: bytes | None, sealed: bytes | None) -> EncryptedShares:
    """The dealer's own shares again, but for VICTIM it signs the leaf ``signed`` and encrypts under
    the leaf ``sealed`` (``None``: the true leaf); re-signed."""
    keys, plain = open_own_dealing(m, rnd)
    true = {e.recipient: e.leaf for e in m.envelopes}
    signed_leaves = {**true, **({VICTIM: signed} if signed is not None else {})}
    digest = vss.digest_of(
        session=m.session_id,
        round=m.round,
        dealer=m.sender,
        seed_commitment=m.self_seed_commitment,
        pairs=[v.to_bytes(4, "big") + signed_leaves[v] for v in sorted(signed_leaves)],
    )
    # the check polynomials are the dealt ones' combination under the new challenge: rebuild them
    # from any threshold holders' plaintexts (the dealing is consistent)
    from secagg.shamir import interpolate

    t = rnd.params.threshold
    rows = {v: np.frombuffer(plain[v], dtype="<u4").astype(np.uint64) for v in sorted(plain)}
    some = sorted(rows)[:t]
    coeffs = interpolate(np.array([v + 1 for v in some], dtype=np.uint64), np.stack([rows[v] for v in some]))
    check = vss.check_polynomials(coeffs, digest)
    head = digest + hashlib.sha256(check).digest()
    ids: dict[str, Any] = {"session": m.session_id, "round": m.round, "sender": m.sender}
    envs = []
    for e in m.envelopes:
        v = e.recipient
        aad_leaf = sealed if (v == VICTIM and sealed is not None) else signed_leaves[v]
        ct = crypto.encrypt_shares(keys[v], plain[v], **ids, recipient=v, bound=head + aad_leaf)
        envs.append(dataclasses.replace(e, leaf=signed_leaves[v], ciphertext=ct))
    return rnd.resign(dataclasses.replace(m, envelopes=tuple(envs), check=check))


def _dealer(**how: bytes | None) -> Any:
    def rewrite(sender: int, m: ClientMessage, rnd: TamperedRound) -> list[ClientMessage]:
        if sender == DEALER and isinstance(m, EncryptedShares):
            return [_reseal(m, rnd, **how)]
        return [m]

    return rewrite


def _no_key_revealed(out: Tampered) -> bool:
    """No honest client sent a complaint (a complaint reveals a pairwise key)."""
    return not any(isinstance(m, ShareCheck) and m.complaints for m in out.rnd.observed)


def test_a_dealer_that_signs_a_leaf_its_shares_miss_is_proven_and_excluded() -> None:
    out = run_tampered(
        complete_params(ACTIVE), attackers=(DEALER,), client_rewrite=_dealer(signed=bytes(32), sealed=None)
    )
    assert out.crash is None and not out.honest_aborts
    srv = out.rnd.server
    assert srv.excluded == {DEALER: f"client {DEALER} dealt client {VICTIM} shares that miss their signed leaf"}
    assert out.correct_sum(without=(DEALER,)) and not out.exposed()


def test_a_dealer_that_seals_under_a_leaf_it_did_not_sign_loses_only_that_holder() -> None:
    """The signed leaf is not the one the ciphertext is bound to: the holder cannot tell the dealer from
    a server that swapped the leaf, so it aborts (typed) without a complaint; the round completes."""
    out = run_tampered(
        complete_params(ACTIVE), attackers=(DEALER,), client_rewrite=_dealer(signed=bytes(32), sealed=b"\x01" * 32)
    )
    assert out.crash is None and set(out.honest_aborts) == {VICTIM}
    assert out.honest_aborts[VICTIM].reason == TAG_FAILED
    assert out.rnd.server.excluded == {} and _no_key_revealed(out)
    assert out.correct_sum(without=(VICTIM,)) and not out.exposed()


def _delivery_rewrite(edit: Any) -> Any:
    def rewrite(env: Envelope, rnd: TamperedRound) -> list[Envelope]:
        m = env.message
        if isinstance(m, ShareDelivery):
            shares = tuple(edit(env.recipient, s, rnd) for s in m.shares)
            return [Envelope(env.recipient, dataclasses.replace(m, shares=shares))]
        return [env]

    return rewrite


@pytest.mark.parametrize("field", ["leaf", "dealing_digest"])
def test_a_server_that_forwards_another_leaf_or_digest_loses_the_holder(field: str) -> None:
    """The server hands VICTIM another holder's leaf (or another dealer's digest) for DEALER's
    envelope: the ciphertext does not open, VICTIM aborts without a complaint, nobody is excluded."""

    def edit(holder: int, s: Any, rnd: TamperedRound) -> Any:
        if holder != VICTIM or s.sender != DEALER:
            return s
        if field == "leaf":
            return dataclasses.replace(s, leaf=rnd.server.shares[DEALER].share(OTHER).leaf)
        return dataclasses.replace(s, dealing_digest=rnd.server.shares[OTHER].digest)

    out = run_tampered(complete_params(ACTIVE), server_rewrite=_delivery_rewrite(edit))
    assert out.crash is None and set(out.honest_aborts) == {VICTIM}
    assert out.honest_aborts[VICTIM].reason == TAG_FAILED
    assert out.rnd.server.excluded == {} and _no_key_revealed(out)
    assert out.correct_sum(without=(VICTIM,)) and not out.exposed()


def test_a_server_that_swaps_two_holders_envelopes_loses_both() -> None:
    def edit(holder: int, s: Any, rnd: TamperedRound) -> Any:
        if s.sender != DEALER or holder not in (VICTIM, OTHER):
            return s
        return rnd.server.shares[DEALER].share(OTHER if holder == VICTIM else VICTIM)

    out = run_tampered(complete_params(ACTIVE), server_rewrite=_delivery_rewrite(edit))
    assert out.crash is None and set(out.honest_aborts) == {VICTIM, OTHER}
    assert {e.reason for e in out.honest_aborts.values()} == {TAG_FAILED}
    assert out.rnd.server.excluded == {} and _no_key_revealed(out)
    assert out.correct_sum(without=(VICTIM, OTHER)) and not out.exposed()


def _session_a() -> tuple[Tampered, list[MaskRequest]]:
    """A first session in which DEALER deals VICTIM a share off its polynomial (excluded with its
    proof), and the mask requests its server sent."""
    sent: list[MaskRequest] = []

    def record(env: Envelope, rnd: TamperedRound) -> list[Envelope]:
        if isinstance(env.message, MaskRequest):
            sent.append(env.message)
        return [env]

    out = run_tampered(
        complete_params(ACTIVE),
        attackers=(DEALER,),
        client_rewrite=off_polynomial_rewrite(DEALER, VICTIM),
        server_rewrite=record,
    )
    assert set(out.rnd.server.excluded) == {DEALER} and sent and not out.honest_aborts
    return out, sent


def test_an_envelope_replayed_from_another_session_does_not_open() -> None:
    a, _ = _session_a()
    (dealing_a,) = [m for m in a.rnd.observed if isinstance(m, EncryptedShares) and m.sender == OTHER]
    replay = vss.deliveries({OTHER: dealing_a}, [VICTIM])[VICTIM][0]

    def edit(holder: int, s: Any, rnd: TamperedRound) -> Any:
        return replay if holder == VICTIM and s.sender == OTHER else s

    out = run_tampered(complete_params(ACTIVE), server_rewrite=_delivery_rewrite(edit), seed=1)
    assert out.crash is None and set(out.honest_aborts) == {VICTIM}
    assert out.honest_aborts[VICTIM].reason == TAG_FAILED
    assert out.correct_sum(without=(VICTIM,)) and not out.exposed()


def test_a_dealing_replayed_from_another_session_is_refused() -> None:
    """A colluder sends its signed dealing of session A in session B: refused (another session), and
    the round completes without it (as a client that never shared)."""
    a, _ = _session_a()
    (dealing_a,) = [m for m in a.rnd.observed if isinstance(m, EncryptedShares) and m.sender == OTHER]

    def replay(sender: int, m: ClientMessage, rnd: TamperedRound) -> list[ClientMessage]:
        return [dealing_a] if sender == OTHER and isinstance(m, EncryptedShares) else [m]

    same_pki = (a.rnd.keys, a.rnd.directory)  # the same clients, a new session: only the session differs
    out = run_tampered(complete_params(ACTIVE), attackers=(OTHER,), client_rewrite=replay, seed=1, identities=same_pki)
    assert out.crash is None and (OTHER, "message of another session") in out.rnd.server.rejected
    assert OTHER not in out.rnd.server.shared and not out.honest_aborts
    assert out.correct_sum(without=(OTHER,)) and not out.exposed()


@pytest.mark.parametrize("round", [0, 1])
def test_an_exclusion_replayed_from_another_session_proves_nothing(round: int) -> None:
    """Session A proved DEALER faulty; a server that replays that proof in session B (same clients and
    PKI, a new nonce, the same or the next round; DEALER honest there) to drop DEALER finds every
    neighbour refusing to mask: typed aborts, nothing exposed."""
    a, sent = _session_a()
    req_a = sent[0]
    assert req_a.excluded and req_a.excluded[0].dealer == DEALER

    def inject(env: Envelope, rnd: TamperedRound) -> list[Envelope]:
        if isinstance(env.message, MaskRequest):
            return [Envelope(env.recipient, dataclasses.replace(env.message, excluded=req_a.excluded))]
        return [env]

    same_pki = (a.rnd.keys, a.rnd.directory)
    out = run_tampered(complete_params(ACTIVE), server_rewrite=inject, seed=1, identities=same_pki, round=round)
    assert out.crash is None and not out.completed and not out.exposed()
    want = f"the server excludes client {DEALER} without a proof"
    assert {e.reason for c, e in out.honest_aborts.items() if c != DEALER} == {want}
    assert len(out.honest_aborts) >= complete_params(ACTIVE).num_clients - 1
