"""Randomness sources: fixed-base tables compute h_s^x exactly; pools hand out each value once."""

from __future__ import annotations

import gmpy2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.errors import ConfigurationError
from privagg.randomness import InsecureDeterministicSecrets
from protocols.paillier import FixedBaseRandomness, FixedBaseTable, FreshRandomness, make_randomness
from protocols.paillier.obfuscators import check_exponent_bits


@pytest.fixture(scope="module")
def table(toy_keypair):
    pk, _ = toy_keypair
    base = FixedBaseTable.new_base(pk, secrets=InsecureDeterministicSecrets(b"base"))
    return FixedBaseTable(pk, base, exponent_bits=256, window=5)


@settings(max_examples=50, deadline=None)
@given(x=st.integers(min_value=0, max_value=(1 << 256) - 1))
def test_fixed_base_power_is_exact(table, x):
    assert table.power(x) == gmpy2.powmod(table.base, x, table.public_key.n2)


@settings(max_examples=50, deadline=None)
@given(x=st.integers(min_value=0, max_value=(1 << 600) - 1))
def test_fixed_base_power_any_is_exact_beyond_the_table(table, x):
    """The proof commitment's exponent is longer than the table (256 bits here; 52 rows of 5 reach 260)."""
    assert table.power_any(x) == gmpy2.powmod(table.base, x, table.public_key.n2)


def test_fixed_base_power_any_edges(table):
    n2 = table.public_key.n2
    for x in (0, 1, (1 << 260) - 1, 1 << 260, 1 << 256, (1 << 256) - 1, 1 << 1000):
        assert table.power_any(x) == gmpy2.powmod(table.base, x, n2)
    with pytest.raises(ValueError):
        table.power_any(-1)
    for x in (-1, 1 << 260, 1 << 300):  # old code: the bits beyond the table were silently dropped
        with pytest.raises(ValueError, match="outside the table"):
            table.power(x)


def test_fixed_base_base_is_an_nth_residue(table, toy_keypair):
    _, sk = toy_keypair
    # an n-th residue encrypts 0: decrypting h_s (and any power) gives 0
    assert sk.decrypt(table.base) == 0
    assert sk.decrypt(table.power(12345)) == 0


@pytest.mark.parametrize("mode", ["fresh", "fixed-base"])
def test_encryptions_with_pooled_randomness_decrypt(mode, table, toy_keypair):
    pk, sk = toy_keypair
    src = make_randomness(mode, pk, table=table, secrets=InsecureDeterministicSecrets(mode.encode()))
    src.precompute(5)
    assert src.available == 5
    rns = src.take(7)  # 5 from the pool, 2 computed on the spot
    assert src.available == 0 and len(set(rns)) == 7
    for i, rn in enumerate(rns):
        assert sk.decrypt(pk.encrypt_with(1000 + i, rn)) == 1000 + i


def test_fresh_randomness_matches_textbook(toy_keypair):
    pk, _ = toy_keypair
    a = FreshRandomness(pk, secrets=InsecureDeterministicSecrets(9)).take(1)[0]
    r = pk.random_r(InsecureDeterministicSecrets(9))
    assert a == gmpy2.powmod(r, pk.n, pk.n2)


def test_randomness_configuration_refused(toy_keypair, table):
    pk, _ = toy_keypair
    with pytest.raises(ConfigurationError, match="randomness"):
        make_randomness("short", pk)
    with pytest.raises(ConfigurationError, match="FixedBaseTable"):
        make_randomness("fixed-base", pk)
    with pytest.raises(ConfigurationError, match="exponent_bits"):
        check_exponent_bits(128, 2048)
    with pytest.raises(ConfigurationError, match="window"):
        FixedBaseTable(pk, table.base, exponent_bits=256, window=0)
    assert isinstance(make_randomness("fixed-base", pk, table=table), FixedBaseRandomness)
