"""Value rules of a study config, checked before any stage runs.

Types and unknown keys are checked by ``harness.config._build``; this module checks what
types cannot say: counts, sizes and rates that must be positive, probabilities in [0, 1),
names that must stay names (no path separators), devices that exist. Every error names the
dotted key, so a rerun with the fix is never refused as "stale" after a half-run stage.

Inheritance (``extends: PRESET``): mappings merge key by key, except the keys in
:data:`REPLACED_ON_EXTEND`, which say *what is trained on what*: a child that states one of
them gets exactly what it states, nothing of its parent's (a child stating
``data.options: {}`` gets the full dataset; stating ``generator_overrides`` drops every
parent override it does not repeat). A key the child does not state is inherited whole.
"""
from __future__ import annotations

import math
import re
from typing import Any

from harness.errors import ConfigError

#: dotted keys a child preset replaces as a whole when it states them
REPLACED_ON_EXTEND = ("data.options", "spaces", "generator_overrides", "budget")

#: (dotted key, rule) — "pos" > 0, "nonneg" >= 0, "unit" in [0, 1), "pos_or_none". The
#: generator's rules are not here: ``GeneratorConfig`` and each family's section check their
#: own values on construction (one source of every generator default and rule).
_RULES = (("seed", "nonneg"), ("data.max_train", "pos_or_none"),
          ("sampling.n_samples", "pos"), ("sampling.steps", "pos_or_none"),
          ("sampling.batch_size", "pos"), ("sampling.eta", "nonneg"),
          ("sampling.guidance_scale", "nonneg"), ("metrics.latent_molecules", "pos"),
          ("metrics.reference_molecules", "pos"), ("metrics.bootstrap", "nonneg"),
          ("trainer.num_nodes", "pos"), ("budget.value", "pos_or_none"),
          ("curves.n_samples", "pos"), ("curves.steps", "pos_or_none"))

#: kinds of ``budget`` (harness/study/budget.py)
BUDGET_KINDS = ("steps", "flops", "seconds")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@-]*$")


def safe_name(value: str, key: str) -> str:
    """``value`` if it is a plain name (letters, digits, ``._+-``; no separators, no ``..``,
    not absolute), else a :class:`ConfigError` naming ``key``: names never write outside
    the output directory."""
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        raise ConfigError(f"{key} {value!r} must be a plain name (letters, digits, '.', '_', "
                          "'+', '-'; no path separators or '..'): it names a folder inside the "
                          "output directory")
    return value


def space_type(key: str) -> str:
    """The registry name of a ``spaces`` key: ``invariant@flow`` is an ``invariant`` space
    under its own name (so one study can hold the same space twice, e.g. per family)."""
    return key.split("@", 1)[0]


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _check(value: Any, rule: str, key: str) -> None:
    if rule == "pos_or_none":
        if value is None:
            return
        rule = "pos"
    bad = (not isinstance(value, (int, float)) or isinstance(value, bool)
           or not math.isfinite(value)
           or (rule == "pos" and value <= 0) or (rule == "nonneg" and value < 0)
           or (rule == "unit" and not 0 <= value < 1))
    if bad:
        want = {"pos": "> 0", "nonneg": ">= 0", "unit": "in [0, 1)"}[rule]
        raise ConfigError(f"config key {key!r} must be {want}, got {value!r}")


def check_values(config: Any) -> None:
    """Every value rule on a built ``StudyConfig`` (each space's effective generator config
    included); raises :class:`ConfigError` naming the first bad key."""
    safe_name(config.study, "config key 'study'")
    if any(not isinstance(k, int) or isinstance(k, bool) or k < 0 for k in config.seeds) \
            or len(set(config.seeds)) != len(config.seeds):
        raise ConfigError(f"config key 'seeds' must be distinct non-negative integers, got {config.seeds!r}")
    for key, rule in _RULES:
        _check(_get(config, key), rule, key)
    for space in config.spaces:
        safe_name(space, "config key 'spaces'")
        config.generator_for(space)          # builds (and so checks) each effective config
    _check_budget_and_curves(config)
    if any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in config.sampling.nfe_sweep):
        raise ConfigError(f"config key 'sampling.nfe_sweep' must list positive integers, "
                          f"got {config.sampling.nfe_sweep!r}")
    prop = config.conditional.property
    if prop and len(config.generator.context) == 1 and prop != config.generator.context[0]:
        raise ConfigError(f"config key 'conditional.property' is {prop!r} but the generator is "
                          f"conditioned on {config.generator.context[0]!r} (generator.context)")
    accelerator = str(config.trainer.accelerator).lower()
    if accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"config key 'trainer.accelerator' is {config.trainer.accelerator!r} "
                              "but no CUDA GPU is visible to torch on this machine; use cpu or auto")
    elif accelerator == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise ConfigError("config key 'trainer.accelerator' is 'mps' but MPS is not available")


def _check_budget_and_curves(config: Any) -> None:
    """``budget`` and ``curves`` rules (what harness/study/budget.py and harness/study/curves.py need)."""
    b = getattr(config, "budget", None)
    if b is not None:
        if b.kind not in BUDGET_KINDS:
            raise ConfigError(f"config key 'budget.kind' must be one of {', '.join(BUDGET_KINDS)}, "
                              f"got {b.kind!r}")
        if b.kind == "steps" and b.value is not None and b.value != int(b.value):
            raise ConfigError(f"config key 'budget.value' counts steps for budget.kind=steps and "
                              f"must be a whole number, got {b.value!r}")
        if b.include_ae and b.kind != "seconds":
            raise ConfigError(
                f"config key 'budget.include_ae' is only supported with budget.kind=seconds (the "
                f"autoencoder's fitting seconds are measured; its FLOPs are not counted, and a "
                f"step count has no autoencoder share); got budget.kind={b.kind!r}")
    c = getattr(config, "curves", None)
    if c is not None and c.enabled:
        if isinstance(c.points, bool) or not isinstance(c.points, int) or c.points < 2:
            raise ConfigError(f"config key 'curves.points' must be an integer >= 2, got {c.points!r}")
        if not 0 < c.first_fraction <= 1:
            raise ConfigError(f"config key 'curves.first_fraction' must be in (0, 1], got "
                              f"{c.first_fraction!r}")


def merge_preset(parent: dict[str, Any], child: dict[str, Any], path: str = "") -> dict[str, Any]:
    """``child`` over ``parent`` with the inheritance rule of the module docstring."""
    import copy

    out = copy.deepcopy(parent)
    for k, v in child.items():
        key = f"{path}.{k}" if path else k
        if key in REPLACED_ON_EXTEND or not (isinstance(v, dict) and isinstance(out.get(k), dict)):
            out[k] = copy.deepcopy(v)
        else:
            out[k] = merge_preset(out[k], v, key)
    return out
