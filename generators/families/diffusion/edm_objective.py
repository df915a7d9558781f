"""EDM's objectives (Hoogeboom et al., 2022, "Equivariant Diffusion for Molecule Generation
in 3D"), written for the harness's latent layout: pure math, no weights.

Latents are per-atom ``z = [h, x]`` ``[B, N, F + 3]`` (features first, coordinates last;
:class:`generators.layout.LatentLayout`) with ``mask [B, N]`` bool; the feature columns are
``F_cat`` scaled one-hot types, then (``include_charges``) one scaled atomic number, as the
``raw`` space encodes them (``type_scale = 1 / norm_values[1]``,
``charge_scale = 1 / norm_values[2]``, ``coord_scale = norm_values[0]``). EDM writes the
same quantities in the order ``[x, h_cat, h_int]``; sums over columns do not depend on it.

Notation: ``gamma_t = log(sigma_t^2 / alpha_t^2)`` (EDM's ``gamma``, = ``-log_snr``) from the
schedule's float64 table, integer timesteps ``t`` in ``0..T``, ``s = t - 1``.
``eps_fn(z [B, N, W], t [B] long) -> [B, N, W]`` is the network's noise prediction
(projected: masked rows zero, zero-CoM coordinates).

* :func:`edm_l2_loss` -- EDM's training objective with ``loss_type = "l2"``: per sample
  ``KL(q(z_T|x) || N(0, I)) + (t == 0 ? -log p(x, h | z_0) : 0.5 |eps - eps_hat|^2 / ((3 + F) N))``
  with ``t ~ U{0..T}`` and ``N`` the padded atom count of the batch (EDM divides by it).
* :func:`edm_vlb` -- EDM's evaluation NLL (``t0_always``): ``KL prior + T * L_t + L_0 -
  log-constants - log |det normalisation| - log p(N)``, in nats per molecule.
* :func:`log_p_n` -- ``log p(N)`` from an atom-count histogram, EDM's ``DistributionNodes``.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .schedules import NoiseSchedule

__all__ = ["gamma", "edm_l2_loss", "edm_vlb", "kl_prior", "log_p_n",
           "log_pxh_given_z0", "EDM_NORM_VALUES"]

#: EDM's QM9 ``normalize_factors``: coordinates, one-hot types, atomic numbers
EDM_NORM_VALUES = (1.0, 4.0, 10.0)

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def gamma(schedule: NoiseSchedule, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``gamma_t = log(1 - alpha_t^2) - log(alpha_t^2)`` at integer ``t [B]`` -> ``[B]`` in
    ``like``'s dtype/device (computed from the float64 table)."""
    a2 = schedule.alphas_cumprod.to(like.device)[t.long().to(like.device)]
    return (torch.log1p(-a2) - torch.log(a2)).to(like.dtype)


def _sum(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1).sum(-1)


def _cdf(v: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(v / math.sqrt(2)))


def _dims(mask: torch.Tensor, dtype) -> torch.Tensor:
    """``[B]`` degrees of freedom of zero-CoM coordinates, ``(n - 1) * 3``."""
    return (mask.sum(1).to(dtype) - 1) * 3


def kl_prior(z0: torch.Tensor, mask: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """``[B]`` KL between ``q(z_T | z0)`` and ``N(0, I)`` on the diffused subspace (features:
    every real entry; coordinates: ``(n - 1) * 3`` dimensions)."""
    B, F = z0.shape[0], z0.shape[-1] - 3
    g = gamma(schedule, torch.full((B,), schedule.T, dtype=torch.long), z0)
    alpha, sigma = torch.sigmoid(-g).sqrt(), torch.sigmoid(g).sqrt()
    mu = alpha[:, None, None] * z0
    m = mask.to(z0.dtype)[..., None]
    s = sigma[:, None, None]
    kl_h = _sum((torch.log(1 / s) + 0.5 * (s ** 2 + mu[..., :F] ** 2) - 0.5) * m)
    d = _dims(mask, z0.dtype)
    kl_x = d * torch.log(1 / sigma) + 0.5 * (d * sigma ** 2 + _sum(mu[..., F:] ** 2)) - 0.5 * d
    return kl_x + kl_h


def _error(eps: torch.Tensor, eps_hat: torch.Tensor, denom) -> torch.Tensor:
    return _sum((eps - eps_hat) ** 2) / denom


def log_pxh_given_z0(z0: torch.Tensor, zt: torch.Tensor, eps: torch.Tensor,
                     eps_hat: torch.Tensor, mask: torch.Tensor, gamma_0: torch.Tensor,
                     include_charges: bool, norm_values: Sequence[float],
                     denom=1.0, epsilon: float = 1e-10) -> torch.Tensor:
    """``[B]`` ``log p(x, h | z_0)`` without its ``sigma_0`` constants (EDM's
    ``log_pxh_given_z0_without_constants``): a Gaussian on the coordinates (its error
    divided by ``denom``, as EDM's l2 training does), the integral of ``N(z_h, sigma_0)`` over
    each integer bin for the atomic number and over ``[0.5, 1.5]`` for each one-hot entry,
    normalised over the types. ``gamma_0 [B]`` is the gamma of ``zt``'s timestep."""
    F = z0.shape[-1] - 3
    n_cat = F - int(include_charges)
    m = mask.to(z0.dtype)
    log_px = -0.5 * _error(eps[..., F:], eps_hat[..., F:], denom)
    sigma_0 = torch.sigmoid(gamma_0).sqrt()[:, None, None]
    s_cat, s_int = sigma_0 * norm_values[1], sigma_0 * norm_values[2]
    log_p = log_px
    if include_charges:
        h_int = torch.round(z0[..., n_cat:F] * norm_values[2])
        centred = h_int - zt[..., n_cat:F] * norm_values[2]
        lp = torch.log(_cdf((centred + 0.5) / s_int) - _cdf((centred - 0.5) / s_int) + epsilon)
        log_p = log_p + _sum(lp * m[..., None])
    onehot = z0[..., :n_cat] * norm_values[1]
    centred = zt[..., :n_cat] * norm_values[1] - 1
    lp = torch.log(_cdf((centred + 0.5) / s_cat) - _cdf((centred - 0.5) / s_cat) + epsilon)
    lp = lp - torch.logsumexp(lp, dim=2, keepdim=True)
    return log_p + _sum(lp * onehot * m[..., None])


def _log_constants(mask: torch.Tensor, gamma_0: torch.Tensor) -> torch.Tensor:
    """``[B]`` the ``sigma_0`` constants of ``log p(x | z_0)``."""
    return _dims(mask, gamma_0.dtype) * (-0.5 * gamma_0 - 0.5 * math.log(2 * math.pi))


def _noised(schedule, z0, t, eps):
    g = gamma(schedule, t, z0)
    alpha, sigma = torch.sigmoid(-g).sqrt(), torch.sigmoid(g).sqrt()
    return alpha[:, None, None] * z0 + sigma[:, None, None] * eps, g


def edm_l2_loss(eps_fn: EpsFn, z0: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
                eps: torch.Tensor, schedule: NoiseSchedule, include_charges: bool = True,
                norm_values: Sequence[float] = EDM_NORM_VALUES) -> torch.Tensor:
    """``[B]`` EDM's ``l2`` training loss per molecule (before ``- log p(N)`` and the batch
    mean EDM applies; see the module docstring). ``t [B]`` in ``0..T``, ``eps`` noise in the
    diffused subspace, shaped like ``z0``."""
    t = t.long()
    zt, g_t = _noised(schedule, z0, t, eps)
    eps_hat = eps_fn(zt, t)
    denom = z0.shape[-1] * z0.shape[1]                    # (3 + F) * padded N
    loss_t = 0.5 * _error(eps, eps_hat, denom)
    loss_0 = -log_pxh_given_z0(z0, zt, eps, eps_hat, mask, g_t, include_charges,
                               norm_values, denom)
    return kl_prior(z0, mask, schedule) + torch.where(t == 0, loss_0, loss_t)


def edm_vlb(eps_fn: EpsFn, z0: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
            eps: torch.Tensor, eps_0: torch.Tensor, schedule: NoiseSchedule,
            include_charges: bool = True, norm_values: Sequence[float] = EDM_NORM_VALUES,
            log_pn: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """EDM's negative log-likelihood estimate (its evaluation mode), per molecule.

    Args:
        t: ``[B]`` timesteps in ``1..T`` (EDM draws them uniformly); ``eps`` / ``eps_0``:
            noise for ``z_t`` and for ``z_0`` (diffused subspace, shaped like ``z0``).
        log_pn: ``[B]`` ``log p(N)`` (:func:`log_p_n`); None leaves it out.

    Returns:
        ``{"nll": [B], "kl_prior", "diffusion" (T * L_t), "loss_0", "neg_log_constants",
        "delta_log_px", "log_pn"}``; ``nll = kl_prior + diffusion + neg_log_constants +
        loss_0 - delta_log_px - log_pn`` (nats).
    """
    t = t.long()
    B = z0.shape[0]
    zt, g_t = _noised(schedule, z0, t, eps)
    g_s = gamma(schedule, (t - 1).clamp_min(0), z0)
    err = _error(eps, eps_fn(zt, t), 1.0)
    diffusion = schedule.T * 0.5 * torch.expm1(g_t - g_s) * err
    zeros = torch.zeros(B, dtype=torch.long, device=z0.device)
    z_0, g_0 = _noised(schedule, z0, zeros, eps_0)
    loss_0 = -log_pxh_given_z0(z0, z_0, eps_0, eps_fn(z_0, zeros), mask, g_0,
                               include_charges, norm_values)
    neg_const = -_log_constants(mask, g_0)
    delta = -_dims(mask, z0.dtype) * math.log(norm_values[0])
    kl = kl_prior(z0, mask, schedule)
    lp = torch.zeros_like(kl) if log_pn is None else log_pn.to(kl)
    nll = kl + diffusion + neg_const + loss_0 - delta - lp
    return {"nll": nll, "kl_prior": kl, "diffusion": diffusion, "loss_0": loss_0,
            "neg_log_constants": neg_const, "delta_log_px": delta, "log_pn": lp}


def log_p_n(hist: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    """``[B]`` ``log p(N = n_atoms)`` under the histogram ``hist [K]`` (counts of molecules
    with ``k`` atoms): ``log(count / total + 1e-30)``, as EDM's ``DistributionNodes``."""
    hist = hist.detach().to(torch.float64)
    hist = torch.cat([hist, hist.new_zeros(max(0, int(n_atoms.max()) + 1 - hist.numel()))])
    p = hist / hist.sum()
    return torch.log(p[n_atoms.long().cpu()] + 1e-30)
