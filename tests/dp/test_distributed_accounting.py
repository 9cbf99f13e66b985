"""RDP of the distributed mechanisms against direct Rényi divergences; Poisson subsampling against Opacus."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants.analysis.rdp import compute_rdp
from scipy import special, stats

from dp.accounting import RDPAccountant, Sampling, make_accountant
from dp.distributed import mechanism_epsilon
from dp.distributed_accounting import (
    INTEGER_ORDERS,
    DistributedDGaussRDP,
    RDPMechanism,
    SkellamRDP,
    dgauss_tau,
    general_subsampled_rdp,
    mechanism_from_dict,
    rdp_to_epsilon,
    subsampled_rdp,
    subsampled_rdp_add,
    subsampled_rdp_remove,
)
from dp.ledger import PrivacyBudget, PrivacyLedger
from privagg.errors import ConfigurationError, PrivacyBudgetExceeded

GRID = np.arange(-60, 61)


def renyi(logp: np.ndarray, logq: np.ndarray, alpha: float) -> float:
    """``D_alpha(P || Q)`` from log-pmfs on the same grid (nats); cells outside either support are left
    out (their mass is below e^-200 on this grid)."""
    ok = np.isfinite(logp) & np.isfinite(logq)
    return float(special.logsumexp(alpha * logp[ok] + (1 - alpha) * logq[ok]) / (alpha - 1))


def log_dgauss(sigma: float) -> np.ndarray:
    w = -(GRID.astype(np.float64) ** 2) / (2 * sigma**2)
    return w - special.logsumexp(w)


def log_sum_of_dgauss(sigma: float, shares: int) -> np.ndarray:
    """log-pmf on GRID of the sum of ``shares`` independent N_Z(0, sigma^2) (exact log-domain convolution)."""
    one = log_dgauss(sigma)
    out = one
    n = GRID.size
    for _ in range(shares - 1):
        nxt = np.full(n, -np.inf)
        for i in range(n):  # value GRID[i] = sum of GRID[j] + GRID[i - j + 60]
            j = np.arange(n)
            k = i - j + 60
            ok = (k >= 0) & (k < n)
            nxt[i] = special.logsumexp(out[j[ok]] + one[k[ok]])
        out = nxt - special.logsumexp(nxt)
    return out


def shifted(logp: np.ndarray, k: int) -> np.ndarray:
    out = np.full_like(logp, -np.inf)
    if k >= 0:
        out[k:] = logp[: logp.size - k]
    else:
        out[:k] = logp[-k:]
    return out


@pytest.mark.parametrize("sigma,shares", [(0.6, 2), (0.8, 3), (1.0, 2), (2.0, 4)])
@pytest.mark.parametrize("alpha", [2, 3, 5, 8])
@pytest.mark.parametrize("delta", [1, 2])
def test_kls_bound_holds_against_the_direct_divergence(sigma: float, shares: int, alpha: int, delta: int) -> None:
    """KLS21 Theorem 1 (one coordinate): D_alpha(Z + delta || Z) <= the bound, both directions."""
    z = log_sum_of_dgauss(sigma, shares)
    bound = float(
        DistributedDGaussRDP(l2_sensitivity=delta, sigma=sigma, shares=shares, dim=1).rdp(np.array([alpha]))[0]
    )
    for direct in (renyi(shifted(z, delta), z, alpha), renyi(z, shifted(z, delta), alpha)):
        assert direct <= bound + 1e-12


def test_tau_term_is_needed_for_small_sigma() -> None:
    """The sum of discrete Gaussians is not a discrete Gaussian: without tau the Gaussian formula fails here."""
    sigma, shares, alpha = 0.5, 2, 8
    z = log_sum_of_dgauss(sigma, shares)
    direct = renyi(shifted(z, 1), z, alpha)
    gaussian_formula = alpha / (2 * shares * sigma**2)
    assert direct > gaussian_formula  # the naive continuous-style bound is wrong here
    mech = DistributedDGaussRDP(l2_sensitivity=1, sigma=sigma, shares=shares, dim=1)
    assert direct <= float(mech.rdp(np.array([alpha]))[0])


def test_large_sigma_approaches_the_gaussian() -> None:
    mech = DistributedDGaussRDP(l2_sensitivity=30.0, sigma=10.0, shares=100, dim=1024)
    orders = np.array([2.0, 8.0, 32.0])
    gaussian = orders * 30.0**2 / (2 * 100 * 10.0**2)
    assert dgauss_tau(10.0, 100) < 1e-300 or mech.tau * 1024 < 1e-12
    np.testing.assert_allclose(mech.rdp(orders), gaussian, rtol=1e-9)


def test_tau_matches_its_definition() -> None:
    sigma, n = 0.7, 5
    expected = 10 * sum(math.exp(-2 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, n))
    assert dgauss_tau(sigma, n) == pytest.approx(expected, rel=1e-12)
    assert dgauss_tau(sigma, 1) == 0.0


@pytest.mark.parametrize("mu", [1.0, 5.0, 50.0])
@pytest.mark.parametrize("alpha", [2, 4, 8])
@pytest.mark.parametrize("delta", [1, 3])
def test_skellam_bound_holds_against_the_direct_divergence(mu: float, alpha: int, delta: int) -> None:
    """AKL21 Corollary 4.1 (one coordinate, l1 = l2 = delta) against the exact Skellam pmf."""
    p = stats.skellam.logpmf(GRID, mu / 2, mu / 2)
    bound = float(SkellamRDP(l2_sensitivity=delta, l1_sensitivity=delta, mu=mu).rdp(np.array([alpha]))[0])
    for direct in (renyi(shifted(p, delta), p, alpha), renyi(p, shifted(p, delta), alpha)):
        assert direct <= bound + 1e-12


@dataclass(frozen=True)
class GaussianCurve(RDPMechanism):
    """Test-only: the Gaussian mechanism's RDP curve alpha / (2 z^2)."""

    kind: ClassVar[str] = "gaussian-test"
    z: float

    def rdp(self, orders: np.ndarray) -> np.ndarray:
        return np.asarray(orders, dtype=np.float64) / (2 * self.z**2)

    @property
    def central_std(self) -> float:
        return self.z

    @property
    def l2(self) -> float:
        return 1.0


@pytest.mark.parametrize("q", [0.01, 0.05, 0.2, 0.6])
@pytest.mark.parametrize("z", [0.8, 1.5, 4.0])
def test_subsampling_bound_sits_between_the_tight_gaussian_and_the_general_one(q: float, z: float) -> None:
    """For the Gaussian curve, Opacus's integer-order value is the true subsampled RDP (Mironov-Talwar-Zhang):
    a valid bound is never below it, and ours is never above Zhu-Wang's general bound nor the unsampled curve."""
    ours = subsampled_rdp(GaussianCurve(z), q)
    tight = np.asarray(compute_rdp(q=q, noise_multiplier=z, steps=1, orders=[float(a) for a in INTEGER_ORDERS]))
    assert np.all(ours >= tight * (1 - 1e-9))
    assert np.all(ours <= general_subsampled_rdp(GaussianCurve(z), q) * (1 + 1e-12))
    assert np.all(ours <= GaussianCurve(z).rdp(np.asarray(INTEGER_ORDERS)) + 1e-12)  # never above unsampled
    # the add direction is the exact binomial expansion: for the Gaussian it is the tight value itself
    np.testing.assert_allclose(subsampled_rdp_add(GaussianCurve(z), q), tight, rtol=1e-7)


@pytest.mark.parametrize("q", [0.02, 0.05, 0.3])
@pytest.mark.parametrize("z", [0.7, 1.2, 3.0])
def test_integer_mechanisms_never_read_below_the_tight_gaussian_of_their_variance(q: float, z: float) -> None:
    """Both curves are the Gaussian's alpha l2^2 / (2 var) plus non-negative terms, and the add direction
    grows with the curve: per order, the bound is never below the tight subsampled Gaussian of the same
    variance and sensitivity (Opacus's integer-order value)."""
    l2 = 200.0
    tight = np.asarray(compute_rdp(q=q, noise_multiplier=z, steps=1, orders=[float(a) for a in INTEGER_ORDERS]))
    shares = 50
    dg = DistributedDGaussRDP(l2_sensitivity=l2, sigma=z * l2 / math.sqrt(shares), shares=shares, dim=4096)
    sk = SkellamRDP(l2_sensitivity=l2, l1_sensitivity=l2 * 64.0, mu=(z * l2) ** 2)
    for mech in (dg, sk):
        assert mech.central_std == pytest.approx(z * l2)
        assert np.all(subsampled_rdp(mech, q) >= tight * (1 - 1e-9))


def test_known_answer_vector() -> None:
    """Gaussian curve eps(l) = l/2 (z = 1), q = 0.1, computed by hand in 30-digit arithmetic (mpmath)."""
    m, orders = GaussianCurve(1.0), (2, 3)
    np.testing.assert_allclose(subsampled_rdp_add(m, 0.1, orders), [0.0170368632361765, 0.0317123003033764], rtol=1e-12)
    # remove at alpha = 2: Zhu-Wang's bound has no l >= 3 term and equals the exact value; at 3 the second-order one
    np.testing.assert_allclose(
        subsampled_rdp_remove(m, 0.1, orders), [0.0170368632361765, 0.0265534319187661], rtol=1e-12
    )
    np.testing.assert_allclose(
        general_subsampled_rdp(m, 0.1, orders), [0.0170368632361765, 0.0502167982120011], rtol=1e-12
    )
    np.testing.assert_allclose(subsampled_rdp(m, 0.1, orders), [0.0170368632361765, 0.0317123003033764], rtol=1e-12)


@dataclass(frozen=True)
class ExactCurve(RDPMechanism):
    """Test-only: the exact RDP of the pair (add/remove: the larger of ``D_l(Q || P)`` and ``D_l(P || Q)``) as a
    mechanism's curve (orders 0, 1 unused: 0)."""

    kind: ClassVar[str] = "exact-test"
    logp: tuple[float, ...]
    logq: tuple[float, ...]

    def rdp(self, orders: np.ndarray) -> np.ndarray:
        p, q = np.asarray(self.logp), np.asarray(self.logq)
        out = [max(renyi(q, p, float(a)), renyi(p, q, float(a))) if a >= 2 else 0.0 for a in np.asarray(orders)]
        return np.asarray(out, dtype=np.float64)

    @property
    def central_std(self) -> float:
        return 1.0

    @property
    def l2(self) -> float:
        return 1.0


pmf = st.lists(st.floats(min_value=1e-3, max_value=1.0), min_size=2, max_size=6)


@settings(max_examples=150, deadline=None)
@given(pmf, pmf, st.floats(min_value=1e-3, max_value=0.9), st.integers(min_value=2, max_value=12))
def test_both_directions_bound_the_exact_subsampled_divergence(
    p_raw: list[float], q_raw: list[float], rate: float, alpha: int
) -> None:
    """Any pair of full-support pmfs (P without the client, Q with it): the add bound is at least the exact
    D(mix || P) (equal when D_l(Q || P) is the larger direction), the remove bound at least the exact
    D(P || mix) (Zhu-Wang's theorem and the derivation in the module docstring)."""
    n = min(len(p_raw), len(q_raw))
    logp = np.log(np.asarray(p_raw[:n]) / sum(p_raw[:n]))
    logq = np.log(np.asarray(q_raw[:n]) / sum(q_raw[:n]))
    mech = ExactCurve(tuple(logp), tuple(logq))
    logmix = np.logaddexp(math.log1p(-rate) + logp, math.log(rate) + logq)
    add = renyi(logmix, logp, alpha)
    remove = renyi(logp, logmix, alpha)
    assert add <= float(subsampled_rdp_add(mech, rate, (alpha,))[0]) + 1e-12
    exact = ExactCurve(tuple(logp), tuple(logq))
    if all(renyi(logq, logp, a) >= renyi(logp, logq, a) for a in range(2, alpha + 1)):  # the curve is D_l(Q||P)
        assert float(subsampled_rdp_add(exact, rate, (alpha,))[0]) == pytest.approx(add, rel=1e-7, abs=1e-12)
    assert remove <= float(subsampled_rdp_remove(mech, rate, (alpha,))[0]) + 1e-12
    both = max(
        float(subsampled_rdp_add(mech, rate, (alpha,))[0]), float(subsampled_rdp_remove(mech, rate, (alpha,))[0])
    )
    assert float(subsampled_rdp(mech, rate, (alpha,))[0]) == pytest.approx(
        both, rel=1e-12
    )  # the shortcut changes nothing
    assert max(add, remove) <= both + 1e-12


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["dgauss", "dgauss-sum", "skellam"]),
    st.floats(min_value=0.6, max_value=5.0),
    st.integers(min_value=1, max_value=3),
    st.floats(min_value=1e-3, max_value=0.9),
    st.integers(min_value=2, max_value=32),
)
def test_subsampled_bound_holds_against_exact_one_dimensional_mechanisms(
    kind: str, sigma: float, delta: int, rate: float, alpha: int
) -> None:
    """The whole chain (the published curve, then subsampling) against the exact subsampled divergences of
    the real noise, by direct summation over the support: P = Z (the client absent), Q = Z + delta (present),
    both D(mix || P) and D(P || mix); Z a discrete Gaussian, a sum of 3 of them, or Skellam of variance sigma^2."""
    if kind == "skellam":
        z = stats.skellam.logpmf(GRID, sigma**2 / 2, sigma**2 / 2)
        mech: RDPMechanism = SkellamRDP(l2_sensitivity=delta, l1_sensitivity=delta, mu=sigma**2)
    else:
        shares = 3 if kind == "dgauss-sum" else 1
        z = log_sum_of_dgauss(sigma, shares) if shares > 1 else log_dgauss(sigma)
        mech = DistributedDGaussRDP(l2_sensitivity=delta, sigma=sigma, shares=shares, dim=1)
    q = shifted(z, delta)
    # only where both pmfs are known (the shift vacates delta cells at the grid's edge, mass < e^-25)
    mix = np.where(np.isfinite(q), np.logaddexp(math.log1p(-rate) + z, math.log(rate) + q), -np.inf)
    bound = float(subsampled_rdp(mech, rate, (alpha,))[0])
    assert renyi(mix, z, alpha) <= bound * (1 + 1e-9) + 1e-12  # adding the client
    assert renyi(z, mix, alpha) <= bound * (1 + 1e-9) + 1e-12  # removing it
    assert renyi(z, mix, alpha) <= float(subsampled_rdp_remove(mech, rate, (alpha,))[0]) * (1 + 1e-9) + 1e-12


def test_benchmark_regime_is_within_one_percent_of_the_tight_gaussian() -> None:
    """q = 0.05, 40 rounds, delta 1e-5, z = 1.5: the general bound alone reads 1.37x the tight epsilon."""
    from dp.accounting import epsilon_for

    m = GaussianCurve(1.5)
    tight = epsilon_for(noise_multiplier=1.5, sampling=Sampling.poisson(rate=0.05), rounds=40, delta=1e-5)
    ours = rdp_to_epsilon(INTEGER_ORDERS, 40 * subsampled_rdp(m, 0.05), 1e-5)
    general = rdp_to_epsilon(INTEGER_ORDERS, 40 * general_subsampled_rdp(m, 0.05), 1e-5)
    assert ours == pytest.approx(tight, rel=0.01)
    assert general > 1.3 * tight


def test_rdp_to_epsilon_matches_opacus() -> None:
    from opacus.accountants.analysis.rdp import get_privacy_spent

    rdp = 40 * subsampled_rdp(GaussianCurve(1.1), 0.05)
    orders = [float(a) for a in INTEGER_ORDERS]
    for delta in (1e-5, 1e-8):
        assert rdp_to_epsilon(INTEGER_ORDERS, rdp, delta) == pytest.approx(
            get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0], rel=1e-12
        )


def test_subsampling_at_rate_one_is_the_curve() -> None:
    m = SkellamRDP(l2_sensitivity=3.0, l1_sensitivity=5.0, mu=40.0)
    np.testing.assert_allclose(subsampled_rdp(m, 1.0), m.rdp(np.asarray(INTEGER_ORDERS, dtype=float)))


def test_distributed_rdp_and_gaussian_agree_for_large_noise() -> None:
    """Epsilon of T subsampled distributed rounds is within 35% of the tight Gaussian's (tau and the remove bound)."""
    from dp.accounting import epsilon_for

    z, q, t = 1.3, 0.2, 60
    l2 = 1000.0
    mech = DistributedDGaussRDP(l2_sensitivity=l2, sigma=z * l2 / math.sqrt(100), shares=100, dim=1024)
    ours = mechanism_epsilon(mech, sampling_rate=q, rounds=t, delta=1e-5)
    gauss = epsilon_for(noise_multiplier=z, sampling=Sampling.poisson(rate=q), rounds=t, delta=1e-5)
    assert gauss <= ours <= 1.35 * gauss


def test_rdp_accountant_composes_mechanisms_and_prv_refuses() -> None:
    mech = SkellamRDP(l2_sensitivity=50.0, l1_sensitivity=1000.0, mu=80.0**2)
    s = Sampling.poisson(rate=0.1, population=1000)
    acc = RDPAccountant()
    acc.step(noise_multiplier=mech.noise_multiplier, sampling=s, count=20, mechanism=mech)
    assert acc.get_epsilon(1e-5) == pytest.approx(mechanism_epsilon(mech, sampling_rate=0.1, rounds=20, delta=1e-5))
    with pytest.raises(ConfigurationError):
        make_accountant("prv").step(noise_multiplier=1.0, sampling=s, mechanism=mech)
    with pytest.raises(ConfigurationError):  # fixed-size sampling: no general bound here
        acc.step(noise_multiplier=1.0, sampling=Sampling.fixed(sample_size=10, population=100), mechanism=mech)


def test_ledger_records_checks_and_resumes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The privacy ledger composes RDP-curve rounds (PRV reads nan), enforces the budget and resumes."""
    mech = DistributedDGaussRDP(l2_sensitivity=50.0, sigma=8.0, shares=100, dim=1024)
    s = Sampling.poisson(rate=0.1, population=1000)
    ledger = PrivacyLedger(delta=1e-5, budget=PrivacyBudget(epsilon=2.0, delta=1e-5))
    z = mech.noise_multiplier
    for r in range(3):
        ledger.check(noise_multiplier=z, sampling=s, mechanism=mech)
        entry = ledger.record(round=r, noise_multiplier=z, sampling=s, mechanism=mech, note="x")
    assert math.isnan(entry.epsilon["prv"]) and math.isfinite(entry.epsilon["rdp"])
    assert entry.epsilon["rdp"] == pytest.approx(mechanism_epsilon(mech, sampling_rate=0.1, rounds=3, delta=1e-5))
    path = tmp_path / "ledger.json"
    ledger.save(path)
    again = PrivacyLedger(delta=1e-5)
    again.load(path)
    assert again.epsilon("rdp") == pytest.approx(ledger.epsilon("rdp"))
    assert mechanism_from_dict(mech.to_dict()) == mech
    big = DistributedDGaussRDP(l2_sensitivity=50.0, sigma=0.6, shares=100, dim=1024)
    with pytest.raises(PrivacyBudgetExceeded):
        ledger.check(noise_multiplier=big.noise_multiplier, sampling=s, mechanism=big)
    ledger.record(round=9, noise_multiplier=0.0, sampling=s)  # a release without guarantee
    assert ledger.epsilon("rdp") == math.inf
