"""``egnn``: dense fully connected EGNN denoiser for per-atom latents (EDM's network).

Node input ``[h, t, context]`` (time and context appended to every atom's features, as in
EDM) -> :class:`harness.core.nn.DenseEGNN` -> ``out_h`` = its node output, ``out_x = x_out - x``
(translation invariant, E(3)-equivariant). Per-atom latents without coordinates run the same
network without geometry (a fully connected invariant GNN).
"""
from __future__ import annotations

import torch

from harness.core.nn import DenseEGNN, remove_mean
from harness.core.registry import DENOISERS
from harness.core.types import LatentSpec

from .base import Denoiser


@DENOISERS.register("egnn")
class EGNNDenoiser(Denoiser):
    """E(3)-equivariant denoiser; hyperparameters as :class:`harness.core.nn.DenseEGNN`
    (defaults: EDM's QM9 model, 9 blocks x 256 hidden, 2 GCLs per block).

    ``zero_mean_velocity``: project ``out_x`` onto the zero centre-of-mass subspace of the
    real atoms inside the network (EDM's dynamics does; generators project every output
    anyway, so it only matters when the network is called on its own). ``agg_norm`` is
    EDM's ``normalization_factor`` (aggregation ``sum``), ``sublayers`` its
    ``inv_sublayers``; ``coords_range_split``, ``sin_embedding`` and ``layout`` (``pairs``,
    the flat list of real pairs, or ``dense``) as in ``DenseEGNN`` (``egnn_edm`` sets EDM's
    values)."""

    kinds = ("per_atom",)

    def __init__(self, spec: LatentSpec, context_dim: int = 0, hidden: int = 256,
                 layers: int = 9, sublayers: int = 2, attention: bool = True,
                 tanh: bool = True, coords_range: float = 15.0, norm_constant: float = 1.0,
                 agg_norm: float = 1.0, group_size: int = 8, checkpoint: bool = False,
                 coords_range_split: bool = True, sin_embedding: bool = False,
                 zero_mean_velocity: bool = False, layout: str = "pairs"):
        super().__init__(spec, context_dim)
        self.zero_mean_velocity = bool(zero_mean_velocity)
        self.net = DenseEGNN(spec.width + 1 + context_dim, spec.width, hidden=hidden,
                             layers=layers, sublayers=sublayers, coords=spec.has_coords,
                             attention=attention, tanh=tanh, coords_range=coords_range,
                             norm_constant=norm_constant, agg_norm=agg_norm,
                             group_size=group_size, checkpoint=checkpoint,
                             coords_range_split=coords_range_split,
                             sin_embedding=sin_embedding, layout=layout)

    def forward(self, h: torch.Tensor, x: torch.Tensor | None, mask: torch.Tensor,
                t: torch.Tensor, context: torch.Tensor | None = None):
        """``h: [B, N, F]``, ``x: [B, N, 3]``, ``mask: [B, N]``, ``t: [B]`` in [0, 1],
        ``context: [B, C]`` -> ``(out_h [B, N, F], out_x [B, N, 3] or None)``."""
        B, N = mask.shape
        if h.shape != (B, N, self.spec.width) or t.shape != (B,):
            raise ValueError(f"egnn expects h [B, N, {self.spec.width}], mask [B, N], t [B]; "
                             f"got {tuple(h.shape)}, {tuple(mask.shape)}, {tuple(t.shape)}")
        self._check_context(context, B)
        parts = [h, t.to(h.dtype)[:, None, None].expand(B, N, 1)]
        if context is not None:
            parts.append(context.to(h.dtype)[:, None, :].expand(B, N, self.context_dim))
        node = torch.cat(parts, dim=-1) * mask.to(h.dtype)[..., None]
        out_h, x_out = self.net(node, x if self.spec.has_coords else None, mask)
        if x_out is None:
            return out_h, None
        if self.zero_mean_velocity:
            return out_h, remove_mean(x_out - x, mask)
        return out_h, (x_out - x) * mask.to(x.dtype)[..., None]
