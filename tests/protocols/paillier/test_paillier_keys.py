"""Keys, CRT decryption and threshold decryption: known answers, homomorphism, any t of k."""

from __future__ import annotations

import hashlib
import itertools

import gmpy2
import phe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.errors import ConfigurationError, InvalidMessage, ProtocolAbort
from privagg.randomness import InsecureDeterministicSecrets
from protocols.paillier import (
    PaillierPrivateKey,
    PaillierPublicKey,
    ThresholdKeyShare,
    deal_threshold_key,
    generate_keypair,
    generate_threshold_key,
)
from protocols.paillier.primes import random_prime, random_safe_prime

# Toy key: p = 23 = 2*11+1, q = 59 = 2*29+1 (both safe primes), n = 1357.
P, Q, N = 23, 59, 1357


def test_known_answer_toy_encryption_with_fixed_r():
    # (1 + 42 n) * 5^n mod n^2, checked by hand-free independent code: python-paillier gives the same
    pk = PaillierPublicKey(N)
    c = pk.encrypt(42, r=5)
    assert c == 1064413
    assert phe.PaillierPublicKey(N).raw_encrypt(42, r_value=5) == 1064413
    assert PaillierPrivateKey(P, Q).decrypt(1064413) == 42


def test_known_answer_toy_threshold_partials():
    tk, shares = deal_threshold_key(P, Q, decryptors=3, threshold=2, secrets=InsecureDeterministicSecrets(3))
    c = tk.public_key.encrypt(42, r=5)
    partials = [int(s.partial_decrypt(c)) for s in shares]
    assert partials == [861628, 91337, 1687242]
    assert tk.delta == 6
    for a, b in itertools.combinations(range(3), 2):
        assert tk.combine({a + 1: [partials[a]], b + 1: [partials[b]]}) == [42]


def test_known_answer_deterministic_keygen():
    pk, _ = generate_keypair(256, secrets=InsecureDeterministicSecrets(1), allow_insecure=True)
    assert pk.n == 88974501482989127297995466126942948614470359280060648339551629023940645763719
    assert (
        pk.key_id
        == hashlib.sha256(
            b"\x00\x00\x00\x1eprivagg/paillier/public-key/v1\x00\x00\x00\x20" + pk.n.to_bytes(32, "big")
        ).digest()[:16]
    )


def test_matches_python_paillier_on_a_real_size_key(toy_keypair):
    pk, sk = toy_keypair
    ppk = phe.PaillierPublicKey(pk.n)
    r = 123456789123456789
    for m in (0, 1, 2**100 + 7, pk.n - 1):
        c = pk.encrypt(m, r=r)
        assert c == ppk.raw_encrypt(m, r_value=r)
        assert sk.decrypt(c) == m


@settings(max_examples=40, deadline=None)
@given(a=st.integers(min_value=0), b=st.integers(min_value=0))
def test_additively_homomorphic(toy_keypair, a, b):
    pk, sk = toy_keypair
    a %= pk.n
    b %= pk.n
    assert sk.decrypt(pk.add(pk.encrypt(a), pk.encrypt(b))) == (a + b) % pk.n


def test_key_sizes_and_bits():
    pk, _ = generate_keypair(256, allow_insecure=True)
    assert pk.key_bits == 256 and pk.plaintext_bits == 255 and pk.ciphertext_bytes == 64
    with pytest.raises(ConfigurationError, match="key_bits"):
        generate_keypair(1024)
    with pytest.raises(ConfigurationError, match="key_bits"):
        generate_threshold_key(512, decryptors=3, threshold=2)
    with pytest.raises(ConfigurationError):
        PaillierPrivateKey(23, 23)
    with pytest.raises(ConfigurationError):
        PaillierPublicKey(1000)


def test_primes_are_what_they_claim():
    s = InsecureDeterministicSecrets(b"primes")
    for bits in (16, 64, 256):
        p = random_safe_prime(bits, s)
        assert p.bit_length() == bits and gmpy2.is_prime(p) and gmpy2.is_prime((p - 1) // 2)
        q = random_prime(bits, s)
        assert q.bit_length() == bits and gmpy2.is_prime(q)


@pytest.mark.parametrize(("k", "t"), [(1, 1), (3, 1), (3, 2), (4, 4), (5, 3)])
def test_threshold_any_t_of_k_and_t_minus_1_fails(k, t):
    tk, shares = generate_threshold_key(
        256, decryptors=k, threshold=t, secrets=InsecureDeterministicSecrets(f"t{t}k{k}".encode()), allow_insecure=True
    )
    pk = tk.public_key
    msgs = [0, 1, 123456789, pk.n - 1]
    cts = [pk.encrypt(m) for m in msgs]
    parts = {s.index: [s.partial_decrypt(c) for c in cts] for s in shares}
    for subset in itertools.combinations(range(1, k + 1), t):
        assert tk.combine({i: parts[i] for i in subset}) == msgs
    if t > 1:
        for subset in itertools.combinations(range(1, k + 1), t - 1):
            with pytest.raises(ProtocolAbort, match=f"needs {t} distinct"):
                tk.combine({i: parts[i] for i in subset})


def test_wrong_partials_are_detected(toy_threshold_key):
    tk, shares = toy_threshold_key
    c = tk.public_key.encrypt(5)
    parts = {s.index: [s.partial_decrypt(c)] for s in shares[:3]}
    parts[2] = [parts[2][0] * 3 % tk.public_key.n2]
    with pytest.raises(ProtocolAbort, match="do not combine"):
        tk.combine(parts)


def test_threshold_parameters_validated():
    with pytest.raises(ConfigurationError, match="threshold"):
        generate_threshold_key(256, decryptors=2, threshold=3, allow_insecure=True)
    with pytest.raises(ConfigurationError, match="safe primes"):
        deal_threshold_key(29, 59, decryptors=3, threshold=2)  # 29 = 2*14+1 is not safe


def test_secrets_never_in_repr(toy_keypair, toy_threshold_key):
    _, sk = toy_keypair
    _, shares = toy_threshold_key
    for obj in (sk, *shares):
        text = repr(obj)
        assert "secret" in text
        for digit_run in (str(sk._p), str(sk._q)):
            assert digit_run not in text


def test_partial_decryption_proofs(toy_threshold_key):
    tk, shares = toy_threshold_key
    pk = tk.public_key
    assert tk.has_proofs and len(tk.verification_keys) == 5
    cts = [pk.encrypt(m) for m in (3, 1, 4, 1, 5, 9)]
    parts = [shares[1].partial_decrypt(c) for c in cts]
    proof = shares[1].prove_partials(cts, parts, context=b"round-0")
    assert tk.verify_partials(2, cts, parts, proof, context=b"round-0")
    # bound to the decryptor, the context, the ciphertexts and every partial
    assert not tk.verify_partials(3, cts, parts, proof, context=b"round-0")
    assert not tk.verify_partials(2, cts, parts, proof, context=b"round-1")
    assert not tk.verify_partials(2, cts[::-1], parts[::-1], proof, context=b"round-0")
    assert not tk.verify_partials(2, cts, parts, proof[:-1], context=b"round-0")
    assert not tk.verify_partials(2, cts, parts, bytes(len(proof)), context=b"round-0")
    for j in range(len(cts)):
        bad = list(parts)
        bad[j] = bad[j] * pk.encrypt(0) % pk.n2  # still a valid-looking element of Z*_{n^2}
        assert not tk.verify_partials(2, cts, bad, proof, context=b"round-0")
        # and the cheater cannot prove a wrong partial either
        assert not tk.verify_partials(2, cts, bad, shares[1].prove_partials(cts, bad, context=b"c"), context=b"c")
    # another share's partials do not pass under this index
    other = [shares[0].partial_decrypt(c) for c in cts]
    assert not tk.verify_partials(2, cts, other, shares[0].prove_partials(cts, other, context=b"x"), context=b"x")


# ------------------------------------------------------------------ key share serialisation
def _share_secret_texts(share):
    s = int(share._share)
    return [str(s), f"{s:x}", f"{s:X}", str(int(share._exp))]


def test_key_share_round_trip_decrypts_the_same(toy_threshold_key):
    tk, shares = toy_threshold_key
    pk = tk.public_key
    c = pk.encrypt(2024)
    loaded = [ThresholdKeyShare.from_bytes(sh.to_bytes(), threshold_key=tk) for sh in shares]
    for a, b in zip(shares, loaded):
        assert b.index == a.index and b.threshold_key == tk
        assert b.to_bytes() == a.to_bytes()
        assert b.partial_decrypt(c) == a.partial_decrypt(c)
    assert tk.combine({b.index: [b.partial_decrypt(c)] for b in loaded[2:]}) == [2024]
    blob = shares[0].to_bytes()
    assert blob[:4] == b"PGKS" and blob[4] == 1 and len(blob) == 4 + 4 + 16 + pk.ciphertext_bytes
    # also for keys dealt without verification keys
    bare, plain = deal_threshold_key(
        P, Q, decryptors=3, threshold=2, secrets=InsecureDeterministicSecrets(9), proofs=False
    )
    for sh in plain:
        back = ThresholdKeyShare.from_bytes(sh.to_bytes(), threshold_key=bare)
        assert back.partial_decrypt(1064413) == sh.partial_decrypt(1064413)


def test_key_share_never_in_repr_or_errors(toy_threshold_key):
    tk, shares = toy_threshold_key
    sh = shares[1]
    blob = sh.to_bytes()
    hidden = _share_secret_texts(sh)
    assert not any(h in repr(sh) or h in str(sh) for h in hidden)
    bad_inputs = [blob[:-1], blob + b"\x00", b"XXXX" + blob[4:], blob[:4] + b"\x07" + blob[5:]]
    bad_inputs.append(blob[:5] + bytes([3]) + blob[6:])  # index 3 with share 2: does not match v_3
    for bad in bad_inputs:
        with pytest.raises(InvalidMessage) as info:
            ThresholdKeyShare.from_bytes(bad, threshold_key=tk)
        text = f"{info.value} {info.value!r} {info.value.reason}"
        assert not any(h in text for h in hidden)


def test_key_share_from_bytes_refusals(toy_threshold_key, threshold_setup):
    tk, shares = toy_threshold_key
    blob = shares[0].to_bytes()
    head = 4 + 4 + 16
    cases = {
        "bytes": "not bytes",
        "bytes, got 0": b"",
        "magic": b"XXXX" + blob[4:],
        "version": blob[:4] + b"\x02" + blob[5:],
        "out of range 1..5": blob[:5] + b"\x00" + blob[6:],
        "1..5": blob[:5] + b"\x06" + blob[6:],
        "3-of-5": blob[:6] + b"\x02" + blob[7:],  # threshold byte changed
        "key id": blob[:8] + bytes(16) + blob[24:],
        "out of range": blob[:head] + b"\xff" * (len(blob) - head),
        "verification key": blob[:5] + b"\x02" + blob[6:],  # share 1 claimed as decryptor 2's
    }
    for match, bad in cases.items():
        with pytest.raises(InvalidMessage, match=match):
            ThresholdKeyShare.from_bytes(bad, threshold_key=tk)  # type: ignore[arg-type]
    for cut in range(len(blob)):
        with pytest.raises(InvalidMessage):
            ThresholdKeyShare.from_bytes(blob[:cut], threshold_key=tk)
    # a share of another key (another n): refused by length or key id, never accepted
    other_tk = threshold_setup.threshold_key
    with pytest.raises(InvalidMessage):
        ThresholdKeyShare.from_bytes(blob, threshold_key=other_tk)
    with pytest.raises(InvalidMessage, match="key id"):
        ThresholdKeyShare.from_bytes(threshold_setup.decryption_keys[0].to_bytes(), threshold_key=tk)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200), pos=st.integers(0, 10_000), byte=st.integers(0, 255))
def test_key_share_fuzz(toy_threshold_key, data, pos, byte):
    tk, shares = toy_threshold_key
    for raw in (data, shares[2].to_bytes()[:24] + data):
        with pytest.raises(InvalidMessage):
            ThresholdKeyShare.from_bytes(raw, threshold_key=tk)
    blob = bytearray(shares[2].to_bytes())
    blob[pos % len(blob)] = byte
    try:
        back = ThresholdKeyShare.from_bytes(bytes(blob), threshold_key=tk)
    except InvalidMessage:
        return
    assert back.to_bytes() == shares[2].to_bytes()  # only the unchanged share is accepted


def test_partial_proof_batch_is_the_weighted_product(toy_threshold_key):
    """The multi-exponentiation batch is the same integer as one powmod per element (proofs made by the
    old per-element code verify, and the other way round)."""
    from privagg.randomness import label, prg_bytes
    from protocols.paillier.keys import _batch, _fixed

    tk, shares = toy_threshold_key
    pk = tk.public_key
    cts = [pk.encrypt(m, secrets=InsecureDeterministicSecrets(bytes([m]))) for m in range(1, 12)]
    parts = [shares[1].partial_decrypt(c) for c in cts]
    h = hashlib.sha256(label("privagg/paillier/batch/v1", b"ctx", 2))
    for c in [*cts, *parts]:
        h.update(_fixed(c, tk))
    w = prg_bytes(h.digest(), info=b"privagg/paillier/batch-weights/v1", nbytes=16 * len(cts))
    rho = [int.from_bytes(w[16 * j : 16 * j + 16], "big") for j in range(len(cts))]
    want_c, want_ci = gmpy2.mpz(1), gmpy2.mpz(1)
    for c, ci, r in zip(cts, parts, rho):
        want_c = want_c * gmpy2.powmod(c, r, pk.n2) % pk.n2
        want_ci = want_ci * gmpy2.powmod(ci, r, pk.n2) % pk.n2
    assert _batch(tk, 2, cts, parts, b"ctx") == (want_c, want_ci)
