"""Where the encryption randomness ``r^n mod n^2`` comes from (the expensive part of Paillier).

Encryption is ``(1 + m n) * rn mod n^2``: once ``rn`` is known it costs one multiplication.
``rn`` does not depend on the data, so it is computed *offline* (before the round's update
exists) into a pool and consumed *online*.

* :class:`FreshRandomness` (the conservative default): ``r`` uniform in ``Z*_n``,
  ``rn = r^n mod n^2`` by a full exponentiation per ciphertext. Security: DCR, as in
  textbook Paillier.
* :class:`FixedBaseRandomness` (faster, **extra assumption**): Damgård–Jurik–Nielsen style
  ``rn = h_s^x mod n^2`` with the public base ``h_s = (-y^2)^n mod n^2`` (``y`` random) and
  ``x`` uniform of ``exponent_bits`` bits, computed with a fixed-base window table (one
  multiplication per window). With ``exponent_bits = key_bits / 2`` (the default) this is
  DJN's variant, secure under DCR plus the assumption that ``h^x`` for such ``x`` is
  indistinguishable from a random element of the subgroup ``<h>`` (the simplification
  proposed by Damgård, Jurik and Nielsen, "A generalization of Paillier's public-key
  system with applications to electronic voting"); shorter exponents (>= 256 bits, only with
  ``allow_insecure=True``) rest on the stronger short-exponent assumption. The table is a public per-key
  precomputation (like the key itself); its cost is reported separately.
"""

from __future__ import annotations

from collections import deque

import gmpy2
from gmpy2 import mpz

from privagg.errors import ConfigurationError
from privagg.randomness import SYSTEM_SECRETS, SecretSource, secret_below

from .keys import PaillierPublicKey
from .knowledge import MODE_FIXED_BASE, MODE_FRESH, Witness

__all__ = [
    "RANDOMNESS_MODES",
    "FreshRandomness",
    "FixedBaseRandomness",
    "FixedBaseTable",
    "make_randomness",
    "default_exponent_bits",
    "check_exponent_bits",
]

RANDOMNESS_MODES = ("fresh", "fixed-base")
_MIN_EXPONENT_BITS = 256


class _Pool:
    """Obfuscators with their witnesses (``r`` or ``x``, for the proof of plaintext knowledge)."""

    def __init__(self) -> None:
        self._pool: deque[tuple[mpz, Witness]] = deque()

    def _one(self) -> tuple[mpz, Witness]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _many(self, count: int) -> list[tuple[mpz, Witness]]:
        return [self._one() for _ in range(count)]

    def precompute(self, count: int) -> None:
        """Offline: add ``count`` obfuscators ``r^n mod n^2`` to the pool."""
        self._pool.extend(self._many(count))

    @property
    def available(self) -> int:
        return len(self._pool)

    def take_with_witnesses(self, count: int) -> list[tuple[mpz, Witness]]:
        """Online: ``count`` obfuscators with witnesses from the pool (computed on the spot if it runs dry).

        Each value is used once and removed: reusing ``r`` would leak the plaintext difference.
        """
        out = [self._pool.popleft() for _ in range(min(count, len(self._pool)))]
        while len(out) < count:
            out.append(self._one())
        return out

    def take(self, count: int) -> list[mpz]:
        """Online: ``count`` obfuscators (see :meth:`take_with_witnesses`)."""
        return [rn for rn, _ in self.take_with_witnesses(count)]


class FreshRandomness(_Pool):
    """``r`` uniform in ``Z*_n``, ``r^n mod n^2`` (one full exponentiation per ciphertext)."""

    mode = "fresh"

    def __init__(self, public_key: PaillierPublicKey, *, secrets: SecretSource = SYSTEM_SECRETS) -> None:
        super().__init__()
        self.public_key = public_key
        self._secrets = secrets

    def _one(self) -> tuple[mpz, Witness]:
        r = self.public_key.random_r(self._secrets)
        return self.public_key.obfuscator(r), (MODE_FRESH, r)

    def __repr__(self) -> str:
        return f"FreshRandomness(key_bits={self.public_key.key_bits}, pool={self.available})"


class FixedBaseTable:
    """Public fixed-base window table for ``h_s``: ``T[j][d] = h_s^(d 2^(w j)) mod n^2``."""

    def __init__(self, public_key: PaillierPublicKey, base: int, *, exponent_bits: int, window: int = 6) -> None:
        if not 1 <= window <= 12:
            raise ConfigurationError(f"got {window}", field="window", accepted="1..12")
        self.public_key = public_key
        self.base = mpz(base)
        self.exponent_bits = exponent_bits
        self.window = window
        n2 = public_key.n2
        rows = (exponent_bits + window - 1) // window
        table: list[list[mpz]] = []
        g = self.base
        for _ in range(rows):
            row = [mpz(1), g]
            for _ in range(2, 1 << window):
                row.append(row[-1] * g % n2)
            table.append(row)
            g = row[-1] * g % n2  # g^(2^w)
        self._table = table
        self._top = g  # h_s^(2^(window * rows)): the first power the table does not reach

    @classmethod
    def new_base(cls, public_key: PaillierPublicKey, *, secrets: SecretSource = SYSTEM_SECRETS) -> mpz:
        """``h_s = (-y^2)^n mod n^2`` for a random unit ``y`` (public parameter, made at key setup)."""
        y = public_key.random_r(secrets)
        h = (-(y * y)) % public_key.nz
        return gmpy2.powmod(h, public_key.nz, public_key.n2)

    def power(self, x: int) -> mpz:
        """``h_s^x mod n^2`` for ``0 <= x < 2**exponent_bits`` (one multiplication per window)."""
        n2 = self.public_key.n2
        if x < 0 or x >> (self.window * len(self._table)):
            raise ValueError("exponent outside the table (use power_any)")  # never a silently wrong power
        mask = (1 << self.window) - 1
        acc = mpz(1)
        w = self.window
        for row in self._table:
            d = x & mask
            if d:
                acc = acc * row[d] % n2
            x >>= w
        return acc

    def power_many(self, xs: list[int]) -> list[mpz]:
        """``[self.power(x) for x in xs]``, row by row: each row's entries are read while they are in
        cache, about 7% faster for a pool of obfuscators (the same values)."""
        w = self.window
        reach, mask = w * len(self._table), (1 << w) - 1
        rest = [int(x) for x in xs]
        if any(x < 0 or x >> reach for x in rest):
            raise ValueError("exponent outside the table (use power_any)")
        n2 = self.public_key.n2
        accs = [mpz(1)] * len(rest)
        for row in self._table:
            for k, x in enumerate(rest):
                d = x & mask
                if d:
                    accs[k] = accs[k] * row[d] % n2
                rest[k] = x >> w
        return accs

    def power_any(self, x: int) -> mpz:
        """``h_s^x mod n^2`` for any ``x >= 0``: the table for the low bits, one ``powmod`` for the rest."""
        if x < 0:
            raise ValueError("non-negative exponents only")
        reach = self.window * len(self._table)
        low = self.power(x & ((1 << reach) - 1))
        high = x >> reach
        return low if not high else low * gmpy2.powmod(self._top, high, self.public_key.n2) % self.public_key.n2

    @property
    def table_bytes(self) -> int:
        return len(self._table) * (1 << self.window) * self.public_key.ciphertext_bytes


class FixedBaseRandomness(_Pool):
    """``h_s^x`` with ``x`` uniform of ``exponent_bits`` bits from a shared :class:`FixedBaseTable`."""

    mode = "fixed-base"

    def __init__(self, table: FixedBaseTable, *, secrets: SecretSource = SYSTEM_SECRETS) -> None:
        super().__init__()
        self.table = table
        self.public_key = table.public_key
        self._secrets = secrets

    def _one(self) -> tuple[mpz, Witness]:
        x = mpz(secret_below(self._secrets, 1 << self.table.exponent_bits))
        return self.table.power(x), (MODE_FIXED_BASE, x)

    def _many(self, count: int) -> list[tuple[mpz, Witness]]:
        xs = [mpz(secret_below(self._secrets, 1 << self.table.exponent_bits)) for _ in range(count)]
        return [(h, (MODE_FIXED_BASE, x)) for h, x in zip(self.table.power_many([int(x) for x in xs]), xs)]

    def __repr__(self) -> str:
        return f"FixedBaseRandomness(exponent_bits={self.table.exponent_bits}, pool={self.available})"


def default_exponent_bits(key_bits: int) -> int:
    return max(key_bits // 2, min(_MIN_EXPONENT_BITS, key_bits))


def check_exponent_bits(exponent_bits: int, key_bits: int, *, allow_insecure: bool = False) -> None:
    """``key_bits / 2`` and up (DJN); shorter (down to 256 bits) only with ``allow_insecure``: the
    short-exponent assumption is stronger than DJN's and is not what the README recommends."""
    low = min(_MIN_EXPONENT_BITS, key_bits) if allow_insecure else key_bits // 2
    if not low <= exponent_bits <= 2 * key_bits:
        raise ConfigurationError(
            f"got {exponent_bits} for a {key_bits}-bit key",
            field="exponent_bits",
            accepted=f"{low}..{2 * key_bits} (default key_bits/2 = {key_bits // 2})",
        )


def make_randomness(
    mode: str,
    public_key: PaillierPublicKey,
    *,
    table: FixedBaseTable | None = None,
    secrets: SecretSource = SYSTEM_SECRETS,
) -> FreshRandomness | FixedBaseRandomness:
    """A randomness source by mode name (``"fresh"`` or ``"fixed-base"``, which needs a table)."""
    if mode == "fresh":
        return FreshRandomness(public_key, secrets=secrets)
    if mode == "fixed-base":
        if table is None:
            raise ConfigurationError("fixed-base randomness needs a FixedBaseTable", field="randomness")
        return FixedBaseRandomness(table, secrets=secrets)
    raise ConfigurationError(f"got {mode!r}", field="randomness", accepted=RANDOMNESS_MODES)
