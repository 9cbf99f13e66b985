"""Provisioned key material of packed threshold-Paillier in Flower (the trusted dealer's files).

Keys are dealt once by a trusted dealer (:func:`provision_paillier`, threshold keys as in
:mod:`protocols.paillier`) and provisioned out of band as files, like the PKI of
:mod:`.pki`: ``paillier-public.json`` (public key, verification keys, sizes, session),
``paillier-clients.json`` (client id -> Ed25519 verification key), ``paillier-client-<id>.key``
(a client's signing key), ``paillier-decryptor-<i>.key`` (decryptor ``i``'s share,
:meth:`~protocols.paillier.ThresholdKeyShare.to_bytes`) and ``paillier-decryptor-<i>.sign`` (its
Ed25519 signing key for endorsements and partial decryptions; the public keys are in the public
file). A node reads only its own secret files. The directories are the dealer's: the server
reads them, nobody writes them at run time (the decryptors trust exactly these clients).
A decryptor keeps its durable record of endorsed and decrypted rounds in
``paillier-decryptor-<i>.log`` (:class:`~protocols.paillier.FileStore`) unless told otherwise.
:meth:`PaillierMaterial.run_session` is the protocol session of one Flower run (a session id,
not a model digest; see :mod:`.paillier`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privagg.encoding import RingEncoding
from privagg.errors import ConfigurationError, InvalidMessage
from privagg.randomness import SYSTEM_SECRETS, SecretSource, label
from protocols.paillier import (
    Directory,
    PaillierConfig,
    PaillierPublicKey,
    ThresholdKeyShare,
    ThresholdPublicKey,
    generate_threshold_key,
)

__all__ = ["PaillierMaterial", "provision_paillier", "load_paillier"]

_PUBLIC = "paillier-public.json"
_CLIENTS = "paillier-clients.json"
# 2: binary key shares (ThresholdKeyShare.to_bytes), verification keys in the public file;
# 3: decryptor signing keys (endorsements, signed partials), their public keys in the public file
_MATERIAL_VERSION = 3


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def provision_paillier(
    folder: str | os.PathLike[str],
    config: PaillierConfig,
    client_ids: Iterable[int],
    *,
    clip: float = 8.0,
    secrets: SecretSource = SYSTEM_SECRETS,
) -> None:
    """The trusted dealer: a threshold key, its shares and the clients' signing keys, as files."""
    if config.decryptors < 2:
        raise ConfigurationError("the Flower workflow uses threshold keys", field="decryptors", accepted=">= 2")
    if config.randomness != "fresh":
        raise ConfigurationError("the Flower workflow uses fresh randomness", field="randomness", accepted="fresh")
    RingEncoding.for_sum(clip=clip, max_summands=config.max_clients, value_bits=config.value_bits)
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    tk, shares = generate_threshold_key(
        config.key_bits,
        decryptors=config.decryptors,
        threshold=config.threshold,
        secrets=secrets,
        allow_insecure=config.allow_insecure,
        proofs=config.proofs,
    )
    decryptors = {}
    for sh in shares:
        _write_secret(path / f"paillier-decryptor-{sh.index}.key", sh.to_bytes())
        raw = secrets.token_bytes(32)
        _write_secret(path / f"paillier-decryptor-{sh.index}.sign", raw)
        decryptors[str(sh.index)] = Ed25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw().hex()
    directory = {}
    for cid in client_ids:
        raw = secrets.token_bytes(32)
        _write_secret(path / f"paillier-client-{int(cid)}.key", raw)
        directory[str(int(cid))] = Ed25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw().hex()
    (path / _CLIENTS).write_text(json.dumps({"version": 1, "clients": directory}))
    public = {
        "version": _MATERIAL_VERSION,
        "n": str(tk.public_key.n),
        "decryptors": tk.decryptors,
        "threshold": tk.threshold,
        "verification_base": str(tk.verification_base),
        "verification_keys": [str(v) for v in tk.verification_keys],
        "decryptor_keys": decryptors,
        "key_bits": config.key_bits,
        "value_bits": config.value_bits,
        "max_clients": config.max_clients,
        "min_clients": config.min_clients,
        "allow_insecure": config.allow_insecure,
        "clip": clip,
        "session": secrets.token_bytes(16).hex(),
    }
    (path / _PUBLIC).write_text(json.dumps(public))


@dataclass
class PaillierMaterial:
    """What a party reads from the provisioned folder (public parts; secrets on demand)."""

    folder: Path
    config: PaillierConfig
    threshold_key: ThresholdPublicKey
    session: bytes
    clip: float
    directory: Directory = field(default_factory=lambda: Directory({}))
    decryptor_directory: Directory = field(default_factory=lambda: Directory({}))

    @property
    def public_key(self) -> PaillierPublicKey:
        return self.threshold_key.public_key

    @property
    def encoding(self) -> RingEncoding:
        return RingEncoding.for_sum(
            clip=self.clip, max_summands=self.config.max_clients, value_bits=self.config.value_bits
        )

    def run_session(self, run_id: int) -> bytes:
        """The protocol session of Flower run ``run_id``: a 16-byte hash of the provisioned session and the run."""
        if not 0 <= int(run_id) < 1 << 64:
            raise ConfigurationError(f"got {run_id}", field="run_id", accepted="0..2^64-1")
        digest = hashlib.sha256(
            label("privagg/paillier/flower-run-session/v1", self.session, int(run_id).to_bytes(8, "big"))
        )
        return digest.digest()[:16]

    def signing_key(self, client_id: int) -> Ed25519PrivateKey:
        try:
            raw = (self.folder / f"paillier-client-{int(client_id)}.key").read_bytes()
            return Ed25519PrivateKey.from_private_bytes(raw)
        except (OSError, ValueError):
            raise ConfigurationError(
                f"no Paillier signing key for client {client_id}", field="privagg-paillier"
            ) from None

    def decryptor_signing_key(self, index: int) -> Ed25519PrivateKey:
        try:
            key = Ed25519PrivateKey.from_private_bytes(
                (self.folder / f"paillier-decryptor-{int(index)}.sign").read_bytes()
            )
        except (OSError, ValueError):
            raise ConfigurationError(f"no signing key for decryptor {index}", field="privagg-paillier") from None
        own = self.decryptor_directory.get(int(index))
        if own is None or own.public_bytes_raw() != key.public_key().public_bytes_raw():
            raise ConfigurationError(
                f"the signing key file of decryptor {index} does not match the public file", field="privagg-paillier"
            )
        return key

    def key_share(self, index: int) -> ThresholdKeyShare:
        try:
            raw = (self.folder / f"paillier-decryptor-{int(index)}.key").read_bytes()
        except OSError:
            raise ConfigurationError(f"no key share for decryptor {index}", field="privagg-paillier") from None
        try:
            share = ThresholdKeyShare.from_bytes(raw, threshold_key=self.threshold_key)
        except InvalidMessage as e:
            raise ConfigurationError(
                f"the key share file of decryptor {index} is not valid: {e.reason}", field="privagg-paillier"
            ) from None
        if share.index != int(index):
            raise ConfigurationError(
                f"the key share file of decryptor {index} holds decryptor {share.index}'s share",
                field="privagg-paillier",
            )
        return share


def load_paillier(folder: str | os.PathLike[str]) -> PaillierMaterial:
    path = Path(folder)
    try:
        pub = json.loads((path / _PUBLIC).read_text())
        clients = json.loads((path / _CLIENTS).read_text())
        if pub.get("version") != _MATERIAL_VERSION:
            raise ConfigurationError(
                f"Paillier material version {pub.get('version')!r} in {path}; re-provision it "
                f"(provision_paillier writes version {_MATERIAL_VERSION})",
                field="privagg-paillier",
                accepted=[_MATERIAL_VERSION],
            )
        vks = tuple(int(v) for v in pub["verification_keys"])
        config = PaillierConfig(
            key_bits=int(pub["key_bits"]),
            value_bits=int(pub["value_bits"]),
            max_clients=int(pub["max_clients"]),
            decryptors=int(pub["decryptors"]),
            threshold=int(pub["threshold"]),
            min_clients=int(pub["min_clients"]),
            allow_insecure=bool(pub["allow_insecure"]),
            proofs=bool(vks),
        )
        tk = ThresholdPublicKey(
            PaillierPublicKey(int(pub["n"])),
            config.decryptors,
            config.threshold,
            verification_base=int(pub["verification_base"]),
            verification_keys=vks,
        )
        directory = Directory(
            {int(c): Ed25519PublicKey.from_public_bytes(bytes.fromhex(h)) for c, h in clients["clients"].items()}
        )
        decryptor_directory = Directory(
            {int(i): Ed25519PublicKey.from_public_bytes(bytes.fromhex(h)) for i, h in pub["decryptor_keys"].items()}
        )
        session = bytes.fromhex(pub["session"])
        clip = float(pub["clip"])
    except ConfigurationError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigurationError(
            f"cannot read Paillier material in {path} ({type(e).__name__})", field="privagg-paillier"
        ) from None
    return PaillierMaterial(path, config, tk, session, clip, directory, decryptor_directory)
