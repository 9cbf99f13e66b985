"""The server's side of decryption, shared by every driver: endorse in two waves, decrypt, fall back.

:func:`decrypt_in_waves` runs the decryptor stages of a round against an ``ask`` callback that
moves messages (the in-memory driver calls the parties; the Flower workflow sends QUERY
messages). It tolerates decryptors that stay silent, refuse or answer wrongly, as long as the
protocol allows:

1. **First wave.** ``t`` decryptors in index order check the set (proofs of plaintext knowledge
   included) and endorse it; while some do not answer validly, the next ones are asked, ``t`` at a
   time. When one *refused* (not mere silence), the server screens the proofs once
   (:meth:`~.parties.PaillierServer.screen`): unproven contributions are dropped and the wave
   starts over on the new set (those that endorsed the old set would refuse the new one).
2. **Second wave.** The rest of the quorum endorse the set shown those ``t`` endorsements.
3. **Decrypt.** The first wave (they verified the proofs) release their partials; only when the
   server cannot combine ``t`` valid ones (missing, not signed by the decryptor they name, or a
   partial-decryption proof that fails) are the other endorsers asked.

Fewer than the quorum of valid endorsements, or fewer than ``t`` valid partials, raise
:class:`DecryptorsUnavailable`, which names every decryptor that failed and why. Any other abort
(for instance a decrypted sum that does not fit the packing) propagates unchanged, and no further
decryptor is asked for a partial.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from privagg.errors import ProtocolAbort

from .decryptor import partial_signature_valid, verify_endorsements
from .messages import AggregateRequest, PartialDecryption, SetEndorsement
from .parties import PaillierServer

__all__ = ["NO_ANSWER", "Answer", "Ask", "DecryptorsUnavailable", "WavesOutcome", "decrypt_in_waves"]

#: the reason recorded for a decryptor that was asked and did not answer
NO_ANSWER = "no answer"

#: a decryptor's answer: its message, or the reason it refused / failed (a string)
Answer = SetEndorsement | PartialDecryption | str
#: ``ask(stage, request, indices) -> {index: answer}`` ("endorse" | "decrypt"); an index missing from
#: the result did not answer
Ask = Callable[[str, AggregateRequest, list[int]], Mapping[int, Answer]]

_M = TypeVar("_M", SetEndorsement, PartialDecryption)


class DecryptorsUnavailable(ProtocolAbort):
    """Too few decryptors answered validly: ``failed`` maps each failed decryptor index to why.

    ``needed``: the endorsement quorum (stage ``endorse``) or the threshold ``t`` (stage
    ``decrypt``); ``answered``: the decryptors whose answers counted.
    """

    def __init__(self, *, stage: str, needed: int, answered: Sequence[int], failed: Mapping[int, str]) -> None:
        self.needed = needed
        self.answered = tuple(sorted(answered))
        self.failed = dict(sorted(failed.items()))
        what = "valid endorsements of the set" if stage == "endorse" else "valid partial decryptions"
        who = "; ".join(f"decryptor {i}: {why}" for i, why in self.failed.items()) or "none"
        super().__init__(
            f"{len(self.answered)} {what} (from {list(self.answered)}), {needed} needed; failed: {who}",
            stage=stage,
            party="server",
        )


@dataclass
class WavesOutcome:
    """The sums and who did what (decryptor indices)."""

    sums: np.ndarray
    endorsers: tuple[int, ...]
    decryptors: tuple[int, ...]  # whose partials the server accepted
    failed: dict[int, str] = field(default_factory=dict)  # asked, did not answer validly (and why)
    asks: int = 0  # message batches sent to decryptors (each a parallel step)


def _collect(
    answers: Mapping[int, Answer],
    batch: list[int],
    kind: type[_M],
    valid: Callable[[_M], bool],
    failed: dict[int, str],
) -> tuple[dict[int, _M], bool]:
    """The valid answers of ``batch``; records the others in ``failed``. Also: whether one refused."""
    good: dict[int, _M] = {}
    refused = False
    for i in batch:
        a = answers.get(i, NO_ANSWER)
        if isinstance(a, str):
            failed[i] = a
            refused = refused or a != NO_ANSWER
        elif not isinstance(a, kind) or a.decryptor != i:
            failed[i] = f"answered with something other than its own {kind.__name__}"
            refused = True
        elif not valid(a):
            failed[i] = f"its {kind.__name__} is not validly signed for this set"
            refused = True
        else:
            good[i] = a
            failed.pop(i, None)
    return good, refused


def decrypt_in_waves(
    server: PaillierServer,
    request: AggregateRequest,
    decryptors: Sequence[int],
    ask: Ask,
    *,
    threshold: int,
) -> WavesOutcome:
    """Endorse, decrypt and combine ``request`` (from ``server.aggregate()``) with ``decryptors`` (indices).

    ``threshold``: ``t`` (1 for a single key holder). See the module docstring.
    """
    order = sorted(decryptors)
    t = threshold
    pk = server.public_key
    failed: dict[int, str] = {}
    asks = 0

    def endorsement_ok(e: SetEndorsement) -> bool:
        return bool(
            verify_endorsements(
                (e,),
                key_id=pk.key_id,
                session=server.session,
                round=server.round,
                digest=server.pending_set_hash,
                decryptor_keys=server.decryptor_keys,
            )
        )

    def partial_ok(p: PartialDecryption) -> bool:
        return partial_signature_valid(p, server.decryptor_keys, pk)

    def ask_for(
        stage: str, req: AggregateRequest, batch: list[int], kind: type[_M], ok: Callable[[_M], bool]
    ) -> tuple[dict[int, _M], bool]:
        nonlocal asks
        asks += 1
        return _collect(ask(stage, req, batch), batch, kind, ok, failed)

    asked: set[int] = set()
    verified: dict[int, SetEndorsement] = {}
    screened = False
    while len(verified) < t:
        batch = [i for i in order if i not in asked][: t - len(verified)]
        if not batch:
            break
        asked.update(batch)
        got, refused = ask_for("endorse", request, batch, SetEndorsement, endorsement_ok)
        verified.update(got)
        if not refused or screened:
            continue
        screened = True
        try:
            request = server.screen()  # a decryptor refused: a client's proof, most likely
        except ProtocolAbort:
            continue  # every proof verifies: it refused for another reason; ask the next
        for i in verified:  # they endorsed the old set and refuse the new one; the others recorded nothing
            failed[i] = "endorsed the set before the server dropped its unproven contributions"
        asked = set(verified)
        verified = {}
    endorsers = dict(verified)
    if len(verified) >= t:
        vouched = dataclasses.replace(request, endorsements=tuple(verified.values()))
        while len(endorsers) < server.quorum:
            batch = [i for i in order if i not in asked][: server.quorum - len(endorsers)]
            if not batch:
                break
            asked.update(batch)
            endorsers.update(ask_for("endorse", vouched, batch, SetEndorsement, endorsement_ok)[0])
    if len(endorsers) < server.quorum:
        raise DecryptorsUnavailable(stage="endorse", needed=server.quorum, answered=list(endorsers), failed=failed)
    endorsed = server.endorse(list(endorsers.values()))
    first = [i for i in order if i in verified][:t]
    partials = ask_for("decrypt", endorsed, first, PartialDecryption, partial_ok)[0]
    try:
        sums = server.finish(list(partials.values()))
    except ProtocolAbort as e:
        if len(server.accepted_decryptors) >= t:
            raise  # t valid partials: the abort has another cause; ask nobody else
        rest = [i for i in order if i in endorsers and i not in first]
        if rest:
            partials.update(ask_for("decrypt", endorsed, rest, PartialDecryption, partial_ok)[0])
        try:
            sums = server.finish(list(partials.values()))
        except ProtocolAbort:
            if len(server.accepted_decryptors) >= t:
                raise
            for i in server.rejected_decryptors:
                failed[i] = "its partial decryption's proof does not verify (or it signed two different partials)"
            raise DecryptorsUnavailable(
                stage="decrypt", needed=t, answered=server.accepted_decryptors, failed=failed
            ) from e
    for i in server.rejected_decryptors:
        failed[i] = "its partial decryption's proof does not verify (or it signed two different partials)"
    return WavesOutcome(
        sums=sums,
        endorsers=tuple(sorted(endorsers)),
        decryptors=server.accepted_decryptors,
        failed=failed,
        asks=asks,
    )
