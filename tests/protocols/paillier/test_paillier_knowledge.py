"""Proofs of plaintext knowledge: completeness, the verification equation by hand, tampering, soundness."""

from __future__ import annotations

import dataclasses

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.randomness import InsecureDeterministicSecrets
from protocols.paillier import (
    FixedBaseTable,
    PaillierClient,
    RoundSetup,
    make_randomness,
    model_digest,
    verify_contributions,
)
from protocols.paillier.knowledge import MODE_FIXED_BASE, MODE_FRESH, _challenges, multi_pow, proof_bytes
from protocols.paillier.packing import PackingLayout

MODEL = model_digest([np.ones(2)])
SESSION = bytes(range(16))
COUNT = 120  # three ciphertexts on the toy key


@pytest.fixture(scope="module")
def key(toy_keypair):
    return toy_keypair


@pytest.fixture(scope="module")
def table(key):
    pk, _ = key
    base = FixedBaseTable.new_base(pk, secrets=InsecureDeterministicSecrets(b"kb"))
    return FixedBaseTable(pk, base, exponent_bits=256, window=4)


def _client(pk, mode, table, cid=1, seed=b"k"):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sec = InsecureDeterministicSecrets(seed)
    return PaillierClient(
        client_id=cid,
        public_key=pk,
        layout=PackingLayout.derive(key_bits=pk.key_bits, value_bits=8, max_clients=4),
        signing_key=Ed25519PrivateKey.from_private_bytes(bytes(32)),
        randomness=make_randomness(mode, pk, table=table, secrets=sec),
        session=SESSION,
        secrets=sec,
    )


def _contribution(pk, mode, table, values=None, cid=1, rnd=0, seed=b"k"):
    c = _client(pk, mode, table, cid=cid, seed=seed)
    v = np.arange(COUNT) % 100 - 50 if values is None else values
    return c.contribute(setup=RoundSetup(pk.key_id, SESSION, rnd, COUNT, MODEL), model_digest=MODEL, values=v)


def _verify(pk, table, contribs):
    fixed = (int(table.base), table.exponent_bits)
    return verify_contributions(contribs, pk, fixed_base=fixed, secrets=InsecureDeterministicSecrets(b"v"))


@pytest.mark.parametrize("mode", ["fresh", "fixed-base"])
def test_honest_proofs_verify_and_have_the_stated_size(key, table, mode):
    pk, _ = key
    c = _contribution(pk, mode, table)
    bits = table.exponent_bits if mode == "fixed-base" else None
    assert len(c.proof) == proof_bytes(pk, len(c.ciphertexts), exponent_bits=bits)
    assert _verify(pk, table, [c]) == ()


@settings(max_examples=15, deadline=None)
@given(
    values=st.lists(st.integers(-127, 127), min_size=COUNT, max_size=COUNT),
    mode=st.sampled_from(["fresh", "fixed-base"]),
)
def test_proofs_verify_for_any_values(key, table, values, mode):
    pk, _ = key
    assert _verify(pk, table, [_contribution(pk, mode, table, values=np.array(values))]) == ()


def _parts(pk, c):
    cb, nb = pk.ciphertext_bytes, (pk.key_bits + 7) // 8
    p = c.proof
    return (
        p[0],
        int.from_bytes(p[1 : 1 + cb], "big"),
        int.from_bytes(p[1 + cb : 1 + cb + nb], "big"),
        int.from_bytes(p[1 + cb + nb :], "big"),
    )


@pytest.mark.parametrize("mode", ["fresh", "fixed-base"])
def test_the_sigma_equation_holds_by_hand(key, table, mode):
    """Known answer, no batching: (1 + z n) w^n = A Π c_j^e_j, resp. (1 + z n) h^z' = A Π c_j^e_j (mod n^2)."""
    pk, sk = key
    c = _contribution(pk, mode, table)
    kind, commitment, z, second = _parts(pk, c)
    assert kind == (MODE_FRESH if mode == "fresh" else MODE_FIXED_BASE)
    es = _challenges(pk, c, commitment, kind)
    assert len(es) == len(c.ciphertexts) >= 3 and all(0 <= e < 1 << 128 for e in es) and len(set(es)) == len(es)
    n, n2 = pk.nz, pk.n2
    rhs = commitment
    for x, e in zip(c.ciphertexts, es):
        rhs = rhs * gmpy2.powmod(x, e, n2) % n2
    second_part = gmpy2.powmod(second, n, n2) if kind == MODE_FRESH else gmpy2.powmod(table.base, second, n2)
    assert (1 + z * n) * second_part % n2 == rhs
    # z is u + Σ e_j m_j: A encrypts u
    u = sk.decrypt(commitment)
    assert z == (u + sum(e * int(sk.decrypt(x)) for e, x in zip(es, c.ciphertexts))) % n


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_multi_pow_is_the_product_of_powers(key, data):
    pk, _ = key
    k = data.draw(st.integers(0, 40))
    bases = [mpz(data.draw(st.integers(1, pk.n2 - 1))) for _ in range(k)]
    exps = [data.draw(st.integers(0, (1 << 200) - 1)) for _ in range(k)]
    want = mpz(1)
    for b, e in zip(bases, exps):
        want = want * gmpy2.powmod(b, e, pk.n2) % pk.n2
    assert multi_pow(bases, exps, pk.n2) == want


def _solve_mod(rows, rhs, n):
    """Gauss–Jordan elimination modulo n (the extractor's linear algebra)."""
    m = [[*map(mpz, r), mpz(b)] for r, b in zip(rows, rhs)]
    k = len(m)
    for col in range(k):
        piv = next(r for r in range(col, k) if gmpy2.gcd(m[r][col], n) == 1)
        m[col], m[piv] = m[piv], m[col]
        inv = gmpy2.invert(m[col][col], n)
        m[col] = [x * inv % n for x in m[col]]
        for r in range(k):
            if r != col and m[r][col]:
                f = m[r][col]
                m[r] = [(x - f * y) % n for x, y in zip(m[r], m[col])]
    return [row[-1] for row in m]


def test_knowledge_extractor_recovers_every_plaintext(key, table):
    """k + 1 answers to one commitment (the prover reused its randomness) reveal all k plaintexts."""
    pk, sk = key
    n = pk.nz
    values = np.arange(COUNT) % 100 - 50
    proofs = [_contribution(pk, "fresh", table, values=values, cid=cid, seed=b"same") for cid in range(1, 5)]
    cts = proofs[0].ciphertexts
    assert all(p.ciphertexts == cts for p in proofs) and len(cts) == 3  # same pool seed: same ciphertexts
    parts = [_parts(pk, p) for p in proofs]
    assert len({cm for _, cm, _, _ in parts}) == 1  # one commitment, four client ids: four challenge vectors
    es = [_challenges(pk, p, parts[0][1], MODE_FRESH) for p in proofs]
    zs = [z for _, _, z, _ in parts]
    rows = [[(a - b) % n for a, b in zip(es[i], es[0])] for i in range(1, 4)]
    m = _solve_mod(rows, [(zs[i] - zs[0]) % n for i in range(1, 4)], n)
    assert m == [sk.decrypt(x) for x in cts]


@pytest.mark.parametrize("mode", ["fresh", "fixed-base"])
def test_tampering_is_caught_and_attributed(key, table, mode):
    pk, _ = key
    good = _contribution(pk, mode, table, cid=1)
    other = _contribution(pk, mode, table, cid=2, seed=b"other")
    cb = pk.ciphertext_bytes

    def flip(c, pos):
        p = bytearray(c.proof)
        p[pos] ^= 1
        return dataclasses.replace(c, proof=bytes(p))

    cts = good.ciphertexts
    tampered = {
        "commitment": flip(good, cb),
        "z": flip(good, 1 + cb + 3),
        "second": flip(good, len(good.proof) - 1),
        "mode": dataclasses.replace(good, proof=bytes([MODE_FIXED_BASE + MODE_FRESH - good.proof[0]]) + good.proof[1:]),
        "unknown mode": dataclasses.replace(good, proof=b"\x07" + good.proof[1:]),
        "truncated": dataclasses.replace(good, proof=good.proof[:-1]),
        "extended": dataclasses.replace(good, proof=good.proof + b"\x00"),
        "empty": dataclasses.replace(good, proof=b""),
        "client id": dataclasses.replace(good, client_id=9),
        "round": dataclasses.replace(good, round=1),
        "session": dataclasses.replace(good, session=bytes(16)),
        "model": dataclasses.replace(good, model_digest=bytes(32)),
        "key": dataclasses.replace(good, key_id=bytes(16)),
        "count": dataclasses.replace(good, count=COUNT - 1),
        "index swap": dataclasses.replace(good, ciphertexts=(cts[1], cts[0], *cts[2:])),
        "another's ciphertext": dataclasses.replace(good, ciphertexts=(other.ciphertexts[0], *cts[1:])),
        "another's proof": dataclasses.replace(good, proof=other.proof),
    }
    for what, bad in tampered.items():
        assert _verify(pk, table, [other, bad]) == (bad.client_id,), what
    assert _verify(pk, table, [other, good]) == ()


def test_fixed_base_proofs_need_the_deployment_base(key, table):
    pk, _ = key
    c = _contribution(pk, "fixed-base", table)
    assert verify_contributions([c], pk) == (1,)
    assert verify_contributions([_contribution(pk, "fresh", table)], pk) == ()


@settings(max_examples=100, deadline=None)
@given(proof=st.binary(max_size=600))
def test_random_proof_bytes_are_refused_without_crashing(key, table, proof):
    pk, _ = key
    c = dataclasses.replace(_cached(pk, table), proof=proof)
    assert _verify(pk, table, [c]) == (1,)


_CACHE: dict[int, object] = {}


def _cached(pk, table):
    if pk.n not in _CACHE:
        _CACHE[pk.n] = _contribution(pk, "fresh", table)
    return _CACHE[pk.n]


def test_an_order_two_deviation_is_judged_alike_alone_and_in_a_batch(key, table):
    """w -> n - w multiplies one side by (-1)^n = -1, an element of order 2: it cannot help a prover
    (an n-th residue, it vanishes from the extracted relations), so it is accepted -- and the same
    way alone and in a batch. Before, two such proofs passed an odd-weighted batch while each
    failed alone."""
    pk, _ = key
    cb, nb = pk.ciphertext_bytes, (pk.key_bits + 7) // 8

    def negate_w(c):
        w = int.from_bytes(c.proof[1 + cb + nb :], "big")
        return dataclasses.replace(c, proof=c.proof[: 1 + cb + nb] + (pk.n - w).to_bytes(nb, "big"))

    a = negate_w(_contribution(pk, "fresh", table, cid=1))
    b = negate_w(_contribution(pk, "fresh", table, cid=2, seed=b"other"))
    assert _verify(pk, table, [a]) == () and _verify(pk, table, [b]) == ()
    assert _verify(pk, table, [a, b]) == ()
    # any other deviation of w is still caught, alone and next to the order-2 ones
    w = int.from_bytes(a.proof[1 + cb + nb :], "big")
    off = dataclasses.replace(a, proof=a.proof[: 1 + cb + nb] + (w * 2 % pk.n).to_bytes(nb, "big"))
    assert _verify(pk, table, [off, b]) == (1,)
