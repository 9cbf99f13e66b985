"""What the decryptors trust, fixed at provisioning, and what they remember across restarts.

* :class:`Directory`: an immutable id -> Ed25519 public key map (the dealer's or the PKI's
  file). One for the clients (whose contributions count), one for the decryptors (whose
  endorsements and partial decryptions count). Parties copy it at construction; nobody on
  the aggregating side can add an entry afterwards (a server that could would create Sybil
  clients and decrypt a victim's vector next to their ``Enc(0)``).
* :func:`endorsement_quorum`: how many decryptors must endorse the same contribution set
  before any of them releases a partial decryption. Honest decryptors endorse at most one set
  per (session, round); with ``k`` decryptors of which up to ``t - 1`` are corrupt (the
  threshold trust), two quorums of ``q`` endorsers share an honest one iff ``2 q - k > t - 1``,
  so ``q = max(t, floor((k + t - 1) / 2) + 1)``: two different sets can never both collect a
  quorum in one round (with ``k = 3, t = 2`` that is all three decryptors; ``2-of-4``: three).
  A round then survives ``floor((k - t) / 2)`` decryptors down, the most any safe rule allows
  when the server relays the decryptors' messages (``THREAT_MODEL.md``, "Quorum").
* :class:`DecryptorStore`: the decryptor's durable memory (endorsed and decrypted (session,
  round) pairs, and the sets whose proofs of plaintext knowledge it verified itself), injected
  so the state machine stays pure. :class:`MemoryStore` for
  simulations, :class:`FileStore` for deployments (one line per record, appended and fsynced
  *before* the endorsement or partial leaves, so a restart cannot make a decryptor endorse or
  decrypt a second set for a round).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from privagg.errors import ConfigurationError

__all__ = [
    "Directory",
    "endorsement_quorum",
    "StoreRecord",
    "DecryptorStore",
    "MemoryStore",
    "FileStore",
]


class Directory(Mapping[int, Ed25519PublicKey]):
    """An immutable directory ``id -> Ed25519 public key`` (a provisioned file; never written at run time)."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[int, Ed25519PublicKey]) -> None:
        copied: dict[int, Ed25519PublicKey] = {}
        for k, v in keys.items():
            if isinstance(k, bool) or not isinstance(k, int) or not isinstance(v, Ed25519PublicKey):
                raise ConfigurationError("a directory maps integer ids to Ed25519 public keys", field="directory")
            copied[int(k)] = v
        self._keys = MappingProxyType(copied)

    def __getitem__(self, key: int) -> Ed25519PublicKey:
        return self._keys[key]

    def __iter__(self) -> Iterator[int]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Directory({len(self._keys)} keys)"


def endorsement_quorum(decryptors: int, threshold: int) -> int:
    """Endorsements needed on one set so two sets cannot both reach it with ``threshold - 1`` corrupt decryptors."""
    if not 1 <= threshold <= decryptors:
        raise ConfigurationError(f"got t={threshold}, k={decryptors}", field="threshold")
    return max(threshold, (decryptors + threshold - 1) // 2 + 1)


@dataclass(frozen=True, slots=True)
class StoreRecord:
    """``kind``: ``"endorse"`` (the set hash this decryptor endorsed), ``"proven"`` (it verified the set's
    proofs of plaintext knowledge itself) or ``"decrypt"`` (it released a partial)."""

    kind: str
    session: bytes
    round: int
    set_hash: bytes


class DecryptorStore(Protocol):
    """A decryptor's durable memory: every record it appended, in order."""

    def records(self) -> list[StoreRecord]: ...

    def append(self, record: StoreRecord) -> None: ...


class MemoryStore:
    """Records in memory (simulations and tests; a restart forgets them)."""

    def __init__(self) -> None:
        self._records: list[StoreRecord] = []

    def records(self) -> list[StoreRecord]:
        return list(self._records)

    def append(self, record: StoreRecord) -> None:
        self._records.append(record)


_KINDS = ("endorse", "proven", "decrypt")


class FileStore:
    """Records appended to a file, one line each (``kind session-hex round hash-hex``), fsynced.

    A line is written with one ``write`` on an ``O_APPEND`` descriptor and fsynced before the
    decryptor answers. A torn last line (no newline: the decryptor crashed while writing, so it
    never answered) is ignored; any other malformed line refuses to load (a damaged record must
    not silently re-enable a round).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def records(self) -> list[StoreRecord]:
        try:
            text = self.path.read_bytes().decode("ascii")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError):
            raise ConfigurationError(f"cannot read the decryptor store {self.path}", field="store") from None
        lines = text.split("\n")
        out = []
        for i, line in enumerate(lines[:-1]):  # the part after the last newline is empty or torn
            if not line:
                continue
            try:
                kind, session, rnd, h = line.split(" ")
                rec = StoreRecord(kind, bytes.fromhex(session), int(rnd), bytes.fromhex(h))
            except ValueError:
                raise ConfigurationError(
                    f"line {i + 1} of the decryptor store {self.path} is damaged", field="store"
                ) from None
            if kind not in _KINDS or len(rec.session) != 16 or len(rec.set_hash) != 32 or rec.round < 0:
                raise ConfigurationError(f"line {i + 1} of the decryptor store {self.path} is damaged", field="store")
            out.append(rec)
        return out

    def append(self, record: StoreRecord) -> None:
        line = f"{record.kind} {record.session.hex()} {record.round} {record.set_hash.hex()}\n".encode("ascii")
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # a torn line left by a crash (never answered): cut it before appending
                os.ftruncate(fd, os.pread(fd, size, 0).rfind(b"\n") + 1)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
