"""``GeneratorConfig``: the one definition of every generator knob and its default.

The same frozen dataclass is the ``generator:`` section of a study config (``harness.config``
re-exports it and validates YAML into it), the hyperparameters a generator saves in its
checkpoints (``hparams["config"]``) and what the study builds generators from. The defaults
are those studies have run with (``timesteps: 500``, ``lr: 1e-3``).

Values are checked on construction (``ValueError`` naming the key); registry names
(denoiser, schedule) are checked where the registries are loaded (``harness.config`` and the
generator's constructor). This module imports nothing heavy, so the CLI stays fast.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GeneratorConfig", "FlowConfig", "PREDICTIONS", "NORMALIZATIONS", "FAMILIES",
           "FLOW_PREDICTIONS", "TIME_SAMPLINGS"]

PREDICTIONS = ("eps", "x0", "v")
NORMALIZATIONS = ("none", "standard")
FAMILIES = ("diffusion", "flow")
FLOW_PREDICTIONS = ("velocity", "x1")
TIME_SAMPLINGS = ("uniform", "logit_normal")


@dataclass(frozen=True)
class FlowConfig:
    """Knobs of the flow-matching family (``family: flow``; see ``generators/flow.py``)."""

    #: what the network predicts: the velocity ``x1 - x0`` or the data point ``x1``
    prediction: str = "velocity"
    #: training times: ``uniform`` on [0, 1] or ``logit_normal`` (``sigmoid(N(mean, std))``)
    time_sampling: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    #: minibatch optimal-transport pairing of noise and data (per-atom coordinates are
    #: Kabsch-aligned before pairing; molecules pair only with noise of their own size)
    ot_coupling: bool = False
    #: feed the previous x1 estimate back to the network (Chen et al., 2022)
    self_conditioning: bool = False

    def __post_init__(self) -> None:
        if self.prediction not in FLOW_PREDICTIONS:
            raise ValueError(f"config key 'generator.flow.prediction' must be one of "
                             f"{', '.join(FLOW_PREDICTIONS)}, got {self.prediction!r}")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"config key 'generator.flow.time_sampling' must be one of "
                             f"{', '.join(TIME_SAMPLINGS)}, got {self.time_sampling!r}")
        if not self.logit_std > 0:
            raise ValueError(f"config key 'generator.flow.logit_std' must be > 0, got "
                             f"{self.logit_std!r}")


@dataclass(frozen=True)
class GeneratorConfig:
    """The shared latent generator (see ``generators/``)."""

    #: generator family: ``diffusion`` (Gaussian diffusion) or ``flow`` (flow matching)
    family: str = "diffusion"
    #: "auto" = mlp for vector latents, egnn for per-atom latents
    denoiser: str = "auto"
    #: denoiser options by denoiser name, e.g. {mlp: {width: 512, depth: 4}}
    denoiser_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: diffusion: noise schedule (``polynomial_2``, any ``polynomial_<p>``, ``cosine``, ``linear``)
    schedule: str = "polynomial_2"
    #: diffusion: T of the training discretisation
    timesteps: int = 500
    #: diffusion: what the network predicts: eps, x0 or v
    prediction: str = "eps"
    #: flow matching: prediction, time sampling, OT coupling, self-conditioning
    flow: FlowConfig = field(default_factory=FlowConfig)
    #: "none" (diffuse the latent as the space gives it) or "standard" (per-feature scaling)
    normalize: str = "none"
    #: AdamW (betas 0.9 / 0.999)
    lr: float = 1e-3
    weight_decay: float = 0.0
    #: EMA decay of the sampling weights (0 disables EMA)
    ema_decay: float = 0.999
    #: max gradient norm (0 disables)
    grad_clip: float = 1.0
    batch_size: int = 64
    max_steps: int = 1000
    #: conditioning: property names from the dataset (empty = unconditional)
    context: list[str] = field(default_factory=list)
    #: probability of dropping the context in training (the null context of guidance)
    context_dropout: float = 0.1

    def __post_init__(self) -> None:
        def bad(key: str, why: str):
            raise ValueError(f"config key 'generator.{key}' {why}")

        if isinstance(self.flow, dict):          # from YAML / checkpoints
            object.__setattr__(self, "flow", _flow_from_dict(self.flow))
        if self.family not in FAMILIES:
            bad("family", f"must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        if not isinstance(self.flow, FlowConfig):
            bad("flow", f"must be a mapping of flow options, got {self.flow!r}")
        if self.prediction not in PREDICTIONS:
            bad("prediction", f"must be one of {', '.join(PREDICTIONS)}, got {self.prediction!r}")
        if self.normalize not in NORMALIZATIONS:
            bad("normalize", f"must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if not isinstance(self.timesteps, int) or self.timesteps < 1:
            bad("timesteps", f"must be a positive integer, got {self.timesteps!r}")
        if not self.lr > 0:
            bad("lr", f"must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            bad("weight_decay", f"must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.ema_decay < 1:
            bad("ema_decay", f"must be in [0, 1), got {self.ema_decay!r}")
        if self.grad_clip is not None and self.grad_clip < 0:
            bad("grad_clip", f"must be >= 0 (0 disables), got {self.grad_clip!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            bad("batch_size", f"must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.max_steps, int) or self.max_steps < 0:
            bad("max_steps", f"must be an integer >= 0, got {self.max_steps!r}")
        if not 0 <= self.context_dropout < 1:
            bad("context_dropout", f"must be in [0, 1), got {self.context_dropout!r}")
        if not isinstance(self.denoiser_options, dict) or not all(
                isinstance(v, dict) for v in self.denoiser_options.values()):
            bad("denoiser_options", "must map denoiser names to option mappings")

    # -- conversions ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (what checkpoints and ``config.yaml`` hold)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: "GeneratorConfig | dict[str, Any] | None") -> "GeneratorConfig":
        """A config from its dict form (unknown keys are an error naming them)."""
        if isinstance(data, cls):
            return data
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown generator config key {unknown[0]!r}; valid keys: "
                             f"{', '.join(sorted(names))}")
        return cls(**data)

    def replace(self, **changes: Any) -> "GeneratorConfig":
        """A copy with some knobs changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- derived values ---------------------------------------------------------------------
    def denoiser_for(self, kind: str) -> tuple[str, dict[str, Any]]:
        """``(registry name, options)`` of the denoiser for a latent ``kind``
        (``auto``: ``mlp`` for vector latents, ``egnn`` for per-atom latents)."""
        name = self.denoiser
        if name == "auto":
            name = "mlp" if kind == "vector" else "egnn"
        return name, dict(self.denoiser_options.get(name, {}))


def _flow_from_dict(data: dict[str, Any]) -> FlowConfig:
    names = {f.name for f in dataclasses.fields(FlowConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config key 'generator.flow.{unknown[0]}'; valid keys in "
                         f"'generator.flow': {', '.join(sorted(names))}")
    return FlowConfig(**data)
