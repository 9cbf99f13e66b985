"""Privacy accounting of subsampled Gaussian rounds, on Opacus (and dp-accounting) accountants.

One DP-FedAvg round is one *subsampled Gaussian* step: a cohort of clients is sampled, each
contributes a clipped update, Gaussian noise with standard deviation ``noise_multiplier *
sensitivity`` is added to the sum. The sampling scheme must be stated, because the bound
depends on it:

* :meth:`Sampling.poisson` — each client joins independently with probability ``q``.
  Neighbouring populations differ by *adding or removing* one client; the sum's sensitivity
  is ``clip * max_weight``. Accounted by Opacus's ``RDPAccountant`` (Mironov et al. 2019) and
  ``PRVAccountant`` (Gopi et al. 2021).
* :meth:`Sampling.fixed` — exactly ``m`` of ``N`` clients, uniformly without replacement.
  The bound valid for it (Wang, Balle, Kasiviswanathan 2019, via dp-accounting's
  ``SampledWithoutReplacementDpEvent``) is for *replace-one* neighbours, for which the sum's
  sensitivity is ``2 * clip * max_weight``. RDP only; the PRV accountant refuses it.

Accountants register by name in :data:`ACCOUNTANTS` (``"rdp"``, ``"prv"``).

A round need not be Gaussian: ``step(..., mechanism=m)`` composes a mechanism known by its own
Rényi curve (:class:`dp.distributed_accounting.RDPMechanism`: the distributed discrete Gaussian,
Skellam), Poisson-subsampled in both directions (:func:`dp.distributed_accounting.subsampled_rdp`: the
exact binomial expansion for adding the client, a second-order bound or Zhu and Wang's general
bound for removing it; Poisson sampling only). The RDP
accountant then sums every round's curve at integer orders (Gaussian rounds through Opacus's
``compute_rdp``) and converts once; the PRV accountant refuses such rounds (no bound for them).
"""

from __future__ import annotations

import abc
import copy
import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from dp.distributed_accounting import INTEGER_ORDERS, RDPMechanism, rdp_to_epsilon, subsampled_rdp
from privagg.errors import ConfigurationError
from privagg.registry import Registry

__all__ = [
    "Sampling",
    "Accountant",
    "RDPAccountant",
    "PRVAccountant",
    "ACCOUNTANTS",
    "make_accountant",
    "epsilon_for",
    "calibrate",
]


@dataclass(frozen=True)
class Sampling:
    """How a round's cohort is drawn. Build with :meth:`poisson` or :meth:`fixed`."""

    kind: Literal["poisson", "fixed"]
    rate: float
    population: int | None = None
    sample_size: int | None = None

    def __post_init__(self) -> None:
        if not (0 < self.rate <= 1):
            raise ConfigurationError(f"sampling rate must be in (0, 1], got {self.rate}", field="sampling_rate")
        if self.kind == "fixed":
            if self.population is None or self.sample_size is None:
                raise ConfigurationError("fixed-size sampling needs population and sample_size", field="sampling")
            if not 1 <= self.sample_size <= self.population:
                raise ConfigurationError(
                    f"sample_size {self.sample_size} must be in 1..population ({self.population})", field="sampling"
                )
        if self.population is not None and self.population < 1:
            raise ConfigurationError(f"population must be >= 1, got {self.population}", field="population")

    @classmethod
    def poisson(cls, *, rate: float, population: int | None = None) -> Sampling:
        """Each client independently with probability ``rate`` (add/remove neighbours)."""
        return cls(kind="poisson", rate=float(rate), population=population)

    @classmethod
    def fixed(cls, *, sample_size: int, population: int) -> Sampling:
        """``sample_size`` of ``population`` uniformly without replacement (replace-one neighbours)."""
        if population < 1:
            raise ConfigurationError(f"population must be >= 1, got {population}", field="population")
        return cls(kind="fixed", rate=sample_size / population, population=population, sample_size=sample_size)

    @property
    def neighbouring(self) -> str:
        return "add/remove one client" if self.kind == "poisson" else "replace one client"

    @property
    def sensitivity_factor(self) -> float:
        """Sensitivity of a sum of vectors of norm <= 1 under this scheme's neighbouring relation."""
        return 1.0 if self.kind == "poisson" else 2.0

    @property
    def expected_cohort(self) -> float:
        if self.kind == "fixed":
            assert self.sample_size is not None
            return float(self.sample_size)
        if self.population is None:
            raise ConfigurationError("the population size is needed for the expected cohort", field="population")
        return self.rate * self.population

    def describe(self) -> str:
        if self.kind == "poisson":
            return f"Poisson sampling, q = {self.rate:.6g} ({self.neighbouring})"
        return f"fixed-size sampling, {self.sample_size} of {self.population} without replacement ({self.neighbouring})"


# Orders beyond Opacus's defaults (which stop at 63): only ever lower the RDP bound.
_EXTRA_ALPHAS = (80.0, 96.0, 128.0, 192.0, 256.0, 512.0, 1024.0)


class Accountant(abc.ABC):
    """Composes subsampled-Gaussian steps; ``get_epsilon(delta)`` bounds the whole history.

    Subclasses state which sampling schemes they support (:meth:`supports`); an unsupported
    scheme raises :class:`ConfigurationError` at :meth:`step` time, never a silent bound.
    """

    name: ClassVar[str] = "accountant"
    #: costly to evaluate: a ledger computes this accountant's epsilon only when asked (:class:`dp.ledger.Epsilons`)
    lazy: ClassVar[bool] = False

    def __init__(self) -> None:
        self.history: list[tuple[float, Sampling, int]] = []
        #: the non-Gaussian mechanism of each history entry (``None``: Gaussian of ``noise_multiplier``)
        self.mechanisms: list[RDPMechanism | None] = []

    @abc.abstractmethod
    def supports(self, sampling: Sampling) -> bool: ...

    def supports_mechanism(self, mechanism: RDPMechanism | None, sampling: Sampling) -> bool:
        """Whether a round of ``mechanism`` (``None``: Gaussian) under ``sampling`` has a bound here."""
        return mechanism is None

    @abc.abstractmethod
    def _epsilon(self, delta: float) -> float: ...

    def step(
        self, *, noise_multiplier: float, sampling: Sampling, count: int = 1, mechanism: RDPMechanism | None = None
    ) -> None:
        """Compose ``count`` rounds: Gaussian of ``noise_multiplier``, or ``mechanism`` (its own RDP curve;
        ``noise_multiplier`` is then its Gaussian-equivalent, for display)."""
        if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
            raise ConfigurationError(f"must be finite and >= 0, got {noise_multiplier}", field="noise_multiplier")
        if count < 1:
            raise ConfigurationError(f"must be >= 1, got {count}", field="count")
        if not self.supports(sampling):
            raise ConfigurationError(
                f"the {self.name} accountant has no valid bound for {sampling.describe()}",
                field="accountant",
                accepted=[n for n in ACCOUNTANTS if ACCOUNTANTS.get(n)().supports(sampling)],
            )
        if not self.supports_mechanism(mechanism, sampling):
            raise ConfigurationError(
                f"the {self.name} accountant has no valid bound for a {getattr(mechanism, 'kind', '?')} round "
                f"under {sampling.describe()}",
                field="accountant",
                accepted=["rdp (Poisson sampling)"],
            )
        if self.history:
            kinds = {s.kind for _, s, _ in self.history}
            if sampling.kind not in kinds:
                raise ConfigurationError(
                    "cannot compose rounds under different neighbouring relations (Poisson and fixed-size sampling)",
                    field="sampling",
                )
        last = self.history[-1] if self.history else None
        same = last is not None and self.mechanisms[-1] == mechanism
        if last is not None and same and last[0] == noise_multiplier and last[1] == sampling:
            self.history[-1] = (last[0], last[1], last[2] + count)
        else:
            self.history.append((float(noise_multiplier), sampling, count))
            self.mechanisms.append(mechanism)

    def get_epsilon(self, delta: float) -> float:
        if not 0 < delta < 1:
            raise ConfigurationError(f"must be in (0, 1), got {delta}", field="delta")
        if not self.history:
            return 0.0
        if any(z == 0 for z, _, _ in self.history):
            return math.inf
        return float(self._epsilon(delta))

    @property
    def steps(self) -> int:
        return sum(c for _, _, c in self.history)

    def copy(self) -> Accountant:
        other = copy.copy(self)
        other.history = list(self.history)
        other.mechanisms = list(self.mechanisms)
        return other

    def __len__(self) -> int:
        return self.steps


ACCOUNTANTS: Registry[Callable[[], Accountant]] = Registry("accountant")


@functools.lru_cache(maxsize=1024)
def _poisson_gaussian_rdp(noise_multiplier: float, rate: float, alphas: tuple[float, ...]) -> np.ndarray:
    """Opacus's one-step RDP of the Poisson-subsampled Gaussian at ``alphas`` (memoised: the ledger asks every
    round; composition is ``count *`` this, Opacus's own formula). Read-only: callers must not modify it."""
    from opacus.accountants.analysis.rdp import compute_rdp

    out = np.asarray(compute_rdp(q=rate, noise_multiplier=noise_multiplier, steps=1, orders=list(alphas)), dtype=float)
    out.setflags(write=False)
    return out


@ACCOUNTANTS.register("rdp")
class RDPAccountant(Accountant):
    """Rényi DP: Opacus's ``RDPAccountant`` for Poisson sampling; dp-accounting's
    ``RdpAccountant`` with ``SampledWithoutReplacementDpEvent`` (replace-one) for fixed-size."""

    name = "rdp"

    def supports(self, sampling: Sampling) -> bool:
        return True

    def supports_mechanism(self, mechanism: RDPMechanism | None, sampling: Sampling) -> bool:
        return mechanism is None or sampling.kind == "poisson"

    def _epsilon(self, delta: float) -> float:
        kind = self.history[0][1].kind
        if any(m is not None for m in self.mechanisms):
            return self._epsilon_curves(delta)
        if kind == "poisson":
            from opacus.accountants.analysis.rdp import get_privacy_spent
            from opacus.accountants.rdp import RDPAccountant as _R

            alphas = (*_R.DEFAULT_ALPHAS, *_EXTRA_ALPHAS)
            total = sum(c * _poisson_gaussian_rdp(z, s.rate, alphas) for z, s, c in self.history)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Optimal order is the")  # still a valid bound
                eps, _ = get_privacy_spent(orders=list(alphas), rdp=total, delta=delta)
            return float(eps)
        import dp_accounting
        from dp_accounting.rdp import RdpAccountant

        rdp = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
        for z, s, c in self.history:
            assert s.population is not None and s.sample_size is not None
            event = dp_accounting.SampledWithoutReplacementDpEvent(
                s.population, s.sample_size, dp_accounting.GaussianDpEvent(z)
            )
            rdp.compose(event, c)
        return float(rdp.get_epsilon(delta))

    def _epsilon_curves(self, delta: float) -> float:
        """Poisson rounds of any mechanism: sum the RDP curves at integer orders, convert once."""
        orders = [float(a) for a in INTEGER_ORDERS]
        total = np.zeros(len(orders), dtype=np.float64)
        for (z, s, c), mech in zip(self.history, self.mechanisms, strict=True):
            if mech is None:
                from opacus.accountants.analysis.rdp import compute_rdp  # Gaussian rounds in a mixed history

                total += np.asarray(compute_rdp(q=s.rate, noise_multiplier=z, steps=c, orders=orders))
            else:
                total += c * subsampled_rdp(mech, s.rate, INTEGER_ORDERS)
        return rdp_to_epsilon(INTEGER_ORDERS, total, delta)


@ACCOUNTANTS.register("prv")
class PRVAccountant(Accountant):
    """Privacy random variables (Gopi et al. 2021): Opacus's ``PRVAccountant``; Poisson only."""

    name = "prv"
    lazy = True  # about 0.8 s a call (Opacus's discretised composition)

    def __init__(self, *, eps_error: float = 0.01) -> None:
        super().__init__()
        self.eps_error = eps_error

    def supports(self, sampling: Sampling) -> bool:
        return sampling.kind == "poisson"

    def _epsilon(self, delta: float) -> float:
        from opacus.accountants import PRVAccountant as OpacusPRV

        acc = OpacusPRV()
        acc.history = [(z, s.rate, c) for z, s, c in self.history]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # log(0) at q = 1 inside Opacus, harmless
            warnings.filterwarnings("ignore", message="Optimal order is the")  # its RDP domain estimate
            try:
                return float(acc.get_epsilon(delta, eps_error=self.eps_error))
            except (ValueError, OverflowError, FloatingPointError, MemoryError):
                # Opacus's PRV discretisation breaks down for tiny noise (huge privacy loss):
                # report no guarantee rather than a number we cannot vouch for.
                return math.inf


def make_accountant(name: str) -> Accountant:
    return ACCOUNTANTS.get(name, field="accountant")()


def epsilon_for(
    *, noise_multiplier: float, sampling: Sampling, rounds: int, delta: float, accountant: str = "rdp"
) -> float:
    """Epsilon after ``rounds`` identical subsampled-Gaussian rounds."""
    acc = make_accountant(accountant)
    acc.step(noise_multiplier=noise_multiplier, sampling=sampling, count=rounds)
    return acc.get_epsilon(delta)


def calibrate(
    *,
    target_epsilon: float,
    delta: float,
    rounds: int,
    sampling: Sampling,
    accountant: str = "rdp",
    rel_tol: float = 1e-3,
    max_noise_multiplier: float = 1e4,
) -> float:
    """The smallest noise multiplier (to ``rel_tol``) whose ``rounds`` steps stay within ``target_epsilon``.

    Bisection on the monotone map noise multiplier -> epsilon. The returned value always
    satisfies ``epsilon_for(...) <= target_epsilon``.
    """
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ConfigurationError(f"must be finite and > 0, got {target_epsilon}", field="target_epsilon")
    if rounds < 1:
        raise ConfigurationError(f"must be >= 1, got {rounds}", field="rounds")

    def eps(z: float) -> float:
        return epsilon_for(noise_multiplier=z, sampling=sampling, rounds=rounds, delta=delta, accountant=accountant)

    hi = 1.0
    while eps(hi) > target_epsilon:
        hi *= 2.0
        if hi > max_noise_multiplier:
            raise ConfigurationError(
                f"epsilon {target_epsilon} is out of reach with noise multiplier <= {max_noise_multiplier}",
                field="target_epsilon",
            )
    lo = hi / 2.0 if hi > 1.0 else 0.0
    if lo == 0.0:
        lo = 1e-3
        if eps(lo) <= target_epsilon:
            return lo
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        if eps(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi
