"""A compact, immutable set of client ids (what the server keeps per client until unmasking)."""

from __future__ import annotations

import array
import bisect
from collections.abc import Iterable, Iterator, Set

import numpy as np

__all__ = ["IdSet"]


class IdSet(Set[int]):
    """Client ids held sorted, 4 bytes each (a ``frozenset`` of 200 ids takes about 8 KB): the
    server's ``delivered_to`` rows, one per client, live from the share delivery to unmasking."""

    __slots__ = ("_ids",)

    def __init__(self, ids: Iterable[int] = ()) -> None:
        self._ids = array.array("i", sorted({int(i) for i in ids}))

    @classmethod
    def of_sorted(cls, ids: np.ndarray) -> IdSet:
        """From ids already sorted and distinct (one copy of their bytes, no Python int per id)."""
        out = cls()
        out._ids.frombytes(np.ascontiguousarray(ids, dtype=np.intc).tobytes())
        return out

    def __contains__(self, x: object) -> bool:
        if not isinstance(x, int):
            return False
        i = bisect.bisect_left(self._ids, x)
        return i < len(self._ids) and self._ids[i] == x

    def __iter__(self) -> Iterator[int]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def at(self, i: int) -> int:
        """The ``i``-th smallest id."""
        return self._ids[i]

    def __repr__(self) -> str:
        return f"IdSet({list(self._ids)!r})"

    @property
    def nbytes(self) -> int:
        return self._ids.itemsize * len(self._ids)
