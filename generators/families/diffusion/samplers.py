"""Reverse-diffusion samplers (pure math, no weights, no randomness of their own).

A sampler is built for one schedule and a number of model evaluations, then driven by the
caller's loop (``DiffusionGenerator.sample`` writes it out)::

    sampler = SAMPLERS.get("ddim")(schedule, steps=50, eta=0.0)
    z = noise                                              # z_T
    for t, s in sampler.pairs():                           # t > s, ending at s = 0
        eps, x0 = model_prediction(z, t)                   # both parametrisations
        noise = fresh_noise() if sampler.needs_noise(s) else None
        z = sampler.step(z, t, s, eps=eps, x0=x0, noise=noise)
    # z is now the sample (the last step returns the model's x0 prediction)

Every sampler visits a decreasing subset of the integer timesteps ``T .. 0`` of the schedule
(``timesteps``), so it works with any training discretisation. The subset is spread
``uniform`` in t or uniformly in log-SNR (``logsnr``, the default of the deterministic
samplers): with eps-prediction, ``x0 = (z - sigma eps) / alpha`` amplifies the model's error
by ``alpha_s / alpha_T`` on the first step, and t-uniform few-step grids on schedules whose
``alpha_T`` is ~0 (``polynomial_2``: 3e-3, ``cosine``: 5e-5) make that factor 10-1000. All update rules are linear
combinations of ``z``, ``eps``, ``x0`` and ``noise``: masks and zero-centre-of-mass
projections that hold for those inputs hold for the output.

Built-in samplers (``SAMPLERS`` registry):

* ``ddpm`` — ancestral sampling from the posterior ``q(z_s | z_t, x0)`` (Ho et al., 2020),
  generalised to skipped steps; stochastic. Default: every step (``T`` evaluations).
* ``ddim`` — Song et al. (2021); ``eta = 0`` is deterministic, ``eta = 1`` equals ``ddpm``.
* ``dpm_solver++`` — DPM-Solver++(2M) (Lu et al., 2022), a second-order multistep solver of
  the probability-flow ODE in data-prediction form; deterministic, good in 10-25 steps.
* ``edm`` — EDM's ancestral sampler in its gamma form, every step stochastic down to
  ``z_0``, then EDM's final ``p(x | z_0)`` step (one more evaluation: NFE = steps + 1).

Each diffusion sampler uses NFE = ``steps`` model evaluations (``Sampler.nfe``; ``edm``:
``steps + 1``). The same registry holds the ODE samplers of flow generators (``euler``, ``midpoint``, ``heun``,
``dopri5``; ``generators/families/flow/samplers.py``), marked ``family = "flow"``; :func:`make_sampler`
refuses them.
"""
from __future__ import annotations

import math

import torch

from harness.core.registry import SAMPLERS

from .schedules import NoiseSchedule

__all__ = ["Sampler", "DDPMSampler", "DDIMSampler", "DPMSolverPP2MSampler",
           "EDMAncestralSampler", "make_sampler",
           "spaced_timesteps", "SPACINGS"]


class Sampler:
    """Base class.

    Args:
        schedule: the noise schedule the model was trained with.
        steps: number of model evaluations (timesteps visited); None -> ``default_steps``
            (``T`` when that is None). Clamped to ``T``.
        eta: stochasticity (DDIM only; other samplers reject ``eta != 0``).
        spacing: how the visited timesteps are spread: ``uniform`` in t, or ``logsnr``
            (uniform in ``log(alpha / sigma)``; spends steps where the signal-to-noise ratio
            changes, and keeps the first step away from the ill-conditioned ``alpha ~ 0``
            end). Default: the sampler's ``default_spacing``.
    """

    name = "base"
    family = "diffusion"               # which generator family can drive it
    default_steps: int | None = None   # None: one evaluation per training timestep
    #: NFE = a * steps + b (``generators.nfe.steps_for_nfe``); None: no fixed NFE
    nfe_rule: tuple[int, int] | None = (1, 0)
    default_spacing = "uniform"

    def __init__(self, schedule: NoiseSchedule, steps: int | None = None, eta: float = 0.0,
                 spacing: str | None = None):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        if steps is None:
            steps = self.default_steps or schedule.T
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{self.name}: steps must be a positive int, got {steps!r}")
        if eta < 0:
            raise ValueError(f"{self.name}: eta must be >= 0, got {eta}")
        spacing = spacing or self.default_spacing
        if spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        self.schedule, self.eta, self.spacing = schedule, float(eta), spacing
        self.steps = min(steps, schedule.T)
        self.timesteps = spaced_timesteps(schedule, self.steps, spacing)   # [steps+1], T..0
        ac = schedule.alphas_cumprod                                   # float64 tables
        self._a = ac.sqrt()
        self._s = (1 - ac).clamp_min(0).sqrt()
        self.reset()

    @property
    def nfe(self) -> int:
        """Model evaluations per trajectory: one per visited timestep."""
        return self.steps

    def reset(self) -> None:
        """Forget multistep history (called before a new trajectory)."""

    def pairs(self) -> list[tuple[int, int]]:
        """``(t, s)`` transitions, ``t > s``, from ``T`` down to ``s = 0``."""
        ts = self.timesteps.tolist()
        return list(zip(ts[:-1], ts[1:]))

    def needs_noise(self, s: int) -> bool:
        """Whether :meth:`step` into timestep ``s`` consumes fresh noise."""
        return False

    def step(self, z: torch.Tensor, t: int, s: int, *, eps: torch.Tensor, x0: torch.Tensor,
             noise: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        """Move ``z = z_t`` to ``z_s`` given the model's ``eps`` and ``x0`` predictions
        (consistent: ``z = alpha_t x0 + sigma_t eps``). Shapes are arbitrary and equal."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps}, eta={self.eta}, {self.schedule})"


SPACINGS = ("uniform", "logsnr")


def spaced_timesteps(schedule: NoiseSchedule, steps: int, spacing: str = "uniform") -> torch.Tensor:
    """``steps + 1`` distinct integer timesteps from ``T`` down to 0 (``[steps + 1]`` long).

    ``uniform``: evenly spaced in t. ``logsnr``: ``t = T .. 1`` evenly spaced in log-SNR
    (nearest integer timesteps, made strictly decreasing), then 0.
    """
    T = schedule.T
    steps = min(steps, T)
    if spacing == "uniform" or steps == T:
        ts = torch.linspace(T, 0, steps + 1, dtype=torch.float64).round().long()
        return torch.unique_consecutive(ts)
    lam = schedule.log_snr(torch.arange(T + 1), torch.float64)          # increasing as t falls
    targets = torch.linspace(float(lam[T]), float(lam[1]), steps, dtype=torch.float64)
    # nearest timestep in 1..T for each target; lam[1..T] is decreasing in t
    cand = lam[1:].flip(0)                                               # t = T .. 1
    pos = torch.searchsorted(cand.contiguous(), targets).clamp(1, T - 1)
    left, right = cand[pos - 1], cand[pos]
    pos = torch.where((targets - left).abs() <= (right - targets).abs(), pos - 1, pos)
    ts = (T - pos).tolist()                                              # decreasing-ish
    for k in range(1, steps):     # strictly decreasing, leaving room for the rest
        ts[k] = min(ts[k], ts[k - 1] - 1)
    for k in range(steps - 1, -1, -1):
        ts[k] = max(ts[k], steps - k)
    return torch.tensor(ts + [0], dtype=torch.long)


@SAMPLERS.register("ddpm")
class DDPMSampler(Sampler):
    """Ancestral sampling: ``z_s ~ q(z_s | z_t, x0_hat)``; the last step returns ``x0_hat``."""

    name = "ddpm"

    def __init__(self, schedule: NoiseSchedule, steps: int | None = None, eta: float = 0.0,
                 spacing: str | None = None):
        if eta != 0:
            raise ValueError("ddpm has no eta; use sampler='ddim' with eta (eta=1 is ddpm)")
        super().__init__(schedule, steps, 0.0, spacing)

    def needs_noise(self, s: int) -> bool:
        return s > 0

    def step(self, z, t, s, *, eps, x0, noise=None):
        if s == 0:
            return x0
        if noise is None:
            raise ValueError("ddpm needs fresh noise for every step but the last")
        a_t, s_t, a_s, s_s = (float(v) for v in (self._a[t], self._s[t], self._a[s], self._s[s]))
        a_ts = a_t / a_s                                   # alpha_{t|s}
        var_ts = s_t ** 2 - a_ts ** 2 * s_s ** 2           # sigma_{t|s}^2
        c_z = a_ts * s_s ** 2 / s_t ** 2
        c_x = a_s * var_ts / s_t ** 2
        std = math.sqrt(max(var_ts * s_s ** 2 / s_t ** 2, 0.0))
        return c_z * z + c_x * x0 + std * noise


@SAMPLERS.register("ddim")
class DDIMSampler(Sampler):
    """DDIM: ``z_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c noise`` with
    ``c = eta sqrt(sigma_s^2 / sigma_t^2 (1 - alpha_t^2 / alpha_s^2))``."""

    name = "ddim"
    default_steps = 100
    default_spacing = "logsnr"

    def needs_noise(self, s: int) -> bool:
        return self.eta > 0 and s > 0

    def step(self, z, t, s, *, eps, x0, noise=None):
        if s == 0:
            return x0
        a_t, s_t, a_s, s_s = (float(v) for v in (self._a[t], self._s[t], self._a[s], self._s[s]))
        c = self.eta * math.sqrt(max(s_s ** 2 / s_t ** 2 * (1 - a_t ** 2 / a_s ** 2), 0.0))
        out = a_s * x0 + math.sqrt(max(s_s ** 2 - c ** 2, 0.0)) * eps
        if c > 0:
            if noise is None:
                raise ValueError("ddim with eta > 0 needs fresh noise")
            out = out + c * noise
        return out


@SAMPLERS.register("dpm_solver++")
class DPMSolverPP2MSampler(Sampler):
    """DPM-Solver++(2M): with ``lambda = log(alpha / sigma)``, ``h = lambda_s - lambda_t``,
    ``z_s = (sigma_s / sigma_t) z_t - alpha_s expm1(-h) D``, where ``D = x0_t`` on the first
    step and ``(1 + 1/(2r)) x0_t - 1/(2r) x0_prev`` (``r = h_prev / h``) afterwards. The last
    step (to ``t = 0``) returns ``x0_hat``."""

    name = "dpm_solver++"
    default_steps = 20
    default_spacing = "logsnr"

    def __init__(self, schedule: NoiseSchedule, steps: int | None = None, eta: float = 0.0,
                 spacing: str | None = None):
        if eta != 0:
            raise ValueError("dpm_solver++ is deterministic; eta must be 0")
        super().__init__(schedule, steps, 0.0, spacing)
        self._lam = torch.log(self._a) - torch.log(self._s)

    def reset(self) -> None:
        self._prev: tuple[torch.Tensor, float] | None = None   # (x0 at previous t, h_prev)

    def step(self, z, t, s, *, eps, x0, noise=None):
        if s == 0:
            self.reset()
            return x0
        if t == self.schedule.T and self._prev is not None:
            self.reset()  # a new trajectory started without reset()
        h = float(self._lam[s] - self._lam[t])
        a_s = float(self._a[s])
        ratio = float(self._s[s] / self._s[t])
        d = x0
        if self._prev is not None:
            x0_prev, h_prev = self._prev
            r = h_prev / h
            d = (1 + 0.5 / r) * x0 - (0.5 / r) * x0_prev
        self._prev = (x0, h)
        return ratio * z - a_s * math.expm1(-h) * d


@SAMPLERS.register("edm")
class EDMAncestralSampler(Sampler):
    """EDM's sampler (Hoogeboom et al., 2022): ancestral steps ``z_s ~ p(z_s | z_t)`` written
    in EDM's gamma form, ``mu = z_t / alpha_{t|s} - sigma_{t|s}^2 / (alpha_{t|s} sigma_t) eps``,
    ``std = sigma_{t|s} sigma_s / sigma_t`` (``sigma_{t|s}^2 = -expm1(softplus(gamma_s) -
    softplus(gamma_t))``), with noise on every step down to ``s = 0``; then one more
    evaluation at ``t = 0`` for EDM's ``p(x | z_0)``: ``x0_hat + (sigma_0 / alpha_0) noise``.
    The final pair is ``(0, 0)``; a generator that knows its layout keeps ``z_0``'s feature
    columns there (EDM reads atom types and charges from ``z_0``, coordinates from
    ``p(x | z_0)``). NFE = ``steps + 1``; default ``steps = T`` (EDM's)."""

    name = "edm"
    nfe_rule = (1, 1)
    #: the (0, 0) pair samples p(x | z_0); feature columns stay those of z_0
    final_keeps_features = True

    def __init__(self, schedule: NoiseSchedule, steps: int | None = None, eta: float = 0.0,
                 spacing: str | None = None):
        if eta != 0:
            raise ValueError("edm has no eta")
        super().__init__(schedule, steps, 0.0, spacing)
        ac = schedule.alphas_cumprod
        self._g = (torch.log1p(-ac) - torch.log(ac)).tolist()          # gamma, float64

    @property
    def nfe(self) -> int:
        return self.steps + 1

    def pairs(self) -> list[tuple[int, int]]:
        return super().pairs() + [(0, 0)]

    def needs_noise(self, s: int) -> bool:
        return True

    def step(self, z, t, s, *, eps, x0, noise=None):
        if noise is None:
            raise ValueError("edm needs fresh noise for every step")
        if t == s == 0:
            return x0 + math.exp(0.5 * self._g[0]) * noise
        g_t, g_s = self._g[t], self._g[s]
        sp = lambda v: max(v, 0.0) + math.log1p(math.exp(-abs(v)))   # softplus
        lsig = lambda v: -sp(-v)                                      # log sigmoid
        var_ts = -math.expm1(sp(g_s) - sp(g_t))
        a_ts = math.exp(0.5 * (lsig(-g_t) - lsig(-g_s)))
        sig_t, sig_s = math.exp(0.5 * lsig(g_t)), math.exp(0.5 * lsig(g_s))
        mu = z / a_ts - (var_ts / a_ts / sig_t) * eps
        return mu + (math.sqrt(var_ts) * sig_s / sig_t) * noise


def make_sampler(name: str, schedule: NoiseSchedule, steps: int | None = None,
                 eta: float = 0.0, spacing: str | None = None) -> Sampler:
    """Build a diffusion sampler by registry name (a KeyError lists the valid names; the
    ODE samplers of flow generators are refused with the same kind of error)."""
    cls = SAMPLERS.get(name)
    if getattr(cls, "family", "diffusion") != "diffusion":
        valid = [n for n in SAMPLERS.names()
                 if getattr(SAMPLERS.get(n), "family", "diffusion") == "diffusion"]
        raise KeyError(f"sampler {name!r} is an ODE sampler of flow generators; valid samplers "
                       f"for diffusion: {', '.join(valid)}")
    return cls(schedule, steps=steps, eta=eta, spacing=spacing)



def probe(cls: type, steps: int = 10, n: int = 4000, seed: int = 0):
    """Drive sampler class ``cls`` with the exact model of ``N(0, I)`` data in 2-D (the
    posterior mean ``x0 = alpha_t z_t`` under a VP schedule), as a conformance probe:
    returns ``(samples [n, 2], nfe reported, steps used)``; the samples should be ``N(0, I)``."""
    from .schedules import make_schedule

    schedule = make_schedule("polynomial_2", 500)
    smp = cls(schedule, steps=steps)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    for t, s in smp.pairs():
        a = schedule.alpha(torch.tensor([t]), torch.float64).item()
        sig = schedule.sigma(torch.tensor([t]), torch.float64).item()
        x0 = a * z
        eps = (z - a * x0) / max(sig, 1e-12)
        noise = torch.randn(z.shape, generator=g, dtype=z.dtype) if smp.needs_noise(s) else None
        z = smp.step(z, t, s, eps=eps, x0=x0, noise=noise)
    return z, smp.nfe, smp.steps
