"""Study configuration: YAML presets validated into typed objects.

A config is a YAML mapping (a preset under ``harness/configs/`` or any file) with the
sections below; ``key=value`` overrides use dotted paths (``generator.lr=3e-4``,
``spaces.flat.width=64``). Every unknown key is an error naming the key and the valid ones.
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"
#: a float in exponent form without a dot or sign (`1e13`, `1.5e13`), which YAML 1.1 keeps as a string
_YAML11_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


from harness.config.checks import validate_components  # noqa: F401  (re-exported)
from harness.config.conditional import ConditionalConfig
from harness.config.rules import check_values, merge_preset, safe_name, space_type  # noqa: F401
from harness.errors import ConfigError  # noqa: F401  (re-exported)


@dataclass
class DataConfig:
    """Which molecules: ``dataset`` (registry name) with builder ``options``."""

    dataset: str = "qm9"
    options: dict[str, Any] = field(default_factory=dict)
    #: split used to fit spaces and generators / to validate / as metrics reference
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    #: cap on training molecules (None = the whole split)
    max_train: int | None = None


@dataclass
class TrainerConfig:
    """Passed through to Lightning's ``Trainer`` (multi-GPU DDP by config alone)."""

    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    precision: Any = "32-true"
    num_nodes: int = 1


# The generator section is defined once, in generators/config.py (frozen; one default per
# knob, shared with the generators' checkpoints); re-exported here for the study config.
from generators.config import GeneratorConfig  # noqa: E402


@dataclass
class SamplingConfig:
    n_samples: int = 200
    sampler: str = "ddim"
    steps: int | None = 100
    eta: float = 0.0
    batch_size: int = 256
    guidance_scale: float = 1.0
    #: NFE values of the quality-vs-NFE stage (empty: no stage; harness/study/nfe.py)
    nfe_sweep: list[int] = field(default_factory=list)
    #: fixed-step sampler of that stage (None: ddim for diffusion, heun for flow)
    nfe_sampler: str | None = None


@dataclass
class MetricsConfig:
    #: what every study preset runs (``l3dg eval`` of a file defaults to the full ``qm9/v1``)
    suite: str = "qm9/v2-core"
    #: metric options by metric name, e.g. {chemistry: {max_molecules: 100}}
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: molecules of the test split used for latent diagnostics (reconstruction, symmetry)
    latent_molecules: int = 200
    #: also score the dataset itself (the reference row)
    reference_row: bool = True
    reference_molecules: int = 1000
    #: bootstrap resamples for the 95 % intervals of distribution metrics and quality
    #: (proportions use Wilson intervals; 0 = no bootstrap)
    bootstrap: int = 100


@dataclass
class SweepConfig:
    """Search space and objective of ``l3dg sweep`` (see harness/sweep.py).

    Each list is a categorical choice; ``[lo, hi]`` pairs under ``*_range`` are numeric ranges.
    """

    #: symmetry factor: which space a trial diffuses in
    spaces: list[str] = field(default_factory=lambda: ["invariant", "per_atom", "flat"])
    #: dimensionality factor: a latent width w; each space maps it onto its own options
    #: (``Space.sweep_options``; e.g. invariant: topo/geo width w each, flat: 2 w)
    latent_widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    #: reconstruction-quality factor: autoencoder epochs range (each space scales it)
    ae_epochs_range: list[int] = field(default_factory=lambda: [1, 8])
    #: per-space categorical choices of space options, ``{space: {option: [values]}}``
    #: (e.g. ``{per_atom: {k: [1, 2, 4]}, invariant: {geo_encoder: [egnn, e3nn]}, flat:
    #: {hidden: [128, 512]}}``); replaces the space's own ``sweep_choices`` option by option
    space_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: generator knobs
    lr_range: list[float] = field(default_factory=lambda: [3e-4, 3e-3])
    max_steps_choices: list[int] = field(default_factory=lambda: [300, 600])
    #: generator-family factor (``diffusion``, ``flow``; empty = the base ``generator.family``):
    #: each trial draws one (``sampling.sampler`` must be one both families accept, e.g. ``ddim``)
    families: list[str] = field(default_factory=list)
    #: samples scored per trial (K)
    n_samples: int = 100
    #: "quality" (valid x unique x mol-stable, maximise) or "quality+time" (multi-objective:
    #: also minimise total wall time)
    objective: str = "quality"
    #: prune on the reconstruction proxy (single objective only). Off by default: pruning
    #: removes low-reconstruction trials, which biases the claim test of sweep-report.
    prune: bool = False
    heartbeat_interval: int = 30
    grace_period: int = 120
    max_retry: int = 1


@dataclass
class BudgetConfig:
    """The generator's training budget in compute, the same for every space
    (harness/study/budget.py). ``value: null`` (the default) = no budget: each space trains its
    ``generator.max_steps``. Given a value, it replaces every space's ``max_steps``:

    * ``flops`` (the default kind): total training FLOPs (all devices); converted to a step
      count before training from the denoiser's counted forward+backward FLOPs of one step
      (deterministic: same seed, same steps);
    * ``seconds``: wall-clock seconds of the training loop (curve evaluation excluded); the
      steps reached depend on the machine and its load;
    * ``steps``: optimiser steps.
    """

    kind: str = "flops"
    value: float | None = None
    #: seconds budgets only: the autoencoder's fitting (and encoding) seconds count
    #: against the budget
    include_ae: bool = False


@dataclass
class CurvesConfig:
    """Learning curves (harness/study/curves.py): at ``points`` log-spaced moments of generator
    training, ``n_samples`` molecules are sampled with a fixed seed, decoded and scored
    (edm + distributions) into ``<space>/curve.json``."""

    enabled: bool = False
    points: int = 6
    n_samples: int = 64
    #: sampler and steps of the curve samples (null: the ``sampling`` section's)
    sampler: str | None = None
    steps: int | None = 25
    #: the first point, as a fraction of the steps (or seconds) of the budget
    first_fraction: float = 0.03
    #: metric -> value of the report's time-to-threshold table (empty: the default set of
    #: harness/report/plots_curves.py, DEFAULT_THRESHOLDS)
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass
class StudyConfig:
    """A comparative study: every space in ``spaces`` through the same generator and suite."""

    study: str = "study"
    seed: int = 0
    #: repeat the whole study once per seed (``runs/<study>/seed-<k>/``) and report the mean
    #: over seeds with its spread (harness/results/seeds.py); empty = the single ``seed``
    seeds: list[int] = field(default_factory=list)
    output_dir: str = "runs"
    #: user component files/modules to import first (their spaces become usable by name)
    plugins: list[str] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    #: space name -> space options (constructor keyword arguments)
    spaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: space name -> generator keys overriding ``generator`` for that space
    generator_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    #: compute budget of generator training (harness/study/budget.py); default: none (max_steps)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    #: learning curves recorded during generator training (harness/study/curves.py)
    curves: CurvesConfig = field(default_factory=CurvesConfig)
    #: score the controls (prior, shuffled marginals, reconstruction) beside every space
    controls: bool = True
    #: the conditional stage (used when ``generator.context`` names a property)
    conditional: ConditionalConfig = field(default_factory=ConditionalConfig)
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["generator"] = self.generator.to_dict()     # family sections under their names
        return out

    def generator_for(self, space: str) -> GeneratorConfig:
        """The generator config of one space (``generator`` + its overrides)."""
        where = f"generator_overrides.{space}"
        overrides = self.generator_overrides.get(space) or {}
        if not isinstance(overrides, dict):
            raise ConfigError(f"config key {where!r} must be a mapping, got {overrides!r}")
        try:
            overrides = GeneratorConfig.normalize_dict(overrides, where)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        return _build(GeneratorConfig, merge(self.generator.to_dict(), overrides), where)


def _build_generator(data: dict[str, Any], path: str) -> GeneratorConfig:
    """The ``generator`` section: shared knobs type-checked here, each family's section
    validated into that family's dataclass (its own defaults and value rules)."""
    from harness.core.registry import FAMILIES

    try:
        data = GeneratorConfig.normalize_dict(data, path)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    sections = {}
    for name in FAMILIES.names():
        if name in data:
            sections[name] = _build(FAMILIES.get(name).config, data.pop(name), f"{path}.{name}")
    shared = _build(GeneratorConfig, data, path, construct=False)
    try:
        return GeneratorConfig(**shared, sections=sections)
    except ValueError as err:
        raise ConfigError(str(err).replace("config key 'generator.", f"config key '{path}.")) from None


def _build(cls, data: Any, path: str, construct: bool = True):
    """Recursively validate ``data`` into dataclass ``cls``; errors name the dotted key
    (``construct=False``: the checked keyword arguments instead of the object)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config key {path or '(top level)'!r} must be a mapping, got {type(data).__name__}")
    if cls is GeneratorConfig and construct:
        return _build_generator(data, path)
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls) if f.name != "sections"}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]!r}; valid keys"
                          f"{' in ' + repr(path) if path else ''}: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        key = f"{path}.{name}" if path else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key)
        else:
            kwargs[name] = _check_type(value, hint, key)
    if not construct:
        return kwargs
    try:
        return cls(**kwargs)
    except ValueError as err:
        if str(err).startswith(("config key", "unknown config key")):
            raise ConfigError(str(err)) from None
        raise


def _check_type(value: Any, hint: Any, key: str) -> Any:
    text = str(hint)
    if value is None:
        if "None" in text or hint is Any:
            return None
        raise ConfigError(f"config key {key!r} must not be null")
    if hint is Any:
        return value
    base = {int: "int", float: "float", str: "str", bool: "bool"}
    if hint in (int, float, str, bool) or text in ("int | None", "str | None", "float | None"):
        want = hint if hint in base else {"int | None": int, "str | None": str, "float | None": float}[text]
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if want is float and isinstance(value, str) and _YAML11_FLOAT.match(value.strip()):
            return float(value)    # PyYAML reads `1.5e13` (no sign) as a string
        if want is bool and not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be true or false, got {value!r}")
        if want is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
        if not isinstance(value, want):
            raise ConfigError(f"config key {key!r} must be a {base[want]}, got {value!r}")
        return value
    if text.startswith("dict") and not isinstance(value, dict):
        raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
    if text.startswith("dict[str, dict"):
        # `spaces: {raw: }` in YAML means "raw with default options"
        value = {k: {} if v is None else v for k, v in value.items()}
        for k, v in value.items():
            if not isinstance(v, dict):
                raise ConfigError(f"config key '{key}.{k}' must be a mapping of options, got {v!r}")
    if text.startswith("list"):
        if isinstance(value, (str, int, float)):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
    return copy.deepcopy(value)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_raw(source: str | Path, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset name or a YAML file path -> mapping (``extends: PRESET`` is merged first,
    with the inheritance rule of :mod:`harness.config.rules`)."""
    path = Path(source)
    if not path.suffix:
        path = PRESET_DIR / f"{source}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown preset {str(source)!r}; presets: {', '.join(list_presets())} "
                              "(or give a .yaml file)")
    if not path.exists():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping at the top level")
    parent = data.pop("extends", None)
    if parent:
        me = str(path.resolve())
        if me in _chain:
            names = [Path(c).stem for c in _chain + (me,)]
            raise ConfigError(f"{path}: 'extends' forms a cycle: {' -> '.join(names)}")
        parent_path = Path(str(parent))
        if parent_path.suffix and not parent_path.is_absolute():
            parent = path.parent / parent_path    # a parent file is relative to its child
        data = merge_preset(load_raw(parent, _chain + (me,)), data)
    return data


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML: ``3``, ``1e-3``, ``[a, b]``)."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if isinstance(value, str) and _looks_numeric(value):
            value = float(value)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
        node[parts[-1]] = value
    return out


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> StudyConfig:
    """Preset name / YAML path / mapping + overrides -> validated :class:`StudyConfig`."""
    data = copy.deepcopy(source) if isinstance(source, dict) else load_raw(source)
    data = apply_overrides(data, overrides or [])
    config = _build(StudyConfig, data, "")
    if not config.spaces:
        raise ConfigError("config key 'spaces' must name at least one space")
    check_values(config)
    return config
