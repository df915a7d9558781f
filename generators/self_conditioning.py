"""Self-conditioning shared by the families that use it (Chen et al., 2022): the network
also sees its previous estimate of the clean latent.

:class:`SelfConditioned` wraps a denoiser built for ``width + extra`` invariant input
features: the extra features are the self-conditioning input (zeros when none) and the
extra outputs are dropped, so every denoiser works unchanged and equivariance is kept.
:func:`sc_features` turns an estimate into that invariant input (vector latents: the
estimate; per-atom: its features and, with coordinates, each atom's squared distance to the
current state, optionally rescaled).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

__all__ = ["SelfConditioned", "sc_width", "wide_denoiser", "sc_features"]


class SelfConditioned(nn.Module):
    """A denoiser built for ``width + extra`` invariant input features (see module doc)."""

    def __init__(self, inner: nn.Module, feat: int, extra: int, per_atom: bool):
        super().__init__()
        self.inner, self.feat, self.extra, self.per_atom = inner, feat, extra, per_atom

    def forward(self, *args, sc: torch.Tensor | None = None):
        h = args[0]
        if sc is None:
            sc = h.new_zeros(h.shape[:-1] + (self.extra,))
        if self.per_atom:
            _, x, mask, t, ctx = args
            oh, ox = self.inner(torch.cat([h, sc], -1), x, mask, t, ctx)
            return oh[..., :self.feat], ox
        _, t, ctx = args
        return self.inner(torch.cat([h, sc], -1), t, ctx)[..., :self.feat]


def sc_width(layout, enabled: bool) -> int:
    """Extra invariant input features of self-conditioning (0 when disabled)."""
    return (layout.feat + (1 if layout.coords else 0)) if enabled else 0


def wide_denoiser(spec, cls: type, context_dim: int, kwargs: dict, extra: int,
                  per_atom: bool) -> nn.Module:
    """Denoiser ``cls`` built ``extra`` features wider, wrapped in :class:`SelfConditioned`."""
    wide = dataclasses.replace(spec, width=spec.width + extra)
    return SelfConditioned(cls(wide, context_dim=context_dim, **kwargs), spec.width, extra, per_atom)


def sc_features(layout, estimate: torch.Tensor, z: torch.Tensor, mask,
                scale: torch.Tensor | None = None) -> torch.Tensor:
    """Invariant self-conditioning input from a clean-latent ``estimate`` at state ``z``
    (``scale [B]`` multiplies the coordinate gap before squaring)."""
    if not layout.per_atom:
        return estimate
    h_est, x_est = layout.split(estimate)
    feats = [h_est]
    if layout.coords:
        gap = x_est - layout.split(z)[1]
        if scale is not None:
            gap = gap * scale.to(z.dtype).view(-1, 1, 1)
        feats.append((gap ** 2).sum(-1, keepdim=True))
    return torch.cat(feats, -1) * mask.to(z.dtype)[..., None]
