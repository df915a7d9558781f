"""GeoLDM's latent diffusion objective (Xu et al., 2023, ``EnLatentDiffusion``), pure math on
the harness's latent layout.

GeoLDM diffuses the first stage's per-atom latent ``z = [h, x]`` ``[B, N, k + 3]`` (features
first, zero-CoM 3-vectors last; ``mask [B, N]`` bool) with EDM's machinery
(:mod:`.edm_objective`: gamma form, ``polynomial_2``, KL prior), two differences:

* the clean latent is the encoder mean plus ``sigma_0`` noise, ``z_0 = mu + sigma_0 eps_q``
  with ``sigma_0`` of the diffusion schedule at ``t = 0`` -- no scaling or normalisation of
  the latent (GeoLDM's ``normalize_factors`` are not applied to it);
* ``-log p(z | z_0)`` at ``t = 0`` is the Gaussian error of every column, so with
  ``loss_type = "l2"`` in training every ``t`` in ``0..T`` gives
  ``0.5 |eps - eps_hat|^2 / ((3 + k) N)`` (``N`` the padded atom count).

With a trainable first stage (GeoLDM's released QM9 setting ``--trainable_ae``) GeoLDM adds
the decoder's reconstruction error of ``z_0`` (``spaces._geoldm.GeoLDMAutoencoder.
reconstruction_error``); ``z_0`` is detached there, so the encoder gets no gradient from
either term.
"""
from __future__ import annotations

import torch

from .edm_objective import EpsFn, gamma, kl_prior
from .schedules import NoiseSchedule

__all__ = ["geoldm_latent_z0", "geoldm_latent_l2_loss"]


def geoldm_latent_z0(mean: torch.Tensor, mask: torch.Tensor, eps_q: torch.Tensor,
                     schedule: NoiseSchedule) -> torch.Tensor:
    """``z_0 = mean + sigma_0 eps_q`` ``[B, N, k + 3]`` (``eps_q``: zero-CoM coordinates,
    masked rows zero), as GeoLDM's ``EnLatentDiffusion.forward`` draws it."""
    B = mean.shape[0]
    g0 = gamma(schedule, torch.zeros(B, dtype=torch.long), mean)
    sigma0 = torch.sigmoid(g0).sqrt()[:, None, None]
    return (mean + sigma0 * eps_q) * mask.to(mean.dtype)[..., None]


def geoldm_latent_l2_loss(eps_fn: EpsFn, z0: torch.Tensor, mask: torch.Tensor,
                          t: torch.Tensor, eps: torch.Tensor,
                          schedule: NoiseSchedule) -> torch.Tensor:
    """``[B]`` GeoLDM's latent ``l2`` training loss per molecule (before ``- log p(N)`` and
    the batch mean): ``KL(q(z_T | z_0) || N(0, I)) + 0.5 |eps - eps_hat|^2 / ((3 + k) N)``.

    Args:
        eps_fn: ``eps_fn(z_t [B, N, k + 3], t [B] long) -> [B, N, k + 3]``.
        z0: clean latent (:func:`geoldm_latent_z0`); t: ``[B]`` in ``0..T``;
        eps: ``[B, N, k + 3]`` noise (zero-CoM coordinates, masked rows zero).
    """
    t = t.long()
    g = gamma(schedule, t, z0)
    alpha, sigma = torch.sigmoid(-g).sqrt(), torch.sigmoid(g).sqrt()
    zt = alpha[:, None, None] * z0 + sigma[:, None, None] * eps
    err = ((eps - eps_fn(zt, t)) ** 2).reshape(z0.shape[0], -1).sum(-1)
    return kl_prior(z0, mask, schedule) + 0.5 * err / (z0.shape[-1] * z0.shape[1])
