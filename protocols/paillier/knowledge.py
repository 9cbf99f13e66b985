"""Proofs of plaintext knowledge for client contributions (amortised Σ-protocol, Fiat–Shamir, batched).

A client proves that it knows the plaintexts ``m_1 .. m_k`` of *every* ciphertext
``c_j = (1 + m_j n) ρ_j mod n^2`` of its contribution. Without this, a client (or a server
holding client keys) could submit a ciphertext *derived* from someone else's — a victim's
``c`` re-signed under another id, a previous round's ``c``, or ``Enc(K) c_v^-1`` — and have the
decryptors open a victim's vector.

Protocol (one commitment per contribution, a challenge per ciphertext):

* commitment ``A = (1 + u n) s^n`` (fresh randomness, ``ρ_j = r_j^n``) or ``A = (1 + u n) h^v``
  (fixed-base randomness, ``ρ_j = h^{x_j}``), with ``u`` uniform in ``Z_n``, ``s`` in ``Z*_n``,
  ``v`` of ``exponent_bits + 256 + bitlen(k)`` bits, all from the OS CSPRNG;
* challenges ``e_1 .. e_k`` of 128 bits, expanded (AES-CTR under HKDF) from ``H(label, key id,
  session, round, client id, model digest, count, mode, k, c_1 .. c_k, A)``: the proof is bound
  to the client, key, session, round, model and to each ciphertext's index;
* responses ``z = u + Σ e_j m_j mod n`` and ``w = s Π r_j^{e_j} mod n`` (fresh) or
  ``z' = v + Σ e_j x_j`` (integer, fixed-base);
* check ``(1 + z n) w^n = A Π c_j^{e_j}`` resp. ``(1 + z n) h^{z'} = A Π c_j^{e_j} (mod n^2)``.

Soundness (knowledge of every ``m_j``): ``k + 1`` accepting answers to one commitment with
challenge vectors in general position (forking the random oracle) give ``k`` independent
relations ``Σ_j Δe_j m_j = Δz (mod n)`` — the ``w`` / ``h`` parts are ``n``-th residues and
encrypt 0 — which determine every ``m_j``; the 128-bit challenge vectors are singular modulo a
prime factor of ``n`` (~``key_bits/2`` bits) with probability about ``k 2^-128``. This is the
usual amortisation of a Σ-protocol for a linear (homomorphic) relation; the knowledge error is
about ``k 2^-128`` per random-oracle query. Honest-verifier zero knowledge: ``z`` and ``w`` are
uniform (fresh); ``z'`` is within statistical distance ``2^-128`` of ``v``'s distribution
(fixed-base). A reused ``(u, s)`` pair would reveal the plaintexts (two challenges, one
commitment): the prover's randomness comes from the CSPRNG, never from a seed.

Verification multiplies the per-contribution equations with the verifier's own secret 64-bit
weights ``ρ_i``: the right-hand side ``Π_i (A_i Π_j c_ij^{e_ij})^{ρ_i}`` is one
multi-exponentiation (Pippenger buckets) over every commitment and ciphertext, and the two
sides are compared *squared*. Elements of order 2 in ``Z*_{n^2}`` cannot help a prover (they are
``n``-th residues, it could have put them in ``A`` itself, and they vanish from the extracted
relations), so an equation that holds up to one of them is accepted -- alike in a batch and
alone, which keeps the two checks consistent (with unsquared sides two proofs each off by ``-1``
passed an odd-weighted batch while each failed alone). Any other deviation passes the weighted
batch with probability about ``2^-64``. On failure each contribution is checked alone, to name
the culprits.

Proof bytes: ``mode u8 | A (n^2 bytes) | z (n bytes) | w (n bytes) or z' (fixed length)``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence

import gmpy2
from gmpy2 import mpz

from privagg.randomness import SYSTEM_SECRETS, SecretSource, label, prg_bytes, secret_below

from .keys import PaillierPublicKey
from .messages import ClientContribution
from .multiexp import fixed_base_powers, multi_pow

__all__ = [
    "MODE_FRESH",
    "MODE_FIXED_BASE",
    "Witness",
    "prove_knowledge",
    "verify_contributions",
    "proof_bytes",
    "multi_pow",
]

MODE_FRESH, MODE_FIXED_BASE = 1, 2
_CHALLENGE_BYTES = 16
_STAT_BITS = 128
_WEIGHT_BITS = 64

#: per ciphertext: (mode, witness: r for fresh randomness, x for fixed-base)
Witness = tuple[int, mpz]


def _nbytes(pk: PaillierPublicKey) -> int:
    return (pk.key_bits + 7) // 8


def _v_bits(exponent_bits: int, k: int) -> int:
    return exponent_bits + 8 * _CHALLENGE_BYTES + _STAT_BITS + k.bit_length()


def _z2_bytes(exponent_bits: int, k: int) -> int:
    return (_v_bits(exponent_bits, k) + 1 + 7) // 8


def proof_bytes(pk: PaillierPublicKey, ciphertexts: int, *, exponent_bits: int | None) -> int:
    """The length of a proof for ``ciphertexts`` ciphertexts (``exponent_bits``: fixed-base, else fresh)."""
    tail = _nbytes(pk) if exponent_bits is None else _z2_bytes(exponent_bits, ciphertexts)
    return 1 + pk.ciphertext_bytes + _nbytes(pk) + tail


def _challenges(pk: PaillierPublicKey, c: ClientContribution, commitment: int, mode: int) -> list[int]:
    w = pk.ciphertext_bytes
    h = hashlib.sha256(
        label(
            "privagg/paillier/plaintext-knowledge/v2",
            c.key_id,
            c.session,
            c.round,
            c.client_id,
            c.model_digest,
            c.count,
            mode,
            len(c.ciphertexts),
        )
    )
    for x in c.ciphertexts:
        h.update(x.to_bytes(w, "big") if type(x) is mpz else int(x).to_bytes(w, "big"))
    h.update(int(commitment).to_bytes(w, "big"))
    raw = prg_bytes(
        h.digest(),
        info=b"privagg/paillier/plaintext-knowledge/challenges/v2",
        nbytes=_CHALLENGE_BYTES * len(c.ciphertexts),
    )
    return [int.from_bytes(raw[i : i + _CHALLENGE_BYTES], "big") for i in range(0, len(raw), _CHALLENGE_BYTES)]


def prove_knowledge(
    unsigned: ClientContribution,
    plaintexts: Sequence[int],
    witnesses: Sequence[Witness],
    pk: PaillierPublicKey,
    *,
    fixed_base: tuple[int, int] | None = None,
    power: Callable[[int], mpz] | None = None,
    secrets: SecretSource = SYSTEM_SECRETS,
) -> bytes:
    """The proof for ``unsigned``, whose ciphertexts encrypt ``plaintexts`` with ``witnesses``.

    ``fixed_base``: ``(h_s, exponent_bits)`` of the deployment, for fixed-base witnesses;
    ``power``: ``x -> h_s^x mod n^2`` by the deployment's table (:meth:`~.obfuscators.FixedBaseTable.power_any`),
    faster than ``powmod`` for the commitment (the same value).
    """
    n, n2 = pk.nz, pk.n2
    k = len(unsigned.ciphertexts)
    modes = {wt[0] for wt in witnesses}
    if k == 0 or len(modes) != 1 or len(witnesses) != k or len(plaintexts) != k:
        raise ValueError("one witness of one randomness mode per ciphertext")
    mode = modes.pop()
    if mode == MODE_FIXED_BASE and fixed_base is None:
        raise ValueError("fixed-base witnesses need the deployment's base")
    u = mpz(secret_below(secrets, pk.n))
    if mode == MODE_FRESH:
        s = pk.random_r(secrets)
        commitment = (1 + u * n) * pk.obfuscator(s) % n2
    else:
        assert fixed_base is not None
        base, bits = fixed_base
        v = mpz(secret_below(secrets, 1 << _v_bits(bits, k)))
        hv = power(int(v)) if power is not None else gmpy2.powmod(mpz(base), v, n2)
        commitment = (1 + u * n) * hv % n2
    es = _challenges(pk, unsigned, commitment, mode)
    z = (u + sum(e * int(m) for e, m in zip(es, plaintexts))) % n
    if mode == MODE_FRESH:
        second = s * multi_pow([wt[1] for wt in witnesses], es, n) % n
        tail = _nbytes(pk)
    else:
        second = v + sum(e * int(wt[1]) for e, wt in zip(es, witnesses))
        tail = _z2_bytes(fixed_base[1], k) if fixed_base is not None else 0
    return (
        struct.pack(">B", mode)
        + int(commitment).to_bytes(pk.ciphertext_bytes, "big")
        + int(z).to_bytes(_nbytes(pk), "big")
        + int(second).to_bytes(tail, "big")
    )


_Parsed = tuple[int, mpz, mpz, mpz, list[int]]  # mode, commitment, z, w or z', challenges


def _parse(c: ClientContribution, pk: PaillierPublicKey, fixed_base: tuple[int, int] | None) -> _Parsed | None:
    """The proof's parts and its challenges, or ``None`` when malformed."""
    k = len(c.ciphertexts)
    if not c.proof or k == 0:
        return None
    mode = c.proof[0]
    if mode == MODE_FRESH:
        tail = _nbytes(pk)
    elif mode == MODE_FIXED_BASE and fixed_base is not None:
        tail = _z2_bytes(fixed_base[1], k)
    else:
        return None
    cb, nb = pk.ciphertext_bytes, _nbytes(pk)
    if len(c.proof) != 1 + cb + nb + tail:
        return None
    raw = c.proof
    commitment = mpz(int.from_bytes(raw[1 : 1 + cb], "big"))
    z = mpz(int.from_bytes(raw[1 + cb : 1 + cb + nb], "big"))
    second = mpz(int.from_bytes(raw[1 + cb + nb :], "big"))
    if not (0 < commitment < pk.n2 and z < pk.n) or (mode == MODE_FRESH and not 0 < second < pk.n):
        return None
    return mode, commitment, z, second, _challenges(pk, c, commitment, mode)


def _base_power(fixed_base: tuple[int, int], pk: PaillierPublicKey, x: mpz) -> mpz:
    """``h_s^x mod n^2`` by the base's memoised table of powers (about a fifth of a ``powmod`` at these sizes)."""
    base, bits = fixed_base
    # covers z' summed with 64-bit weights over up to 2^10 contributions of up to 2^16 ciphertexts each
    reach = _v_bits(bits, (1 << 16) - 1) + _WEIGHT_BITS + 10
    return fixed_base_powers(mpz(base), pk.n2, reach).power(x)


def _batch_ok(
    parsed: Sequence[tuple[ClientContribution, _Parsed]],
    pk: PaillierPublicKey,
    fixed_base: tuple[int, int] | None,
    secrets: SecretSource,
) -> bool:
    """All equations at once, weighted: ``Π_i (A_i Π_j c_ij^e_ij)^ρ_i`` is one multi-exponentiation."""
    n, n2 = pk.nz, pk.n2
    zsum, z2sum = mpz(0), mpz(0)
    fresh_w: list[mpz] = []
    fresh_rho: list[int] = []
    bases: list[mpz] = []
    exps: list[int] = []
    for c, (mode, commitment, z, second, es) in parsed:
        rho = secret_below(secrets, 1 << _WEIGHT_BITS) | 1
        zsum += rho * z
        if mode == MODE_FRESH:
            fresh_w.append(second)
            fresh_rho.append(rho)
        else:
            z2sum += rho * second
        bases.append(commitment)
        exps.append(rho)
        bases.extend(mpz(x) for x in c.ciphertexts)
        exps.extend(rho * e for e in es)
    lhs = (1 + (zsum % n) * n) % n2
    if fresh_w:
        lhs = lhs * gmpy2.powmod(multi_pow(fresh_w, fresh_rho, n), n, n2) % n2
    if z2sum:
        if fixed_base is None:
            return False
        lhs = lhs * _base_power(fixed_base, pk, z2sum) % n2
    rhs = multi_pow(bases, exps, n2)
    return bool(lhs * lhs % n2 == rhs * rhs % n2)  # equal up to an element of order 2 (see the module docstring)


def verify_contributions(
    contributions: Sequence[ClientContribution],
    pk: PaillierPublicKey,
    *,
    fixed_base: tuple[int, int] | None = None,
    secrets: SecretSource = SYSTEM_SECRETS,
) -> tuple[int, ...]:
    """The client ids whose proofs do not verify (empty: every contribution proven), batched.

    ``fixed_base``: the deployment's ``(h_s, exponent_bits)``; without it, proofs of fixed-base
    contributions are refused.
    """
    parsed: list[tuple[ClientContribution, _Parsed]] = []
    bad = []
    for c in contributions:
        p = _parse(c, pk, fixed_base)
        if p is None:
            bad.append(c.client_id)
        else:
            parsed.append((c, p))
    if not parsed or _batch_ok(parsed, pk, fixed_base, secrets):
        return tuple(sorted(bad))
    alone = [c.client_id for c, p in parsed if not _batch_ok([(c, p)], pk, fixed_base, secrets)]
    # the joint batch failed but each passed alone: a negligible-probability event; refuse them all
    bad.extend(alone or [c.client_id for c, _ in parsed])
    return tuple(sorted(bad))
