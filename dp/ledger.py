"""The privacy ledger (every round, every accountant) and the budget that refuses a round in advance."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from dp.accounting import Accountant, Sampling, make_accountant
from dp.distributed_accounting import RDPMechanism, mechanism_from_dict
from privagg.errors import ConfigurationError, PrivacyBudgetExceeded

__all__ = ["BUDGET_AGAINST", "BudgetRefusal", "Epsilons", "PrivacyBudget", "LedgerEntry", "PrivacyLedger"]


#: whom a budget's guarantee holds against (:attr:`PrivacyBudget.against`)
BUDGET_AGAINST = ("observers", "server")


@dataclass(frozen=True)
class PrivacyBudget:
    """At most ``epsilon`` at ``delta``, as bounded by the ``accountant`` named.

    ``against``: ``"observers"`` enforces the amplified epsilon (valid against observers of the
    released models who do not see the rosters); ``"server"`` enforces it *and* the worst client's
    unamplified epsilon against the server, which sees who took part (:mod:`dp.server_view`).
    """

    epsilon: float
    delta: float
    accountant: str = "rdp"
    against: str = "observers"

    def __post_init__(self) -> None:
        if self.against not in BUDGET_AGAINST:
            raise ConfigurationError(f"got {self.against!r}", field="budget_against", accepted=list(BUDGET_AGAINST))
        if not (self.epsilon > 0):
            raise ConfigurationError(f"must be > 0, got {self.epsilon}", field="budget_epsilon")
        if not (0 < self.delta < 1):
            raise ConfigurationError(f"must be in (0, 1), got {self.delta}", field="delta")


@dataclass(frozen=True)
class BudgetRefusal:
    """A round :meth:`PrivacyLedger.check` refused: nothing of it was recorded or released.

    ``round``: the refused round (ledger length + 1); ``against``: the guarantee that would have
    gone over (``"server"``: the worst client's unamplified epsilon against the server;
    ``"observers"``: the amplified one); ``epsilon``: the figure that round would have reached;
    ``spent``: that guarantee's figure over the rounds already charged; ``message``: the error's text.
    """

    round: int
    against: str
    epsilon: float
    budget: float
    delta: float
    spent: float
    message: str

    @classmethod
    def of(cls, error: PrivacyBudgetExceeded, *, round: int, ledger: Any = None) -> BudgetRefusal:
        """``error``'s refusal as ``ledger`` (a :class:`PrivacyLedger`) kept it, numbered ``round`` (the caller's
        numbering); without a ledger's record, only the error's figures (``against = "unknown"``)."""
        kept = getattr(ledger, "refusal", None)
        if isinstance(kept, BudgetRefusal) and kept.message == str(error):
            return dataclasses.replace(kept, round=round)
        spent, budget = (math.nan if v is None else float(v) for v in (error.spent, error.budget))
        return cls(round, "unknown", math.nan, budget, math.nan, spent, str(error))


class Epsilons(Mapping[str, float]):
    """The cumulative epsilon after one ledger entry, per accountant (a read-only mapping).

    A cheap accountant's value (RDP) is computed when the round is recorded; a lazy one's (PRV,
    :attr:`dp.accounting.Accountant.lazy`, about 0.8 s a call) on first access, from a snapshot
    of its history at that entry, then cached: the same number, computed once, and only when asked.
    """

    def __init__(self, names: Sequence[str], values: dict[str, float], pending: dict[str, Accountant], delta: float):
        self._names = tuple(names)
        self._values = dict(values)
        self._pending = dict(pending)
        self._delta = delta

    def __getitem__(self, name: str) -> float:
        if name not in self._values:
            if name not in self._pending:
                raise KeyError(name)
            self._values[name] = self._pending.pop(name).get_epsilon(self._delta)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def computed(self, name: str) -> bool:
        """Whether ``name``'s value is known without computing it."""
        return name in self._values

    def __repr__(self) -> str:
        shown = {n: self._values.get(n, "(on demand)") for n in self._names}
        return f"Epsilons({shown})"


@dataclass(frozen=True)
class LedgerEntry:
    """One charged round: its mechanism and the cumulative epsilon after it, per accountant (:class:`Epsilons`:
    PRV computed on first access).

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
    epsilon: Mapping[str, float]
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
        #: the last :meth:`check` (ledger length, round, budget delta, epsilon), reused by :meth:`record`
        self._checked: tuple[int, float, Sampling, RDPMechanism | None, float, float] | None = None
        self.entries: list[LedgerEntry] = []
        self.state: dict[str, Any] = {}
        #: the round the last :meth:`check` refused (``None``: the last check passed, or none ran)
        self.refusal: BudgetRefusal | None = None

    @property
    def accountant_names(self) -> list[str]:
        return list(self._accountants)

    def epsilon(self, accountant: str | None = None) -> float:
        """Cumulative epsilon (at the ledger's delta) by ``accountant`` (default: the budget's, else the first);
        cached per ledger length (the last entry's value)."""
        name = accountant or (self.budget.accountant if self.budget else next(iter(self._accountants)))
        if name in self._unsupported:
            return math.nan
        if self.entries and name in self.entries[-1].epsilon:
            return self.entries[-1].epsilon[name]
        return self._accountants[name].get_epsilon(self.delta)

    def check(
        self,
        *,
        noise_multiplier: float,
        sampling: Sampling,
        mechanism: RDPMechanism | None = None,
        roster: Sequence[int] | None = None,
    ) -> float:
        """Epsilon (budget accountant) if this round ran; raises :class:`PrivacyBudgetExceeded` if over budget.

        ``mechanism``: a release with its own Rényi curve (``None``: the Gaussian of ``noise_multiplier``).
        With a budget ``against="server"`` the worst client's server-view epsilon with this round
        (``roster``: its cohort; ``None``: counted for every client) must stay within it too.
        """
        self.refusal = None
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
        self._checked = (len(self.entries), float(noise_multiplier), sampling, mechanism, self.budget.delta, eps)
        if self.budget.against == "server":
            self._check_server(noise_multiplier=noise_multiplier, sampling=sampling, mechanism=mechanism, roster=roster)
        if eps > self.budget.epsilon:
            spent = acc.get_epsilon(self.budget.delta)
            self._refuse(
                "observers",
                eps,
                spent,
                f"round {len(self.entries) + 1} would bring epsilon to {eps:.4g} > budget {self.budget.epsilon:.4g} "
                f"(delta {self.budget.delta:g}, {acc.name}); spent so far {spent:.4g} over {len(self.entries)} rounds",
            )
        return eps

    def _refuse(self, against: str, epsilon: float, spent: float, message: str) -> NoReturn:
        """Keep the refusal (:attr:`refusal`) and raise :class:`PrivacyBudgetExceeded`; nothing is recorded."""
        assert self.budget is not None
        self.refusal = BudgetRefusal(
            round=len(self.entries) + 1,
            against=against,
            epsilon=float(epsilon),
            budget=float(self.budget.epsilon),
            delta=float(self.budget.delta),
            spent=float(spent),
            message=message,
        )
        raise PrivacyBudgetExceeded(message, spent=spent, budget=self.budget.epsilon)

    def _check_server(
        self,
        *,
        noise_multiplier: float,
        sampling: Sampling,
        mechanism: RDPMechanism | None,
        roster: Sequence[int] | None,
    ) -> None:
        """Refuse a round that would bring the worst client's epsilon against the server over the budget."""
        from dp.server_view import server_view_of  # the server view reads ledger entries: imported when used

        assert self.budget is not None
        trial = LedgerEntry(
            round=len(self.entries) + 1,
            noise_multiplier=float(noise_multiplier),
            sampling=sampling,
            epsilon={},
            mechanism=mechanism,
            roster=None if roster is None else tuple(sorted({int(c) for c in roster})),
        )
        view = server_view_of([*self.entries, trial], delta=self.budget.delta)
        if view.epsilon > self.budget.epsilon:
            spent = server_view_of(self.entries, delta=self.budget.delta).epsilon
            self._refuse(
                "server",
                view.epsilon,
                spent,
                f"round {len(self.entries) + 1} would bring the worst client's epsilon against the server to "
                f"{view.epsilon:.4g} > budget {self.budget.epsilon:.4g} (delta {self.budget.delta:g}, unamplified, "
                f"{view.worst_rounds} rounds; the budget is enforced against the server); spent so far {spent:.4g}",
            )

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
        pending: dict[str, Accountant] = {}
        checked = self._checked
        same = checked is not None and checked[:5] == (
            len(self.entries),
            float(noise_multiplier),
            sampling,
            mechanism,
            self.delta,
        )
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
            if same and checked is not None and self.budget is not None and name == self.budget.accountant:
                eps[name] = checked[5]  # :meth:`check` computed this very composition
            elif acc.lazy:
                pending[name] = acc.copy()  # a snapshot of this entry's history: computed on first access
            else:
                eps[name] = acc.get_epsilon(self.delta)
        self._checked = None
        entry = LedgerEntry(
            round=round,
            noise_multiplier=float(noise_multiplier),
            sampling=sampling,
            epsilon=Epsilons(list(self._accountants), eps, pending, self.delta),
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
        """One row per entry; a lazy accountant's epsilon (PRV) is in the last row only (computed there, once)."""
        out = []
        last = len(self.entries) - 1
        for i, e in enumerate(self.entries):
            row: dict[str, Any] = {"round": e.round, "noise_multiplier": e.noise_multiplier, "q": e.sampling.rate}
            row.update(
                {
                    f"epsilon_{k}": e.epsilon[k]
                    for k in e.epsilon
                    if i == last or not self._accountants[k].lazy or k in self._unsupported
                }
            )
            row.update(e.info)
            out.append(row)
        return out
