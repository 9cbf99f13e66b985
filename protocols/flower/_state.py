"""Persisting a protocol party in a Flower node's ``Context.state`` between messages.

Flower may run successive messages of one node in different processes (Ray actors in the
simulation engine, a restarted ClientApp process in deployment), so a party cannot stay in
memory: it is serialised into ``context.state`` (which never leaves the node) and restored
on the next message. pyca key objects are not picklable; a private dispatch table reduces
them to their raw bytes (no global ``copyreg`` registration, no import-time side effect).
The blob is read back only from the node's own state, never from a message.
"""

from __future__ import annotations

import copyreg
import functools
import io
import pickle
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

__all__ = ["dump_party", "load_party"]


def _x25519(key: x25519.X25519PrivateKey) -> tuple[Any, tuple[bytes]]:
    return x25519.X25519PrivateKey.from_private_bytes, (key.private_bytes_raw(),)


def _ed25519(key: ed25519.Ed25519PrivateKey) -> tuple[Any, tuple[bytes]]:
    return ed25519.Ed25519PrivateKey.from_private_bytes, (key.private_bytes_raw(),)


@functools.cache
def _table() -> dict[type, Any]:
    """Built once per process, on first use (finding the key classes needs two throw-away keys)."""
    table: dict[type, Any] = dict(copyreg.dispatch_table)
    # the concrete (Rust-backed) classes, found from live instances
    table[type(x25519.X25519PrivateKey.generate())] = _x25519
    table[type(ed25519.Ed25519PrivateKey.generate())] = _ed25519
    return table


class _Pickler(pickle.Pickler):
    pass


def dump_party(party: object) -> bytes:
    buf = io.BytesIO()
    p = _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    p.dispatch_table = _table()
    p.dump(party)
    return buf.getvalue()


def load_party(blob: bytes) -> Any:
    """Restore a party written by :func:`dump_party` (only ever the node's own state)."""
    return pickle.loads(blob)
