"""A generator family as a plug-in: what the registry holds for ``diffusion``, ``flow``, ...

A family is one folder under ``generators/families/`` (or a user's file passed as a plug-in)
whose import registers a :class:`Family` in ``FAMILIES``::

    FAMILIES.add("flow", Family(
        name="flow", summary="flow matching (rectified flow), ODE samplers",
        config=FlowConfig,                                   # the generator.flow section
        module="generators.families.flow.module:FlowGenerator",
        default_sampler="euler", default_steps=100, nfe_sampler="heun",
        sampler_aliases={"ddim": "euler"}))

The family's config dataclass is the one source of its knobs' defaults and value rules
(``GeneratorConfig`` holds one instance per registered family under its name); its
samplers are the ``SAMPLERS`` entries whose class says ``family = <name>``. The Lightning
module is imported only when a generator is built, so listing families stays light.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.core.registry import FAMILIES, SAMPLERS

__all__ = ["Family", "get_family", "family_names", "check_sampler"]


@dataclass(frozen=True)
class Family:
    """One generator family (see module docstring)."""

    name: str
    summary: str
    #: dataclass of the ``generator.<name>`` section (defaults + value rules)
    config: type
    #: ``"package.module:Class"`` of its LightningModule (a ``LatentGenerator``)
    module: str
    #: sampler and steps of ``gen.sample()`` and of a study's ``sampling`` when unset
    default_sampler: str
    default_steps: int
    #: fixed-step sampler of the quality-vs-NFE stage when ``sampling.nfe_sampler`` is unset
    nfe_sampler: str
    #: other families' sampler names this family accepts (``ddim`` -> ``euler`` for flow)
    sampler_aliases: dict[str, str] = field(default_factory=dict)
    #: flat keys older configs used for this section's knobs (read into the section)
    flat_keys: tuple[str, ...] = ()
    #: ``probe(sampler_cls, steps) -> (samples [n, 2], nfe, steps)``: drives one of its
    #: samplers with an exact model of N(0, I) data (sampler conformance, ``l3dg check``)
    probe_sampler: Callable[..., Any] | None = None

    def generator_class(self) -> type:
        """The LightningModule class (imported on first use)."""
        module, _, cls = self.module.partition(":")
        return getattr(importlib.import_module(module), cls)

    def samplers(self) -> list[str]:
        """Registry names of the samplers that can drive this family (aliases included)."""
        own = [n for n in SAMPLERS.names() if getattr(SAMPLERS.get(n), "family", None) == self.name]
        return own + sorted(a for a in self.sampler_aliases if a not in own)

    def resolve_sampler(self, sampler: str | None) -> str:
        """The registry name ``sampler`` stands for (None: the family's default)."""
        sampler = sampler or self.default_sampler
        return self.sampler_aliases.get(sampler, sampler)

    def describe(self) -> dict[str, Any]:
        """What ``l3dg list families`` prints."""
        return {"summary": self.summary, "section": f"generator.{self.name}",
                "default sampler": f"{self.default_sampler} ({self.default_steps} steps)",
                "NFE sampler": self.nfe_sampler, "samplers": ", ".join(self.samplers())}


def get_family(name: str) -> Family:
    """The registered family ``name`` (a KeyError lists the valid ones)."""
    return FAMILIES.get(name)


def family_names() -> list[str]:
    return FAMILIES.names()


def check_sampler(family: str, sampler: str) -> None:
    """Raise a KeyError naming ``sampling.sampler`` when ``sampler`` cannot drive a generator
    of ``family`` (its own samplers and aliases only)."""
    fam = get_family(family)
    name = fam.resolve_sampler(sampler)
    cls = SAMPLERS.get(name)
    have = getattr(cls, "family", None)
    if have != family:
        raise KeyError(f"config key 'sampling.sampler': {sampler!r} is a {have} sampler but "
                       f"generator.family is {family!r}; valid samplers: {', '.join(fam.samplers())}")
