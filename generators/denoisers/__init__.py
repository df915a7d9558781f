"""Denoiser networks (``DENOISERS`` registry); one backend per file.

* ``mlp`` (``mlp.py``) — residual MLP for vector latents.
* ``egnn`` (``egnn.py``) — dense fully connected EGNN (EDM's layout), E(3)-equivariant.
* ``e3nn`` (``e3nn_net.py``) — tensor-product network built with e3nn, SE(3)-equivariant.

The calling conventions are documented in ``base.py``.
"""
from .base import Denoiser, sinusoidal_embedding
from . import mlp, egnn, e3nn_net  # noqa: F401  (registration)
from .mlp import MLPDenoiser
from .egnn import EGNNDenoiser
from .e3nn_net import E3nnDenoiser

__all__ = ["Denoiser", "sinusoidal_embedding", "MLPDenoiser", "EGNNDenoiser", "E3nnDenoiser"]
