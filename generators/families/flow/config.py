"""``FlowConfig``: the ``generator.flow`` section (the one source of its defaults and value
rules)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FlowConfig", "FLOW_PREDICTIONS", "TIME_SAMPLINGS"]

FLOW_PREDICTIONS = ("velocity", "x1")
TIME_SAMPLINGS = ("uniform", "logit_normal")


@dataclass(frozen=True)
class FlowConfig:
    """Knobs of the flow-matching family (``family: flow``; see ``objective.py``)."""

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
