"""Rigid motions of molecules: the symmetry groups, random group elements, Kabsch alignment.

The one place these live: spaces (aligned reconstruction losses), metrics (reconstruction
RMSD, symmetry errors) and the conformance checks all use them. Torch only.

* :data:`SYMMETRY_GROUPS` -- the transforms a :class:`~harness.core.types.LatentSpec`
  declares its behaviour under, in the order symmetry checks draw them.
* :func:`random_rotation` / :func:`random_reflection` -- seeded random group elements.
* :func:`kabsch_rotation`, :func:`aligned_squared_error`, :func:`kabsch_rmsd` -- optimal
  superposition (proper rotations, or any orthogonal matrix with ``allow_reflection``).
"""
from __future__ import annotations

import torch

from harness.core.nn import remove_mean

#: the transforms every symmetry check draws, in this order (one random element each)
SYMMETRY_GROUPS: tuple[str, ...] = ("rotation", "translation", "permutation", "reflection")


def random_rotation(generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """[3, 3] uniformly random proper rotation (QR of a Gaussian matrix, sign-fixed)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.to(dtype)


def random_reflection(generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """[3, 3] mirror across a random plane through the origin (``I - 2 n n^T``)."""
    n = torch.randn(3, generator=generator, dtype=torch.float64)
    n = n / n.norm()
    return (torch.eye(3, dtype=torch.float64) - 2 * torch.outer(n, n)).to(dtype)


def kabsch_rotation(source: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                    allow_reflection: bool = False) -> torch.Tensor:
    """Orthogonal ``R [B, 3, 3]`` minimising ``sum_i |R (s_i - s_mean) - (t_i - t_mean)|^2``
    over real atoms (``source``, ``target``: ``[B, N, 3]`` Å, ``mask``: ``[B, N]``); proper
    rotations, or any orthogonal matrix with ``allow_reflection``. Computed in float64
    without gradient (an aligned loss is stationary in R, so this is exact at the optimum)."""
    with torch.no_grad():
        s = remove_mean(source.double(), mask)
        t = remove_mean(target.double(), mask)
        cov = t.transpose(1, 2) @ s                                  # [B, 3, 3]
        u, _, vh = torch.linalg.svd(cov)
        if not allow_reflection:
            d = torch.sign(torch.linalg.det(u @ vh))
            d = torch.where(d == 0, torch.ones_like(d), d)
            fix = torch.ones(source.shape[0], 3, dtype=torch.float64, device=source.device)
            fix[:, 2] = d
            u = u * fix[:, None, :]
        return (u @ vh).to(source.dtype)


def aligned_squared_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                          allow_reflection: bool = False) -> torch.Tensor:
    """Per-molecule mean squared deviation (Å^2) between ``pred`` and the optimally aligned
    ``target`` (both ``[B, N, 3]``), over real atoms -> ``[B]``. Differentiable in ``pred``;
    invariant to rotating/translating either input (and reflecting, if allowed)."""
    m = mask.to(pred.dtype)
    p = remove_mean(pred, mask)
    t = remove_mean(target.to(pred.dtype), mask)
    counts = m.sum(1).clamp_min(1.0)
    # the unconstrained orthogonal optimum is the better of the proper and improper ones
    rot = kabsch_rotation(t, p, mask, allow_reflection=allow_reflection)  # target -> pred
    t_aligned = t @ rot.transpose(1, 2)
    return (((p - t_aligned) ** 2).sum(-1) * m).sum(1) / counts


def kabsch_rmsd(pos_a: torch.Tensor, pos_b: torch.Tensor, mask: torch.Tensor,
                allow_reflection: bool = False) -> torch.Tensor:
    """``[B]`` RMSD (Å, float64) after optimal superposition of ``pos_b`` onto ``pos_a``
    (both ``[B, N, 3]``, same atom order; ``mask [B, N]`` real atoms). Symmetric in its
    arguments; a mirror image is an error unless ``allow_reflection``."""
    return aligned_squared_error(pos_a.double(), pos_b.double(), mask, allow_reflection).sqrt()
