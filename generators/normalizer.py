"""``LatentNormalizer``: the affine map between a space's latent and the generated one.

``normalize="none"`` is the identity. ``"standard"`` fits, on the training latents, a
per-feature mean and standard deviation of ``h`` over real atoms (float64 statistics) and
one isotropic RMS scale for the coordinate columns (no shift: they are zero-CoM already, and
one scale for all three keeps rotation equivariance). The fitted values are buffers, so they
travel with every checkpoint; ``fitted`` records whether :meth:`fit` ran.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layout import LatentLayout

__all__ = ["LatentNormalizer"]


class LatentNormalizer(nn.Module):
    """Per-column ``z_norm = (z - shift) / scale`` for one :class:`LatentLayout`.

    Buffers: ``shift [W]``, ``scale [W]`` (``W = layout.width``), ``fitted`` (bool scalar).
    """

    def __init__(self, layout: LatentLayout, mode: str = "none"):
        super().__init__()
        if mode not in ("none", "standard"):
            raise ValueError(f"normalize must be none or standard, got {mode!r}")
        self.layout, self.mode = layout, mode
        W = layout.width
        self.register_buffer("shift", torch.zeros(W))
        self.register_buffer("scale", torch.ones(W))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(self, z: torch.Tensor, mask: torch.Tensor | None) -> None:
        """Fit on data latents ``z [M, W]`` or ``[M, N, W]`` with ``mask [M, N]``."""
        lay = self.layout
        shift = torch.zeros(lay.width, dtype=torch.float64)
        scale = torch.ones(lay.width, dtype=torch.float64)
        if self.mode == "standard":
            z64 = z.to(torch.float64)
            rows = z64[mask.bool()] if lay.per_atom else z64                # [rows, W]
            h = rows[:, :lay.feat]
            shift[:lay.feat] = h.mean(0)
            scale[:lay.feat] = h.std(0, unbiased=False).clamp_min(1e-6)
            if lay.coords:   # zero-CoM already; one isotropic scale keeps equivariance
                scale[lay.feat:] = rows[:, lay.feat:].pow(2).mean().sqrt().clamp_min(1e-6)
        self.shift.copy_(shift.to(self.shift.dtype))
        self.scale.copy_(scale.to(self.scale.dtype))
        self.fitted.fill_(True)

    def normalize(self, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Data latent -> generated space (masked, zero-CoM kept)."""
        return self.layout.project((z - self.shift) / self.scale, mask)

    def denormalize(self, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Generated space -> data latent."""
        out = z * self.scale + self.shift
        return self.layout.project(out, mask) if self.layout.per_atom else out

    def clip_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``([W], [W])`` image of data values ``[-1, 1]`` in the generated space (features
        only; coordinate columns are unbounded)."""
        lo = (-1 - self.shift) / self.scale
        hi = (1 - self.shift) / self.scale
        if self.layout.coords:
            lo[self.layout.feat:] = -math.inf
            hi[self.layout.feat:] = math.inf
        return lo, hi
