"""Client-level DP against the server, which sees who took part in every round.

Amplification by Poisson subsampling (every epsilon of :mod:`dp.accounting`) assumes the
adversary does not know who was sampled. With client or distributed noise the guarantee is
meant to hold against the *server*, but the server runs secure aggregation over authenticated
rosters: it knows exactly which clients took part in each round. Against the server the
amplified epsilon is not a valid guarantee. This module states the one that is.

* **Condition on the rosters.** The rosters are drawn from the secret source whatever the data
  (:mod:`dp.sampling`), so they are independent of the data and the guarantee may be stated
  for each fixed roster sequence.
* **Zero-out neighbours.** The target's data is replaced by a zero contribution (its clipped
  update and, with adaptive clipping, its centred clip-count term are zeros); its participation
  and its own noise share are unchanged. The released sums then differ by a shift of norm at
  most the recorded sensitivity (``clip * max_weight``; half the replace-one sensitivity under
  fixed-size sampling), with the *same* noise in both worlds: assumption (A3) of
  ``dp/SUBSAMPLING.md`` holds exactly for this relation.
* **Unamplified composition.** Given the rosters, a round the target is not in releases
  nothing about it; a round it is in is the recorded mechanism at sampling rate 1. A client's
  loss is the RDP composition of exactly its rounds' mechanisms; the figure is the worst
  client's, converted with the project's RDP -> (epsilon, delta) conversion
  (:func:`dp.distributed_accounting.rdp_to_epsilon`, Balle et al. 2020, Opacus's).

Gaussian rounds: ``alpha / (2 (z f)^2)`` at Opacus's orders (``z`` the recorded, effective noise
multiplier, ``f`` the sampling scheme's sensitivity factor: 1 for Poisson, 2 for fixed-size,
whose ``z`` is relative to the replace-one sensitivity); rounds with their own curve
(distributed discrete Gaussian, Skellam) use that curve unsampled, at integer orders. A round
recorded without a roster (a driver that does not pass one) is counted for *every* client: an
upper bound, never an under-count.

Before a run (plans, the audit) the rosters are not known: :func:`participation_bound` is the
smallest ``k`` with ``N P[Binomial(T, q) > k] <= failure`` (a union bound over the clients), and
:func:`planned_server_view` the epsilon of ``k`` unamplified rounds: a bound that holds with
probability at least ``1 - failure`` over the secret cohorts, said as such.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dp.distributed_accounting import INTEGER_ORDERS, RDPMechanism, rdp_to_epsilon
from privagg.errors import ConfigurationError

if TYPE_CHECKING:
    from dp.accounting import Sampling
    from dp.ledger import LedgerEntry, PrivacyLedger

__all__ = [
    "ServerView",
    "PlannedServerView",
    "PARTICIPATION_FAILURE",
    "gaussian_orders",
    "unamplified_rdp",
    "server_view",
    "server_view_of",
    "participation_bound",
    "planned_server_view",
]

#: the probability, over the secret cohorts, that a planned server-view bound is exceeded
PARTICIPATION_FAILURE = 1e-3


def gaussian_orders() -> tuple[float, ...]:
    """Opacus's default orders and the project's extra large ones (those of :class:`dp.RDPAccountant`)."""
    from opacus.accountants.rdp import RDPAccountant

    from dp.accounting import _EXTRA_ALPHAS

    return (*(float(a) for a in RDPAccountant.DEFAULT_ALPHAS), *_EXTRA_ALPHAS)


def unamplified_rdp(
    *, noise_multiplier: float, sensitivity_factor: float, mechanism: RDPMechanism | None, orders: Sequence[float]
) -> np.ndarray:
    """One round's RDP at ``orders`` against zero-out neighbours, sampling rate 1 (module docstring)."""
    a = np.asarray(orders, dtype=np.float64)
    if mechanism is not None:
        return np.asarray(mechanism.rdp(a), dtype=np.float64)
    if noise_multiplier == 0:
        return np.full(a.shape, np.inf)
    z = noise_multiplier * sensitivity_factor
    out: np.ndarray = a / (2.0 * z * z)
    return out


@dataclass(frozen=True)
class ServerView:
    """The guarantee against the server of a ledger: the worst client's over its own rounds.

    ``worst_rounds`` is that client's number of rounds (no client is named); ``unknown_rosters``
    counts rounds recorded without a roster (counted for every client).
    """

    epsilon: float
    delta: float
    worst_rounds: int
    rounds: int
    unknown_rosters: int


@dataclass(frozen=True)
class PlannedServerView:
    """Before a run: with probability >= ``1 - failure`` no client of ``population`` takes part in more
    than ``max_rounds`` of ``rounds`` rounds, and then the guarantee against the server is ``epsilon``."""

    epsilon: float
    delta: float
    max_rounds: int
    rounds: int
    population: int
    rate: float
    failure: float

    def describe(self) -> str:
        return (
            f"({self.epsilon:.4g}, {self.delta:g})-DP against the server, zero-out neighbours, unamplified over "
            f"at most {self.max_rounds} of {self.rounds} rounds per client: holds with probability >= "
            f"{1 - self.failure:g} over the secret cohorts (no client of {self.population} takes part in more "
            f"than {self.max_rounds} rounds at q = {self.rate:g}, union bound over Binomial tails)"
        )


def _round_key(noise_multiplier: float, sampling: Sampling, mechanism: RDPMechanism | None) -> tuple[object, ...]:
    if mechanism is not None:
        return ("m", tuple(sorted(mechanism.to_dict().items())))
    return ("g", float(noise_multiplier), float(sampling.sensitivity_factor))


def server_view(ledger: PrivacyLedger, *, delta: float | None = None) -> ServerView:
    """The server-view epsilon of everything ``ledger`` recorded (module docstring).

    Rounds with identical mechanisms are grouped; each client's vector of per-group counts is
    composed and converted; the largest epsilon is returned. ``delta`` defaults to the ledger's.
    """
    return server_view_of(ledger.entries, delta=ledger.delta if delta is None else float(delta))


def server_view_of(entries: Sequence[LedgerEntry], *, delta: float) -> ServerView:
    """:func:`server_view` of a sequence of entries (a ledger's, or with one more round the budget tries)."""
    d = float(delta)
    if not entries:
        return ServerView(0.0, d, 0, 0, 0)
    curves_only = any(e.mechanism is not None for e in entries)
    orders: tuple[float, ...] = tuple(float(a) for a in INTEGER_ORDERS) if curves_only else gaussian_orders()
    keys: dict[tuple[object, ...], int] = {}
    curves: list[np.ndarray] = []
    unknown = np.zeros(0, dtype=np.int64)
    counts: dict[int, np.ndarray] = {}
    group_of: list[int] = []
    for e in entries:
        key = _round_key(e.noise_multiplier, e.sampling, e.mechanism)
        if key not in keys:
            keys[key] = len(curves)
            curves.append(
                unamplified_rdp(
                    noise_multiplier=e.noise_multiplier,
                    sensitivity_factor=e.sampling.sensitivity_factor,
                    mechanism=e.mechanism,
                    orders=orders,
                )
            )
        group_of.append(keys[key])
    groups = len(curves)
    unknown = np.zeros(groups, dtype=np.int64)
    for e, g in zip(entries, group_of, strict=True):
        if e.roster is None:
            unknown[g] += 1
            continue
        for client in e.roster:
            row = counts.get(client)
            if row is None:
                row = counts[client] = np.zeros(groups, dtype=np.int64)
            row[g] += 1
    matrix = np.stack(curves)  # groups x orders
    per_client = np.unique(np.stack([*counts.values(), np.zeros(groups, dtype=np.int64)]), axis=0) + unknown
    worst_eps, worst_k = 0.0, 0
    with np.errstate(invalid="ignore"):  # 0 * inf: a group the client is not in
        for row in per_client:
            total = np.where(row[:, None] > 0, row[:, None] * matrix, 0.0).sum(axis=0)
            eps = rdp_to_epsilon(list(orders), total, d) if row.any() else 0.0
            k = int(row.sum())
            if eps > worst_eps or (eps == worst_eps and k > worst_k):
                worst_eps, worst_k = eps, k
    return ServerView(float(worst_eps), d, worst_k, len(entries), int(unknown.sum()))


def participation_bound(*, population: int, rounds: int, rate: float, failure: float = PARTICIPATION_FAILURE) -> int:
    """The smallest ``k`` with ``population * P[Binomial(rounds, rate) > k] <= failure``."""
    from scipy import stats

    if population < 1 or rounds < 1:
        raise ConfigurationError("population and rounds must be >= 1", field="population")
    if not 0 < rate <= 1:
        raise ConfigurationError(f"must be in (0, 1], got {rate}", field="sampling_rate")
    if not 0 < failure < 1:
        raise ConfigurationError(f"must be in (0, 1), got {failure}", field="failure")
    for k in range(rounds + 1):
        if population * float(stats.binom.sf(k, rounds, rate)) <= failure:
            return k
    return rounds  # pragma: no cover  (sf(rounds) == 0)


def planned_server_view(
    *,
    population: int,
    rounds: int,
    rate: float,
    delta: float,
    noise_multiplier: float = math.nan,
    sensitivity_factor: float = 1.0,
    mechanism: RDPMechanism | None = None,
    failure: float = PARTICIPATION_FAILURE,
) -> PlannedServerView:
    """The server-view bound of a planned run: :func:`participation_bound` rounds of the unamplified round
    (the Gaussian of ``noise_multiplier``, or ``mechanism``), converted at ``delta``."""
    k = participation_bound(population=population, rounds=rounds, rate=rate, failure=failure)
    if mechanism is None and not (noise_multiplier >= 0):
        raise ConfigurationError("a noise multiplier or a mechanism is needed", field="noise_multiplier")
    orders: tuple[float, ...] = tuple(float(a) for a in INTEGER_ORDERS) if mechanism is not None else gaussian_orders()
    curve = unamplified_rdp(
        noise_multiplier=noise_multiplier, sensitivity_factor=sensitivity_factor, mechanism=mechanism, orders=orders
    )
    eps = rdp_to_epsilon(list(orders), k * curve, delta) if k > 0 else 0.0
    return PlannedServerView(float(eps), float(delta), k, rounds, population, float(rate), float(failure))
