"""One source of defaults: the library's defaults and the ``default`` preset agree, except
where the preset states a value on purpose (listed here with the reason); the CLI's and the
library's sampling defaults are each family's declared ones.

A new disagreement fails with the key: either drop the key from the preset (the library's
default then holds) or add it below with why the preset differs.
"""
from __future__ import annotations

import inspect

import pytest

from harness.config import SamplingConfig, StudyConfig, load_config
from harness.core.registry import DENOISERS, FAMILIES, SPACES

#: dotted key -> why the ``default`` preset states another value than the library
ON_PURPOSE = {
    "study": "the preset's own name",
    "data.options": "subset 2000: a study that fits 15 minutes on 2 CPU cores",
    "spaces": "which spaces are compared is the study's choice (the library has no default)",
    "generator_overrides": "invariant / flat use LDM-3DG's linear schedule (the paper's setting)",
    "budget.value": "compute-matched: every generator trains 1.5e12 counted FLOPs",
    "curves.points": "4 curve points (the library's 6): the 15-minute bound",
    "curves.enabled": "the main job shows learning curves; a library study records none unasked",
    "generator.max_steps": "replaced by the budget; 600 is the step count when budget.value is null",
    "generator.ema_decay": "0.995: a few hundred CPU steps (0.999 averages ~1,000 steps, longer "
                           "than the training)",
    "generator.denoiser_options": "CPU sizes (mlp 512 x 4, egnn 64 x 4); the library's are the "
                                  "papers' (mlp 1024 x 4 as LDM-3DG, egnn 256 x 9 as EDM)",
    "spaces.per_atom.epochs": "6 autoencoder epochs: the 12-minute CPU budget",
    "spaces.flat.epochs": "30 autoencoder epochs: the 12-minute CPU budget",
}

_WHOLE = ("data.options", "spaces", "generator_overrides", "generator.denoiser_options")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v and key not in _WHOLE:
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


def _disagreements() -> dict[str, tuple]:
    library, preset = _flat(StudyConfig().to_dict()), _flat(load_config("default").to_dict())
    out = {k: (library.get(k), preset.get(k)) for k in set(library) | set(preset)
           if library.get(k) != preset.get(k)}
    for name, options in load_config("default").spaces.items():
        params = inspect.signature(SPACES.get(name).__init__).parameters
        for option, value in (options or {}).items():
            if params[option].default != value:
                out[f"spaces.{name}.{option}"] = (params[option].default, value)
    return out


def test_library_and_default_preset_agree_but_on_purpose():
    unlisted = {k: v for k, v in _disagreements().items() if k not in ON_PURPOSE}
    assert not unlisted, ("the default preset and the library disagree (library -> preset); drop "
                          f"the key from the preset or list why in ON_PURPOSE: {unlisted}")


def test_every_listed_difference_still_exists():
    stale = sorted(set(ON_PURPOSE) - set(_disagreements()))
    assert not stale, f"listed as on purpose but no longer different: {stale}"


@pytest.mark.parametrize("family", sorted(FAMILIES.names()))   # every registered family
def test_study_sampling_defaults_are_each_familys_declared_ones(family):
    fam, s = FAMILIES.get(family), SamplingConfig()
    assert fam.resolve_sampler(s.sampler) == fam.resolve_sampler(None)
    assert s.steps == fam.default_steps
    assert fam.nfe_sampler in fam.samplers() and fam.default_sampler in fam.samplers()


def test_gen_sample_defaults_to_the_familys_sampler():
    from generators import build_generator
    from harness.core.types import LatentSpec

    gen = build_generator(LatentSpec("vector", 2), {"denoiser_options": {"mlp": {"width": 8, "depth": 1}},
                                                    "timesteps": 200})
    gen.sample(2, progress=False)
    assert gen.last_sample_stats["sampler"] == "ddim" and gen.last_sample_stats["nfe"] == 100


def test_denoiser_defaults_are_the_papers_sizes():
    """What ON_PURPOSE says of the denoisers stays true."""
    mlp = inspect.signature(DENOISERS.get("mlp").__init__).parameters
    egnn = inspect.signature(DENOISERS.get("egnn").__init__).parameters
    assert (mlp["width"].default, mlp["depth"].default) == (1024, 4)
    assert (egnn["hidden"].default, egnn["layers"].default) == (256, 9)
