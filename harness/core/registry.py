"""One small generic registry for every kind of pluggable component.

A backend registers itself with a decorator at import time::

    from harness.core.registry import SPACES

    @SPACES.register("my_space")
    class MySpace(Space): ...

Unknown names raise a :class:`KeyError` that lists the valid ones. Built-in components are
imported lazily by :func:`load_builtins` (so ``l3dg --help`` stays fast); user components come
from a file path, a module name, or the ``l3dg.<kind>`` package entry-point groups
(:func:`load_plugin`, :func:`load_entry_points`).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping for one kind of component (``"spaces"``, ``"metrics"``, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._base: type | None = None

    def set_base(self, base: type) -> type:
        """Declare the base class every registered class must subclass (called by the
        module defining it, e.g. ``spaces/base.py``); returns ``base``."""
        self._base = base
        return base

    def register(self, name: str | None = None, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (default: ``obj.name`` or ``__name__``)."""

        def decorator(obj: T) -> T:
            key = name or getattr(obj, "name", None) or getattr(obj, "__name__")
            origin = getattr(obj, "__module__", "?")
            if self._base is not None and isinstance(obj, type) and not issubclass(obj, self._base):
                raise TypeError(f"{self.kind}: {obj.__qualname__} (from {origin}) is registered as "
                                f"{key!r} but does not subclass {self._base.__module__}."
                                f"{self._base.__qualname__}")
            if key in self._entries and not overwrite and self._origins[key] != origin:
                raise ValueError(
                    f"{self.kind}: name {key!r} is already registered by {self._origins[key]}; "
                    f"choose another name for the one in {origin}"
                )
            self._entries[key] = obj
            self._origins[key] = origin
            if hasattr(obj, "__dict__") and not isinstance(obj, (staticmethod, classmethod)):
                try:
                    setattr(obj, "registry_name", key)
                except (AttributeError, TypeError):
                    pass
            return obj

        return decorator

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name`` without a decorator."""
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        """Return the component called ``name``; the error lists the valid names."""
        load_builtins()
        if name not in self._entries:
            valid = ", ".join(sorted(self._entries)) or "(none registered)"
            raise KeyError(f"unknown {self.kind[:-1] if self.kind.endswith('s') else self.kind} "
                           f"{name!r}; valid {self.kind}: {valid}")
        return self._entries[name]

    def names(self) -> list[str]:
        load_builtins()
        return sorted(self._entries)

    def origin(self, name: str) -> str:
        return self._origins[name]

    def __contains__(self, name: object) -> bool:
        load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"


DATASETS: Registry[Any] = Registry("datasets")
SPACES: Registry[Any] = Registry("spaces")
DENOISERS: Registry[Any] = Registry("denoisers")
SAMPLERS: Registry[Any] = Registry("samplers")
SCHEDULES: Registry[Any] = Registry("schedules")
METRICS: Registry[Any] = Registry("metrics")
SUITES: Registry[Any] = Registry("suites")

REGISTRIES: dict[str, Registry[Any]] = {
    r.kind: r for r in (DATASETS, SPACES, DENOISERS, SAMPLERS, SCHEDULES, METRICS, SUITES)
}

# Modules whose import registers the built-in components. A missing module is skipped, so a
# partial checkout still lists what it has; any other import error propagates.
BUILTIN_MODULES = (
    "harness.core.data.qm9",
    "harness.core.data.sdf",
    "harness.core.data.geom",
    "harness.core.data.moses",
    "generators.schedules",
    "generators.samplers",
    "generators.denoisers",
    "metrics",
    "spaces",
)

_loading = False
_loaded = False


def load_builtins() -> None:
    """Import every built-in component module once (idempotent, re-entrant safe)."""
    global _loading, _loaded
    if _loaded or _loading:
        return
    _loading = True
    try:
        for module in BUILTIN_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as err:
                if err.name is None or not module.startswith(err.name):
                    raise
        load_entry_points()
        _loaded = True
    finally:
        _loading = False


def load_entry_points() -> list[str]:
    """Import components advertised by installed packages under ``l3dg.<kind>`` groups."""
    from importlib.metadata import entry_points

    loaded = []
    for kind in REGISTRIES:
        for ep in entry_points(group=f"l3dg.{kind}"):
            ep.load()
            loaded.append(f"{kind}:{ep.name}")
    return loaded


def load_plugin(spec: str | Path) -> Any:
    """Import a user's component file (``path/to/my_space.py``) or module (``pkg.mod``).

    Importing it runs its ``@REGISTRY.register`` decorators. Returns the module.
    """
    text = str(spec)
    path = Path(text)
    if text.endswith(".py") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"plugin file {text!r} does not exist")
        module_name = f"l3dg_plugin_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot import plugin file {text!r}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception:
            del sys.modules[module_name]
            raise
        return module
    return importlib.import_module(text)
