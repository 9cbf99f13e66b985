"""A file-based identity directory (the PKI that active-mode secure aggregation needs).

Active-mode SecAgg clients sign their keys and the survivor set with long-term Ed25519
identity keys, and check their neighbours' signatures against a *directory* (client id ->
public key) that the server must not be able to forge. So the directory cannot travel
through the server: it is provisioned out of band, like any PKI. Here it is a folder:

* ``directory.json`` — ``{"version": 1, "clients": {"<id>": "<hex public key>"}}``, public,
  copied to every node;
* ``client-<id>.key`` — the raw 32-byte private key of client ``<id>`` (mode 0600), copied
  only to that client's node.

:func:`create_identities` writes such a folder (keys from the OS CSPRNG); the Flower client
mod reads it from its ``pki`` argument or the node's own ``node_config["privagg-pki"]`` (never the
run config: the server writes it). In Flower's
simulation engine every node runs on this machine and shares the folder; in a deployment
each SuperNode gets the directory and its own key file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from privagg.errors import ConfigurationError
from privagg.randomness import SYSTEM_SECRETS, SecretSource
from secagg.params import MAX_CLIENT_ID

__all__ = ["create_identities", "load_directory", "load_identity"]

_DIRECTORY = "directory.json"


def _key_path(folder: Path, client_id: int) -> Path:
    return folder / f"client-{int(client_id)}.key"


def create_identities(
    folder: str | os.PathLike[str], client_ids: Iterable[int], *, secrets: SecretSource = SYSTEM_SECRETS
) -> dict[int, bytes]:
    """Write one identity key per client and the public directory; returns the directory."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    directory: dict[int, bytes] = {}
    for cid in client_ids:
        if not (isinstance(cid, int) and 0 <= cid <= MAX_CLIENT_ID):
            raise ConfigurationError(f"got {cid!r}", field="client_ids", accepted=f"0..{MAX_CLIENT_ID}")
        raw = secrets.token_bytes(32)
        key = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
        kp = _key_path(path, cid)
        fd = os.open(kp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        directory[cid] = key.public_key().public_bytes_raw()
    doc = {"version": 1, "clients": {str(c): pk.hex() for c, pk in sorted(directory.items())}}
    (path / _DIRECTORY).write_text(json.dumps(doc, indent=1))
    return directory


def load_directory(folder: str | os.PathLike[str]) -> dict[int, bytes]:
    """The public directory: client id -> raw Ed25519 public key."""
    p = Path(folder) / _DIRECTORY
    try:
        doc = json.loads(p.read_text())
        if doc.get("version") != 1:
            raise ValueError("unsupported version")
        out = {int(c): bytes.fromhex(h) for c, h in doc["clients"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigurationError(f"cannot read the identity directory {p} ({type(e).__name__})", field="pki") from None
    if any(len(v) != 32 or not 0 <= c <= MAX_CLIENT_ID for c, v in out.items()):
        raise ConfigurationError(f"malformed identity directory {p}", field="pki")
    return out


def load_identity(
    folder: str | os.PathLike[str], client_id: int
) -> tuple[ed25519.Ed25519PrivateKey, Mapping[int, bytes]]:
    """Client ``client_id``'s identity key and the directory (which must hold its public key)."""
    directory = load_directory(folder)
    try:
        raw = _key_path(Path(folder), client_id).read_bytes()
    except OSError:
        raise ConfigurationError(f"no identity key for client {client_id} in {folder}", field="pki") from None
    if len(raw) != 32:
        raise ConfigurationError(f"identity key of client {client_id} is malformed", field="pki")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(raw)
    if directory.get(client_id) != key.public_key().public_bytes_raw():
        raise ConfigurationError(f"the directory does not hold client {client_id}'s public key", field="pki")
    return key, directory
