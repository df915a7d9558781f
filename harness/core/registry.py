"""One small generic registry for every kind of pluggable component.

A backend registers itself with a decorator at import time::

    from harness.core.registry import SPACES

    @SPACES.register("my_space")
    class MySpace(Space): ...

Unknown names raise a :class:`KeyError` that lists the valid ones.

Every kind is found the same way. A plug-in folder (``spaces/``, ``harness/datasets/``,
``metrics/``, ``generators/denoisers/``, ``generators/families/``) imports each module beside
its ``__init__`` (:func:`import_submodules`), and each module registers what it defines. The
harness's own folders are advertised through the entry-point group ``l3dg.builtins`` in
``pyproject.toml``, exactly as a third-party package advertises its components under
``l3dg.<kind>`` groups: this ground floor names no module above it. They are imported lazily
by :func:`load_builtins` (so ``l3dg --help`` stays fast); a user's file or module of any kind
comes in through :func:`load_plugin` (``--plugin FILE``, config ``plugins:``).
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
FAMILIES: Registry[Any] = Registry("families")

REGISTRIES: dict[str, Registry[Any]] = {
    r.kind: r for r in (DATASETS, SPACES, DENOISERS, SAMPLERS, SCHEDULES, METRICS, SUITES,
                        FAMILIES)
}

#: entry-point group of the harness's own plug-in folders (``pyproject.toml``)
BUILTIN_GROUP = "l3dg.builtins"

_loading = False
_loaded = False


class BuiltinsMissing(RuntimeError):
    """The package's entry points are not installed (a checkout used without installing)."""


def import_submodules(package: str, path: Any) -> list[str]:
    """Import every module and sub-package of a plug-in folder (``__path__`` of
    ``package``) whose name does not start with ``_``, in name order; returns their names.
    A folder's ``__init__`` calls this so that a new file in it is found the moment it
    exists."""
    import pkgutil

    names = []
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        if info.name.startswith("_") or info.name == "base":
            continue
        importlib.import_module(f"{package}.{info.name}")
        names.append(info.name)
    return names


def load_builtins() -> None:
    """Import every built-in plug-in folder, then installed third-party components, once
    (idempotent, re-entrant safe)."""
    global _loading, _loaded
    if _loaded or _loading:
        return
    from importlib.metadata import entry_points

    _loading = True
    try:
        folders = list(entry_points(group=BUILTIN_GROUP))
        if not folders:
            raise BuiltinsMissing(
                f"no built-in components: the entry-point group {BUILTIN_GROUP!r} is not "
                "installed; install the project first (`make install`, or `pip install -e .`)")
        for ep in sorted(folders, key=lambda e: e.name):
            importlib.import_module(ep.value)
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
