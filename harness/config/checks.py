"""Registry-level checks of a study config: every component name resolves, space options
match their constructors, samplers suit each space's generator family, the suite has the
metrics its options name, the sweep's search space is well formed.

Run after :func:`harness.config.load_config` (which checks keys, types and values) and
before any stage, so a typo fails before anything trains or writes.
"""
from __future__ import annotations

from typing import Any

from harness.config.rules import space_type
from harness.errors import ConfigError

StudyConfig = Any   # a harness.config.StudyConfig (not imported: config imports this module)


def validate_components(config: StudyConfig) -> None:
    """Check registry names (spaces, denoisers, schedules, samplers, suite, dataset) and
    space options against the constructors, so a typo fails before any training."""
    import inspect

    from harness.core.registry import (
        DATASETS,
        DENOISERS,
        SCHEDULES,
        SPACES,
        load_plugin,
    )

    for plugin in config.plugins:
        load_plugin(plugin)
    if config.data.dataset not in DATASETS:
        DATASETS.get(config.data.dataset)
    for name, options in config.spaces.items():
        try:
            cls = SPACES.get(space_type(name))
        except KeyError as err:
            raise ConfigError(f"config key 'spaces.{name}': {err.args[0]}") from None
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            bad = sorted(set(options or {}) - set(params) - {"self"})
            if bad:
                valid = [p for p in params if p not in ("self", "elements")]
                raise ConfigError(f"unknown config key 'spaces.{name}.{bad[0]}'; valid options of "
                                  f"space {name!r}: {', '.join(valid)}")
        for option, value in (options or {}).items():
            _check_option_type(f"spaces.{name}.{option}", params.get(option), value)
    for name in config.generator_overrides:
        if name not in config.spaces:
            raise ConfigError(f"config key 'generator_overrides.{name}' names a space that is not "
                              f"in 'spaces' ({', '.join(config.spaces)})")
        config.generator_for(name)
    for space in config.spaces:
        gen = config.generator_for(space)
        if gen.denoiser != "auto":
            try:
                DENOISERS.get(gen.denoiser)
            except KeyError as err:
                raise ConfigError(f"config key 'generator.denoiser': {err.args[0]}") from None
        try:
            SCHEDULES.get(gen.diffusion.schedule)
        except KeyError as err:
            raise ConfigError(f"config key 'generator.diffusion.schedule': {err.args[0]}") from None
    _validate_sweep(config)
    for key, value in config.curves.thresholds.items():     # curve points hold edm + dist metrics
        if not (key == "quality" or key.startswith(("edm.", "dist."))):
            raise ConfigError(f"config key 'curves.thresholds.{key}': a curve point has quality, "
                              "edm.* and dist.* metrics only")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key 'curves.thresholds.{key}' must be a number, got {value!r}")
    from generators import check_sampler

    for space in config.spaces:
        family = config.generator_for(space).family
        try:
            check_sampler(family, config.sampling.sampler)
            if config.sampling.nfe_sampler:
                check_sampler(family, config.sampling.nfe_sampler)
        except KeyError as err:
            where = f" (space {space!r}, family {family})" if len(config.spaces) > 1 else ""
            message = str(err.args[0])
            if not message.startswith("config key"):
                message = f"config key 'sampling.sampler': {message}"
            raise ConfigError(f"{message}{where}") from None
    from metrics.suites import get_suite

    try:
        suite = get_suite(config.metrics.suite)
    except KeyError as err:
        raise ConfigError(f"config key 'metrics.suite': {err.args[0]}") from None
    members = {m.metric for m in suite.members}
    for name in config.metrics.options:
        if name not in members:
            raise ConfigError(f"config key 'metrics.options.{name}': suite {suite.name} has no metric "
                              f"{name!r}; its metrics: {', '.join(sorted(members))}")
    try:
        suite.metrics(config.metrics.options)
    except (TypeError, KeyError) as err:
        raise ConfigError(f"config key 'metrics.options': {err}") from None
    if config.generator.context:
        _validate_context(config)


def _validate_context(config: StudyConfig) -> None:
    if config.data.dataset == "qm9":
        from harness.datasets.qm9 import PROPERTIES

        names = [p for p, _, _ in PROPERTIES]
    else:
        names = list(config.data.options.get("property_fields", []))
    bad = [c for c in config.generator.context if c not in names]
    if bad:
        raise ConfigError(f"config key 'generator.context': {bad} not among the dataset's "
                          f"properties {names}")


def _check_option_type(key: str, param: Any, value: Any) -> None:
    """A space option whose default is a number, flag or string must get one of that kind
    (``lr: abc`` or ``epochs: 2.5`` is a config error here, not a crash inside training)."""
    default = getattr(param, "default", None)
    if value is None or default is None or getattr(param, "empty", None) is default:
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    else:
        return
    if not ok:
        hint = ""
        if isinstance(value, str) and kind in ("a number", "an integer"):
            try:
                float(value)
                hint = " (YAML reads 1e-3 as a string: write 1.0e-3)"
            except ValueError:
                pass
        raise ConfigError(f"config key {key!r} must be {kind} (its default is {default!r}), "
                          f"got {value!r}{hint}")


def _validate_sweep(config: StudyConfig) -> None:
    from harness.core.registry import SPACES

    sw = config.sweep
    if sw.objective not in ("quality", "quality+time"):
        raise ConfigError(f"config key 'sweep.objective' must be 'quality' or 'quality+time', got {sw.objective!r}")
    for name in sw.spaces:
        if name not in SPACES:
            raise ConfigError(f"config key 'sweep.spaces': unknown space {name!r}; valid spaces: "
                              f"{', '.join(SPACES.names())}")
    for key in ("ae_epochs_range", "lr_range"):
        lo_hi = getattr(sw, key)
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1] or lo_hi[0] <= 0 and key == "lr_range":
            raise ConfigError(f"config key 'sweep.{key}' must be [low, high] with low <= high, got {lo_hi}")
    for key in ("latent_widths", "max_steps_choices", "spaces"):
        if not getattr(sw, key):
            raise ConfigError(f"config key 'sweep.{key}' must not be empty")
    from generators import check_sampler
    from harness.core.registry import FAMILIES

    for family in sw.families:
        if family not in FAMILIES:
            raise ConfigError(f"config key 'sweep.families': unknown family {family!r}; "
                              f"families: {', '.join(FAMILIES.names())}")
        try:
            check_sampler(family, config.sampling.sampler)
        except KeyError as err:
            raise ConfigError(f"config key 'sweep.families': {err.args[0]}") from None
    import inspect

    for name, choices in sw.space_options.items():
        if name not in sw.spaces:
            raise ConfigError(f"config key 'sweep.space_options.{name}' names a space that is not "
                              f"in 'sweep.spaces' ({', '.join(sw.spaces)})")
        params = inspect.signature(SPACES.get(name).__init__).parameters
        open_ended = any(p.kind == p.VAR_KEYWORD for p in params.values())
        for option, values in (choices or {}).items():
            key = f"sweep.space_options.{name}.{option}"
            if not open_ended and (option not in params or option in ("self", "elements")):
                valid = [p for p in params if p not in ("self", "elements")]
                raise ConfigError(f"unknown config key {key!r}; valid options of space {name!r}: "
                                  f"{', '.join(valid)}")
            if not isinstance(values, list) or not values:
                raise ConfigError(f"config key {key!r} must be a non-empty list of choices, got {values!r}")
