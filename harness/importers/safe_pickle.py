"""Read an argparse ``Namespace`` pickle (EDM's ``args.pickle``) without running code.

A pickle can name any importable callable and call it while loading (``os.system`` through
``__reduce__``). :func:`load_namespace` admits exactly one class, ``argparse.Namespace``, and
the plain values pickle builds without naming anything (str, bytes, int, float, bool, None,
list, tuple, dict) plus ``builtins.set`` / ``frozenset``; any other global is refused before
it is imported or called, with an error naming it. Persistent ids are refused too.
"""
from __future__ import annotations

import argparse
import io
import pickle
from pathlib import Path
from typing import Any

__all__ = ["load_namespace", "UnsafePickleError", "ALLOWED"]

#: (module, name) pairs the unpickler may resolve
ALLOWED = {("argparse", "Namespace"): argparse.Namespace,
           ("builtins", "set"): set, ("builtins", "frozenset"): frozenset}

_PLAIN = (str, bytes, int, float, bool, type(None))


class UnsafePickleError(ValueError):
    """The pickle names something other than ``argparse.Namespace`` and plain values."""


class _Restricted(pickle.Unpickler):
    def __init__(self, data: bytes, path: Path):
        super().__init__(io.BytesIO(data))
        self.path = path

    def find_class(self, module: str, name: str):
        cls = ALLOWED.get((module, name))
        if cls is None:
            raise UnsafePickleError(
                f"{self.path}: refers to {module}.{name}; only argparse.Namespace and plain "
                f"values are read from an args pickle -- not loaded, nothing was run")
        return cls

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self.path}: uses persistent ids; not an args pickle")


def _check_plain(value: Any, where: str, path: Path) -> None:
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            _check_plain(v, where, path)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, where, path)
            _check_plain(v, f"{where}.{k}", path)
        return
    raise UnsafePickleError(f"{path}: {where} holds a {type(value).__name__}, not a plain value")


def load_namespace(path: str | Path) -> dict[str, Any]:
    """The ``argparse.Namespace`` pickled in ``path`` as a dict of plain values.

    Raises:
        FileNotFoundError: no file.
        UnsafePickleError: a global other than ``argparse.Namespace`` (message names it), or
            a value that is not plain data.
        ValueError: a damaged pickle or one that is not a Namespace.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        obj = _Restricted(data, path).load()
    except UnsafePickleError:
        raise
    except Exception as err:   # noqa: BLE001 - any damage is one line naming the file
        raise ValueError(f"{path}: not a readable args pickle ({type(err).__name__}: "
                         f"{str(err)[:120]})") from None
    if not isinstance(obj, argparse.Namespace):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not an argparse.Namespace")
    out = dict(vars(obj))
    for key, value in out.items():
        _check_plain(value, key, path)
    return out
