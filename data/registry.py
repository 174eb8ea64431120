"""One registry pattern for everything pluggable (datasets, detectors, backbones, models ...).

Configs name things; a registry maps names to classes or factories. No if/elif dispatch.
The key is written once, in ``@REGISTRY.register("name")`` (``REGISTRY.name_of(obj)`` reads it
back; a base class's ``name = RegisteredName(REGISTRY)`` gives every subclass a ``name``
attribute read from the registry). Every package fills its registries the same way, with ``load_plugins``:

1. its built-in plugin modules (a package name stands for every module in that package);
2. modules named in ``AVEMO_PLUGINS=pkg.mod1,pkg.mod2`` (development and tests);
3. third-party plugins: Python entry points in each registry's ``group``, e.g. in the plugin's
   ``pyproject.toml``::

       [project.entry-points."avemo.fusion_models"]
       my_model = "my_pkg.models:MyModel"      # registered as "my_model"
       more = "my_pkg.more_models"             # a module whose decorators register
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any, Generic, TypeVar

from avemo import settings
from avemo.errors import UserError, did_you_mean

T = TypeVar("T")
# what ``build`` can call (a class, a function): a registry of other things has no build
Factory = TypeVar("Factory", bound=Callable[..., Any])


class UnknownNameError(UserError, KeyError):
    """A config named something that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> object map filled by the ``@registry.register("name")`` decorator."""

    def __init__(self, kind: str, group: str | None = None) -> None:
        self.kind = kind
        self.group = group  # entry-point group of third-party plugins (``avemo.<kind>``)
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._keys: dict[int, str] = {}  # id(object) -> its first key (objects live in _items)

    def register(self, name: str, help: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            self._keys.setdefault(id(obj), name)
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

    def build(self: Registry[Factory], name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def name_of(self, obj: Any) -> str:
        """The key ``obj`` (or the class of the instance ``obj``) is registered under: the key
        is written once, in the decorator, and read back here instead of a class attribute."""
        key = self._keys.get(id(obj))
        if key is None and not isinstance(obj, type):
            key = self._keys.get(id(type(obj)))
        if key is None:
            raise UnknownNameError(f"{obj!r} is not registered as a {self.kind}")
        return key

    def key_of_class(self, cls: type) -> str:
        """The key of ``cls`` or of its nearest registered base class ("" when none is)."""
        for klass in cls.__mro__:
            key = self._keys.get(id(klass))
            if key is not None:
                return key
        return ""

    def describe(self) -> list[tuple[str, str]]:
        return [(n, self._help.get(n, "")) for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class RegisteredName:
    """``name = RegisteredName(REGISTRY)`` on a plugin base class: ``cls.name`` and ``obj.name``
    are the key the class (or its nearest registered base) is registered under, "" when none
    is, so the decorator stays the only place the key is written. An instance may still set
    its own ``name`` (non-data descriptor), e.g. a generic class built for one option value.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def __get__(self, obj: object, owner: type | None = None) -> str:
        return self.registry.key_of_class(owner if owner is not None else type(obj))


def _raise(name: str) -> None:
    raise  # noqa: PLE0704 - pkgutil calls this inside its ``except ImportError``


def import_modules(name: str) -> None:
    """Import a plugin module, or every module of a plugin package (sorted, recursive).

    A package's ``__init__`` may call it on itself (``import_modules(__name__)``) so that
    importing the package registers every module in it, with no list of names to keep.
    A subpackage that fails to import raises (``pkgutil`` would skip it silently).
    """
    mod = importlib.import_module(name)
    path = getattr(mod, "__path__", None)
    if path is None:
        return
    infos = pkgutil.walk_packages(path, prefix=f"{name}.", onerror=_raise)
    for info in sorted(infos, key=lambda i: i.name):
        importlib.import_module(info.name)


def load_entry_points(registries: Iterable[Registry]) -> None:
    """Register the third-party plugins of each registry's entry-point ``group``."""
    from importlib.metadata import entry_points

    for reg in registries:
        if not reg.group:
            continue
        for ep in entry_points(group=reg.group):
            if ep.name in reg:
                continue
            obj = ep.load()
            if not isinstance(obj, ModuleType) and ep.name not in reg:  # a module registers itself
                reg.register(ep.name)(obj)


def env_plugins() -> list[str]:
    """Modules named in ``AVEMO_PLUGINS`` (comma separated)."""
    return list(settings.current().plugins)


def load_plugins(builtins: Sequence[str], registries: Iterable[Registry]) -> None:
    """Fill ``registries``: built-in modules/packages, ``AVEMO_PLUGINS`` modules, entry points.

    The same rule for every package (data adapters, stage-one feature sets, stage-two models
    and tasks): nothing is listed twice, and a new built-in module in a plugin package is found
    without editing any list.
    """
    for name in [*builtins, *env_plugins()]:
        import_modules(name)
    load_entry_points(registries)
