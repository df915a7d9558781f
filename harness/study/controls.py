"""Controls: what a space's decoder makes without the trained generator, and its ceiling.

A space's row means something only beside these (scored with the same suite, the same
number of molecules and the same interval rules as its samples):

* ``prior`` — latents from the generator's own prior: standard normal noise in the diffused
  subspace (masked, zero-CoM coordinates), mapped through the generator's normaliser exactly
  as a finished trajectory is (bounded features clamped to [-1, 1]); per-atom latents take
  their atom counts from the training histogram. It is "a generator that learned nothing".
* ``shuffled`` — the training latents' marginals with every dimension shuffled
  independently across molecules (per-atom latents: every feature/coordinate channel drawn
  independently from the pool of training atoms, atom counts from the training
  histogram, coordinates re-centred). It keeps each dimension's distribution and destroys
  their joint structure.
* ``reconstruction`` — ``decode(encode(test molecules))``: the ceiling the space allows.

**Lift** = samples - control, per metric, with the interval of the difference
(:func:`metrics.intervals.difference_interval`); a lift whose interval contains 0 is within
noise. Controls only decode, so they are cheap; ``controls: false`` turns them off.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from harness.core.types import LatentBatch

CONTROLS = ("prior", "shuffled", "reconstruction")
#: the metrics whose lift the report shows
LIFT_KEYS = ("quality", "edm.validity", "edm.valid_unique", "edm.mol_stability",
             "edm.atom_stability", "dist.atom_type_tv", "dist.bond_type_tv", "dist.bond_length_w1",
             "fcd")


@torch.no_grad()
def prior_latents(gen: Any, n: int, seed: int) -> LatentBatch:
    """``n`` latents from the generator's prior (see the module docstring)."""
    lay = gen.layout
    g = torch.Generator().manual_seed(int(seed) * 7919 + 101)
    mask = None
    if lay.per_atom:
        counts = gen.prior.draw(n, g)
        N = int(counts.max())
        mask = torch.arange(N)[None] < counts[:, None]
        shape = (n, N, lay.width)
    else:
        shape = (n, lay.width)
    z = lay.noise(shape, mask, generator=g)
    z = gen.normalizer.denormalize(z.to(gen.device), None if mask is None else mask.to(gen.device)).cpu()
    if gen.spec.bounded:
        z[..., :lay.feat] = z[..., :lay.feat].clamp(-1, 1)
    z = lay.project(z, mask)
    return lay.to_batch(z, mask)


@torch.no_grad()
def shuffled_latents(train: LatentBatch, n: int, seed: int) -> LatentBatch:
    """``n`` latents with each dimension drawn independently from the training marginals."""
    g = torch.Generator().manual_seed(int(seed) * 7919 + 202)
    spec = train.spec
    if spec.kind == "vector":
        h = train.h
        rows = torch.randint(len(h), (n, h.shape[1]), generator=g)
        return LatentBatch(h=torch.gather(h, 0, rows), x=None, mask=None, spec=spec)
    mask = train.mask
    counts_pool = mask.sum(1)
    counts = counts_pool[torch.randint(len(counts_pool), (n,), generator=g)]
    N = int(counts.max())
    new_mask = torch.arange(N)[None] < counts[:, None]
    atoms_h = train.h[mask]                                   # [A, F] pool of training atoms
    h = torch.gather(atoms_h, 0, torch.randint(len(atoms_h), (n * N, atoms_h.shape[1]), generator=g))
    h = h.view(n, N, -1) * new_mask[..., None]
    x = None
    if train.x is not None:
        atoms_x = train.x[mask]
        x = torch.gather(atoms_x, 0, torch.randint(len(atoms_x), (n * N, 3), generator=g)).view(n, N, 3)
        x = x * new_mask[..., None]
        x = x - (x.sum(1, keepdim=True) / counts[:, None, None]) * new_mask[..., None]
    return LatentBatch(h=h, x=x, mask=new_mask, spec=spec)


def lift(values: dict[str, float], intervals: dict[str, list[float]],
         control_values: dict[str, float], control_intervals: dict[str, list[float]]
         ) -> dict[str, dict[str, Any]]:
    """Per metric of :data:`LIFT_KEYS`: ``{"lift", "interval", "within_noise"}``."""
    from metrics.intervals import difference_interval, within_noise

    out = {}
    for key in LIFT_KEYS:
        a, b = values.get(key, math.nan), control_values.get(key, math.nan)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b)):
            continue
        ci = difference_interval(a, intervals.get(key), b, control_intervals.get(key))
        out[key] = {"lift": a - b, "interval": ci, "within_noise": within_noise(ci)}
    return out


def reconstruction_batch(space: Any, test: Any, n: int, index: np.ndarray | None = None):
    """``decode(encode(first n test molecules))`` (or of the molecules ``index``) as a
    MolBatch."""
    batch = test.batch(np.arange(min(n, len(test))) if index is None else index)
    with torch.no_grad():
        return space.decode(space.encode(batch))
