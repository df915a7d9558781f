"""Generator families, one folder each (``FAMILIES`` registry; ``l3dg list families``).

Importing this package imports every family folder beside it, whose ``__init__`` registers
its :class:`~generators.family.Family` and its schedules and samplers. Adding a family is one
folder here (its config section, math, samplers, LightningModule) plus its tests.
"""
from harness.core.registry import import_submodules

import_submodules(__name__, __path__)
