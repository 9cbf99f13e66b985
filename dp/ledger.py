"""The privacy ledger (every round, every accountant) and the budget that refuses a round in advance."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dp.accounting import Accountant, Sampling, make_accountant
from dp.distributed_accounting import RDPMechanism, mechanism_from_dict
from privagg.errors import ConfigurationError, PrivacyBudgetExceeded

__all__ = ["PrivacyBudget", "LedgerEntry", "PrivacyLedger"]


@dataclass(frozen=True)
class PrivacyBudget:
    """At most ``epsilon`` at ``delta``, as bounded by the ``accountant`` named."""

    epsilon: float
    delta: float
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        if not (self.epsilon > 0):
            raise ConfigurationError(f"must be > 0, got {self.epsilon}", field="budget_epsilon")
        if not (0 < self.delta < 1):
            raise ConfigurationError(f"must be in (0, 1), got {self.delta}", field="delta")


@dataclass(frozen=True)
class LedgerEntry:
    """One released round: its mechanism and the cumulative epsilon after it, per accountant.

    ``mechanism`` is ``None`` for the subsampled Gaussian of ``noise_multiplier``; otherwise a
    mechanism with its own Rényi curve (distributed DP), ``noise_multiplier`` its Gaussian
    equivalent, for display.

    ``roster``: the clients of the round's cohort (``None``: not recorded, then counted for every
    client), for the guarantee against the server (:mod:`dp.server_view`). The server's own
    knowledge: kept in the ledger file, never in :meth:`PrivacyLedger.rows` or a report.
    """

    round: int
    noise_multiplier: float
    sampling: Sampling
    epsilon: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)
    mechanism: RDPMechanism | None = None
    roster: tuple[int, ...] | None = field(default=None, repr=False)


class PrivacyLedger:
    """Records every round in every accountant; :meth:`check` refuses a round *before* it runs.

    :meth:`record` never refuses (a release is a fact): the budget is enforced by :meth:`check`
    before anything is computed.

    ``accountants`` are the names kept in step (``("rdp", "prv")`` by default); an accountant
    without a valid bound for the round's sampling scheme is skipped for that ledger (its
    epsilon reads ``nan``), never approximated. The budget, if any, is enforced with
    ``budget.accountant``, which must support the sampling.

    ``state`` is the server's JSON-able state that must survive a restart together with the
    entries (the adaptive clip, :class:`dp.rounds.DPRounds`): :meth:`save` writes it in the same
    atomic file, :meth:`load` restores it, so the two can never disagree.
    """

    def __init__(
        self,
        *,
        delta: float,
        accountants: Sequence[str] = ("rdp", "prv"),
        budget: PrivacyBudget | None = None,
    ) -> None:
        if not 0 < delta < 1:
            raise ConfigurationError(f"must be in (0, 1), got {delta}", field="delta")
        self.delta = delta
        self.budget = budget
        names = list(dict.fromkeys([*accountants, *([budget.accountant] if budget else [])]))
        self._accountants: dict[str, Accountant] = {n: make_accountant(n) for n in names}
        self._unsupported: set[str] = set()
        self.entries: list[LedgerEntry] = []
        self.state: dict[str, Any] = {}

    @property
    def accountant_names(self) -> list[str]:
        return list(self._accountants)

    def epsilon(self, accountant: str | None = None) -> float:
        name = accountant or (self.budget.accountant if self.budget else next(iter(self._accountants)))
        if name in self._unsupported:
            return math.nan
        return self._accountants[name].get_epsilon(self.delta)

    def check(self, *, noise_multiplier: float, sampling: Sampling, mechanism: RDPMechanism | None = None) -> float:
        """Epsilon (budget accountant) if this round ran; raises :class:`PrivacyBudgetExceeded` if over budget.

        ``mechanism``: a release with its own Rényi curve (``None``: the Gaussian of ``noise_multiplier``).
        """
        if self.budget is None:
            return math.nan
        acc = self._accountants[self.budget.accountant]
        if not acc.supports(sampling) or not acc.supports_mechanism(mechanism, sampling):
            what = sampling.describe() if mechanism is None else f"a {mechanism.kind} round under {sampling.describe()}"
            raise ConfigurationError(
                f"the budget accountant {acc.name!r} has no valid bound for {what}",
                field="accountant",
                accepted=["rdp"],
            )
        trial = acc.copy()
        trial.step(noise_multiplier=noise_multiplier, sampling=sampling, mechanism=mechanism)
        eps = trial.get_epsilon(self.budget.delta)
        if eps > self.budget.epsilon:
            spent = acc.get_epsilon(self.budget.delta)
            raise PrivacyBudgetExceeded(
                f"round {len(self.entries) + 1} would bring epsilon to {eps:.4g} > budget {self.budget.epsilon:.4g} "
                f"(delta {self.budget.delta:g}, {acc.name}); spent so far {spent:.4g} over {len(self.entries)} rounds",
                spent=spent,
                budget=self.budget.epsilon,
            )
        return eps

    def record(
        self,
        *,
        round: int,
        noise_multiplier: float,
        sampling: Sampling,
        mechanism: RDPMechanism | None = None,
        roster: Sequence[int] | None = None,
        **info: Any,
    ) -> LedgerEntry:
        """Compose one released round into every accountant and append a ledger entry.

        Never refuses: whatever was released is recorded, even past the budget (the budget is
        enforced *before* a round by :meth:`check`; a round that released more than planned
        is still composed, and the budget then refuses every later round).
        ``noise_multiplier = 0`` records a release without a noise guarantee (epsilon infinite).
        ``mechanism``: a release with its own Rényi curve (``noise_multiplier`` is then its
        Gaussian equivalent); an accountant without a bound for it reads ``nan`` from then on.
        ``roster``: the round's cohort (client ids), for :func:`dp.server_view.server_view`; it is
        saved with the ledger and never published (``None``: unknown, counted for every client).
        """
        eps: dict[str, float] = {}
        for name, acc in self._accountants.items():
            if (
                name in self._unsupported
                or not acc.supports(sampling)
                or not acc.supports_mechanism(mechanism, sampling)
            ):
                self._unsupported.add(name)
                eps[name] = math.nan
                continue
            acc.step(noise_multiplier=noise_multiplier, sampling=sampling, mechanism=mechanism)
            eps[name] = acc.get_epsilon(self.delta)
        entry = LedgerEntry(
            round=round,
            noise_multiplier=float(noise_multiplier),
            sampling=sampling,
            epsilon=eps,
            info=dict(info),
            mechanism=mechanism,
            roster=None if roster is None else tuple(sorted({int(c) for c in roster})),
        )
        self.entries.append(entry)
        return entry

    # -- durability: a restarted server resumes from what it already released ----------------
    def save(self, path: str | Path) -> None:
        """Write every entry and :attr:`state` to ``path`` as JSON, atomically (temporary file, then rename).

        Call it after each round: a server that restarts :meth:`load` s it and keeps composing,
        so a restart can never reset the privacy spent.
        """
        rows = [
            {
                "round": e.round,
                "noise_multiplier": e.noise_multiplier,
                "sampling": {
                    "kind": e.sampling.kind,
                    "rate": e.sampling.rate,
                    "population": e.sampling.population,
                    "sample_size": e.sampling.sample_size,
                },
                "info": {k: v for k, v in e.info.items() if isinstance(v, (int, float, str, bool))},
                **({"mechanism": e.mechanism.to_dict()} if e.mechanism is not None else {}),
                **({"roster": list(e.roster)} if e.roster is not None else {}),
            }
            for e in self.entries
        ]
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"version": 1, "delta": self.delta, "entries": rows, "state": self.state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def load(self, path: str | Path) -> None:
        """Replay the entries saved at ``path`` into this (empty) ledger and restore :attr:`state`.

        Every accountant composes the entries again; a file without ``state`` (written before it
        existed) restores an empty one.
        """
        if self.entries:
            raise ConfigurationError("load into an empty ledger only", field="ledger")
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            if data.get("version") != 1 or float(data["delta"]) != self.delta:
                raise ConfigurationError("a ledger of another version or delta", field="ledger")
            state = data.get("state", {})
            if not isinstance(state, dict):
                raise ConfigurationError("unreadable ledger file: state is not an object", field="ledger")
            for row in data["entries"]:
                mech = row.get("mechanism")
                roster = row.get("roster")
                if roster is not None and not isinstance(roster, list):
                    raise ConfigurationError("unreadable ledger file: roster is not a list", field="ledger")
                self.record(
                    round=int(row["round"]),
                    noise_multiplier=float(row["noise_multiplier"]),
                    sampling=Sampling(**row["sampling"]),
                    mechanism=mechanism_from_dict(mech) if mech else None,
                    roster=None if roster is None else [int(c) for c in roster],
                    **dict(row["info"]),
                )
            self.state = state
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ConfigurationError):
                raise
            raise ConfigurationError(f"unreadable ledger file: {type(e).__name__}", field="ledger") from None

    def participation_counts(self) -> dict[int, int]:
        """Rounds per client over the rounds recorded with a roster (the server's knowledge; never publish it)."""
        out: dict[int, int] = {}
        for e in self.entries:
            for c in e.roster or ():
                out[c] = out.get(c, 0) + 1
        return out

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for e in self.entries:
            row: dict[str, Any] = {"round": e.round, "noise_multiplier": e.noise_multiplier, "q": e.sampling.rate}
            row.update({f"epsilon_{k}": v for k, v in e.epsilon.items()})
            row.update(e.info)
            out.append(row)
        return out
