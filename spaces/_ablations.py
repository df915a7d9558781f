"""Ablation controls of the invariant space on generated latents (``Space.ablations``).

They separate what the learned latent contributes from what the decoder adds by itself
(LDM-3DG's geometry decoder refines RDKit ETKDG starts, and its topology decoder always
emits a valid graph):

* ``conformer_seed`` — the decoded topology with its seeded ETKDG start, refiner skipped:
  the geometry RDKit gives with no learned geometry at all;
* ``zgeo_zeroed`` — ``z_geo`` set to 0 before decoding: the refiner without the latent's
  geometry information;
* ``zgeo_shuffled`` — ``z_geo`` permuted across samples (seeded): each topology decoded
  with another sample's geometry code.

If the samples score like these, the geometry half of the latent carries little.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch


def invariant_ablations(space: Any, latent: Any, seed: int = 0) -> dict[str, Any]:
    h = latent.h
    t = space.topo_width
    zeroed = h.clone()
    zeroed[:, t:] = 0
    perm = torch.randperm(len(h), generator=torch.Generator().manual_seed(seed + 404))
    shuffled = h.clone()
    shuffled[:, t:] = h[perm, t:]
    return {
        "conformer_seed": space.decode(latent, refine=False),
        "zgeo_zeroed": space.decode(replace(latent, h=zeroed)),
        "zgeo_shuffled": space.decode(replace(latent, h=shuffled)),
    }
