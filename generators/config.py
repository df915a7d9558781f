"""``GeneratorConfig``: every generator knob and its one default.

The knobs every family shares (denoiser, optimiser, EMA, batch, steps, conditioning) are
fields here; each registered family owns a section under its own name
(``generator.diffusion``, ``generator.flow``, ...) whose dataclass lives in the family's
folder and is the one source of that section's defaults and value rules. Sections of every
registered family are kept (a study can switch ``family`` per space with
``generator_overrides``); only the selected family's is used.

The same frozen object is the ``generator:`` section of a study config (``harness.config``
validates YAML into it), the hyperparameters a generator saves in its checkpoints
(``hparams["config"]``, :meth:`to_dict`) and what the study builds generators from.
Older configs and checkpoints spell the diffusion knobs flat (``timesteps: 50``); they are
read into ``generator.diffusion`` (:meth:`normalize_dict`). Values are checked on
construction (``ValueError`` naming the dotted key).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from harness.core.registry import FAMILIES

__all__ = ["GeneratorConfig", "NORMALIZATIONS"]

NORMALIZATIONS = ("none", "standard")


def _families() -> dict[str, Any]:
    return {name: FAMILIES.get(name) for name in FAMILIES.names()}


@dataclass(frozen=True)
class GeneratorConfig:
    """The shared latent generator (see ``generators/``)."""

    #: generator family (``l3dg list families``): ``diffusion``, ``flow``, ...
    family: str = "diffusion"
    #: "auto" = mlp for vector latents, egnn for per-atom latents
    denoiser: str = "auto"
    #: denoiser options by denoiser name, e.g. {mlp: {width: 512, depth: 4}}
    denoiser_options: dict[str, dict[str, Any]] = field(default_factory=dict)
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
    #: training steps (a study's ``budget`` replaces it)
    max_steps: int = 1000
    #: conditioning: property names from the dataset (empty = unconditional)
    context: list[str] = field(default_factory=list)
    #: probability of dropping the context in training (the null context of guidance)
    context_dropout: float = 0.1
    #: family name -> that family's section (filled with defaults for every family)
    sections: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(key: str, why: str):
            raise ValueError(f"config key 'generator.{key}' {why}")

        families = _families()
        if self.family not in families:
            bad("family", f"must be one of {', '.join(families)}, got {self.family!r}")
        sections = {}
        for name, fam in families.items():
            given = self.sections.get(name)
            if given is None:
                given = fam.config()
            elif isinstance(given, dict):
                given = _section_from_dict(name, fam.config, given)
            elif not isinstance(given, fam.config):
                bad(name, f"must be a mapping of {name} options, got {given!r}")
            sections[name] = given
        unknown = sorted(set(self.sections) - set(families))
        if unknown:
            bad(unknown[0], f"is not a generator family's section; families: {', '.join(families)}")
        object.__setattr__(self, "sections", sections)
        if self.normalize not in NORMALIZATIONS:
            bad("normalize", f"must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if not _number(self.lr) or not self.lr > 0:
            bad("lr", f"must be > 0, got {self.lr!r}")
        if not _number(self.weight_decay) or self.weight_decay < 0:
            bad("weight_decay", f"must be >= 0, got {self.weight_decay!r}")
        if not _number(self.ema_decay) or not 0 <= self.ema_decay < 1:
            bad("ema_decay", f"must be in [0, 1), got {self.ema_decay!r}")
        if self.grad_clip is not None and (not _number(self.grad_clip) or self.grad_clip < 0):
            bad("grad_clip", f"must be >= 0 (0 disables), got {self.grad_clip!r}")
        if not _integer(self.batch_size) or self.batch_size < 1:
            bad("batch_size", f"must be a positive integer, got {self.batch_size!r}")
        if not _integer(self.max_steps) or self.max_steps < 1:
            bad("max_steps", f"must be a positive integer, got {self.max_steps!r}")
        if not _number(self.context_dropout) or not 0 <= self.context_dropout < 1:
            bad("context_dropout", f"must be in [0, 1), got {self.context_dropout!r}")
        if not isinstance(self.denoiser_options, dict) or not all(
                isinstance(v, dict) for v in self.denoiser_options.values()):
            bad("denoiser_options", "must map denoiser names to option mappings")

    def __getattr__(self, name: str) -> Any:
        # ``config.diffusion`` / ``config.flow``: a family's section by its name
        sections = self.__dict__.get("sections") or {}
        if name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def section(self) -> Any:
        """The selected family's section."""
        return self.sections[self.family]

    # -- conversions ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (what checkpoints and ``config.yaml`` hold): the shared knobs, then
        one mapping per family section under the family's name."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sections"}
        out = {k: (list(v) if isinstance(v, list) else
                   {n: dict(o) for n, o in v.items()} if k == "denoiser_options" else v)
               for k, v in out.items()}
        out.update({name: dataclasses.asdict(s) for name, s in self.sections.items()})
        return out

    @staticmethod
    def normalize_dict(data: dict[str, Any], where: str = "generator") -> dict[str, Any]:
        """``data`` with each family's section under its name: flat keys of older configs
        (``timesteps``) moved into their section (``diffusion.timesteps``). Unknown keys are
        left for the constructor to refuse."""
        data = dict(data or {})
        for name, fam in _families().items():
            moved = {k: data.pop(k) for k in fam.flat_keys if k in data}
            if not moved:
                continue
            section = data.get(name)
            section = dict(section) if isinstance(section, dict) else (
                dataclasses.asdict(section) if dataclasses.is_dataclass(section) else {})
            both = sorted(set(moved) & set(section))
            if both:
                raise ValueError(f"config key '{where}.{both[0]}' is given twice: flat and as "
                                 f"'{where}.{name}.{both[0]}'; keep the second")
            data[name] = {**section, **moved}
        return data

    @classmethod
    def from_dict(cls, data: "GeneratorConfig | dict[str, Any] | None",
                  where: str = "generator") -> "GeneratorConfig":
        """A config from its dict form (unknown keys are an error naming them)."""
        if isinstance(data, cls):
            return data
        data = cls.normalize_dict(data, where)
        families = _families()
        names = {f.name for f in dataclasses.fields(cls)} - {"sections"}
        unknown = sorted(set(data) - names - set(families))
        if unknown:
            raise ValueError(f"unknown config key '{where}.{unknown[0]}'; valid keys: "
                             f"{', '.join(sorted(names | set(families)))}")
        sections = {k: data.pop(k) for k in list(data) if k in families}
        for name, value in sections.items():
            if value is not None and not isinstance(value, (dict, families[name].config)):
                raise ValueError(f"config key '{where}.{name}' must be a mapping of {name} "
                                 f"options, got {value!r}")
        return cls(**data, sections={k: v for k, v in sections.items() if v is not None})

    def replace(self, **changes: Any) -> "GeneratorConfig":
        """A copy with some knobs changed (validated again; section knobs by their flat
        name as :meth:`from_dict` reads them, or ``diffusion={...}``)."""
        base = self.to_dict()
        changes = self.normalize_dict(changes)
        for name in self.sections:
            if isinstance(changes.get(name), dict):
                changes[name] = {**base[name], **changes[name]}
        return type(self).from_dict({**base, **changes})

    # -- derived values ---------------------------------------------------------------------
    def denoiser_for(self, kind: str) -> tuple[str, dict[str, Any]]:
        """``(registry name, options)`` of the denoiser for a latent ``kind``
        (``auto``: ``mlp`` for vector latents, ``egnn`` for per-atom latents)."""
        name = self.denoiser
        if name == "auto":
            name = "mlp" if kind == "vector" else "egnn"
        return name, dict(self.denoiser_options.get(name, {}))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _section_from_dict(name: str, cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config key 'generator.{name}.{unknown[0]}'; valid keys in "
                         f"'generator.{name}': {', '.join(sorted(names))}")
    return cls(**data)
