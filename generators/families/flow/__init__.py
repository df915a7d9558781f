"""Flow matching (rectified flow): ``config.py`` (the ``generator.flow`` section),
``objective.py`` (interpolant, targets, OT coupling), ``samplers.py`` (``euler``,
``midpoint``, ``heun``, ``dopri5``), ``module.py`` (:class:`FlowGenerator`, imported
lazily)."""
from harness.core.registry import FAMILIES

from ...family import Family
from .config import FlowConfig
from .samplers import FLOW_ALIASES, probe

FAMILIES.add("flow", Family(
    name="flow",
    summary="flow matching (rectified flow; velocity or x1 target, optional OT coupling)",
    config=FlowConfig,
    module="generators.families.flow.module:FlowGenerator",
    default_sampler="euler", default_steps=100, nfe_sampler="heun",
    sampler_aliases=dict(FLOW_ALIASES), probe_sampler=probe))
