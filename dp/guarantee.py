"""The guarantee statement of a DP ledger: one function for every driver (in-memory run, Flower).

A DP run ends by saying what it guarantees and against whom. Every driver that keeps a
:class:`~dp.ledger.PrivacyLedger` (the in-memory DP-FedAvg of ``privagg run``, the Flower DP
strategy, the Flower distributed-DP workflow) builds that statement here, from the ledger and
the few facts of the deployment the ledger does not hold:

* against observers of the released models: the configured accountant's epsilon, amplified by
  sampling, at ``delta + delta_refusal``: whether a Poisson round ran is itself an output when the
  secure sum refuses small cohorts (:mod:`dp.refusal`, proof in ``dp/SUBSAMPLING.md``);
* against the server (client and distributed noise: it sees who took part): the worst client's
  rounds composed unamplified (:func:`dp.server_view.server_view`); central noise trusts the server;
* :func:`refusal_warning`: one line when the refusal delta exceeds ``delta`` (the statement then
  holds at a delta nobody asked for);
* :func:`sampling_warning`: one line when the recorded Poisson cohorts' sizes cannot be Poisson at the
  charged rate (:func:`dp.sampling.poisson_sizes_p_value` over the ledger's rosters): the amplified
  figure then rests on sampling that did not happen.

:func:`ledger_guarantee` returns a :class:`LedgerGuarantee` (JSON-able through ``as_dict``);
:func:`guarantee_line` is the one sentence (the report's ``guarantee`` line and the Flower
drivers' log line are this function's output).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dp.refusal import refusal_delta
from dp.sampling import poisson_sizes_p_value
from dp.server_view import server_view

if TYPE_CHECKING:
    from dp.ledger import PrivacyLedger

__all__ = [
    "SERVER_SEES_ROSTERS",
    "LedgerGuarantee",
    "ledger_guarantee",
    "ledger_refusal_delta",
    "guarantee_line",
    "server_clause",
    "refusal_warning",
    "sampling_warning",
    "guarantee_metrics",
    "announce",
]

#: noise placements whose guarantee is meant to hold against the server (which sees the rosters)
SERVER_SEES_ROSTERS = ("client", "distributed")

_NOT_STATED = "drawn by the caller (not stated)"


@dataclass(frozen=True)
class LedgerGuarantee:
    """What a ledger guarantees (the module docstring); ``as_dict`` is the report's ``guarantee`` core.

    ``epsilon``: the ``accountant``'s over ``rounds`` (amplified: against observers of the released
    models who do not see the rosters), valid at ``delta + delta_refusal``; ``epsilon_server``: the
    worst client's unamplified figure over ``server_rounds`` of its rounds (``nan`` for central noise:
    the server is trusted); ``refused_rounds``: rounds the secure sum refused (charged, nothing
    released); ``sampling_p_value``: the Poisson check of the recorded cohort sizes (``nan``: not
    checkable, e.g. fixed-size sampling, too few rounds, rosters not recorded).
    """

    epsilon: float
    delta: float
    delta_refusal: float
    accountant: str
    epsilon_by_accountant: Mapping[str, float]
    rounds: int
    refused_rounds: tuple[int, ...]
    sampling: str
    cohorts: str
    noise: str
    secure_noise: bool
    epsilon_server: float
    server_rounds: int | None
    server_unknown_rosters: int
    against_server: str
    against_observer: str
    sampling_p_value: float = math.nan

    @property
    def delta_observers(self) -> float:
        """The delta of the guarantee against observers: ``delta`` + what whether rounds ran costs."""
        return self.delta + self.delta_refusal

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["epsilon_by_accountant"] = dict(self.epsilon_by_accountant)
        out["refused_rounds"] = list(self.refused_rounds)
        return out

    def line(self) -> str:
        """:func:`guarantee_line` of this guarantee."""
        return guarantee_line(self.as_dict())

    def warnings(self) -> list[str]:
        """The warnings the statement carries (:func:`refusal_warning`, :func:`sampling_warning`)."""
        ws = [refusal_warning(self.delta_refusal, self.delta), sampling_warning(self.sampling_p_value)]
        return [w for w in ws if w]


def ledger_refusal_delta(
    ledger: PrivacyLedger, *, population: int | None, min_cohort: int, empty_released: bool
) -> float:
    """What whether its Poisson rounds ran costs observers (:func:`dp.refusal.refusal_delta` over the ledger's
    rounds, at the last round's sampling); 0 for fixed-size sampling, an unknown population or no round."""
    if not ledger.entries or not population:
        return 0.0
    sampling = ledger.entries[-1].sampling
    if sampling.kind != "poisson":
        return 0.0
    return refusal_delta(
        population=int(population),
        rate=sampling.rate,
        min_cohort=int(min_cohort),
        rounds=len(ledger.entries),
        empty_released=bool(empty_released),
    )


def ledger_guarantee(
    ledger: PrivacyLedger,
    *,
    noise: str,
    accountant: str,
    population: int | None,
    min_cohort: int,
    empty_released: bool,
    cohorts: str | None = None,
    secure_noise: bool = True,
    accountants: Sequence[str] | None = None,
) -> LedgerGuarantee:
    """The guarantee of everything ``ledger`` recorded (module docstring).

    ``noise``: the placement (``central`` | ``client`` | ``distributed``); ``accountant``: the one the
    budget uses; ``population``, ``min_cohort`` (the smallest cohort the secure sum runs) and
    ``empty_released`` (an empty Poisson cohort releases noise) give the refusal delta; ``cohorts``: how
    cohorts were drawn, in words; ``secure_noise``: the noise came from a CSPRNG-backed sampler;
    ``accountants``: those of ``epsilon_by_accountant`` (default: every accountant of the ledger; a driver
    that states the guarantee after every round passes ``(accountant,)``: PRV is computed only when asked).
    """
    known = ledger.accountant_names
    names = known if accountants is None else [a for a in known if a in accountants or a == accountant]
    eps_all = {name: float(ledger.epsilon(name)) for name in names}
    sampling = ledger.entries[-1].sampling if ledger.entries else None
    if noise in SERVER_SEES_ROSTERS:
        view = server_view(ledger)
        eps_s, k, unknown = view.epsilon, view.worst_rounds, view.unknown_rosters
        against_server = "zero-out neighbours, worst client's rounds, unamplified (dp/server_view.py)"
        against_observer = "amplified by sampling; assumes (A3), see dp/SUBSAMPLING.md"
    else:
        eps_s, k, unknown = math.nan, None, 0
        against_server = "none: the server is trusted (central noise: it sees the aggregate before the noise)"
        against_observer = "amplified by sampling"
    return LedgerGuarantee(
        epsilon=eps_all.get(str(accountant), math.nan),
        delta=float(ledger.delta),
        delta_refusal=ledger_refusal_delta(
            ledger, population=population, min_cohort=min_cohort, empty_released=empty_released
        ),
        accountant=str(accountant),
        epsilon_by_accountant=eps_all,
        rounds=len(ledger.entries),
        refused_rounds=tuple(e.round for e in ledger.entries if e.info.get("refused")),
        sampling=sampling.describe() if sampling is not None else "no round released",
        cohorts=str(cohorts or _NOT_STATED),
        noise=str(noise),
        secure_noise=bool(secure_noise),
        epsilon_server=float(eps_s),
        server_rounds=k,
        server_unknown_rosters=int(unknown),
        against_server=against_server,
        against_observer=against_observer,
        sampling_p_value=_poisson_check(ledger, population),
    )


def _poisson_check(ledger: PrivacyLedger, population: int | None) -> float:
    """:func:`dp.sampling.poisson_sizes_p_value` of the ledger's Poisson rounds with a roster (``nan``: none)."""
    rows = [e for e in ledger.entries if e.sampling.kind == "poisson" and e.roster is not None]
    n = population or (rows[-1].sampling.population if rows else None)
    if not rows or not n or len({e.sampling.rate for e in rows}) != 1:
        return math.nan
    return poisson_sizes_p_value([len(e.roster or ()) for e in rows], rate=rows[-1].sampling.rate, population=int(n))


def server_clause(g: Mapping[str, Any]) -> str:
    """The guarantee against the server that sees the rosters (client and distributed noise)."""
    eps_s = float(g.get("epsilon_server", math.nan))
    if math.isnan(eps_s):
        return "against the server (it sees who took part): not computed, NOT the figure below"
    unknown = int(g.get("server_unknown_rosters") or 0)
    extra = f"; {unknown} rounds without a roster counted for every client" if unknown else ""
    return (
        f"against the server (it sees who took part): ({eps_s:.4g}, {g['delta']:g})-DP, zero-out neighbours, "
        f"over the worst client's {g.get('server_rounds')} of {g['rounds']} rounds, unamplified{extra}"
    )


def guarantee_line(g: Mapping[str, Any]) -> str:
    """One line: against whom, ``client-level (eps, delta)-DP (accountant, rounds, sampling)``, what voids it.

    ``g``: :meth:`LedgerGuarantee.as_dict` (or a dict holding its keys). Client and distributed noise: the
    guarantee against the server (which sees the rosters) first, then the amplified one against an observer
    of the released models, at ``delta + delta_refusal``; central noise: the server is trusted.
    """
    d_ref = float(g.get("delta_refusal") or 0.0)
    delta = f"{g['delta'] + d_ref:.3g}" if d_ref > 0 else f"{g['delta']:g}"  # + whether rounds ran (dp/refusal.py)
    eps = f"({g['epsilon']:.4g}, {delta})-DP"
    refused = len(g.get("refused_rounds") or ())
    counted = (
        f"{g['rounds']} rounds ({refused} refused: nothing released, still charged)"
        if refused
        else (f"{g['rounds']} released rounds")
    )
    how = f"by the {g['accountant']} accountant over {counted}, {g['sampling']}, "
    how += f"cohorts {g['cohorts']}"
    noise = g.get("noise")
    if noise in SERVER_SEES_ROSTERS:
        line = (
            f"client-level, {server_clause(g)}; against an observer of the released models who does not see "
            f"the rosters: {eps} with amplification by sampling (assumes (A3), see dp/SUBSAMPLING.md) {how}"
        )
    elif noise is not None:
        line = (
            f"client-level {eps} against observers of the released models (the server is trusted: central noise, "
            f"it sees the aggregate before the noise) {how}"
        )
    else:
        line = f"client-level {eps} {how}"
    if not g["secure_noise"]:
        line += "; NOT PRIVATE: the noise was drawn from a public seed"
    if "not private" in g["cohorts"]:
        line += "; NOT PRIVATE: the accountant assumes secret cohorts (amplification by sampling)"
    return line


def guarantee_metrics(g: LedgerGuarantee) -> dict[str, float | str]:
    """The guarantee as round metrics of a Flower driver (``dp_guarantee``: :func:`guarantee_line`)."""
    return {
        "dp_guarantee": g.line(),
        "dp_guarantee_epsilon": g.epsilon,
        "dp_guarantee_delta": g.delta_observers,
        "dp_delta_refusal": g.delta_refusal,
        "dp_epsilon_server": g.epsilon_server,
    }


def announce(g: LedgerGuarantee, logger: logging.Logger, round: int) -> dict[str, float | str]:
    """Log the guarantee after ``round`` (INFO; its warnings at WARNING) and return it as round metrics (a
    driver without an end-of-run hook, e.g. a Flower strategy, states it after every round it records)."""
    logger.info("round %s: DP guarantee so far: %s", round, g.line())
    for w in g.warnings():
        logger.warning("round %s: %s", round, w)
    return guarantee_metrics(g)


#: below this p-value the recorded cohorts are said not to be Poisson (a false warning about once in a million)
SAMPLING_ALARM = 1e-6


def sampling_warning(p_value: float) -> str | None:
    """The warning when the recorded cohort sizes cannot come from the charged Poisson sampling."""
    if not p_value < SAMPLING_ALARM:
        return None
    return (
        f"the recorded cohorts are not Poisson at the charged rate (cohort-size dispersion test, p = {p_value:.2g}): "
        "the amplified epsilon assumes each client joins each round independently; the strategy must draw "
        "cohorts by Poisson sampling (fixed-size cohorts: use Sampling.fixed)"
    )


def refusal_warning(delta_refusal: float, delta: float) -> str | None:
    """The warning when whether rounds ran costs observers more than ``delta`` (``None``: it does not)."""
    if not delta_refusal > delta:
        return None
    return (
        f"whether rounds ran adds delta {delta_refusal:.3g} > dp.delta {delta:g} against observers "
        "(cohorts near the protocol's minimum): raise federation.sampling_rate or data.num_clients"
    )
