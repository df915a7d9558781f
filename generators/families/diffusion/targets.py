"""Gaussian-diffusion math with no weights: prediction targets and their conversions (the
diffusers split: the LightningModule only calls these; guidance, clipping and the
conditioning input every family shares are in ``generators/guidance.py``).

Notation (variance preserving, ``schedules.py`` beside this file): ``z_t = alpha_t x0 + sigma_t
eps``. The network predicts one of

* ``eps`` — the noise,
* ``x0`` — the clean latent,
* ``v`` — ``alpha_t eps - sigma_t x0`` (Salimans & Ho, 2022),

and every sampler consumes the consistent pair ``(eps, x0)``. The training loss is the L2
error of that prediction, normalised per sample by the diffused dimension
(:meth:`generators.layout.LatentLayout.mse`: padded atoms excluded, zero-CoM coordinates
count ``(n - 1) * 3``), i.e. uniform weighting over timesteps ``t ~ U{1..T}``.

Shapes: ``z, out, eps, x0: [B, ...]``; ``a, s: [B, 1, ...]`` (broadcastable coefficients).
"""
from __future__ import annotations

import torch

from .config import PREDICTIONS
from .schedules import NoiseSchedule

__all__ = ["PREDICTIONS", "coefficients", "to_eps_x0", "eps_from_x0", "training_target"]


def coefficients(schedule: NoiseSchedule, t: torch.Tensor, like: torch.Tensor):
    """``(alpha_t, sigma_t)`` at integer timesteps ``t: [B]``, shaped ``[B, 1, ...]`` to
    broadcast against ``like: [B, ...]`` (its dtype and device)."""
    shape = (-1,) + (1,) * (like.dim() - 1)
    a = schedule.alpha(t, like.dtype, like.device).view(shape)
    s = schedule.sigma(t, like.dtype, like.device).view(shape)
    return a, s


def to_eps_x0(prediction: str, out: torch.Tensor, z: torch.Tensor, a: torch.Tensor,
              s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Network output in parametrisation ``prediction`` -> ``(eps, x0)`` at ``z = z_t``."""
    if prediction == "eps":
        return out, (z - s * out) / a
    if prediction == "x0":
        return (z - a * out) / s, out
    if prediction == "v":
        return s * z + a * out, a * z - s * out
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def eps_from_x0(z: torch.Tensor, x0: torch.Tensor, a: torch.Tensor, s: torch.Tensor):
    """The noise consistent with ``x0`` at ``z = z_t`` (after clipping ``x0``)."""
    return (z - a * x0) / s


def training_target(prediction: str, z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
                    schedule: NoiseSchedule) -> torch.Tensor:
    """What the network should output for clean ``z0`` noised with ``eps`` at ``t``."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return z0
    a, s = coefficients(schedule, t, z0)
    return a * eps - s * z0                                            # v
