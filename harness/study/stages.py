"""Every stage of a study, declared once: its name, the files it leaves in
``runs/<study>/<space>/``, the config that shapes its output (its fingerprint), when it
runs, and the function that runs it.

A stage's fingerprint hashes the fingerprint of the stage it extends and its own config
inputs, so a changed key redoes exactly the stages downstream of it (``--force``) and a
resumed study skips the rest. ``Study.run_space`` walks :data:`PIPELINE` in order; adding a
stage is one entry here plus its function in its own module.
"""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from harness.results.state import SpaceState, outputs_readable, save_latents

if TYPE_CHECKING:
    from harness.config import StudyConfig
    from harness.study.context import StudyContext

#: ``run(study, space name, get_space, space directory) -> info`` (``get_space()`` builds or
#: loads the space on first use)
StageFn = Callable[["StudyContext", str, Callable[[], Any], Path], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Stage:
    """One stage of the per-space pipeline."""

    name: str
    #: files it leaves in ``<run>/<space>/`` (JSON ones must parse, tensors must load)
    outputs: tuple[str, ...]
    #: the stage whose fingerprint this one extends (None: the first)
    extends: str | None
    #: the config parts that shape its output (None: exactly its parent's fingerprint)
    inputs: Callable[["StudyConfig", str], Any] | None
    run: StageFn
    #: whether a study runs it at all (optional stages)
    when: Callable[["StudyConfig"], bool] = lambda config: True


# -- the stage functions not defined in a module of their own -----------------------------------
def fitted_twin(study: "StudyContext", name: str) -> str | None:
    """An earlier ``spaces`` key of the same space type and options (``invariant`` for
    ``invariant@flow``) whose fit and encoding are done: its space and latents are copied
    instead of fitted again (same data, seed and options: the seeded fit would repeat, and
    both generator families then see the same latents)."""
    from harness.config.rules import space_type

    for other in study.config.spaces:
        if other == name:
            return None
        if (space_type(other) == space_type(name)
                and (study.config.spaces.get(other) or {}) == (study.config.spaces.get(name) or {})):
            state = SpaceState(study.root / other)
            if state.done("fit_space") and state.done("encode"):
                return other
    return None


def _copied(study: "StudyContext", twin: str, stage: str) -> dict[str, Any]:
    return {**SpaceState(study.root / twin).data.get("info", {}).get(stage, {}), "shared_from": twin}


def fit_space(study: "StudyContext", name: str, get_space, directory: Path) -> dict[str, Any]:
    """Fit the space's autoencoder (if any) on the train split and save it to ``space/``."""
    space_dir = directory / "space"
    twin = fitted_twin(study, name)
    if twin is not None:            # an alias with the same space and options: same fit
        shutil.copytree(study.root / twin / "space", space_dir, dirs_exist_ok=True)
        return _copied(study, twin, "fit_space")
    s = get_space()
    stats = {}
    if s.trainable:
        stats = s.fit(study.split("train"), study.split("val"), progress=study.progress,
                      trainer_kwargs=study.trainer_kwargs())
    s.save(space_dir)
    return {"trainable": s.trainable, "final": stats.get("final", {}) if isinstance(stats, dict) else {},
            "symmetry": s.spec.symmetries}


def encode(study: "StudyContext", name: str, get_space, directory: Path) -> dict[str, Any]:
    """Encode the train split into ``latents.pt``."""
    twin = fitted_twin(study, name)
    if twin is not None:
        shutil.copyfile(study.root / twin / "latents.pt", directory / "latents.pt")
        return _copied(study, twin, "encode")
    latent = get_space().encode_dataset(study.split("train"), progress=study.progress)
    save_latents(latent, directory / "latents.pt")
    return {"molecules": len(latent)}


def _train(study, name, get_space, directory):
    return study.train_generator(name, get_space(), directory)


def _sample(study, name, get_space, directory):
    from harness.study.sample import sample_space

    return sample_space(study, name, get_space(), directory)


def _score(study, name, get_space, directory):
    from harness.study.scoring import score_space

    return score_space(study, name, get_space(), directory)


def _controls(study, name, get_space, directory):
    from harness.study.scoring import run_controls

    return run_controls(study, name, get_space(), directory)


def _conditional(study, name, get_space, directory):
    from harness.study.conditional import run_conditional

    return run_conditional(study, name, get_space(), directory)


def _nfe(study, name, get_space, directory):
    from harness.study.nfe import run_nfe

    return run_nfe(study, name, get_space(), directory)


def _probes(study, name, get_space, directory):
    from harness.study.probes import run_probes

    return run_probes(study, name, get_space(), directory)


def _probes_version() -> str:
    from harness.study.probes import VERSION

    return VERSION


def _is_conditional(config) -> bool:
    from harness.study.conditional import is_conditional

    return is_conditional(config)


def _generator_inputs(config, name: str) -> list:
    from harness.study.budget import budget_fingerprint

    # a budget enters only when set, so runs without one keep their fingerprints
    return [config.generator_for(name).to_dict(), *budget_fingerprint(config)]


_asdict = dataclasses.asdict


def _conditional_inputs(config: "StudyConfig", name: str) -> list[Any]:
    """The conditional stage's fingerprint input: its config section, ``relaxed_rows`` only
    when switched off, so studies written before the key existed keep their fingerprints."""
    section = _asdict(config.conditional)
    if section.get("relaxed_rows") is True:
        section.pop("relaxed_rows")
    return [section]

#: the per-space pipeline, in order
PIPELINE: tuple[Stage, ...] = (
    Stage("fit_space", ("space/space.json",), None,
          lambda c, n: {"data": _asdict(c.data), "seed": c.seed, "space": n,
                        "options": c.spaces.get(n) or {}}, fit_space),
    Stage("encode", ("latents.pt",), "fit_space", None, encode),
    Stage("train_generator", ("generator/checkpoints/last.ckpt",), "encode", _generator_inputs, _train),
    Stage("sample", ("samples.pt", "samples.sdf"), "train_generator",
          lambda c, n: [_asdict(c.sampling)], _sample),
    Stage("score", ("metrics.json",), "sample", lambda c, n: [_asdict(c.metrics)], _score),
    Stage("controls", ("controls.json",), "score", lambda c, n: [c.controls], _controls),
    Stage("conditional", ("conditional.json",), "sample", _conditional_inputs,
          _conditional, when=_is_conditional),
    Stage("nfe", ("nfe.json",), "train_generator",
          lambda c, n: [_asdict(c.sampling), _asdict(c.metrics)], _nfe,
          when=lambda c: bool(c.sampling.nfe_sweep)),
    Stage("probes", ("probes.json",), "controls", lambda c, n: [_probes_version()], _probes,
          when=lambda c: bool(c.controls)),
)
BY_NAME = {s.name: s for s in PIPELINE}
#: the stages every study runs
STAGES = tuple(s.name for s in PIPELINE if s.name not in ("conditional", "nfe"))


def fingerprints(config: "StudyConfig", name: str) -> dict[str, str]:
    """A hash per stage of the config that shapes its output (devices, progress bars and
    the study name do not)."""
    from harness.core.data.base import fingerprint_of

    out: dict[str, str] = {}
    for s in PIPELINE:
        inputs = None if s.inputs is None else s.inputs(config, name)
        if s.extends is None:
            out[s.name] = fingerprint_of(inputs)
        elif inputs is None:
            out[s.name] = out[s.extends]
        else:
            out[s.name] = fingerprint_of([out[s.extends], *inputs])
    return out


def stages_from(stage: str) -> list[str]:
    """``stage`` and every stage after it (to redo them together)."""
    order = [s.name for s in PIPELINE]
    return order[order.index(stage):]


def stage_output_ok(space_dir: Path, stage: str) -> bool:
    """True when every output of a finished ``stage`` is present and readable."""
    return outputs_readable(space_dir, BY_NAME[stage].outputs if stage in BY_NAME else ())
