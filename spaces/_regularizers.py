"""Latent regularisers shared by the autoencoder spaces (losses only, no training loop).

* :func:`uniformity_loss` -- Wang & Isola's anti-collapse term on a batch of latents.
* Graph self-supervision (``gssl_weight`` option of the autoencoder spaces; issue 13): an
  InfoNCE term between a molecule's latent and the latent of an augmented view of it in
  which :data:`GSSL_DROP` of its atoms are dropped (GraphCL's node dropping; You et al.,
  NeurIPS 2020) -- cosine similarities at temperature :data:`GSSL_TEMPERATURE`, the other
  molecules of the batch as negatives. :func:`drop_nodes` draws the view of an atom mask,
  :func:`drop_tokens` the same for a SELFIES token sequence, :func:`info_nce` scores it.
  Draws use the global torch RNG (seeded by the training loop); with weight 0 nothing is
  drawn, so results are identical to a space without the option.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: fraction of a molecule's atoms (or SELFIES tokens) dropped in the augmented view
GSSL_DROP = 0.2
#: temperature of the cosine similarities in :func:`info_nce`
GSSL_TEMPERATURE = 0.2


def uniformity_loss(z: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Wang & Isola's uniformity ``log mean_{i != j} exp(-t |z_i - z_j|^2)`` over a batch
    ``z: [B, D]`` (lower = more spread; an anti-collapse regulariser)."""
    if z.shape[0] < 2:
        return z.new_zeros(())
    sq = torch.cdist(z, z).pow(2)
    off = ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    return torch.logsumexp(-temperature * sq[off], 0) - math.log(int(off.sum()))


def info_nce(z: torch.Tensor, z_aug: torch.Tensor, temperature: float = GSSL_TEMPERATURE
             ) -> torch.Tensor:
    """Symmetric InfoNCE between two views ``z, z_aug: [B, D]`` of the same B molecules:
    row i's positive is row i of the other view, its negatives the other B - 1 rows
    (cosine similarity / ``temperature``). 0 for a batch of one; ``log B`` at chance."""
    if z.shape[0] < 2:
        return z.new_zeros(())
    a, b = F.normalize(z, dim=-1), F.normalize(z_aug, dim=-1)
    logits = a @ b.T / temperature                                   # [B, B]
    labels = torch.arange(z.shape[0], device=z.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def drop_nodes(mask: torch.Tensor, fraction: float = GSSL_DROP) -> torch.Tensor:
    """``mask [B, N]`` bool -> the augmented view's mask: per molecule ``floor(fraction * n)``
    uniformly chosen real atoms removed (at least one atom stays). Vectorised."""
    keys = torch.rand(mask.shape, device=mask.device)
    keys = torch.where(mask, keys, torch.full_like(keys, 2.0))      # padding ranks last
    rank = keys.argsort(1).argsort(1)                                # rank among the row
    n = mask.sum(1, keepdim=True)
    n_drop = torch.minimum((fraction * n).floor().long(), (n - 1).clamp_min(0))
    return mask & (rank >= n_drop)


def drop_tokens(tokens: torch.Tensor, eos: int, fraction: float = GSSL_DROP) -> torch.Tensor:
    """``tokens [B, L]`` (``[BOS] t_1 .. t_k [EOS] [PAD]..``, PAD = 0) -> the same layout with
    ``floor(fraction * k)`` uniformly chosen body tokens removed and the rest closed up
    (SELFIES decodes any token string, so the view is still a molecule)."""
    body = (tokens != 0) & (tokens != eos)
    body[:, 0] = False                                               # keep [BOS]
    keep = (tokens != 0) & (~body | drop_nodes(body, fraction))      # dropped body tokens False
    L = tokens.shape[1]
    position = torch.arange(L, device=tokens.device).expand_as(tokens)
    order = (position + L * (~keep).long()).argsort(1)               # kept tokens first, in order
    out = torch.gather(tokens, 1, order)
    return out * torch.gather(keep, 1, order)
