"""One round trip over a Flower Grid, shared by the SecAgg and Paillier workflows."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

from flwr.app import Message

__all__ = ["round_trip"]


def round_trip(
    grid: Any, msgs: Sequence[Message], *, timeout: float | None, stage: str, errors: dict[int, str]
) -> tuple[dict[int, Message], float]:
    """Send ``msgs``; return the first successful reply of each addressed node, and the seconds taken.

    Replies from nodes that were not addressed, and repeated replies, are ignored; a node that
    answers with an error is recorded in ``errors`` as ``"<stage>: <reason>"``.
    """
    addressed: Collection[int] = {m.metadata.dst_node_id for m in msgs}
    t0 = time.perf_counter()
    replies = grid.send_and_receive(msgs, timeout=timeout)
    seconds = time.perf_counter() - t0
    got: dict[int, Message] = {}
    for r in replies:
        nid = r.metadata.src_node_id
        if nid not in addressed or nid in got:
            continue
        if r.has_error():
            errors[nid] = f"{stage}: {r.error.reason}"
            continue
        got[nid] = r
    return got, seconds
