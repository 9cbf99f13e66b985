"""Accountants: a shared conformance class, the reference vector, calibration."""

from __future__ import annotations

import math

import pytest

from dp.accounting import (
    ACCOUNTANTS,
    Accountant,
    PRVAccountant,
    RDPAccountant,
    Sampling,
    calibrate,
    epsilon_for,
    make_accountant,
)
from privagg.errors import ConfigurationError

Q_REF = 120 / 3383


class AccountantConformance:
    """The contract every accountant keeps. Subclasses set ``name`` and the reference epsilon."""

    name: str
    reference_epsilon: float  # Poisson q = 120/3383, z = 1.2, 100 steps, delta = 1e-5
    reference_rel_tol: float

    def make(self) -> Accountant:
        return make_accountant(self.name)

    def test_registered(self) -> None:
        assert self.name in ACCOUNTANTS
        assert self.make().name == self.name

    def test_empty_history_is_free(self) -> None:
        assert self.make().get_epsilon(1e-5) == 0.0

    def test_reference_vector(self) -> None:
        acc = self.make()
        for _ in range(100):
            acc.step(noise_multiplier=1.2, sampling=Sampling.poisson(rate=Q_REF))
        assert acc.steps == 100
        assert acc.get_epsilon(1e-5) == pytest.approx(self.reference_epsilon, rel=self.reference_rel_tol)

    def test_epsilon_grows_with_steps(self) -> None:
        s = Sampling.poisson(rate=0.05)
        eps = []
        acc = self.make()
        for _ in range(3):
            acc.step(noise_multiplier=1.0, sampling=s, count=20)
            eps.append(acc.get_epsilon(1e-5))
        assert eps[0] < eps[1] < eps[2]

    def test_epsilon_falls_with_noise_and_delta(self) -> None:
        s = Sampling.poisson(rate=0.05)
        a = epsilon_for(noise_multiplier=0.9, sampling=s, rounds=50, delta=1e-5, accountant=self.name)
        b = epsilon_for(noise_multiplier=1.5, sampling=s, rounds=50, delta=1e-5, accountant=self.name)
        c = epsilon_for(noise_multiplier=1.5, sampling=s, rounds=50, delta=1e-3, accountant=self.name)
        assert a > b > c > 0

    def test_copy_is_independent(self) -> None:
        acc = self.make()
        acc.step(noise_multiplier=1.0, sampling=Sampling.poisson(rate=0.1))
        other = acc.copy()
        other.step(noise_multiplier=1.0, sampling=Sampling.poisson(rate=0.1))
        assert acc.steps == 1 and other.steps == 2
        assert other.get_epsilon(1e-5) > acc.get_epsilon(1e-5)

    def test_count_equals_repeated_steps(self) -> None:
        a, b = self.make(), self.make()
        a.step(noise_multiplier=1.1, sampling=Sampling.poisson(rate=0.02), count=30)
        for _ in range(30):
            b.step(noise_multiplier=1.1, sampling=Sampling.poisson(rate=0.02))
        assert a.get_epsilon(1e-5) == pytest.approx(b.get_epsilon(1e-5), rel=1e-9)

    def test_calibrate_inverts_accounting(self) -> None:
        s = Sampling.poisson(rate=Q_REF)
        z = calibrate(target_epsilon=self.reference_epsilon, delta=1e-5, rounds=100, sampling=s, accountant=self.name)
        assert z == pytest.approx(1.2, rel=5e-3)
        eps = epsilon_for(noise_multiplier=z, sampling=s, rounds=100, delta=1e-5, accountant=self.name)
        assert eps <= self.reference_epsilon
        below = epsilon_for(noise_multiplier=z * 0.99, sampling=s, rounds=100, delta=1e-5, accountant=self.name)
        assert below > self.reference_epsilon

    def test_zero_noise_is_infinite(self) -> None:
        acc = self.make()
        acc.step(noise_multiplier=0.0, sampling=Sampling.poisson(rate=0.1))
        assert math.isinf(acc.get_epsilon(1e-5))

    def test_rejects_bad_arguments(self) -> None:
        acc = self.make()
        with pytest.raises(ConfigurationError):
            acc.step(noise_multiplier=-1.0, sampling=Sampling.poisson(rate=0.1))
        with pytest.raises(ConfigurationError):
            acc.step(noise_multiplier=1.0, sampling=Sampling.poisson(rate=0.1), count=0)
        acc.step(noise_multiplier=1.0, sampling=Sampling.poisson(rate=0.1))
        with pytest.raises(ConfigurationError):
            acc.get_epsilon(0.0)


class TestRDP(AccountantConformance):
    name = "rdp"
    reference_epsilon = 1.986
    reference_rel_tol = 1e-3 / 1.986  # within 1e-3 absolute

    def test_is_opacus_value(self) -> None:
        acc = RDPAccountant()
        acc.step(noise_multiplier=1.2, sampling=Sampling.poisson(rate=Q_REF), count=100)
        assert abs(acc.get_epsilon(1e-5) - 1.986) < 1e-3

    def test_fixed_size_sampling_uses_without_replacement_bound(self) -> None:
        fixed = Sampling.fixed(sample_size=120, population=3383)
        eps_fixed = epsilon_for(noise_multiplier=1.2, sampling=fixed, rounds=100, delta=1e-5)
        # replace-one neighbours: a different (larger) epsilon than the Poisson add/remove bound
        assert eps_fixed > 1.986
        # q = 1 (everyone, every round) is the plain Gaussian mechanism: still finite and monotone
        everyone = Sampling.fixed(sample_size=20, population=20)
        e1 = epsilon_for(noise_multiplier=5.0, sampling=everyone, rounds=10, delta=1e-5)
        e2 = epsilon_for(noise_multiplier=5.0, sampling=everyone, rounds=20, delta=1e-5)
        assert 0 < e1 < e2 < math.inf

    def test_refuses_mixing_neighbouring_relations(self) -> None:
        acc = RDPAccountant()
        acc.step(noise_multiplier=1.0, sampling=Sampling.poisson(rate=0.1, population=100))
        with pytest.raises(ConfigurationError, match="neighbouring"):
            acc.step(noise_multiplier=1.0, sampling=Sampling.fixed(sample_size=10, population=100))

    def test_calibrate_fixed_size(self) -> None:
        s = Sampling.fixed(sample_size=10, population=100)
        z = calibrate(target_epsilon=2.0, delta=1e-5, rounds=50, sampling=s)
        assert epsilon_for(noise_multiplier=z, sampling=s, rounds=50, delta=1e-5) <= 2.0
        assert epsilon_for(noise_multiplier=z * 0.99, sampling=s, rounds=50, delta=1e-5) > 2.0


class TestPRV(AccountantConformance):
    name = "prv"
    reference_epsilon = 1.72
    reference_rel_tol = 0.01

    def test_refuses_fixed_size_sampling(self) -> None:
        with pytest.raises(ConfigurationError, match="no valid bound"):
            PRVAccountant().step(noise_multiplier=1.0, sampling=Sampling.fixed(sample_size=10, population=100))

    def test_tighter_than_rdp(self) -> None:
        s = Sampling.poisson(rate=Q_REF)
        prv = epsilon_for(noise_multiplier=1.2, sampling=s, rounds=100, delta=1e-5, accountant="prv")
        rdp = epsilon_for(noise_multiplier=1.2, sampling=s, rounds=100, delta=1e-5, accountant="rdp")
        assert prv < rdp


def test_sampling_validation() -> None:
    with pytest.raises(ConfigurationError):
        Sampling.poisson(rate=0.0)
    with pytest.raises(ConfigurationError):
        Sampling.poisson(rate=1.5)
    with pytest.raises(ConfigurationError):
        Sampling.fixed(sample_size=11, population=10)
    with pytest.raises(ConfigurationError):
        Sampling.fixed(sample_size=1, population=0)
    s = Sampling.fixed(sample_size=5, population=20)
    assert s.rate == 0.25 and s.sensitivity_factor == 2.0 and s.expected_cohort == 5
    p = Sampling.poisson(rate=0.1, population=50)
    assert p.sensitivity_factor == 1.0 and p.expected_cohort == pytest.approx(5.0)
    with pytest.raises(ConfigurationError):
        Sampling.poisson(rate=0.1).expected_cohort
    with pytest.raises(ConfigurationError):
        make_accountant("moments")


def test_calibrate_refuses_unreachable_targets() -> None:
    s = Sampling.poisson(rate=0.5)
    with pytest.raises(ConfigurationError, match="target_epsilon"):
        calibrate(target_epsilon=1e-6, delta=1e-5, rounds=1000, sampling=s, max_noise_multiplier=8.0)
    with pytest.raises(ConfigurationError):
        calibrate(target_epsilon=-1.0, delta=1e-5, rounds=10, sampling=s)
    with pytest.raises(ConfigurationError):
        calibrate(target_epsilon=1.0, delta=1e-5, rounds=0, sampling=s)
