"""Diffusion spaces: one file per backend. Importing this package registers the built-ins."""
import importlib
import pkgutil

from spaces.base import Space

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
