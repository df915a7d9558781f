"""``PrecondConfig``: the ``generator.precond`` section (the one source of its defaults and
value rules; see ``objective.py`` for what each knob means mathematically)."""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PrecondConfig", "SIGMA_SAMPLINGS", "LOSS_WEIGHTINGS", "GRIDS", "ARCSIN_MIX_MAX"]

SIGMA_SAMPLINGS = ("lognormal", "arcsin")
LOSS_WEIGHTINGS = ("karras", "uniform")
GRIDS = ("karras", "arcsin")
#: the arcsin grid ``(1 - m) u + m a(u)`` is strictly increasing in ``u`` only for
#: ``m < 1 / (1 - 2 / pi)`` (``a'(u) >= 2 / pi``)
ARCSIN_MIX_MAX = 1.0 / (1.0 - 2.0 / math.pi)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class PrecondConfig:
    """Knobs of the preconditioned sigma-parameterised family (``family: precond``;
    Karras et al., 2022). Units: sigma is the noise standard deviation in the generator's
    (normalised) latent units."""

    #: standard deviation of the data (latents are unit scale or normalised: 1)
    sigma_data: float = 1.0
    #: noise range of sampling (the grid runs sigma_max -> sigma_min -> 0) and of the
    #: network's time input (log sigma mapped onto [0, 1])
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    #: training noise levels: ``lognormal`` (ln sigma ~ N(p_mean, p_std^2), Karras) or
    #: ``arcsin`` (ln sigma = ln sigma_min + g(u) (ln sigma_max - ln sigma_min), u ~ U(0, 1),
    #: g the arcsin map of the sampling grid: the continuous version of VEDA's grid)
    sigma_sampling: str = "lognormal"
    p_mean: float = -1.2
    p_std: float = 1.2
    #: loss weight lambda(sigma): ``karras`` ((sigma^2 + sigma_data^2) / (sigma sigma_data)^2,
    #: unit weight on the network output) or ``uniform`` (plain L2 of the denoised latent)
    loss_weighting: str = "karras"
    #: sampling grid: ``karras`` (rho-spaced) or ``arcsin`` (VEDA's arcsin allocation of
    #: ln sigma); ``rho`` shapes the first, ``arcsin_mix`` the second (VEDA: 2)
    grid: str = "karras"
    rho: float = 7.0
    arcsin_mix: float = 2.0
    #: stochastic churn (Karras Alg. 2); s_churn = 0: deterministic. s_tmax None = no bound
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float | None = None
    s_noise: float = 1.0
    #: feed the previous denoised estimate back to the network (Chen et al., 2022)
    self_conditioning: bool = False

    def __post_init__(self) -> None:
        def bad(key: str, why: str, value):
            raise ValueError(f"config key 'generator.precond.{key}' {why}, got {value!r}")

        for key in ("sigma_data", "sigma_min", "sigma_max", "p_std", "rho", "s_noise"):
            v = getattr(self, key)
            if not _num(v) or not v > 0:
                bad(key, "must be a finite number > 0", v)
        if not self.sigma_max > self.sigma_min:
            bad("sigma_max", f"must be > sigma_min ({self.sigma_min})", self.sigma_max)
        if not _num(self.p_mean):
            bad("p_mean", "must be a finite number", self.p_mean)
        if self.sigma_sampling not in SIGMA_SAMPLINGS:
            bad("sigma_sampling", f"must be one of {', '.join(SIGMA_SAMPLINGS)}", self.sigma_sampling)
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            bad("loss_weighting", f"must be one of {', '.join(LOSS_WEIGHTINGS)}", self.loss_weighting)
        if self.grid not in GRIDS:
            bad("grid", f"must be one of {', '.join(GRIDS)}", self.grid)
        if not _num(self.arcsin_mix) or not 0 <= self.arcsin_mix < ARCSIN_MIX_MAX:
            bad("arcsin_mix", f"must be in [0, {ARCSIN_MIX_MAX:.3f}) (a monotone grid)",
                self.arcsin_mix)
        for key in ("s_churn", "s_tmin"):
            v = getattr(self, key)
            if not _num(v) or v < 0:
                bad(key, "must be a finite number >= 0", v)
        if self.s_tmax is not None and (not _num(self.s_tmax) or not self.s_tmax > self.s_tmin):
            bad("s_tmax", f"must be null or a number > s_tmin ({self.s_tmin})", self.s_tmax)
        if not isinstance(self.self_conditioning, bool):
            bad("self_conditioning", "must be true or false", self.self_conditioning)
