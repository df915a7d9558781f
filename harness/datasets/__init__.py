"""Dataset builders, one file each (``DATASETS`` registry): ``qm9`` (qm9pack), ``sdf`` (any
SDF / XYZ file or folder), ``geom`` (GEOM-Drugs pickles), ``moses`` (molsets SMILES with
ETKDG conformers).

A plug-in folder like ``spaces/``: importing this package imports every module beside it.
It sits above the ground floor, which keeps what every builder shares (``MolDataset``, the
cache, splits, the DataModule in ``harness/core/data/``) and finds builders by name only;
builders import only the ground floor (``tests/test_architecture.py``).
"""
from harness.core.registry import import_submodules

import_submodules(__name__, __path__)
