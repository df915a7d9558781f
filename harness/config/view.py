"""What a study config resolves to: ``l3dg config PRESET [key=value ...] [--json]``.

The view is the fully merged, validated study config plus, per space, the *effective*
generator config (``generator`` + that space's ``generator_overrides``, exactly what
training receives) and the molecules per split where the dataset can say so without
loading (QM9). Tests pin these values for every shipped preset.
"""
from __future__ import annotations

from typing import Any


def split_sizes(config: Any) -> dict[str, int] | None:
    """Molecules per split for ``config.data`` (None when only loading the data can tell)."""
    if config.data.dataset != "qm9":
        return None
    from harness.datasets.qm9 import qm9_split_sizes

    sizes = qm9_split_sizes(**config.data.options)
    if config.data.max_train:
        sizes["train"] = min(sizes["train"], int(config.data.max_train))
    if config.generator.context:
        # conditional: spaces and generators see only the generator half Db of train
        sizes["train (generator half Db, about half of train)"] = sizes["train"] // 2
    return sizes


def resolved_view(config: Any) -> dict[str, Any]:
    """``{"config": ..., "splits": ..., "effective": {space: {"generator": ..., "space": ...}}}``."""
    return {
        "config": config.to_dict(),
        "splits": split_sizes(config),
        "effective": {name: {"space": dict(options or {}),
                             "generator": config.generator_for(name).to_dict()}
                      for name, options in config.spaces.items()},
    }


def format_view(view: dict[str, Any]) -> str:
    """The view as YAML, with a one-line budget summary per space first."""
    import yaml

    lines = [f"# study {view['config']['study']}: "
             + (", ".join(f"{k} {v:,}" for k, v in view["splits"].items()) + " molecules"
                if view["splits"] else "split sizes known once the dataset is loaded")]
    budget = view["config"].get("budget") or {}
    if budget.get("value") is not None:
        lines.append(f"#   budget: {budget['kind']} {budget['value']:g} for every space"
                     + (" (max_steps below are replaced by the budget; a FLOP budget becomes steps "
                        "from the counted FLOPs of one step, before training)"
                        if budget["kind"] != "steps" else " (max_steps below are replaced)"))
    for name, eff in view["effective"].items():
        g = eff["generator"]
        steps = f"{g['max_steps']:,} steps" if budget.get("value") is None else "budget steps"
        lines.append(f"#   {name}: {steps} x batch {g['batch_size']}, "
                     + (f"T={g['diffusion']['timesteps']} {g['diffusion']['schedule']}"
                        if g["family"] == "diffusion" else f"family {g['family']}")
                     + f", lr {g['lr']:g}, denoiser {g['denoiser']}")
    return "\n".join(lines) + "\n" + yaml.safe_dump(view, sort_keys=False)
