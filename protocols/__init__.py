"""Federated protocols built from the primitives.

- :mod:`protocols.fedavg`: the FedAvg simulation (``RunConfig``, ``FedAvgSimulation``),
  with :mod:`protocols.datasets`, :mod:`protocols.partition`, :mod:`protocols.models`,
  :mod:`protocols.training`;
- :mod:`protocols.aggregation`: the ``Aggregator`` interface and registry;
- aggregators: secure aggregation (:mod:`protocols.secagg_aggregator`), packed threshold
  Paillier (:mod:`protocols.paillier`), DP-FedAvg (:mod:`protocols.dp_fedavg`), robust
  rules (:mod:`protocols.robust`); Flower adapters in :mod:`protocols.flower` (extra
  ``privagg[flower]``).

Submodules are imported on demand: ``import protocols`` is cheap and has no side effects.
"""

__all__ = ["aggregation", "datasets", "fedavg", "models", "partition", "training"]
