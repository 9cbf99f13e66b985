"""Name -> factory registries (attacks, defenses, datasets, models, accountants, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from privagg.errors import ConfigurationError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A small, typed registry: ``@reg.register("name")`` and ``reg.get("name")``.

    Unknown names raise :class:`ConfigurationError` listing the known ones.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str, *, field: str | None = None) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigurationError(
                f"unknown {self.kind} {name!r}",
                field=field or self.kind,
                accepted=sorted(self._items),
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def entries(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs in registration order (the order defaults and reports list them)."""
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
