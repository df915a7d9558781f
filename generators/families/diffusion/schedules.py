"""Discrete-time variance-preserving noise schedules (pure math, no weights).

A schedule fixes ``alpha_bar[t] = alpha_t^2`` for integer timesteps ``t = 0 .. T``; ``t = 0``
is (almost) clean data and ``t = T`` (almost) pure noise. Every schedule here is variance
preserving: ``z_t = alpha_t x + sigma_t eps`` with ``sigma_t^2 = 1 - alpha_t^2``. Training
draws ``t`` uniformly from ``1 .. T``; samplers (``samplers.py`` beside this file) may visit any
decreasing subset of ``T .. 0``, so a model trained with one ``T`` can be sampled in few steps.

Built-in schedules (``SCHEDULES`` registry):

* ``polynomial_2`` — EDM: ``alpha^2(t) = (1 - (t/T)^2)^2``; the ratios
  ``alpha^2(t) / alpha^2(t-1)`` are clipped at >= 0.001 (cumulative product recomputed), then
  ``alpha^2 <- (1 - 2s) alpha^2 + s`` with ``s = 1e-5``. Any ``polynomial_<p>`` works too.
* ``cosine`` — Nichol & Dhariwal (2021): ``alpha^2(t) = f(t)/f(0)``,
  ``f(t) = cos^2(((t/T) + s) / (1 + s) * pi / 2)``, ``s = 0.008``, betas clipped at 0.999.
* ``linear`` — DDPM / LDM-3DG: betas linear in ``[beta_start, beta_end] = [1e-4, 0.02]``
  over ``T`` steps (LDM-3DG uses ``T = 500``), ``alpha^2(t) = prod_{k <= t} (1 - beta_k)``.

The tables are kept in float64 (``alphas_cumprod``); :meth:`NoiseSchedule.alpha` and friends
return the dtype/device asked for.
"""
from __future__ import annotations

import math
import re

import torch

from harness.core.registry import SCHEDULES

__all__ = ["NoiseSchedule", "PolynomialSchedule", "CosineSchedule", "LinearSchedule",
           "make_schedule"]


class NoiseSchedule:
    """Base class: subclasses fill ``alphas_cumprod`` (``[T + 1]`` float64, decreasing).

    Attributes:
        T: number of diffusion steps (timesteps ``0 .. T``).
        alphas_cumprod: ``[T + 1]`` float64, ``alpha_t^2``.
    """

    name = "base"

    def __init__(self, timesteps: int):
        if not isinstance(timesteps, int) or timesteps < 1:
            raise ValueError(f"timesteps must be a positive int, got {timesteps!r}")
        self.T = timesteps
        self._tables: dict = {}
        self.alphas_cumprod = self._alphas_cumprod().to(torch.float64)
        ac = self.alphas_cumprod
        if ac.shape != (timesteps + 1,) or not torch.isfinite(ac).all():
            raise RuntimeError(f"{type(self).__name__} produced an invalid table")
        if (ac <= 0).any() or (ac > 1).any() or (ac[1:] > ac[:-1]).any():
            raise RuntimeError(f"{type(self).__name__}: alpha^2 must decrease within (0, 1]")

    def _alphas_cumprod(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- lookups (t: integer tensor of any shape) ----------------------------------------
    def _lookup(self, name: str, t, dtype, device) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.long, device=device)
        if t.device.type == "cpu" and ((t < 0).any() or (t > self.T).any()):
            raise ValueError(f"timesteps must lie in 0..{self.T}, got {t.min()}..{t.max()}")
        dtype = dtype or torch.get_default_dtype()
        key = (name, t.device, dtype)
        table = self._tables.get(key)
        if table is None:
            ac = self.alphas_cumprod
            full = {"alpha2": ac, "alpha": ac.sqrt(), "sigma": (1 - ac).clamp_min(0).sqrt(),
                    "log_snr": torch.log(ac) - torch.log1p(-ac)}[name]
            table = self._tables[key] = full.to(device=t.device, dtype=dtype)
        return table[t]

    def alpha2(self, t, dtype=None, device=None) -> torch.Tensor:
        """``alpha_t^2`` at integer timesteps ``t`` (int or long tensor, any shape; result has
        ``t``'s shape, on ``device`` (default: ``t``'s) in ``dtype`` (default float))."""
        return self._lookup("alpha2", t, dtype, device)

    def alpha(self, t, dtype=None, device=None) -> torch.Tensor:
        """Signal scale ``alpha_t``."""
        return self._lookup("alpha", t, dtype, device)

    def sigma(self, t, dtype=None, device=None) -> torch.Tensor:
        """Noise scale ``sigma_t = sqrt(1 - alpha_t^2)``."""
        return self._lookup("sigma", t, dtype, device)

    def log_snr(self, t, dtype=None, device=None) -> torch.Tensor:
        """``log(alpha_t^2 / sigma_t^2)`` (``+inf`` where ``sigma_t = 0``)."""
        return self._lookup("log_snr", t, dtype, device)

    @property
    def betas(self) -> torch.Tensor:
        """``[T]`` float64 per-step betas ``1 - alpha^2(t) / alpha^2(t - 1)``, t = 1..T."""
        ac = self.alphas_cumprod
        return 1 - ac[1:] / ac[:-1]

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``z_t = alpha_t x0 + sigma_t noise``; ``t: [B]`` broadcast over ``x0: [B, ...]``."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        a = self.alpha(t, x0.dtype, x0.device).view(shape)
        s = self.sigma(t, x0.dtype, x0.device).view(shape)
        return a * x0 + s * noise

    def __repr__(self) -> str:
        return f"{type(self).__name__}(T={self.T})"


@SCHEDULES.register("polynomial_2")
class PolynomialSchedule(NoiseSchedule):
    """EDM's ``polynomial_<power>`` schedule (see module docstring)."""

    name = "polynomial_2"

    def __init__(self, timesteps: int = 1000, power: float = 2.0, precision: float = 1e-5,
                 clip_min: float = 1e-3):
        if power <= 0 or not 0 <= precision < 0.5 or not 0 < clip_min <= 1:
            raise ValueError(f"polynomial schedule: bad power={power}, precision={precision} "
                             f"or clip_min={clip_min}")
        self.power, self.precision, self.clip_min = power, precision, clip_min
        self.name = f"polynomial_{power:g}"
        super().__init__(timesteps)

    def _alphas_cumprod(self) -> torch.Tensor:
        T = self.T
        t = torch.arange(T + 1, dtype=torch.float64)
        a2 = (1 - (t / T) ** self.power) ** 2
        # clip per-step ratios (prepend alpha^2 = 1 before t = 0) for numerical stability
        ratios = (a2 / torch.cat([a2.new_ones(1), a2[:-1]])).clamp(self.clip_min, 1.0)
        a2 = torch.cumprod(ratios, 0)
        s = self.precision
        return (1 - 2 * s) * a2 + s


@SCHEDULES.register("cosine")
class CosineSchedule(NoiseSchedule):
    """Improved-DDPM cosine schedule (see module docstring)."""

    name = "cosine"

    def __init__(self, timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999):
        self.s, self.max_beta = s, max_beta
        super().__init__(timesteps)

    def _alphas_cumprod(self) -> torch.Tensor:
        t = torch.arange(self.T + 1, dtype=torch.float64) / self.T
        f = torch.cos((t + self.s) / (1 + self.s) * math.pi / 2) ** 2
        a2 = f / f[0]
        betas = (1 - a2[1:] / a2[:-1]).clamp(0, self.max_beta)
        return torch.cat([a2.new_ones(1), torch.cumprod(1 - betas, 0)])


@SCHEDULES.register("linear")
class LinearSchedule(NoiseSchedule):
    """DDPM's linear betas (LDM-3DG: ``1e-4 .. 0.02``, ``T = 500``)."""

    name = "linear"

    def __init__(self, timesteps: int = 500, beta_start: float = 1e-4, beta_end: float = 0.02):
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(f"linear schedule needs 0 < beta_start <= beta_end < 1, got "
                             f"{beta_start}, {beta_end}")
        self.beta_start, self.beta_end = beta_start, beta_end
        super().__init__(timesteps)

    def _alphas_cumprod(self) -> torch.Tensor:
        betas = torch.linspace(self.beta_start, self.beta_end, self.T, dtype=torch.float64)
        return torch.cat([betas.new_ones(1), torch.cumprod(1 - betas, 0)])


def make_schedule(name: str, timesteps: int, **kwargs) -> NoiseSchedule:
    """Build a schedule by registry name; ``polynomial_<p>`` selects EDM's schedule with any
    power ``p``. Unknown names raise a KeyError listing the valid ones."""
    match = re.fullmatch(r"polynomial_(\d+(?:\.\d+)?)", name)
    if match and name not in SCHEDULES:
        return PolynomialSchedule(timesteps, power=float(match.group(1)), **kwargs)
    cls = SCHEDULES.get(name)
    if cls is PolynomialSchedule and match:
        kwargs.setdefault("power", float(match.group(1)))
    return cls(timesteps, **kwargs)
