"""Flow-matching math with no weights: the linear interpolant, prediction conversions,
training-time sampling and minibatch optimal-transport coupling (rectified flow).

Convention (Lipman et al., 2023; Liu et al., 2023): ``t`` runs from ``0`` (noise) to ``1``
(data),

    z_t = (1 - t) x0 + t x1,    x0 ~ N(0, I) (masked, zero-CoM),   x1 = a data latent,

and the network regresses the constant velocity ``u = x1 - x0`` (``velocity``) or the data
point ``x1`` (``x1``; ``v = (x1_hat - z_t) / (1 - t)``). The loss is the L2 error of that
prediction normalised by the diffused dimension, as for diffusion (``LatentLayout.mse``).
Every quantity is a linear combination of masked, zero-CoM tensors, so an ODE solve built
from these stays in the subspace. Denoisers see the *noise level* ``1 - t`` (1 = pure
noise), the same convention as diffusion's ``timestep / T``.

Shapes: ``z, x0, x1, out: [B, D]`` or ``[B, N, W]``; ``t: [B]`` (float in [0, 1]).
"""
from __future__ import annotations

import numpy as np
import torch

from .config import FLOW_PREDICTIONS

__all__ = ["MIN_GAP", "interpolate", "velocity_target", "to_x1", "to_velocity",
           "sample_time", "kabsch_align", "ot_couple"]

#: smallest ``1 - t`` used when converting an ``x1`` estimate to a velocity
MIN_GAP = 1e-3


def _bc(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(like.dtype).view((-1,) + (1,) * (like.dim() - 1))


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``z_t = (1 - t) x0 + t x1``."""
    tb = _bc(t, x1)
    return (1 - tb) * x0 + tb * x1


def velocity_target(prediction: str, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """What the network should output: ``x1 - x0`` (velocity) or ``x1``."""
    if prediction == "velocity":
        return x1 - x0
    if prediction == "x1":
        return x1
    raise ValueError(f"flow prediction must be one of {FLOW_PREDICTIONS}, got {prediction!r}")


def to_x1(prediction: str, out: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Network output -> data estimate ``x1_hat = z + (1 - t) v``."""
    return z + (1 - _bc(t, z)) * out if prediction == "velocity" else out


def to_velocity(prediction: str, out: torch.Tensor, z: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
    """Network output -> velocity (``x1`` estimates: ``(x1_hat - z) / max(1 - t, MIN_GAP)``)."""
    if prediction == "velocity":
        return out
    return (out - z) / (1 - _bc(t, z)).clamp_min(MIN_GAP)


def sample_time(batch: int, mode: str, generator: torch.Generator, device=None,
                mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """``[B]`` training times: ``uniform`` on [0, 1), or ``logit_normal``
    (``sigmoid(n)``, ``n ~ N(mean, std^2)``; Esser et al., 2024: more weight mid-path)."""
    if mode == "uniform":
        return torch.rand(batch, generator=generator, device=device)
    if mode == "logit_normal":
        n = torch.randn(batch, generator=generator, device=device)
        return torch.sigmoid(mean + std * n)
    raise ValueError(f"time_sampling must be uniform or logit_normal, got {mode!r}")


def _rotations(H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Kabsch on cross-covariances ``H = P^T Q`` ``[..., 3, 3]``: proper rotations ``R``
    minimising ``|P R^T - Q|^2`` and the trace term ``tr(R H)`` (``[...]``)."""
    U, S, Vh = torch.linalg.svd(H.to(torch.float64))
    d = torch.sign(torch.linalg.det(Vh.transpose(-1, -2) @ U.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = Vh.transpose(-1, -2) @ D @ U.transpose(-1, -2)
    trace = S[..., 0] + S[..., 1] + d * S[..., 2]
    return R, trace


def kabsch_align(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Rotate zero-CoM point sets ``p [K, N, 3]`` onto ``q [K, N, 3]`` (padded rows zero):
    ``p R^T`` with the proper rotation minimising the squared distance (the one Kabsch of
    :mod:`harness.core.geometry`; ``_rotations`` above only scores candidate pairs)."""
    from harness.core.geometry import kabsch_rotation

    mask = (p != 0).any(-1) | (q != 0).any(-1)
    R = kabsch_rotation(p.to(torch.float64), q.to(torch.float64), mask)
    return (p.to(torch.float64) @ R.transpose(-1, -2)).to(p.dtype)


def ot_couple(x0: torch.Tensor, x1: torch.Tensor, mask: torch.Tensor | None,
              feat: int, coords: bool) -> torch.Tensor:
    """Minibatch OT coupling (Tong et al., 2024; Pooladian et al., 2023): reorder the noise
    ``x0`` so that the batch's total squared distance to the data ``x1`` is minimal
    (``scipy.optimize.linear_sum_assignment``, exact).

    Per-atom latents pair molecules only with noise drawn for the same atom mask; with
    coordinates (columns ``feat:``) the cost of a pair is taken after the optimal rotation of
    the noise onto the molecule (both zero-CoM: Kabsch), and the chosen noise is returned
    rotated — the isotropic noise law is rotation invariant, so this is still a coupling of
    the same marginals. Atom permutations are not aligned. Deterministic.

    Returns: the coupled noise, same shape as ``x0``.
    """
    from scipy.optimize import linear_sum_assignment

    if mask is None:                      # vector latents: one group
        cost = torch.cdist(x1.to(torch.float64), x0.to(torch.float64)) ** 2
        _, col = linear_sum_assignment(cost.cpu().numpy())
        return x0[torch.as_tensor(col, device=x0.device)]
    out = x0.clone()
    keys, groups = torch.unique(mask, dim=0, return_inverse=True)
    for g in range(len(keys)):
        idx = torch.nonzero(groups == g).flatten()
        if len(idx) < 2 and not coords:
            continue
        a, b = x1[idx].to(torch.float64), x0[idx].to(torch.float64)   # data, noise [k, N, W]
        k = len(idx)
        ha, hb = a[..., :feat].reshape(k, -1), b[..., :feat].reshape(k, -1)
        cost = torch.cdist(ha, hb) ** 2 if feat else a.new_zeros(k, k)
        if coords:
            xa, xb = a[..., feat:], b[..., feat:]
            H = torch.einsum("jna,inb->ijab", xb, xa)          # [data i, noise j, 3, 3]
            _, trace = _rotations(H)
            sq = (xa ** 2).sum((1, 2))[:, None] + (xb ** 2).sum((1, 2))[None, :]
            cost = cost + (sq - 2 * trace).clamp_min(0)
        _, col = linear_sum_assignment(cost.cpu().numpy()) if k > 1 else (None, np.zeros(1, int))
        pick = idx[torch.as_tensor(col, device=idx.device)]
        chosen = x0[pick]
        if coords:
            chosen = torch.cat([chosen[..., :feat],
                                kabsch_align(chosen[..., feat:], x1[idx][..., feat:])], -1)
        out[idx] = chosen
    return out

