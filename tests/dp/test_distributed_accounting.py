"""RDP of the distributed mechanisms against direct Rényi divergences; Poisson subsampling against Opacus."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
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
    mechanism_from_dict,
    rdp_to_epsilon,
    subsampled_rdp,
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
def test_general_subsampling_bound_dominates_the_tight_gaussian_one(q: float, z: float) -> None:
    """Zhu-Wang's general bound is valid for the Gaussian, so it must sit above Opacus's tight bound."""
    ours = subsampled_rdp(GaussianCurve(z), q)
    tight = np.asarray(compute_rdp(q=q, noise_multiplier=z, steps=1, orders=[float(a) for a in INTEGER_ORDERS]))
    assert np.all(ours >= tight * (1 - 1e-9))
    assert np.all(ours <= GaussianCurve(z).rdp(np.asarray(INTEGER_ORDERS)) + 1e-12)  # never above unsampled


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
    """Epsilon of T subsampled distributed rounds is within ~35% of the tight Gaussian's (the general bound's cost)."""
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
