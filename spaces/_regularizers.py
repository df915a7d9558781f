"""Latent regularisers shared by the autoencoder spaces (losses only, no training loop).

* :func:`uniformity_loss` -- Wang & Isola's anti-collapse term on a batch of latents.
"""
from __future__ import annotations

import math

import torch


def uniformity_loss(z: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Wang & Isola's uniformity ``log mean_{i != j} exp(-t |z_i - z_j|^2)`` over a batch
    ``z: [B, D]`` (lower = more spread; an anti-collapse regulariser)."""
    if z.shape[0] < 2:
        return z.new_zeros(())
    sq = torch.cdist(z, z).pow(2)
    off = ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    return torch.logsumexp(-temperature * sq[off], 0) - math.log(int(off.sum()))
