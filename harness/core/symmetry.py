"""The one symmetry check: does a space's latent transform as its ``LatentSpec`` declares?

For each group g of :data:`~harness.core.geometry.SYMMETRY_GROUPS` a random element is drawn
(seeded): a uniform rotation, a translation ~ N(0, (5 Å)^2) per axis and molecule, a random
permutation of each molecule's atoms, a mirror across a random plane. The error is, per
molecule, ``||encode(g x) - rho(g) encode(x)|| / ||encode(x)||`` where ``rho(g)`` is what the
spec declares: per-atom latents permute with the atoms; declared-equivariant coordinates
``x`` rotate / reflect / translate; everything else is expected to stay unchanged (so a
``"none"`` declaration measures how much the latent moves). Used by the ``latent`` metric
(mean over molecules) and the conformance checks (max over molecules).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Sequence

import torch

from harness.core.geometry import SYMMETRY_GROUPS, random_reflection, random_rotation
from harness.core.types import LatentBatch, MolBatch


def transform_batch(batch: MolBatch, kind: str, generator: torch.Generator
                    ) -> tuple[MolBatch, dict[str, Any]]:
    """Apply a random transform of ``kind`` to every molecule; returns the new batch and
    the parameters (``matrix`` [3, 3], ``shift`` [B, 1, 3] Å or ``perm`` [B, N])."""
    mask = batch.mask
    if kind in ("rotation", "reflection"):
        mat = (random_rotation if kind == "rotation" else random_reflection)(generator, batch.pos.dtype)
        return replace(batch, pos=(batch.pos @ mat.T) * mask[..., None]), {"matrix": mat}
    if kind == "translation":
        shift = 5.0 * torch.randn(len(batch), 1, 3, generator=generator, dtype=torch.float64)
        shift = shift.to(batch.pos.dtype)
        return replace(batch, pos=(batch.pos + shift) * mask[..., None]), {"shift": shift}
    if kind == "permutation":
        keys = torch.rand(mask.shape, generator=generator, dtype=torch.float64)
        keys = torch.where(mask, keys, torch.full_like(keys, 2.0))  # padding stays last
        perm = keys.argsort(dim=1)                                  # [B, N]
        take = lambda t: torch.gather(t, 1, perm.view(*perm.shape, *([1] * (t.dim() - 2))).expand_as(t))
        changes: dict[str, Any] = {"atom_types": take(batch.atom_types), "pos": take(batch.pos),
                                   "mask": take(batch.mask)}
        if batch.charges is not None:
            changes["charges"] = take(batch.charges)
        if batch.bonds is not None:
            rows = torch.gather(batch.bonds, 1, perm[:, :, None].expand_as(batch.bonds))
            changes["bonds"] = torch.gather(rows, 2, perm[:, None, :].expand_as(batch.bonds))
        return replace(batch, **changes), {"perm": perm}
    raise ValueError(f"unknown transform {kind!r}; valid: {SYMMETRY_GROUPS}")


def expected_latent(latent: LatentBatch, kind: str, params: dict[str, Any]) -> LatentBatch:
    """``rho(g) z``: how the space's declared symmetry says the latent should transform."""
    spec = latent.spec
    declared = spec.symmetries.get(kind, "none")
    if spec.kind == "vector":
        return latent
    h, x, mask = latent.h, latent.x, latent.mask
    if kind == "permutation":
        perm = params["perm"][:, : h.shape[1]]
        h = torch.gather(h, 1, perm[..., None].expand_as(h))
        mask = torch.gather(mask, 1, perm)
        if x is not None:
            x = torch.gather(x, 1, perm[..., None].expand_as(x))
    elif x is not None and declared == "equivariant":
        if kind in ("rotation", "reflection"):
            x = x @ params["matrix"].to(x.dtype).T
        elif kind == "translation":
            x = x + params["shift"].to(x.dtype)
        x = x * mask[..., None]
    return LatentBatch(h=h, spec=spec, x=x, mask=mask)


def latent_vectors(latent: LatentBatch) -> torch.Tensor:
    """[B, D'] float64 per-molecule latent (padding zeroed)."""
    return latent.flat().to(torch.float64)


def symmetry_errors(encode: Callable[[MolBatch], LatentBatch], batch: MolBatch,
                    generator: torch.Generator, kinds: Sequence[str] = SYMMETRY_GROUPS,
                    reduce: str = "mean") -> dict[str, float]:
    """Relative latent error per transform ``kind`` (see the module docstring), reduced over
    molecules with ``"mean"`` or ``"max"``; NaN where the latent's shape changed (e.g. a
    vector latent whose width depends on the atom order). Draws from ``generator`` in the
    order of ``kinds``, one transform each."""
    if reduce not in ("mean", "max"):
        raise ValueError(f"symmetry_errors: reduce must be 'mean' or 'max', got {reduce!r}")
    base = encode(batch)
    norm = latent_vectors(base).norm(dim=1).clamp(min=1e-12)
    out: dict[str, float] = {}
    for kind in kinds:
        moved, params = transform_batch(batch, kind, generator)
        got = latent_vectors(encode(moved))
        want = latent_vectors(expected_latent(base, kind, params))
        if got.shape != want.shape:
            out[kind] = float("nan")
            continue
        rel = (got - want).norm(dim=1) / norm
        out[kind] = float(rel.mean() if reduce == "mean" else rel.max())
    return out
