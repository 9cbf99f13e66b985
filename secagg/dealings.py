"""The dealings as the server keeps them until the share check (a part of :mod:`secagg.vss`, kept
apart for size): per dealer its signed fields and two blobs, the leaves and the ciphertexts of its
envelopes in ascending holder order (no object per envelope), and the lazy per-holder deliveries.
After the share check only the leaves stay (what unmasking checks revealed shares against)."""

from __future__ import annotations

import array
import bisect
import itertools
from collections.abc import Iterator, Mapping, Sequence, Set
from collections.abc import Set as AbstractSet
from typing import overload

from secagg.idset import IdSet
from secagg.messages import CIPHERTEXT_BYTES, DIGEST_BYTES, DeliveredShare, EncryptedShares, ShareEnvelope
from secagg.vss import dealing_digest

__all__ = ["Dealing", "DeliveryView", "DeliveredTo"]

_LEAF = DIGEST_BYTES
_CT = CIPHERTEXT_BYTES


class Dealing:
    """One dealer's :class:`~secagg.messages.EncryptedShares`, compact: ``holders`` ascending (4 bytes
    each), the leaves (32 bytes each) and the ciphertexts (:meth:`leaves_only` leaves them out)."""

    __slots__ = (
        "_cts",
        "check",
        "digest",
        "holders",
        "leaves",
        "round",
        "seed_commitment",
        "sender",
        "session",
        "signature",
    )

    def __init__(self, msg: EncryptedShares) -> None:
        rcp = [e.recipient for e in msg.envelopes]
        if any(a >= b for a, b in itertools.pairwise(rcp)):
            raise ValueError("envelopes must go in ascending holder order")
        self.round, self.session, self.sender = msg.round, msg.session_id, msg.sender
        self.seed_commitment, self.check, self.signature = msg.self_seed_commitment, msg.check, msg.signature
        self.digest = dealing_digest(msg)
        self.holders = array.array("i", rcp)
        self.leaves = b"".join([e.leaf for e in msg.envelopes])
        self._cts: bytes | None = b"".join([e.ciphertext for e in msg.envelopes])

    @classmethod
    def of(cls, msg: EncryptedShares) -> Dealing:
        return cls(msg)

    @property
    def nbytes(self) -> int:
        """What the server holds for this dealing (wire sizes: blobs, ids, check, signed fields)."""
        fixed = len(self.seed_commitment) + len(self.digest) + len(self.signature) + len(self.session) + 16
        return len(self.leaves) + len(self._cts or b"") + 4 * len(self.holders) + len(self.check) + fixed

    def index(self, holder: int) -> int | None:
        i = bisect.bisect_left(self.holders, holder)
        return i if i < len(self.holders) and self.holders[i] == holder else None

    def leaf(self, i: int) -> bytes:
        return self.leaves[_LEAF * i : _LEAF * (i + 1)]

    def ciphertext(self, i: int) -> bytes:
        if self._cts is None:
            raise ValueError("the ciphertexts were dropped after the share check")
        return self._cts[_CT * i : _CT * (i + 1)]

    def leaves_only(self) -> Dealing:
        """After the share check: the same dealing without its ciphertexts (the leaves are all
        unmasking needs; the blobs are shared, not copied). A new object, so the deliveries already
        handed out still read theirs."""
        out = object.__new__(Dealing)
        for name in self.__slots__:
            setattr(out, name, getattr(self, name))
        out._cts = None
        return out

    def share(self, holder: int) -> DeliveredShare:
        i = self.index(holder)
        if i is None:
            raise KeyError(holder)
        return DeliveredShare(self.sender, self.ciphertext(i), self.digest, self.leaf(i), self.check)

    def message(self) -> EncryptedShares:
        """The signed message again (a proof: :class:`~secagg.messages.Exclusion`)."""
        envs = tuple(ShareEnvelope(h, self.leaf(i), self.ciphertext(i)) for i, h in enumerate(self.holders))
        return EncryptedShares(
            self.round, self.session, self.sender, self.seed_commitment, envs, self.check, self.signature
        )


class DeliveryView(Sequence[DeliveredShare]):
    """What the server forwards to one holder: every dealer's envelope for it (ascending dealer ids),
    each :class:`~secagg.messages.DeliveredShare` built when read (encoding it, or a study's hook),
    so a server delivering to all its clients at once holds no object per share."""

    __slots__ = ("_dealers", "_holder", "_table")

    def __init__(self, table: Mapping[int, Dealing], holder: int, dealers: AbstractSet[int]) -> None:
        self._table, self._holder, self._dealers = table, holder, dealers

    def __len__(self) -> int:
        return len(self._dealers)

    @overload
    def __getitem__(self, i: int) -> DeliveredShare: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[DeliveredShare, ...]: ...

    def __getitem__(self, i: int | slice) -> DeliveredShare | tuple[DeliveredShare, ...]:
        if isinstance(i, slice):
            return tuple(self)[i]
        d = self._dealers.at(i) if isinstance(self._dealers, IdSet) else sorted(self._dealers)[i]
        return self._table[d].share(self._holder)

    def __iter__(self) -> Iterator[DeliveredShare]:
        return (self._table[d].share(self._holder) for d in sorted(self._dealers))

    def __repr__(self) -> str:
        return f"DeliveryView(holder={self._holder}, dealers={len(self._dealers)})"


class _Dealers(Set[int]):
    """The dealers whose envelopes one holder was sent: the holders of its own dealing (the graph is
    symmetric and every dealer addressed exactly its neighbours, checked on receipt) that are in U2."""

    __slots__ = ("_ids", "_members")

    def __init__(self, ids: array.array[int], members: AbstractSet[int]) -> None:
        self._ids, self._members = ids, members

    def __contains__(self, x: object) -> bool:
        if not isinstance(x, int) or x not in self._members:
            return False
        i = bisect.bisect_left(self._ids, x)
        return i < len(self._ids) and self._ids[i] == x

    def __iter__(self) -> Iterator[int]:
        return (d for d in self._ids if d in self._members)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class DeliveredTo(Mapping[int, AbstractSet[int]]):
    """Holder -> the dealers whose shares it was sent, for every holder in ``members`` (U2), read from
    the dealings' holder arrays (no bytes of its own)."""

    __slots__ = ("_members", "_shares")

    def __init__(self, shares: Mapping[int, Dealing], members: AbstractSet[int]) -> None:
        self._shares, self._members = shares, members

    def __getitem__(self, c: int) -> AbstractSet[int]:
        if c not in self._members:
            raise KeyError(c)
        return _Dealers(self._shares[c].holders, self._members)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._members))

    def __len__(self) -> int:
        return len(self._members)
