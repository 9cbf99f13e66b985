"""Flower app: FedAvg on sklearn digits with privagg secure aggregation, client-level DP and Paillier."""

__all__: list[str] = []
