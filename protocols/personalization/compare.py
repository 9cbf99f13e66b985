"""One personalized run beside its baselines, on the same client splits: the result a report renders.

:func:`compare_personalization` runs the chosen algorithm (``options.name``) and FedAvg with
local fine-tuning (``options.fine_tune_epochs`` epochs, each evaluated) for the same number of
rounds on the same clients, and records who holds which classes. The per-client table of
:mod:`privagg.report.personalization` reads it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from protocols.personalization.fedltn import (
    ClientData,
    PersonalizationOptions,
    PersonalizationResult,
    client_splits,
    run_personalized,
)

if TYPE_CHECKING:
    from protocols.fedavg import RunConfig

__all__ = ["ClientRow", "PersonalizationComparison", "compare_personalization"]


@dataclass(frozen=True)
class ClientRow:
    """One client of the comparison: its data, its personalized model, and the baselines on its test split."""

    client: int
    classes: tuple[int, ...]
    train_size: int
    test_size: int
    accuracy: float
    fedavg_accuracy: float | None
    fine_tuned_accuracy: float | None
    nonzeros: int
    upload_bytes: int
    joined: int  # round the client joined (0: from the start)


@dataclass(frozen=True)
class PersonalizationComparison:
    """The chosen algorithm's result and FedAvg's (``None`` when the chosen one is FedAvg), same clients."""

    options: PersonalizationOptions
    result: PersonalizationResult
    fedavg: PersonalizationResult | None
    classes: tuple[tuple[int, ...], ...]
    train_sizes: tuple[int, ...]
    test_sizes: tuple[int, ...]
    seconds: float

    @property
    def baseline(self) -> PersonalizationResult:
        return self.fedavg if self.fedavg is not None else self.result

    def rows(self) -> list[ClientRow]:
        """One row per client (the final round; FedAvg + FT at ``fine_tune_epochs`` epochs)."""
        base = self.baseline
        ft = base.fine_tuned_accuracies
        joined = {j.client: j for j in self.result.joins}
        first = {
            k: next(r.round for r in self.result.rounds if not np.isnan(r.accuracies[k]))
            for k in range(len(self.classes))
            if k in joined
        }
        return [
            ClientRow(
                client=k,
                classes=self.classes[k],
                train_size=self.train_sizes[k],
                test_size=self.test_sizes[k],
                accuracy=float(self.result.client_accuracies[k]),
                fedavg_accuracy=float(base.client_accuracies[k]),
                fine_tuned_accuracy=None if ft is None else float(ft[k]),
                nonzeros=int(self.result.nonzeros[k]),
                upload_bytes=int(sum(int(r.upload_bytes[k]) for r in self.result.rounds)),
                joined=first.get(k, 0),
            )
            for k in range(len(self.classes))
        ]


def compare_personalization(
    run_config: RunConfig,
    options: PersonalizationOptions,
    *,
    clients: Sequence[ClientData] | None = None,
) -> PersonalizationComparison:
    """Run ``options.name`` and (unless it is FedAvg) FedAvg + fine-tuning on the same client splits."""
    t0 = time.perf_counter()
    data = list(clients) if clients is not None else client_splits(run_config)
    result = run_personalized(run_config, options, clients=data)
    fedavg = None
    if options.name != "fedavg":
        fedavg = run_personalized(run_config, dataclasses.replace(options, name="fedavg"), clients=data)
    return PersonalizationComparison(
        options=options,
        result=result,
        fedavg=fedavg,
        classes=tuple(tuple(int(c) for c in np.unique(np.concatenate([d.y_train, d.y_test]))) for d in data),
        train_sizes=tuple(len(d.y_train) for d in data),
        test_sizes=tuple(len(d.y_test) for d in data),
        seconds=time.perf_counter() - t0,
    )
