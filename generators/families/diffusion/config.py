"""``DiffusionConfig``: the ``generator.diffusion`` section (the one source of its defaults
and value rules). Older configs and checkpoints spell these knobs flat (``generator.timesteps``);
:class:`~generators.config.GeneratorConfig` reads them into this section."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DiffusionConfig", "PREDICTIONS"]

PREDICTIONS = ("eps", "x0", "v")


@dataclass(frozen=True)
class DiffusionConfig:
    """Knobs of discrete-time Gaussian diffusion (``family: diffusion``)."""

    #: noise schedule (``polynomial_2`` as EDM, any ``polynomial_<p>``, ``cosine``, ``linear``)
    schedule: str = "polynomial_2"
    #: T of the training discretisation
    timesteps: int = 500
    #: what the network predicts: ``eps``, ``x0`` or ``v``
    prediction: str = "eps"

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, str) or not self.schedule:
            raise ValueError(f"config key 'generator.diffusion.schedule' must be a schedule name, "
                             f"got {self.schedule!r}")
        if isinstance(self.timesteps, bool) or not isinstance(self.timesteps, int) \
                or self.timesteps < 1:
            raise ValueError(f"config key 'generator.diffusion.timesteps' must be a positive "
                             f"integer, got {self.timesteps!r}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"config key 'generator.diffusion.prediction' must be one of "
                             f"{', '.join(PREDICTIONS)}, got {self.prediction!r}")
