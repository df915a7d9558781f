"""Denoiser networks (``DENOISERS`` registry); one backend per file, each found by importing
this package (every module beside it but ``base`` and ``_private`` helpers).

* ``mlp`` (``mlp.py``) — residual MLP for vector latents.
* ``egnn`` (``egnn.py``) — dense fully connected EGNN (EDM's layout), E(3)-equivariant.
* ``egnn_edm`` (``egnn_edm.py``) — ``egnn`` with EDM's released QM9 settings as defaults.
* ``e3nn`` (``e3nn_net.py``) — tensor-product network built with e3nn, SE(3)-equivariant.

The calling conventions are documented in ``base.py``.
"""
from harness.core.registry import import_submodules

from .base import Denoiser, sinusoidal_embedding

import_submodules(__name__, __path__)

from .e3nn_net import E3nnDenoiser  # noqa: E402
from .egnn import EGNNDenoiser  # noqa: E402
from .mlp import MLPDenoiser  # noqa: E402

__all__ = ["Denoiser", "sinusoidal_embedding", "MLPDenoiser", "EGNNDenoiser", "E3nnDenoiser"]
