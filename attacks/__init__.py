"""Inference and poisoning attacks, and the runners that measure them against defenses."""

__all__: list[str] = []
