"""``mlp``: residual MLP denoiser for vector latents (LDM-3DG's family).

``Linear(D, width)`` -> ``depth`` pre-norm residual blocks (``LayerNorm-Linear-SiLU``, add
the time/context embedding, ``Dropout-Linear``) -> ``Linear(width, D)`` (zero initialised, so
the untrained model predicts 0). The residual stream is never normalised, so the output can
follow the input's scale (at high noise the eps target is almost the input itself). Time: sinusoidal features of ``t`` through
a learned 2-layer MLP; context: a learned linear map added to the time embedding, and
optionally (``context_input > 0``, LDM-3DG's way) a learned ``context_input``-wide projection
of it concatenated to the noisy latent.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.registry import DENOISERS
from harness.core.types import LatentSpec

from .base import Denoiser, sinusoidal_embedding


class _ResBlock(nn.Module):
    def __init__(self, width: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(emb_dim, width)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        r = F.silu(self.fc1(self.norm(x)) + self.emb(emb))
        return x + self.fc2(self.drop(r))


@DENOISERS.register("mlp")
class MLPDenoiser(Denoiser):
    """Residual MLP ``(h [B, D], t [B], context [B, C] | None) -> [B, D]``.

    Args:
        width: hidden width. depth: residual blocks. time_dim: sinusoidal features.
        dropout: inside the blocks (uses the global RNG; checkpoints save its state).
        context_input: width of a learned projection of the context concatenated to the
            input (0: the context enters through the time embedding only).
    """

    kinds = ("vector",)

    def __init__(self, spec: LatentSpec, context_dim: int = 0, width: int = 1024,
                 depth: int = 4, time_dim: int = 128, dropout: float = 0.0,
                 context_input: int = 0):
        super().__init__(spec, context_dim)
        if width < 1 or depth < 0 or time_dim < 2 or not 0 <= dropout < 1 or context_input < 0:
            raise ValueError(f"mlp: bad width={width}, depth={depth}, time_dim={time_dim}, "
                             f"dropout={dropout} or context_input={context_input}")
        D = spec.width
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, width), nn.SiLU(),
                                      nn.Linear(width, width))
        self.context_proj = nn.Linear(context_dim, width) if context_dim else None
        extra = context_input if context_dim else 0
        self.context_in = nn.Linear(context_dim, extra) if extra else None
        self.inp = nn.Linear(D + extra, width)
        self.blocks = nn.ModuleList(_ResBlock(width, width, dropout) for _ in range(depth))
        self.out = nn.Linear(width, D)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, t: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """``h: [B, D]``, ``t: [B]`` in [0, 1], ``context: [B, C]`` -> ``[B, D]``."""
        if h.dim() != 2 or h.shape[1] != self.spec.width or t.shape != h.shape[:1]:
            raise ValueError(f"mlp expects h [B, {self.spec.width}] and t [B], got "
                             f"{tuple(h.shape)} and {tuple(t.shape)}")
        self._check_context(context, h.shape[0])
        emb = self.time_mlp(sinusoidal_embedding(t.to(h.dtype), self.time_dim))
        if self.context_proj is not None:
            emb = emb + self.context_proj(context)
        emb = F.silu(emb)
        x = self.inp(h if self.context_in is None else torch.cat([h, self.context_in(context)], -1))
        for block in self.blocks:
            x = block(x, emb)
        return self.out(x)
