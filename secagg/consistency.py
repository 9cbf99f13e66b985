"""The active client's last check before it reveals anything: the consistency signatures.

Every surviving client signed ``(session id, round, survivors)``; the session id is a hash of the
whole roster, so a signature also says "I saw this roster". :func:`consistency_fault` judges the
signatures an :class:`~secagg.messages.UnmaskRequest` carries, from the revealing client's view:

- a key share of a dropped neighbour ``w`` needs ``threshold`` valid signatures of ``w``'s
  neighbours (with ``2t > k + 1 + c`` two contradicting survivor sets cannot both reach it, see
  :mod:`secagg.params`);
- with a :class:`~secagg.params.ClientPolicy`, any reveal needs a *roster quorum*: valid
  signatures of more than ``(1 + corruption_rate) / 2`` of the roster. Honest clients sign one
  view each, so two views (two rosters -- a split roster -- or two survivor sets) need
  ``2 (q - corrupted) <= honest`` signers: impossible above that quorum. A split view therefore
  aborts every honest client before any share leaves it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from secagg import crypto
from secagg.messages import UnmaskRequest
from secagg.params import ClientPolicy, colluders

__all__ = ["roster_quorum", "consistency_fault", "unmask_fault"]


def roster_quorum(roster_size: int, corruption_rate: float) -> int:
    """The smallest number of signers no two disjoint honest views can both reach.

    With ``c = floor(corruption_rate * n)`` corrupted clients signing both views, two views of
    ``q`` signers each need ``2 q <= n + c``; ``q = floor((n + c) / 2) + 1`` rules that out. Integer
    arithmetic: a float product such as ``1.4 * 90 / 2 = 62.999...`` would give one signer too few.
    """
    return (roster_size + colluders(corruption_rate, roster_size)) // 2 + 1


def consistency_fault(
    *,
    signatures: Sequence[tuple[int, bytes]],
    survivors: Sequence[int],
    dropped_held: Sequence[int],
    neighbours_of: Mapping[int, Sequence[int]],
    threshold: int,
    directory: Mapping[int, bytes],
    payload: bytes,
    quorum: int | None,
) -> str | None:
    """Why the client must not reveal (``None``: it may). ``payload``: what the client itself signed;
    ``dropped_held``: dropped clients whose key shares it would reveal; ``quorum``: roster quorum."""
    sigs: dict[int, bytes] = {}
    for cid, sig in signatures:
        if cid in sigs:
            return f"two consistency signatures from client {cid}"
        sigs[cid] = sig
    alive = set(survivors)
    valid: dict[int, bool] = {}

    def ok(cid: int) -> bool:
        if cid not in valid:
            key = directory.get(cid)
            valid[cid] = cid in sigs and cid in alive and key is not None and crypto.verify(key, sigs[cid], payload)
        return valid[cid]

    # Only key-share reveals need the neighbours' signatures: an honest client that reveals a
    # self-mask share of w signed a survivor set holding w itself, so it cannot count among t
    # honest signers of a set without w.
    for w in dropped_held:
        group = neighbours_of[w]
        count = sum(1 for u in group if valid.get(u))  # signatures already checked first
        for u in group:
            if count >= threshold:
                break
            if u not in valid and ok(u):
                count += 1
        if count < threshold:
            return (
                f"only {count} neighbours of dropped client {w} signed the survivor set, the threshold is {threshold}"
            )
    if quorum is not None:
        # signatures already checked first, then only as many more as the quorum still needs: the decision is
        # the same as checking every one (a count below the quorum has checked them all)
        count = sum(1 for u in sigs if valid.get(u))
        for u in sorted(sigs):
            if count >= quorum:
                break
            if u not in valid and ok(u):
                count += 1
        if count < quorum:
            return (
                f"only {count} clients signed this roster and survivor set, the quorum is {quorum} "
                "(a split view, or too many dropouts)"
            )
    return None


def unmask_fault(
    msg: UnmaskRequest,
    held: Mapping[int, object],
    graph: crypto.NeighbourGraph,
    threshold: int,
    directory: Mapping[int, bytes],
    payload: bytes,
    policy: ClientPolicy | None,
) -> str | None:
    """:func:`consistency_fault` from a revealing client's view: the shares it ``held``, its ``graph``."""
    dropped_held = sorted(set(held) & set(msg.dropped))
    return consistency_fault(
        signatures=msg.signatures,
        survivors=msg.survivors,
        dropped_held=dropped_held,
        neighbours_of={w: graph.neighbours(w) for w in dropped_held},
        threshold=threshold,
        directory=directory,
        payload=payload,
        quorum=roster_quorum(len(graph.ids), policy.corruption_rate) if policy is not None else None,
    )
