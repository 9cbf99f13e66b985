"""The small personalization task the FedLTN, jump-start and report tests share: 5 digits clients with
2 class shards each, a 16-unit MLP, one local epoch."""

from __future__ import annotations

from protocols.fedavg import DataConfig, ModelConfig, RunConfig
from protocols.training import TrainConfig


def shards_task(seed: int) -> RunConfig:
    return RunConfig(
        seed=seed,
        data=DataConfig(dataset="digits", num_clients=5, partition="shards", shards_per_client=2),
        model=ModelConfig(name="mlp", hidden=(16,)),
        train=TrainConfig(epochs=1, batch_size=32, lr=0.1),
    )
