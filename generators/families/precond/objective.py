"""Preconditioned sigma-parameterised diffusion, the math with no weights (Karras et al.,
2022, "Elucidating the Design Space of Diffusion-Based Generative Models", EDM).

Noising (variance exploding): ``x = x0 + sigma n`` with ``n`` masked zero-CoM unit noise
(``LatentLayout.noise``), so ``x`` stays in the diffused subspace. The denoiser is

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))

    c_skip = sd^2 / (sigma^2 + sd^2)       c_out = sigma sd / sqrt(sigma^2 + sd^2)
    c_in   = 1 / sqrt(sigma^2 + sd^2)      c_noise = ln(sigma) / 4      (sd = sigma_data)

so the network's input and its regression target ``(x0 - c_skip x) / c_out`` both have unit
variance at every sigma when the data have standard deviation ``sd``. Identities (tested):
``c_skip + c_out^2 / sd^2 = 1``, ``c_in^2 (sigma^2 + sd^2) = 1``, ``(1 - c_skip)^2 sd^2 +
c_skip^2 sigma^2 = c_out^2`` (the target has unit variance), and ``D -> x`` as ``sigma -> 0``.

Network time. The shared denoisers take ``t`` in ``[0, 1]`` (1 = pure noise), so
``c_noise`` is mapped affinely and monotonically onto it: ``t = (ln sigma - ln sigma_min) /
(ln sigma_max - ln sigma_min)``, clamped to ``[0, 1]`` (:func:`network_time`). This is
Karras's ``c_noise = ln(sigma) / 4`` up to an affine map the network's time embedding
absorbs; the clamp only touches training sigmas outside the sampling range (lognormal
tails: < 0.01 % of draws below ``sigma_min = 0.002``, ~2e-4 above ``sigma_max = 80``).

Training noise levels (:func:`sample_sigma`): ``lognormal`` (``ln sigma ~ N(P_mean,
P_std^2)``, Karras -1.2 / 1.2) or ``arcsin``: ``ln sigma = ln sigma_min + g(u) (ln sigma_max -
ln sigma_min)``, ``u ~ U(0, 1)``, with ``g`` the map of the arcsin grid below. **This is our
definition.** VEDA (Zhang et al., AAAI 2026, arXiv 2511.09568) trains with a log-normal
sigma and uses the arcsin map only for its *sampling* grid; drawing training sigmas through
the same map puts the training density of ``ln sigma`` where the grid puts its steps.

Loss weight lambda(sigma): ``karras`` = ``(sigma^2 + sd^2) / (sigma sd)^2`` = ``1 / c_out^2``,
i.e. unit weight on the network output ``F``; ``uniform`` = 1 (plain L2 of ``D - x0``, i.e.
weight ``c_out^2`` on ``F``). :func:`output_weight` returns ``lambda c_out^2``; the loss is
computed on ``F`` (no cancellation at small sigma).

Sampling grids (:func:`sigma_grid`, ``steps = N``, ``N`` noise levels then 0, so NFE of
Euler = N, of Heun = 2N - 1 as in Karras's Alg. 1):

* ``karras``: ``sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho``.
* ``arcsin`` (VEDA's allocation): ``u_i = 1 - i/(N-1)``, ``a(u) = (2/pi) arcsin(sqrt u)``,
  ``g(u) = (1 - m) u + m a(u)`` (``m = arcsin_mix``, VEDA's code: 2), ``ln sigma_i = ln smin +
  g(u_i) (ln smax - ln smin)``: steps are dense at mid noise and sparse at both ends. VEDA's
  code drops the final ``sigma_min`` point (replaced by 0); we keep Karras's convention of
  ending at ``sigma_min`` then 0 so that both grids give the same NFE for the same steps.
  With few steps its first step is a long jump (10 steps, mix 2: ``80 -> 2.6``), which
  Heun's corrector amplifies (~15x the denoiser's error there): on the 2-D mixture of the
  tests Heun diverges at 10 arcsin steps and matches the karras grid from ~50.

Shapes: ``x, x0: [B, D]`` or ``[B, N, W]``; ``sigma: [B]``.
"""
from __future__ import annotations

import math

import torch

__all__ = ["preconditioning", "network_time", "sample_sigma", "output_weight",
           "sigma_grid", "arcsin_map", "denoise", "target"]


def _bc(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(like.dtype).view((-1,) + (1,) * (like.dim() - 1))


def preconditioning(sigma: torch.Tensor, sigma_data: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(c_skip, c_out, c_in, c_noise)``, each shaped like ``sigma`` (see module docstring)."""
    sd2 = sigma_data ** 2
    total = sigma ** 2 + sd2
    return sd2 / total, sigma * sigma_data / total.sqrt(), total.rsqrt(), sigma.log() / 4


def network_time(sigma: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """``[B]`` denoiser time in ``[0, 1]``: the position of ``ln sigma`` in ``[ln sigma_min,
    ln sigma_max]`` (monotone in ``c_noise``; clamped)."""
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    return ((sigma.log() - lo) / (hi - lo)).clamp(0.0, 1.0)


def arcsin_map(u: torch.Tensor | float, mix: float):
    """``g(u) = (1 - mix) u + mix (2/pi) arcsin(sqrt(u))`` on ``[0, 1]`` (increasing for
    ``mix < 1 / (1 - 2/pi)``; ``g(0) = 0``, ``g(1) = 1``)."""
    if isinstance(u, torch.Tensor):
        return (1 - mix) * u + mix * (2 / math.pi) * torch.arcsin(u.clamp(0, 1).sqrt())
    return (1 - mix) * u + mix * (2 / math.pi) * math.asin(math.sqrt(min(max(u, 0.0), 1.0)))


def sample_sigma(batch: int, cfg, generator: torch.Generator, device=None,
                 dtype=torch.float32) -> torch.Tensor:
    """``[B]`` training noise levels drawn with ``generator`` (``cfg``: a ``PrecondConfig``)."""
    if cfg.sigma_sampling == "lognormal":
        n = torch.randn(batch, generator=generator, device=device, dtype=dtype)
        return (cfg.p_mean + cfg.p_std * n).exp()
    if cfg.sigma_sampling == "arcsin":
        u = torch.rand(batch, generator=generator, device=device, dtype=dtype)
        lo, hi = math.log(cfg.sigma_min), math.log(cfg.sigma_max)
        return (lo + arcsin_map(u, cfg.arcsin_mix) * (hi - lo)).exp()
    raise ValueError(f"sigma_sampling must be lognormal or arcsin, got {cfg.sigma_sampling!r}")


def output_weight(sigma: torch.Tensor, sigma_data: float, weighting: str) -> torch.Tensor:
    """``[B]`` weight ``lambda(sigma) c_out(sigma)^2`` of the squared error of the network
    output ``F`` against its target ``(x0 - c_skip x) / c_out``."""
    if weighting == "karras":
        return torch.ones_like(sigma)
    if weighting == "uniform":
        return sigma ** 2 * sigma_data ** 2 / (sigma ** 2 + sigma_data ** 2)
    raise ValueError(f"loss_weighting must be karras or uniform, got {weighting!r}")


def sigma_grid(steps: int, sigma_min: float, sigma_max: float, grid: str = "karras",
               rho: float = 7.0, arcsin_mix: float = 2.0) -> list[float]:
    """``steps + 1`` decreasing noise levels: ``steps`` levels from ``sigma_max`` to
    ``sigma_min`` (``steps = 1``: ``sigma_max`` only), then 0 (see module docstring)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    out = []
    for i in range(steps):
        f = i / (steps - 1) if steps > 1 else 0.0          # 0 at sigma_max, 1 at sigma_min
        if grid == "karras":
            a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
            out.append((a + f * (b - a)) ** rho)
        elif grid == "arcsin":
            lo, hi = math.log(sigma_min), math.log(sigma_max)
            out.append(math.exp(lo + arcsin_map(1.0 - f, arcsin_mix) * (hi - lo)))
        else:
            raise ValueError(f"grid must be karras or arcsin, got {grid!r}")
    out[0] = float(sigma_max)                             # exact ends (no round-off)
    if steps > 1:
        out[-1] = float(sigma_min)
    return out + [0.0]


def denoise(x: torch.Tensor, out: torch.Tensor, sigma: torch.Tensor,
            sigma_data: float) -> torch.Tensor:
    """``D = c_skip x + c_out F`` from the network output ``out = F`` at ``sigma [B]``."""
    c_skip, c_out, _, _ = preconditioning(sigma, sigma_data)
    return _bc(c_skip, x) * x + _bc(c_out, x) * out


def target(x0: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor,
           sigma_data: float) -> torch.Tensor:
    """What ``F`` should output: ``(x0 - c_skip x) / c_out``."""
    c_skip, c_out, _, _ = preconditioning(sigma, sigma_data)
    return (x0 - _bc(c_skip, x) * x) / _bc(c_out, x)
