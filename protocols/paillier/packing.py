"""BatchCrypt-style packing: many quantised signed values per Paillier plaintext.

A value ``v`` in ``[-q, q]`` (``q = 2**(value_bits-1) - 1``, from
:class:`privagg.encoding.RingEncoding`) is stored *offset* as ``v + q`` in ``[0, 2q]``.
A sum of up to ``max_clients`` such slots lies in ``[0, 2 q max_clients]``, which needs
``slot_bits = sum_bits(max_clients, value_bits)`` bits; with that many bits per slot no
carry can ever cross into the next slot, so the homomorphic sum of packed plaintexts is the
packing of the per-slot sums, exactly. The sum of ``N`` clients decodes as
``slot - N q``; :meth:`PackingLayout.unpack` refuses a sum outside ``[-N q, N q]`` and padding
slots that do not sum to 0 (no ``N`` values in ``[-q, q]`` give them: a summand was out of range).
``slots = plaintext_bits // slot_bits`` slots fit below ``2**(key_bits-1) <= n``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privagg.encoding import pack_bits, packed_size, sum_bits, unpack_bits
from privagg.errors import ConfigurationError

__all__ = ["PackingLayout", "MAX_SLOT_BITS"]

MAX_SLOT_BITS = 62


@dataclass(frozen=True, slots=True)
class PackingLayout:
    """Slot layout of one plaintext; build with :meth:`derive`; the constructor refuses overflow."""

    key_bits: int
    value_bits: int
    max_clients: int
    slot_bits: int
    slots: int

    def __post_init__(self) -> None:
        if self.value_bits < 2:
            raise ConfigurationError(f"got {self.value_bits}", field="value_bits", accepted=">= 2")
        if self.max_clients < 1:
            raise ConfigurationError(f"got {self.max_clients}", field="max_clients", accepted=">= 1")
        need = sum_bits(self.max_clients, self.value_bits)
        if self.slot_bits < need:
            raise ConfigurationError(
                f"a sum of {self.max_clients} values of {self.value_bits} bits (offset-encoded) needs "
                f"{need} bits per slot, {self.slot_bits} could overflow into the next slot",
                field="slot_bits",
                accepted=f"{need}..{MAX_SLOT_BITS}",
            )
        if self.slot_bits > MAX_SLOT_BITS:
            raise ConfigurationError(
                f"{self.max_clients} clients x {self.value_bits}-bit values need {need}-bit slots, more than "
                f"{MAX_SLOT_BITS}; lower value_bits (<= {MAX_SLOT_BITS - self.max_clients.bit_length()}) "
                f"or max_clients",
                field="value_bits",
            )
        capacity = self.key_bits - 1
        if self.slots < 1 or self.slots * self.slot_bits > capacity:
            raise ConfigurationError(
                f"{self.slots} slots of {self.slot_bits} bits do not fit a {self.key_bits}-bit key "
                f"({capacity} plaintext bits hold at most {capacity // self.slot_bits} slots)",
                field="slots",
                accepted=f"1..{capacity // self.slot_bits}" if capacity >= self.slot_bits else "none: larger key",
            )

    @classmethod
    def derive(cls, *, key_bits: int, value_bits: int, max_clients: int) -> PackingLayout:
        """The densest safe layout for a key size, value size and maximum number of summands."""
        if max_clients < 1:
            raise ConfigurationError(f"got {max_clients}", field="max_clients", accepted=">= 1")
        if value_bits < 2:
            raise ConfigurationError(f"got {value_bits}", field="value_bits", accepted=">= 2")
        slot_bits = sum_bits(max_clients, value_bits)
        slots = (key_bits - 1) // slot_bits if slot_bits <= MAX_SLOT_BITS else 0
        if slot_bits <= MAX_SLOT_BITS and slots < 1:
            raise ConfigurationError(
                f"a {slot_bits}-bit slot ({max_clients} clients x {value_bits}-bit values) does not fit "
                f"a {key_bits}-bit key",
                field="key_bits",
                accepted=f">= {slot_bits + 1}",
            )
        return cls(
            key_bits=key_bits, value_bits=value_bits, max_clients=max_clients, slot_bits=slot_bits, slots=max(slots, 1)
        )

    @property
    def q(self) -> int:
        return (1 << (self.value_bits - 1)) - 1

    def num_plaintexts(self, count: int) -> int:
        return -(-count // self.slots)

    def pack(self, values: np.ndarray) -> list[int]:
        """Signed integers in ``[-q, q]`` -> packed plaintexts (slot ``i`` at bits ``i*slot_bits``)."""
        v = np.asarray(values, dtype=np.int64).ravel()
        q = self.q
        if v.size and (int(v.min()) < -q or int(v.max()) > q):
            raise ConfigurationError(f"values must lie in [-{q}, {q}]", field="values")
        total = self.num_plaintexts(v.size) * self.slots
        padded = np.full(total, q, dtype=np.int64)  # padding encodes 0
        padded[: v.size] = v + q
        rows = padded.astype(np.uint64).reshape(-1, self.slots)
        # one packing of the whole vector (row r's slots are bits [r * row_bits, (r + 1) * row_bits)), cut into rows
        row_bits = self.slots * self.slot_bits
        whole, mask = int.from_bytes(pack_bits(rows, self.slot_bits, check=False), "little"), (1 << row_bits) - 1
        return [(whole >> (r * row_bits)) & mask for r in range(len(rows))]

    def unpack(self, plaintexts: list[int], *, count: int, num_summands: int) -> np.ndarray:
        """Packed sums of ``num_summands`` packings -> the ``count`` signed integer sums."""
        if not 1 <= num_summands <= self.max_clients:
            raise ConfigurationError(
                f"{num_summands} summands exceed the layout's {self.max_clients}",
                field="num_summands",
                accepted=f"1..{self.max_clients}",
            )
        if len(plaintexts) != self.num_plaintexts(count):
            raise ConfigurationError(
                f"{count} values need {self.num_plaintexts(count)} plaintexts, got {len(plaintexts)}",
                field="plaintexts",
            )
        nbytes = packed_size(self.slots, self.slot_bits)
        limit = 1 << (self.slots * self.slot_bits)
        parts = []
        for p in plaintexts:
            if not 0 <= p < limit:
                raise ConfigurationError("plaintext larger than the packed layout", field="plaintexts")
            parts.append(unpack_bits(int(p).to_bytes(nbytes, "little"), self.slot_bits, self.slots))
        if not parts:
            return np.zeros(0, dtype=np.int64)
        slots = np.concatenate(parts).astype(np.int64) - np.int64(num_summands * self.q)
        # what no honest summands can produce: a sum outside [-N q, N q], or padding (encodes 0) that is not 0
        bound = num_summands * self.q
        outside = np.flatnonzero(np.abs(slots[:count]) > bound)
        if outside.size:
            raise ConfigurationError(
                f"{outside.size} sums (first at coordinate {int(outside[0])}) lie outside [-{bound}, {bound}], "
                f"the range of {num_summands} summands in [-{self.q}, {self.q}]",
                field="plaintexts",
            )
        if np.any(slots[count:]):
            raise ConfigurationError("the padding slots do not sum to 0", field="plaintexts")
        return slots[:count]
