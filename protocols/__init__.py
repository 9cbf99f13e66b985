"""Federated protocols built from the primitives.

- :mod:`protocols.fedavg`: the FedAvg simulation (``RunConfig``, ``FedAvgSimulation``),
  with :mod:`protocols.datasets`, :mod:`protocols.partition`, :mod:`protocols.models`,
  :mod:`protocols.training`;
- :mod:`protocols.aggregation`: the ``Aggregator`` interface and registry;
- aggregators: secure aggregation (:mod:`protocols.secagg_aggregator`), packed threshold
  Paillier (:mod:`protocols.paillier`), DP-FedAvg (:mod:`protocols.dp_fedavg`), robust
  rules (:mod:`protocols.robust`); Flower adapters in :mod:`protocols.flower` (extra
  ``privagg[flower]``);
- split learning (vanilla, U-shaped, sequential and SplitFed clients) in :mod:`protocols.split`;
- personalized sparse FL (FedLTN, LotteryFL; registry ``ALGORITHMS``) in :mod:`protocols.personalization`.

Importing the package loads the built-in aggregators, so the registry
(:data:`protocols.aggregation.AGGREGATORS`) is complete after ``import protocols`` or the
import of any submodule. The other submodules load on first use (PEP 562:
``protocols.fedavg`` and ``from protocols import fedavg`` import it then), so listing names
(``privagg run --help``) does not load torch. No other import-time side effects.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The built-ins: each module registers its aggregators when imported (the registry is complete on import).
from protocols import dp_fedavg, paillier, robust, secagg_aggregator

if TYPE_CHECKING:
    from protocols import aggregation, datasets, fedavg, models, partition, personalization, split, training

__all__ = [
    "aggregation",
    "datasets",
    "dp_fedavg",
    "fedavg",
    "models",
    "paillier",
    "partition",
    "personalization",
    "robust",
    "secagg_aggregator",
    "split",
    "training",
]


def __getattr__(name: str) -> Any:
    """A submodule of :data:`__all__` not loaded yet: import it now (PEP 562)."""
    if name in __all__:
        return importlib.import_module(f"protocols.{name}")
    raise AttributeError(f"module 'protocols' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
