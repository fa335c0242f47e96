"""A name -> object table: the one place where a name from params (an RL arm, an environment
family) becomes behaviour."""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects of one kind keyed by one of their attributes (``key``); ``what`` names the kind
    in errors, which list the registered names."""

    def __init__(self, what: str, key: str):
        self.what, self.key = what, key
        self._items: dict[str, T] = {}

    def register(self, obj: T) -> T:
        name = getattr(obj, self.key)
        if name in self._items:
            raise ValueError(f"two objects are registered as {self.what} {name!r}")
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.what} {name!r}: one of {', '.join(sorted(self._items))}") from None

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def values(self) -> list[T]:
        return list(self._items.values())
