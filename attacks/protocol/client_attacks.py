"""Malicious clients' attack classes on SecAgg+, one registered class each.

A malicious client (an ``attacker`` of :func:`attacks.protocol.rewrite.run_tampered`:
the real client code, whose outgoing messages the attack rewrites) must not crash or
stall the server, frame an honest client, or abort the round at will. The promise: it is
refused with a typed, attributed error and the round completes without it (or with its
correct input, when only a later message was refused).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from attacks.protocol.conformance import RoundAttack, complete_params, correct_sum_without, register_round_attack
from attacks.protocol.rewrite import ClientRewrite, Tampered, TamperedRound, run_tampered, with_round
from secagg import (
    EncryptedShares,
    KeyAdvertisement,
    MaskedInput,
    RevealedShare,
    ThreatModel,
    UnmaskResponse,
    crypto,
    vss,
)
from secagg.messages import SHARE_BYTES, ClientMessage
from secagg.shamir import PRIME, interpolate

__all__ = ["attributed", "off_polynomial_rewrite", "open_own_dealing"]

_BOTH = (ThreatModel.SEMI_HONEST, ThreatModel.ACTIVE)


def attributed(out: Tampered, cid: int) -> bool:
    """The server recorded ``cid`` as the sender of a refused message or share."""
    srv = out.rnd.server
    return any(s == cid for s, _ in srv.rejected) or any(h == cid for h, *_ in srv.corrupt_shares)


def _advert_rewrite(attacker: int, **change: Any) -> ClientRewrite:
    def rewrite(sender: int, m: ClientMessage, rnd: TamperedRound) -> list[ClientMessage]:
        if sender == attacker and isinstance(m, KeyAdvertisement):
            return [rnd.resign(dataclasses.replace(m, **change))]
        return [m]

    return rewrite


@register_round_attack("sender-framing")
class SenderFraming(RoundAttack):
    who = "client"
    title = "Sender framing: client 1 sends a masked input in client 5's name"
    promise = "the forged message is refused; the sum is correct with client 5's true input"

    def play(self, threat: ThreatModel, *, seed: int = 0) -> Tampered:
        def rewrite(sender: int, m: ClientMessage, rnd: TamperedRound) -> list[ClientMessage]:
            if sender == 1 and isinstance(m, MaskedInput):
                forged = dataclasses.replace(m, sender=5, data=bytes([0x5A]) * len(m.data))
                if threat is ThreatModel.ACTIVE:  # the best it can sign with: its own key
                    forged = dataclasses.replace(forged, signature=rnd.sign_as(1, crypto.message_payload(forged)))
                return [m, forged]
            return [m]

        return run_tampered(complete_params(threat), attackers=(1,), client_rewrite=rewrite, seed=seed)

    def held(self, out: Tampered) -> bool:
        return correct_sum_without(out) and out.report is not None and 5 in out.report.survivors


@register_round_attack("share-out-of-field")
class ShareOutOfField(RoundAttack):
    who = "client"
    threats = _BOTH
    title = "Crash input: a revealed share whose limbs are >= p"
    promise = "the share is refused and attributed to its sender; the round completes with the correct sum"

    def client_rewrite(self, threat: ThreatModel) -> ClientRewrite:
        def rewrite(sender: int, m: ClientMessage, rnd: TamperedRound) -> list[ClientMessage]:
            if sender == 1 and isinstance(m, UnmaskResponse):
                bad = tuple(RevealedShare(s.owner, b"\xff" * SHARE_BYTES) if s.owner == 1 else s for s in m.self_shares)
                return [rnd.resign(dataclasses.replace(m, self_shares=bad))]
            return [m]

        return rewrite

    def held(self, out: Tampered) -> bool:
        return correct_sum_without(out) and attributed(out, 1)


@register_round_attack("low-order-key")
class LowOrderKey(RoundAttack):
    who = "client"
    threats = _BOTH
    title = "Crash input: client 3 advertises a low-order X25519 mask key"
    promise = "the key is refused at advertisement; the round completes without client 3"

    attacker = 3

    def client_rewrite(self, threat: ThreatModel) -> ClientRewrite:
        return _advert_rewrite(3, mask_public_key=bytes(32))

    def held(self, out: Tampered) -> bool:
        return correct_sum_without(out, (3,)) and attributed(out, 3)


@register_round_attack("zero-encryption-key")
class ZeroEncryptionKey(RoundAttack):
    who = "client"
    threats = _BOTH
    title = "Abort without attribution: client 3 advertises an all-zero encryption key"
    promise = "the key is refused at advertisement (client 3 named); the round completes without it"

    attacker, clients = 3, 12

    def client_rewrite(self, threat: ThreatModel) -> ClientRewrite:
        return _advert_rewrite(3, enc_public_key=bytes(32))

    def held(self, out: Tampered) -> bool:
        return correct_sum_without(out, (3,)) and attributed(out, 3)


@register_round_attack("huge-round")
class HugeRound(RoundAttack):
    who = "client"
    threats = _BOTH
    title = "Crash input: client 2's messages carry round 2^63"
    promise = "the messages are refused (typed); the round completes without client 2"

    attacker = 2

    def client_rewrite(self, threat: ThreatModel) -> ClientRewrite:
        def rewrite(sender: int, m: ClientMessage, rnd: TamperedRound) -> list[ClientMessage]:
            return [with_round(m, 1 << 63)] if sender == 2 else [m]  # type: ignore[list-item]

        return rewrite

    def held(self, out: Tampered) -> bool:
        # undecodable bytes carry no trustworthy sender: the transport names it, the round goes on
        return correct_sum_without(out, (2,))


@register_round_attack("oversized-message")
class OversizedMessage(RoundAttack):
    who = "client"
    threats = _BOTH
    title = "Stall input: client 1's unmask response carries 4096 extra shares"
    promise = "a message larger than the parameters allow is refused whole; the round completes"

    def client_rewrite(self, threat: ThreatModel) -> ClientRewrite:
        def rewrite(sender: int, m: ClientMessage, rnd: TamperedRound) -> list[ClientMessage]:
            if sender == 1 and isinstance(m, UnmaskResponse):
                junk = tuple(RevealedShare(100 + i, bytes(SHARE_BYTES)) for i in range(4096))
                return [rnd.resign(dataclasses.replace(m, key_shares=m.key_shares + junk))]
            return [m]

        return rewrite

    def held(self, out: Tampered) -> bool:
        return correct_sum_without(out) and len(out.rnd.server.rejected) <= 1


@register_round_attack("inconsistent-dealer")
class InconsistentDealer(RoundAttack):
    who = "client"
    threats = _BOTH
    title = "Inconsistent dealer: client 2 deals client 0 a self-mask share off its polynomial"
    promise = "detected when dealt (verifiable sharing); client 2 is excluded, named, and the round completes"

    attacker = 2

    def client_rewrite(self, threat: ThreatModel) -> ClientRewrite:
        return off_polynomial_rewrite(2, 0)

    def held(self, out: Tampered) -> bool:
        srv = out.rnd.server
        return (
            correct_sum_without(out, (2,)) and set(srv.excluded) == {2} and not out.honest_aborts and not out.exposed()
        )


def open_own_dealing(m: EncryptedShares, rnd: TamperedRound) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """What a colluding dealer reads back from its own dealing ``m``: ``({holder: pairwise share
    key}, {holder: share plaintext})``, each envelope opened under its signed leaf."""
    sk, digest = rnd.secrets_of(m.sender).enc_key, vss.dealing_digest(m)
    ids: dict[str, Any] = {"session": m.session_id, "round": m.round, "sender": m.sender}
    keys, plain = {}, {}
    for e in m.envelopes:
        peer = rnd.advertisement(e.recipient)
        assert peer is not None
        k = crypto.share_cipher_key(crypto.x25519_shared(sk, peer.enc_public_key), **ids, recipient=e.recipient)
        keys[e.recipient] = k
        plain[e.recipient] = crypto.decrypt_shares(
            k, e.ciphertext, **ids, recipient=e.recipient, bound=vss.binding(digest, m.check, e.leaf)
        )
    return keys, plain


def off_polynomial_rewrite(dealer: int, victim: int) -> ClientRewrite:
    """The dealer's best try: the victim's self share moved off the polynomial, every leaf,
    the challenge and the check polynomials recomputed (from the honest polynomial) and re-encrypted,
    re-signed: a consistent-looking dealing in which only the victim's share is wrong."""

    def rewrite(sender: int, m: ClientMessage, rnd: TamperedRound) -> list[ClientMessage]:
        if sender != dealer or not isinstance(m, EncryptedShares):
            return [m]
        t = rnd.params.threshold
        keys, plain = open_own_dealing(m, rnd)
        rows = {v: np.frombuffer(pt, dtype="<u4").astype(np.uint64) for v, pt in plain.items()}
        honest = [v for v in rows if v != victim][:t]
        coeffs = interpolate(np.array([v + 1 for v in honest], dtype=np.uint64), np.stack([rows[v] for v in honest]))
        rows[victim] = rows[victim].copy()
        rows[victim][0] = (rows[victim][0] + 1) % PRIME  # the victim's first self-share limb, off the polynomial
        forged = vss.seal_rows(
            session=m.session_id,
            round=m.round,
            dealer=dealer,
            seed_commitment=m.self_seed_commitment,
            rows=rows,
            coeffs=coeffs,
            keys=keys,
        )
        return [rnd.resign(dataclasses.replace(forged, signature=m.signature))]  # resign() re-signs what was signed

    return rewrite
