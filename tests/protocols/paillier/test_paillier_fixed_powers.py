"""Fixed-base exponentiation helpers: the verification base's powers and the row-by-row obfuscator pool.

Both must give exactly ``powmod``'s value for every exponent (they sit under the partial-
decryption proofs and the clients' randomness); checked against ``gmpy2.powmod`` on random and
edge-case exponents, and through the proofs they serve (a wrong ``v^z`` would reject every proof).
"""

from __future__ import annotations

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.randomness import InsecureDeterministicSecrets
from protocols.paillier import FixedBaseRandomness, FixedBaseTable, PaillierPublicKey, generate_threshold_key
from protocols.paillier.multiexp import FixedBasePowers, fixed_base_powers

MOD = mpz((1 << 521) - 1) * mpz((1 << 127) - 1)  # odd, composite: like n^2, not prime


@pytest.fixture(scope="module")
def toy_n2() -> PaillierPublicKey:
    tk, _ = generate_threshold_key(
        128, decryptors=2, threshold=1, secrets=InsecureDeterministicSecrets(b"toy-pool"), allow_insecure=True
    )
    return tk.public_key


@settings(max_examples=150, deadline=None)
@given(
    bits=st.integers(1, 700),
    window=st.integers(1, 9),
    base=st.integers(2, 1 << 600),
    x=st.integers(0, 1 << 800),
)
def test_fixed_base_powers_equal_powmod(bits: int, window: int, base: int, x: int) -> None:
    fb = FixedBasePowers(mpz(base), MOD, bits=bits, window=window)
    for e in (x, x & ((1 << bits) - 1), (1 << bits) - 1, 1 << bits, 0, 1):
        assert fb.power(e) == gmpy2.powmod(mpz(base), e, MOD)


def test_fixed_base_powers_refuse_bad_input() -> None:
    with pytest.raises(ValueError):
        FixedBasePowers(mpz(3), MOD, bits=0)
    with pytest.raises(ValueError):
        FixedBasePowers(mpz(3), MOD, bits=10, window=13)
    with pytest.raises(ValueError):
        FixedBasePowers(mpz(3), MOD, bits=10).power(-1)
    assert fixed_base_powers(mpz(3), MOD, 64) is fixed_base_powers(mpz(3), MOD, 64)  # memoised per process


def test_partial_decryption_proofs_still_verify_and_still_catch_a_wrong_partial() -> None:
    tk, shares = generate_threshold_key(
        256, decryptors=3, threshold=2, secrets=InsecureDeterministicSecrets(b"fixed-v"), allow_insecure=True
    )
    pk = tk.public_key
    cts = [pk.encrypt(m, secrets=InsecureDeterministicSecrets(bytes([m]))) for m in range(1, 6)]
    for sh in shares:
        parts = [sh.partial_decrypt(c) for c in cts]
        proof = sh.prove_partials(cts, parts, context=b"ctx")
        assert tk.verify_partials(sh.index, cts, parts, proof, context=b"ctx")
        wrong = [parts[0] * (1 + pk.nz) % pk.n2, *parts[1:]]
        assert not tk.verify_partials(sh.index, cts, wrong, proof, context=b"ctx")
    assert tk.combine({s.index: [s.partial_decrypt(c) for c in cts] for s in shares[:2]}) == list(range(1, 6))


@settings(max_examples=25, deadline=None)
@given(xs=st.lists(st.integers(0, (1 << 96) - 1), min_size=0, max_size=12), window=st.integers(1, 10))
def test_power_many_equals_power(toy_n2: PaillierPublicKey, xs: list[int], window: int) -> None:
    table = FixedBaseTable(toy_n2, mpz(7), exponent_bits=96, window=window)
    assert table.power_many(xs) == [table.power(x) for x in xs]
    assert all(v == gmpy2.powmod(mpz(7), x, toy_n2.n2) for v, x in zip(table.power_many(xs), xs))
    with pytest.raises(ValueError):
        table.power_many([*xs, 1 << (window * -(-96 // window))])


def test_a_fixed_base_pool_holds_the_powers_of_its_witnesses(toy_n2: PaillierPublicKey) -> None:
    table = FixedBaseTable(toy_n2, mpz(7), exponent_bits=96, window=5)
    pool = FixedBaseRandomness(table, secrets=InsecureDeterministicSecrets(b"pool"))
    pool.precompute(9)
    got = pool.take_with_witnesses(9)
    assert len(got) == 9 and len({int(rn) for rn, _ in got}) == 9
    assert all(rn == gmpy2.powmod(mpz(7), x, toy_n2.n2) for rn, (_, x) in got)
