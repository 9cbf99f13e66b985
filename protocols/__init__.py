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
import of any submodule. No other import-time side effects.
"""

# The built-ins: each module registers its aggregators when imported (the registry is complete on import).
from protocols import dp_fedavg, paillier, personalization, robust, secagg_aggregator

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
