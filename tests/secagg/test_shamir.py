import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privagg.errors import VerificationError
from privagg.randomness import InsecureDeterministicSecrets
from secagg.shamir import PRIME, lagrange_at_zero, reconstruct, reconstruct_bytes, share, share_bytes


def test_lagrange_small_case():
    # f(x) = 5 + 2x over points 1, 2: f(1)=7, f(2)=9
    assert reconstruct(np.array([[7], [9]], dtype=np.uint64), xs=np.array([1, 2], dtype=np.uint64)).tolist() == [5]
    assert lagrange_at_zero(np.array([1, 2], dtype=np.uint64)).tolist() == [2, PRIME - 1]


def test_known_answer():
    src = InsecureDeterministicSecrets(b"shamir-kat")
    secret = bytes(range(32))
    sh = share_bytes([secret], xs=np.arange(1, 6, dtype=np.uint64), threshold=3, source=src)
    # regenerate the coefficients from the same public test stream and evaluate by hand
    src2 = InsecureDeterministicSecrets(b"shamir-kat")
    coeffs = np.frombuffer(src2.token_bytes(4 * 2 * 16), dtype="<u4").astype(np.int64) & 0x7FFFFFFF
    coeffs = coeffs.reshape(2, 1, 16)
    limbs = np.frombuffer(secret, dtype="<u2").astype(np.int64)
    for i, x in enumerate(range(1, 6)):
        want = [(int(limbs[j]) + int(coeffs[0, 0, j]) * x + int(coeffs[1, 0, j]) * x * x) % PRIME for j in range(16)]
        assert sh[i, 0].tolist() == want
    assert (
        hashlib.sha256(sh.astype("<u4").tobytes()).hexdigest()[:16]
        == hashlib.sha256(np.array(sh, dtype="<u4").tobytes()).hexdigest()[:16]
    )


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 12),
    data=st.data(),
    seed=st.binary(min_size=1, max_size=8),
)
def test_any_t_shares_reconstruct(n, data, seed):
    t = data.draw(st.integers(1, n))
    src = InsecureDeterministicSecrets(seed)
    xs = np.array(sorted(data.draw(st.sets(st.integers(1, PRIME - 1), min_size=n, max_size=n))), dtype=np.uint64)
    secrets = [src.token_bytes(32), src.token_bytes(32)]
    sh = share_bytes(secrets, xs=xs, threshold=t, source=src)
    pick = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=t, max_size=t)))
    assert reconstruct_bytes(sh[pick], xs=xs[pick]) == secrets


def test_fewer_than_t_reveal_nothing():
    """t-1 shares are uniform whatever the secret: chi-square on share values of two secrets.

    t=2, one share per trial; the share value x*a + s is uniform in GF(p) for uniform a.
    Bucketed into 16 bins, 4000 trials each; chi-square (15 dof) below 37.7 (p=0.001).
    """
    src = InsecureDeterministicSecrets(b"secrecy")
    for secret in (0, 12345):
        s = np.full((4000,), secret, dtype=np.uint64)
        sh = share(s, xs=np.array([7, 8], dtype=np.uint64), threshold=2, source=src)[0]
        counts = np.bincount((sh * 16 // PRIME).astype(np.int64), minlength=16)
        chi2 = float(((counts - 250.0) ** 2 / 250.0).sum())
        assert chi2 < 37.7


def test_corrupted_limbs_detected():
    src = InsecureDeterministicSecrets(1)
    xs = np.arange(1, 6, dtype=np.uint64)
    sh = share_bytes([bytes(32)], xs=xs, threshold=3, source=src)
    bad = sh.copy()
    bad[0, 0, 0] = (bad[0, 0, 0] + (1 << 20)) % PRIME  # lands outside 16 bits (a random offset does w.p. 1-2^-15)
    with pytest.raises(VerificationError):
        reconstruct_bytes(bad[:3], xs=xs[:3])


def test_bad_points_rejected():
    src = InsecureDeterministicSecrets(1)
    with pytest.raises(ValueError):
        share(np.zeros(2, dtype=np.uint64), xs=np.array([1, 1], dtype=np.uint64), threshold=1, source=src)
    with pytest.raises(ValueError):
        share(np.zeros(2, dtype=np.uint64), xs=np.array([0, 1], dtype=np.uint64), threshold=1, source=src)
