"""Persisting a protocol party in a Flower node's ``Context.state`` between messages.

Flower may run successive messages of one node in different processes (Ray actors in the
simulation engine, a restarted ClientApp process in deployment), so a party cannot only stay in
memory: after every message it is serialised into ``context.state`` (which never leaves the
node) with a fresh random *version*, and restored on the next message. The blob is read back
only from the node's own state, never from a message.

:class:`PartyStore` also keeps the live party of each node in a small process-local cache, an
optimisation only: a cached party is used for the next message only if the version stored in
that node's state is the one it was saved under (a state written by another process, an older
or a foreign state never matches: the party is then restored from the blob). A party is taken
out of the cache when its message starts, so a message that fails half-way leaves no cache
entry and the next one restores the state as it was before it.

Serialisation is pickle with a private reducer (no global ``copyreg`` registration, no
import-time side effect): pyca key objects are reduced to their raw bytes, slotted dataclasses
(the protocol messages, parameters) to their field values without the generic slow path.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import operator
import os
import pickle
import threading
from collections import OrderedDict
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from flwr.app import ConfigRecord, Context

from privagg.errors import ProtocolAbort

__all__ = ["PartyStore", "dump_party", "load_party"]

VERSION_BYTES = 16


def _x25519(key: x25519.X25519PrivateKey) -> tuple[Any, tuple[bytes]]:
    return x25519.X25519PrivateKey.from_private_bytes, (key.private_bytes_raw(),)


def _ed25519(key: ed25519.Ed25519PrivateKey) -> tuple[Any, tuple[bytes]]:
    return ed25519.Ed25519PrivateKey.from_private_bytes, (key.private_bytes_raw(),)


@functools.cache
def _key_reducers() -> dict[type, Any]:
    """Built once per process, on first use (finding the key classes needs two throw-away keys)."""
    # the concrete (Rust-backed) classes, found from live instances
    return {
        type(x25519.X25519PrivateKey.generate()): _x25519,
        type(ed25519.Ed25519PrivateKey.generate()): _ed25519,
    }


@functools.cache
def _slot_fields(cls: Any) -> tuple[str, ...] | None:
    """The field names of a slotted dataclass whose pickled state is exactly its fields (else ``None``)."""
    if not dataclasses.is_dataclass(cls) or "__slots__" not in cls.__dict__:
        return None
    if getattr(getattr(cls, "__getstate__", None), "__name__", "") != "_dataclass_getstate":
        return None  # a class with its own state: the generic path
    if cls.__reduce_ex__ is not object.__reduce_ex__ or cls.__reduce__ is not object.__reduce__:
        return None
    return tuple(f.name for f in dataclasses.fields(cls))


def _rebuild(cls: type, values: tuple[Any, ...]) -> Any:
    names = _slot_fields(cls)
    if names is None or len(names) != len(values):
        raise pickle.UnpicklingError(f"state of {cls.__name__} does not match its fields")
    obj: Any = object.__new__(cls)
    for name, value in zip(names, values):
        object.__setattr__(obj, name, value)
    return obj


def _reducer(cls: Any) -> Any:
    """How :class:`_Pickler` reduces an instance of ``cls``: a key's reducer, a slotted dataclass's
    ``(_rebuild, (cls, field values))``, or ``None`` (pickle's own way)."""
    key = _key_reducers().get(cls)
    if key is not None:
        return key
    names = _slot_fields(cls)
    if names is None:
        return None
    if len(names) > 1:
        get = operator.attrgetter(*names)  # the field values as one tuple, in C

        def reduce_many(obj: Any) -> tuple[Any, ...]:
            return _rebuild, (cls, get(obj))

        return reduce_many

    def reduce(obj: Any) -> tuple[Any, ...]:
        return _rebuild, (cls, tuple(getattr(obj, n) for n in names))

    return reduce


#: per class, its :func:`_reducer` (a party holds a few dozen objects of a handful of classes, pickled
#: after every message: one dict lookup each)
_REDUCERS: dict[type, Any] = {}


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        try:
            red = _REDUCERS[cls]
        except KeyError:
            red = _REDUCERS[cls] = _reducer(cls)
        return NotImplemented if red is None else red(obj)


def dump_party(party: object) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(party)
    return buf.getvalue()


def load_party(blob: bytes) -> Any:
    """Restore a party written by :func:`dump_party` (only ever the node's own state)."""
    return pickle.loads(blob)


class PartyStore:
    """One party per node in ``context.state[record]`` (``party``: the blob, ``version``: its version),
    with the process-local cache of live parties described in the module docstring.

    ``max_entries`` / ``max_bytes`` bound the cache (least recently saved first out; a party
    evicted is restored from its node's state). ``kind`` is the party's type: anything else
    restored from a state is refused as corrupt.
    """

    def __init__(self, record: str, kind: type, *, max_entries: int = 4096, max_bytes: int = 256 << 20) -> None:
        self.record, self.kind = record, kind
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._cache: OrderedDict[tuple[int, int], tuple[bytes, Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        #: how many parties were taken from the cache / restored from a blob (for tests and profiling)
        self.hits = self.restores = 0
        _STORES.setdefault(record, self)

    def __reduce__(self) -> tuple[Any, ...]:
        # a mod shipped to another process (Ray pickles the ClientApp) gets that process's own store, never
        # this process's cache (nor its lock)
        return _named_store, (self.record, self.kind, self.max_entries, self.max_bytes)

    @staticmethod
    def _key(ctxt: Context) -> tuple[int, int]:
        return (int(ctxt.run_id), int(ctxt.node_id))

    def _pop(self, key: tuple[int, int]) -> tuple[bytes, Any, int] | None:
        entry = self._cache.pop(key, None)
        if entry is not None:
            self._bytes -= entry[2]
        return entry

    def save(self, ctxt: Context, party: Any) -> None:
        """Persist ``party`` in the node's state under a fresh version; keep it live in the cache."""
        blob, version = dump_party(party), os.urandom(VERSION_BYTES)
        ctxt.state[self.record] = ConfigRecord({"party": blob, "version": version})
        with self._lock:
            key = self._key(ctxt)
            self._pop(key)
            self._cache[key] = (version, party, len(blob))
            self._bytes += len(blob)
            while self._cache and (len(self._cache) > self.max_entries or self._bytes > self.max_bytes):
                self._pop(next(iter(self._cache)))

    def take(self, ctxt: Context) -> Any:
        """The node's party for this message: the cached one if the state's version is its own, else
        restored from the state; ``ProtocolAbort`` if the node has none. The cache entry is removed."""
        blob, version = self._stored(ctxt)
        with self._lock:
            entry = self._pop(self._key(ctxt))
        if entry is not None and entry[0] == version:
            self.hits += 1
            return entry[1]
        return self._restore(blob)

    def peek(self, ctxt: Context) -> Any:
        """A copy of the node's party, always restored from its state (the cache is not touched)."""
        return self._restore(self._stored(ctxt)[0])

    def drop(self, ctxt: Context) -> None:
        """Forget the node's party (state and cache)."""
        if self.record in ctxt.state:
            del ctxt.state[self.record]
        with self._lock:
            self._pop(self._key(ctxt))

    def clear_cache(self) -> None:
        """Forget every live party of this process (as a new process starts: every party is restored)."""
        with self._lock:
            self._cache.clear()
            self._bytes = 0

    def _stored(self, ctxt: Context) -> tuple[bytes, bytes]:
        rec = ctxt.state.get(self.record)
        blob = rec.get("party") if isinstance(rec, ConfigRecord) else None
        version = rec.get("version") if isinstance(rec, ConfigRecord) else None
        if not isinstance(blob, bytes) or not isinstance(version, bytes):
            raise ProtocolAbort("no protocol round in progress on this node", stage="load", party="client")
        return blob, version

    def _restore(self, blob: bytes) -> Any:
        self.restores += 1
        try:
            party = load_party(blob)
        except Exception:
            party = None
        if not isinstance(party, self.kind):
            raise ProtocolAbort("corrupt node state", stage="load", party="client")
        return party


_STORES: dict[str, PartyStore] = {}


def _named_store(record: str, kind: type, max_entries: int, max_bytes: int) -> PartyStore:
    """This process's store of ``record`` (created on first use)."""
    store = _STORES.get(record)
    if store is None:
        store = PartyStore(record, kind, max_entries=max_entries, max_bytes=max_bytes)
    return store
