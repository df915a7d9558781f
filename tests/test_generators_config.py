"""One frozen GeneratorConfig: the study's YAML section, the module's hyperparameters and
the study's generators all use it, with one default per knob; each family's section is its
own dataclass (the one source of that section's defaults and value rules)."""
import dataclasses

import pytest

from generators.config import GeneratorConfig
from generators.families.diffusion.config import DiffusionConfig
from generators.families.flow.config import FlowConfig
from harness.core.types import LatentSpec

VEC = LatentSpec("vector", 3)
KEYS = ["denoiser", "denoiser_options", "normalize", "lr", "weight_decay", "ema_decay",
        "grad_clip", "batch_size", "max_steps", "context", "context_dropout"]


def test_one_definition_with_the_studies_defaults():
    import harness.config as hc

    assert hc.GeneratorConfig is GeneratorConfig
    cfg = GeneratorConfig()
    assert cfg.diffusion.timesteps == 500 and cfg.lr == 1e-3 and cfg.batch_size == 64
    assert cfg.diffusion == DiffusionConfig() and cfg.flow == FlowConfig()
    assert set(KEYS) <= {f.name for f in dataclasses.fields(GeneratorConfig)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    assert hc.load_config("tiny").generator.diffusion.timesteps == 50   # flat YAML key read in


def test_sections_round_trip_and_old_flat_keys():
    cfg = GeneratorConfig.from_dict({"timesteps": 20, "schedule": "linear"})   # older spelling
    assert cfg.diffusion == DiffusionConfig(schedule="linear", timesteps=20)
    d = cfg.to_dict()
    assert d["diffusion"] == {"schedule": "linear", "timesteps": 20, "prediction": "eps"}
    assert "timesteps" not in d and GeneratorConfig.from_dict(d) == cfg
    assert cfg.replace(timesteps=7).diffusion.timesteps == 7
    assert cfg.replace(flow={"ot_coupling": True}).flow.ot_coupling
    with pytest.raises(ValueError, match="given twice"):
        GeneratorConfig.from_dict({"timesteps": 20, "diffusion": {"timesteps": 30}})


def test_module_hyperparameters_come_from_the_config():
    from generators import DiffusionGenerator

    gen = DiffusionGenerator(VEC)
    assert gen.hparams["config"] == GeneratorConfig().to_dict()
    assert gen.schedule.T == 500 and gen.config.lr == 1e-3
    gen = DiffusionGenerator(VEC, GeneratorConfig.from_dict({"timesteps": 20}), lr=3e-4,
                             denoiser_kwargs=dict(width=8, depth=1))
    assert gen.schedule.T == 20 and gen.config.lr == 3e-4
    assert gen.config.denoiser_options == {"mlp": {"width": 8, "depth": 1}}
    assert gen.configure_optimizers().defaults["lr"] == 3e-4


def test_study_builds_generators_from_its_config(tmp_path):
    from harness.study.runner import Study

    study = Study.from_source("tiny", [f"output_dir={tmp_path}", "generator.lr=0.002"])

    class _Space:
        spec = LatentSpec("per_atom", 2, has_coords=True)

    gen, cfg = study._build_generator("raw", _Space())
    assert cfg is not None and gen.config == cfg and gen.config.lr == 0.002
    assert gen.schedule.T == 50 and not gen.prior.fitted    # fitted on the latents in fit()


@pytest.mark.parametrize("key,value,where", [
    ("prediction", "score", "generator.diffusion.prediction"), ("normalize", "minmax", None),
    ("timesteps", 0, "generator.diffusion.timesteps"), ("lr", 0.0, None), ("ema_decay", 1.0, None),
    ("context_dropout", 1.0, None), ("batch_size", 0, None), ("max_steps", 0, None),
    ("family", "nosuch", None)])
def test_bad_values_name_the_key(key, value, where):
    with pytest.raises(ValueError, match=(where or f"generator.{key}").replace(".", r"\.")):
        GeneratorConfig.from_dict({key: value})


def test_unknown_keys_are_errors():
    with pytest.raises(ValueError, match="unknown config key 'generator.lrr'"):
        GeneratorConfig.from_dict({"lrr": 1})
    with pytest.raises(ValueError, match="generator.flow.stepz"):
        GeneratorConfig.from_dict({"flow": {"stepz": 1}})
    from generators import DiffusionGenerator

    with pytest.raises(ValueError, match="'generator.betas'"):
        DiffusionGenerator(VEC, betas=(0.9, 0.99))
