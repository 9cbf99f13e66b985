"""The graph seed by commit-then-reveal (active mode): nobody can steer the ring once it sees others' inputs.

Each client draws a 32-byte contribution ``r_i`` from its secrets source at setup and signs the hash
commitment :func:`commitment` (bound to the round, its id and its config hash) into its
advertisement. Once a client holds a roster it has verified, it reveals ``r_i``
(:class:`~secagg.messages.SeedReveal`); the server forwards every roster client's value
(:class:`~secagg.messages.RevealSet`), each client checks that set (:func:`reveal_fault`: exactly the
roster's ids in ascending order, each value opening its signed commitment) and the ring order is drawn
from :func:`graph_seed` = hash of the session id and every revealed value.

Why that removes grinding: an honest client's roster (every commitment in it) is fixed before it reveals,
and its own ``r_i`` is uniform and unknown to everyone until then, so the graph that client uses is a
uniform draw from the adversary's view whatever roster, keys or commitments the adversary chose. A
colluder can no longer choose its contribution after seeing the others' (its commitment is in the
roster); the server cannot omit a reveal (the set must be the whole roster) nor substitute one (the
commitment). What is left is aborting: the adversary sees the honest values before revealing its own
(or forwarding the set) and may withhold, which aborts the session before anything about an input
exists. A new draw costs a new session with every honest client (fresh keys and contributions):
``grinding_bits`` then covers the log2 of the sessions an honest client joins for one input, not a
hashing budget. See ``secagg/THREAT_MODEL.md``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence

from privagg.randomness import label
from secagg.codec import DIGEST_BYTES
from secagg.crypto import DOMAIN
from secagg.messages import KeyAdvertisement

__all__ = ["commitment", "graph_seed", "reveal_fault"]


_PREFIX = label(DOMAIN, "seed-commit")
#: round and id (signed 64-bit) and a 32-byte config hash, laid out as ``label`` does, in one pack
_TAIL = struct.Struct(">IqIqI32s")
_MAX_I64 = (1 << 63) - 1


def commitment(*, round: int, client_id: int, config_hash: bytes, value: bytes) -> bytes:
    """The hash commitment a client signs into its advertisement (binding; hiding: ``value`` is 256 random bits):
    ``SHA-256(label(DOMAIN, "seed-commit", round, client_id, config_hash) || value)``. Every client opens every
    roster entry's, so the common shape is packed in one step (the same bytes)."""
    if 0 <= round <= _MAX_I64 and 0 <= client_id <= _MAX_I64 and len(config_hash) == 32:
        head = _PREFIX + _TAIL.pack(8, round, 8, client_id, 32, config_hash)
    else:
        head = label(DOMAIN, "seed-commit", round, client_id, config_hash)
    return hashlib.sha256(head + value).digest()


def graph_seed(session: bytes, reveals: Sequence[tuple[int, bytes]]) -> bytes:
    """The seed of the ring order: the session id and every revealed value, by ascending id (fixed-size fields)."""
    h = hashlib.sha256(label(DOMAIN, "graph-seed", session, len(reveals)))
    h.update(b"".join(cid.to_bytes(4, "big") + value for cid, value in reveals))
    return h.digest()


def reveal_fault(roster: Mapping[int, KeyAdvertisement], reveals: Sequence[tuple[int, bytes]]) -> str | None:
    """Why a reveal set for ``roster`` (id -> advertisement) is refused (``None``: accepted)."""
    ids = [cid for cid, _ in reveals]
    if ids != sorted(roster):
        missing = sorted(set(roster) - set(ids))
        if missing:
            return f"the reveal set lacks the contributions of clients {missing[:8]}"
        return "the reveal set is not exactly the roster in ascending id order"
    for cid, value in reveals:
        a = roster[cid]
        if len(value) != DIGEST_BYTES or a.seed_commitment != commitment(
            round=a.round, client_id=cid, config_hash=a.config_hash, value=value
        ):
            return f"client {cid}'s revealed contribution does not open its signed commitment"
    return None
