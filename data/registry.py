"""One registry pattern for everything pluggable (datasets, detectors, backbones, models ...).

Configs name things; a registry maps names to classes or factories. No if/elif dispatch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from avemo.errors import UserError, did_you_mean

T = TypeVar("T")


class UnknownNameError(UserError, KeyError):
    """A config named something that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> object map filled by the ``@registry.register("name")`` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            doc = help or (getattr(obj, "__doc__", None) or "").strip().splitlines()
            self._help[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            hint = did_you_mean(name, self._items)
            raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} Known: {known}") from None

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._items)

    def name_of(self, obj: Any) -> str:
        """The key ``obj`` (or the class of the instance ``obj``) is registered under: the key
        is written once, in the decorator, and read back here instead of a class attribute."""
        for n, item in self._items.items():
            if item is obj or (not isinstance(obj, type) and item is type(obj)):
                return n
        raise UnknownNameError(f"{obj!r} is not registered as a {self.kind}")

    def describe(self) -> list[tuple[str, str]]:
        return [(n, self._help.get(n, "")) for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
