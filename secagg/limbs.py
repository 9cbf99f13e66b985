"""A 32-byte secret as field elements of GF(2**31 - 1): nine limbs of 30 bits, little-endian (the
last limb holds the top 16 bits). Shamir shares every limb (``secagg.vss``); a rebuilt limb outside
its range proves the shares inconsistent."""

from __future__ import annotations

import numpy as np

from privagg.errors import VerificationError

__all__ = [
    "LIMB_BITS",
    "SECRET_LIMBS",
    "SECRET_BYTES",
    "to_limbs",
    "from_limbs",
    "from_limbs_batch",
    "reconstruct_secret",
]

LIMB_BITS = 30
SECRET_BYTES = 32
SECRET_LIMBS = -(-8 * SECRET_BYTES // LIMB_BITS)  # 9
_MASK = (1 << LIMB_BITS) - 1
#: the largest value + 1 of each limb: 2**30, ..., 2**30, 2**16
_BOUNDS = np.array(
    [1 << min(LIMB_BITS, 8 * SECRET_BYTES - LIMB_BITS * i) for i in range(SECRET_LIMBS)], dtype=np.uint64
)


def to_limbs(secret: bytes) -> np.ndarray:
    """``SECRET_LIMBS`` field elements (``uint64``) of a 32-byte secret."""
    if len(secret) != SECRET_BYTES:
        raise ValueError("secrets are 32 bytes")
    x = int.from_bytes(secret, "little")
    return np.array([(x >> (LIMB_BITS * i)) & _MASK for i in range(SECRET_LIMBS)], dtype=np.uint64)


def from_limbs_batch(rows: np.ndarray) -> list[bytes | None]:
    """The secrets of ``(n, SECRET_LIMBS)`` limb rows; ``None`` for a row with a limb out of range."""
    arr = np.asarray(rows, dtype=np.uint64).reshape(-1, SECRET_LIMBS)
    ok = np.all(arr < _BOUNDS, axis=1)
    out: list[bytes | None] = []
    for row, good in zip(arr.tolist(), ok.tolist()):
        if not good:
            out.append(None)
            continue
        x = 0
        for i, v in enumerate(row):
            x |= int(v) << (LIMB_BITS * i)
        out.append(x.to_bytes(SECRET_BYTES, "little"))
    return out


def from_limbs(limbs: np.ndarray) -> bytes | None:
    """The secret of one limb row (``None``: a limb out of range)."""
    return from_limbs_batch(np.asarray(limbs).reshape(1, -1))[0]


def reconstruct_secret(shares: dict[int, bytes], *, threshold: int) -> bytes:
    """A 32-byte secret from ``threshold`` revealed shares ``{holder id: share bytes}`` (the holders'
    points are ``id + 1``); :class:`VerificationError` when the shares are not field elements or are
    inconsistent (a limb out of range)."""
    from secagg.shamir import PRIME, reconstruct

    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares, {threshold} needed")
    holders = sorted(shares)[:threshold]
    rows = [np.frombuffer(shares[h][: 4 * SECRET_LIMBS], dtype="<u4").astype(np.uint64) for h in holders]
    if any(r.size != SECRET_LIMBS or np.any(r >= PRIME) for r in rows):
        raise VerificationError()
    secret = from_limbs(reconstruct(np.stack(rows), xs=np.array([h + 1 for h in holders], dtype=np.uint64)))
    if secret is None:
        raise VerificationError()
    return secret
