"""Diffusion spaces: one file per backend (``SPACES`` registry). Importing this package
imports every module beside it (``_private`` helpers excepted), which registers the built-ins."""
from harness.core.registry import import_submodules
from spaces.base import Space

import_submodules(__name__, __path__)

__all__ = ["Space"]
