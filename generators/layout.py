"""How a latent is diffused: packing, masks, zero-centre-of-mass projection, loss normaliser.

A generator sees only a :class:`~harness.core.types.LatentSpec`. :class:`LatentLayout` turns it
into one diffused tensor ``z``:

* ``vector`` latents: ``z = h`` ``[B, D]``; no mask.
* ``per_atom`` latents: ``z = [h, x]`` ``[B, N, F (+ 3)]`` with a ``[B, N]`` atom mask. Padded
  rows are zero in every noise draw, prediction and loss. The coordinate columns are kept in
  the zero centre-of-mass subspace of the real atoms (noise and predictions are projected),
  which has ``(n - 1) * 3`` dimensions; losses divide by ``spec.dim(n)``.
"""
from __future__ import annotations

import torch

from harness.core.nn import remove_mean
from harness.core.types import LatentBatch, LatentSpec

__all__ = ["LatentLayout"]


class LatentLayout:
    """Pure tensor operations for one :class:`LatentSpec` (no state, no weights)."""

    def __init__(self, spec: LatentSpec):
        self.spec = spec
        self.per_atom = spec.kind == "per_atom"
        self.coords = bool(spec.has_coords)
        self.feat = int(spec.width)
        self.width = self.feat + (3 if self.coords else 0)   # last dim of z

    # -- packing --------------------------------------------------------------------------
    def pack(self, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """``h [B, D]`` -> ``z [B, D]``; ``h [B, N, F]``, ``x [B, N, 3]`` -> ``z [B, N, F+3]``."""
        if self.coords:
            if x is None:
                raise ValueError("this latent has coordinates: pass x [B, N, 3]")
            return torch.cat([h, x], dim=-1)
        return h

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inverse of :meth:`pack`: ``(h, x or None)`` (views)."""
        if self.coords:
            return z[..., :self.feat], z[..., self.feat:]
        return z, None

    def to_batch(self, z: torch.Tensor, mask: torch.Tensor | None) -> LatentBatch:
        h, x = self.split(z)
        return LatentBatch(h=h.contiguous(), spec=self.spec,
                           x=None if x is None else x.contiguous(),
                           mask=mask if self.per_atom else None)

    def from_batch(self, batch: LatentBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(z, mask)`` from a :class:`LatentBatch` (coordinates projected to zero CoM)."""
        if self.per_atom:
            z = self.pack(batch.h, batch.x)
            return self.project(z, batch.mask), batch.mask.bool()
        return batch.h, None

    # -- masks and projections ------------------------------------------------------------
    def project(self, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Zero padded rows and move the coordinate columns to zero centre of mass.
        Identity for vector latents. Idempotent."""
        if not self.per_atom:
            return z
        m = mask.to(z.dtype)[..., None]
        if not self.coords:
            return z * m
        h, x = self.split(z)
        return torch.cat([h * m, remove_mean(x, mask)], dim=-1)

    def noise(self, shape: tuple[int, ...], mask: torch.Tensor | None,
              generator: torch.Generator | None = None, device=None,
              dtype=None) -> torch.Tensor:
        """Standard normal noise in the diffused subspace (masked, zero-CoM coordinates)."""
        eps = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return self.project(eps, mask)

    def dims(self, mask: torch.Tensor | None, batch: int | None = None) -> torch.Tensor:
        """``[B]`` diffused degrees of freedom per sample (``spec.dim(n)``)."""
        if not self.per_atom:
            return torch.full((batch,), float(self.feat))
        n = mask.sum(1).to(torch.float32)
        return n * self.feat + ((n - 1).clamp_min(0) * 3 if self.coords else 0.0)

    def sq_error(self, pred: torch.Tensor, target: torch.Tensor,
                 mask: torch.Tensor | None) -> torch.Tensor:
        """``[B]`` sum of squared differences over the diffused entries (``pred`` and
        ``target`` must already lie in the subspace; padded rows are ignored)."""
        d = (pred - target) ** 2
        if not self.per_atom:
            return d.sum(-1)
        return (d * mask.to(d.dtype)[..., None]).sum((1, 2))

    def mse(self, pred: torch.Tensor, target: torch.Tensor,
            mask: torch.Tensor | None) -> torch.Tensor:
        """Per-sample squared error divided by its subspace dimension, averaged: the L2
        diffusion loss (``1`` for ``pred = 0`` against unit noise, in expectation)."""
        dims = self.dims(mask, pred.shape[0]).to(pred.device, pred.dtype)
        return (self.sq_error(pred, target, mask) / dims.clamp_min(1.0)).mean()

    def trim(self, z: torch.Tensor, mask: torch.Tensor | None):
        """Drop atom slots that no sample in the batch uses (per-atom latents)."""
        if not self.per_atom:
            return z, mask
        used = mask.any(0)
        if bool(used.all()):
            return z, mask
        n = int(used.sum())
        if bool(used[:n].all()):
            return z[:, :n], mask[:, :n]
        return z[:, used], mask[:, used]
