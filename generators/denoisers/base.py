"""Denoiser base class and shared pieces (time embedding).

A denoiser is an ``nn.Module`` that knows no schedule: it maps a noisy latent, a diffusion
time ``t`` in ``[0, 1]`` (``timestep / T``) and an optional context vector to a prediction
of the same shape (the generator decides whether that is eps, x0 or v).

Two call signatures, chosen by the latent kind:

* ``vector`` latents: ``forward(h [B, D], t [B], context [B, C] | None) -> [B, D]``
* ``per_atom`` latents: ``forward(h [B, N, F], x [B, N, 3] | None, mask [B, N] bool, t [B],
  context [B, C] | None) -> (out_h [B, N, F], out_x [B, N, 3] | None)``; padded rows are
  zero, ``out_x`` is translation invariant and rotates with ``x`` (equivariant backends).

Constructors take ``(spec: LatentSpec, context_dim: int = 0, **hyperparameters)``; a backend
registers itself with ``@DENOISERS.register(name)`` in its own file.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from harness.core.types import LatentSpec

__all__ = ["Denoiser", "sinusoidal_embedding"]


class Denoiser(nn.Module):
    """Base class. Subclasses set ``kinds`` (latent kinds they accept); the symmetry of a
    backend's outputs is asserted by tests (tests/test_denoisers.py), not declared here."""

    kinds: tuple[str, ...] = ()

    def __init__(self, spec: LatentSpec, context_dim: int = 0):
        super().__init__()
        if not isinstance(spec, LatentSpec):
            raise TypeError(f"spec must be a LatentSpec, got {type(spec).__name__}")
        if spec.kind not in self.kinds:
            name = getattr(type(self), "registry_name", type(self).__name__)
            raise ValueError(f"denoiser {name!r} handles {' / '.join(self.kinds)} latents, "
                             f"not {spec.kind!r}")
        if not isinstance(context_dim, int) or context_dim < 0:
            raise ValueError(f"context_dim must be an int >= 0, got {context_dim!r}")
        self.spec, self.context_dim = spec, context_dim

    def _check_context(self, context: torch.Tensor | None, batch: int) -> None:
        if self.context_dim and (context is None or context.shape != (batch, self.context_dim)):
            got = None if context is None else tuple(context.shape)
            raise ValueError(f"this denoiser needs context [B, {self.context_dim}], got {got}")
        if not self.context_dim and context is not None:
            raise ValueError("this denoiser was built with context_dim=0; pass context=None")


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0,
                         scale: float = 1000.0) -> torch.Tensor:
    """Transformer-style features of ``t: [B]`` in ``[0, 1]`` (scaled by ``scale``) ->
    ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / half)
    args = (t.float() * scale)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb.to(t.dtype if t.is_floating_point() else torch.get_default_dtype())


# every class registered as a denoiser must subclass Denoiser
from harness.core.registry import DENOISERS as _DENOISERS  # noqa: E402

_DENOISERS.set_base(Denoiser)
