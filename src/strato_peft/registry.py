"""A named registry: fine-tuning methods and evaluation tasks each register themselves with one line."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Items by unique name; looking up an unknown name raises ``error`` with a line listing the known ones."""

    def __init__(self, what: str, field: str, error: Callable[[str], Exception]) -> None:
        self.what, self.field, self.error = what, field, error
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Add ``item`` under ``name``; registering a name twice is a programming error."""
        if name in self._items:
            raise RuntimeError(f"{self.what} {name!r} registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The item called ``name``."""
        if name not in self._items:
            raise self.error(f"{self.field}: unknown {self.what} {name!r}; expected one of: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)
