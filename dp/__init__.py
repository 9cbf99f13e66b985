"""Client-level differential privacy: clipping, secure noise, accounting."""

__all__: list[str] = []
