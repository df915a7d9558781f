"""One frozen GeneratorConfig: the study's YAML section, the module's hyperparameters and
the study's generators all use it, with one default per knob."""
import dataclasses

import pytest

from generators.config import GeneratorConfig
from harness.core.types import LatentSpec

VEC = LatentSpec("vector", 3)
KEYS = ["denoiser", "denoiser_options", "schedule", "timesteps", "prediction", "normalize",
        "lr", "weight_decay", "ema_decay", "grad_clip", "batch_size", "max_steps", "context",
        "context_dropout"]


def test_one_definition_with_the_studies_defaults():
    import harness.config as hc

    assert hc.GeneratorConfig is GeneratorConfig
    cfg = GeneratorConfig()
    assert cfg.timesteps == 500 and cfg.lr == 1e-3 and cfg.batch_size == 64
    assert set(KEYS) <= {f.name for f in dataclasses.fields(GeneratorConfig)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    assert hc.load_config("tiny").generator.timesteps == 50        # YAML keys unchanged


def test_module_hyperparameters_come_from_the_config():
    from generators import DiffusionGenerator

    gen = DiffusionGenerator(VEC)
    assert gen.hparams["config"] == GeneratorConfig().to_dict()
    assert gen.schedule.T == 500 and gen.config.lr == 1e-3
    gen = DiffusionGenerator(VEC, GeneratorConfig(timesteps=20), lr=3e-4,
                             denoiser_kwargs=dict(width=8, depth=1))
    assert gen.schedule.T == 20 and gen.config.lr == 3e-4
    assert gen.config.denoiser_options == {"mlp": {"width": 8, "depth": 1}}
    assert gen.configure_optimizers().defaults["lr"] == 3e-4


def test_study_builds_generators_from_its_config(tmp_path):
    from harness.study import Study

    study = Study.from_source("tiny", [f"output_dir={tmp_path}", "generator.lr=0.002"])

    class _Space:
        spec = LatentSpec("per_atom", 2, has_coords=True)

    gen, cfg = study._build_generator("raw", _Space())
    assert cfg is not None and gen.config == cfg and gen.config.lr == 0.002
    assert gen.schedule.T == 50 and not gen.prior.fitted    # fitted on the latents in fit()


@pytest.mark.parametrize("key,value", [("prediction", "score"), ("normalize", "minmax"),
                                       ("timesteps", 0), ("lr", 0.0), ("ema_decay", 1.0),
                                       ("context_dropout", 1.0), ("batch_size", 0)])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=f"generator.{key}"):
        GeneratorConfig(**{key: value})


def test_unknown_keys_are_errors():
    with pytest.raises(ValueError, match="unknown generator config key 'lrr'"):
        GeneratorConfig.from_dict({"lrr": 1})
    from generators import DiffusionGenerator

    with pytest.raises(ValueError, match="'betas'"):
        DiffusionGenerator(VEC, betas=(0.9, 0.99))
