"""Prime and safe-prime generation for Paillier keys (gmpy2 tests, secrets from a SecretSource).

Safe primes ``p = 2 p' + 1`` (needed by threshold Paillier) are found with a sieve over a
window of candidates: a candidate ``p'`` survives only if neither ``p'`` nor ``2 p' + 1`` has a
small factor, then a Fermat test on ``2 p' + 1`` and full BPSW/Miller-Rabin tests on both.
"""

from __future__ import annotations

import gmpy2
import numpy as np
from gmpy2 import mpz

from privagg.randomness import SecretSource

__all__ = ["random_prime", "random_safe_prime"]

_SIEVE_LIMIT = 1 << 16
_WINDOW = 1 << 15


def _small_primes(limit: int) -> np.ndarray:
    flags = np.ones(limit, dtype=bool)
    flags[:2] = False
    for i in range(2, int(limit**0.5) + 1):
        if flags[i]:
            flags[i * i :: i] = False
    return np.nonzero(flags)[0][1:]  # odd primes only


_SIEVE_CACHE: list[np.ndarray] = []


def _odd_small_primes() -> np.ndarray:
    if not _SIEVE_CACHE:
        _SIEVE_CACHE.append(_small_primes(_SIEVE_LIMIT))
    return _SIEVE_CACHE[0]


def _random_odd(bits: int, secrets: SecretSource) -> mpz:
    """A random odd integer of exactly ``bits`` bits with its two top bits set."""
    nbytes = (bits + 7) // 8
    v = int.from_bytes(secrets.token_bytes(nbytes), "big") >> (8 * nbytes - bits)
    v |= (3 << (bits - 2)) | 1
    return mpz(v)


def random_prime(bits: int, secrets: SecretSource) -> mpz:
    """A random prime of exactly ``bits`` bits (top two bits set, so ``p q`` has ``2 bits`` bits)."""
    if bits < 8:
        raise ValueError("prime size must be at least 8 bits")
    while True:
        p = gmpy2.next_prime(_random_odd(bits, secrets))
        if p.bit_length() == bits and gmpy2.is_prime(p, 40):
            return mpz(p)


def random_safe_prime(bits: int, secrets: SecretSource) -> mpz:
    """A random safe prime ``p = 2 p' + 1`` of exactly ``bits`` bits (``p'`` prime too)."""
    if bits < 8:
        raise ValueError("safe prime size must be at least 8 bits")
    primes = _odd_small_primes()
    while True:
        # p' has bits-1 bits; start from a random odd p'
        start = _random_odd(bits - 1, secrets)
        if bits - 1 <= 20:
            # tiny sizes (toy keys): plain search
            q = start
            for _ in range(1 << 16):
                if gmpy2.is_prime(q, 40) and gmpy2.is_prime(2 * q + 1, 40) and (2 * q + 1).bit_length() == bits:
                    return mpz(2 * q + 1)
                q += 2
            continue
        usable = primes[primes < start]
        # candidate p' = start + 2 j, j in [0, WINDOW); p' must avoid 0 mod r and (r-1)/2 mod r
        res = np.array([int(start % int(r)) for r in usable], dtype=np.int64)
        ok = np.ones(_WINDOW, dtype=bool)
        for r, s in zip(usable.tolist(), res.tolist()):
            inv2 = (r + 1) // 2  # inverse of 2 mod r
            # start + 2 j == 0 mod r  <=> j == -s * inv2 mod r
            j0 = (-s * inv2) % r
            ok[j0::r] = False
            # start + 2 j == (r - 1) / 2 mod r  (then 2 p' + 1 == 0 mod r)
            j1 = (((r - 1) // 2 - s) * inv2) % r
            ok[j1::r] = False
        two = mpz(2)
        for jj in np.nonzero(ok)[0].tolist():
            q = start + 2 * jj
            p = 2 * q + 1
            if p.bit_length() != bits:
                break
            # cheap Fermat test on p first: 2^(p-1) == 1 mod p
            if gmpy2.powmod(two, p - 1, p) != 1:
                continue
            if gmpy2.is_prime(q, 40) and gmpy2.is_prime(p, 40):
                return mpz(p)
