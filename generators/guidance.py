"""Conditioning shared by every generator family (no weights): the denoiser's context input
with its null context, classifier-free guidance, and clipping of a predicted clean latent.

Shapes: ``out_*: [B, ...]``; ``ctx: [B, C]``; ``lo_hi: ([W], [W])``.
"""
from __future__ import annotations

import torch

__all__ = ["guide", "clip_x0", "context_input"]


def guide(out_cond: torch.Tensor, out_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance ``out_u + w (out_c - out_u)`` (``w = 1``: conditional). The
    conversions above are affine in the output, so guiding any parametrisation (or the
    velocity of a flow) is the same as guiding eps."""
    return out_uncond + w * (out_cond - out_uncond)


def clip_x0(x0: torch.Tensor, lo_hi: tuple[torch.Tensor, torch.Tensor], project) -> torch.Tensor:
    """Clamp a predicted clean latent to per-column bounds ``lo_hi = ([W], [W])`` (the
    image of ``[-1, 1]`` under the normaliser; ``+-inf`` for coordinates), then ``project``
    it back into the diffused subspace (masks, zero CoM)."""
    return project(torch.maximum(torch.minimum(x0, lo_hi[1]), lo_hi[0]))


def context_input(ctx: torch.Tensor | None, keep: torch.Tensor | None, batch: int,
                  like: torch.Tensor, width: int) -> torch.Tensor | None:
    """The denoiser's conditioning input ``[B, C + 1] = [ctx * keep, keep]``.

    ``width = C + 1`` (0: unconditional, returns None). ``ctx = None`` gives the null context
    (all zeros) used for the unconditional branch of guidance; ``keep: [B]`` (bool or 0/1)
    drops the context per sample in training (None keeps all)."""
    if not width:
        return None
    if ctx is None:
        return like.new_zeros(batch, width)
    keep = like.new_ones(batch) if keep is None else keep.to(like.dtype)
    return torch.cat([ctx.to(like.dtype) * keep[:, None], keep[:, None]], dim=1)
