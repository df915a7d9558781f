"""The diffusion-space interface every backend implements (one file per backend).

A space maps molecules to the latent a generator diffuses and back::

    space = SPACES.get("raw")(elements=("H", "C", "N", "O", "F"), **options)
    space.fit(train_dataset, val_dataset)        # trains its autoencoder, if any
    latent = space.encode(mol_batch)             # -> LatentBatch, shapes per space.spec
    molecules = space.decode(latent)             # -> MolBatch (bonds or None)
    space.save(run_dir / "space"); SPACES.get("raw").load(run_dir / "space")

Generators see only ``space.spec`` (kind, width, symmetry, dim(n)), never the space.
"""
from __future__ import annotations

import abc
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch

from harness.core.io import atomic_write_json
from harness.core.types import LatentBatch, LatentSpec, MolBatch

if TYPE_CHECKING:
    from harness.core.data.base import MolDataset

class Space(abc.ABC):
    """Base class of diffusion spaces.

    Subclasses set ``name`` (the registry name), implement :attr:`spec`, :meth:`encode`,
    :meth:`decode`, and (for autoencoders) :meth:`fit`, :meth:`state_dict` and
    :meth:`load_state_dict`. ``options`` are the keyword arguments of ``__init__``; they are
    saved with the weights so :meth:`load` rebuilds the same space.
    """

    name: ClassVar[str] = "base"
    #: where decoded bonds come from: "decoder" (the space predicts them) or "perceive"
    #: (bonds must be inferred from coordinates by the metric suite).
    bond_source: ClassVar[str] = "perceive"
    #: True when fit() trains something (the study runner skips it otherwise).
    trainable: ClassVar[bool] = False
    #: lowest reconstruction atom-type accuracy the conformance checks accept (after their
    #: brief fit); None: reconstruction only has to be computable.
    expected_reconstruction: ClassVar[float | None] = None

    def __init__(self, elements: Sequence[str], **options: Any):
        self.elements = tuple(elements)
        self.options = dict(options)
        self.fit_stats: dict[str, Any] = {}

    # -- the interface ----------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def spec(self) -> LatentSpec:
        """The latent's declared shape and symmetry."""

    @abc.abstractmethod
    def encode(self, batch: MolBatch) -> LatentBatch:
        """Molecules -> latents (deterministic)."""

    @abc.abstractmethod
    def decode(self, latent: LatentBatch) -> MolBatch:
        """Latents -> molecules; ``bonds`` is None unless ``bond_source == "decoder"``."""

    def ablations(self, latent: LatentBatch) -> dict[str, MolBatch]:
        """Space-specific controls on *generated* latents: ``name -> decoded MolBatch`` of
        ``latent`` altered to separate what the learned latent contributes from what the
        decoder adds on its own (e.g. the invariant space's geometry from the conformer
        seed alone). The study scores each like the samples (``controls.json``). Default:
        none."""
        return {}

    def fit(self, train: "MolDataset", val: "MolDataset | None" = None,
            progress: bool = True, trainer_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train the space's autoencoder on a dataset split (no-op for fixed spaces).

        ``trainer_kwargs`` pass through to Lightning's ``Trainer`` (accelerator, devices,
        strategy, precision). Returns fit statistics (losses, epochs, seconds) that are also
        kept in :attr:`fit_stats`."""
        return self.fit_stats

    def state_dict(self) -> dict[str, Any]:
        """Learned state (tensors) to save; empty for fixed spaces."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    # -- sweeps: a space owns its knobs ------------------------------------------------------
    #: categorical sweep choices of this space's own options, ``{option: [values]}``; an
    #: option with several values becomes the trial parameter ``"<space>.<option>"``, one value
    #: is simply set. A sweep config's ``sweep.space_options.<space>`` replaces them per option.
    sweep_choices: ClassVar[dict[str, list]] = {}

    @classmethod
    def sweep_options(cls, trial: Any, sweep: Any, options: dict[str, Any]) -> dict[str, Any]:
        """This space's options for one Optuna ``trial`` of a sweep.

        ``options`` are the study's own options for the space; ``sweep`` is the sweep section
        of the config (``latent_widths``: the dimensionality factor, ``ae_epochs_range``: the
        training-length factor, ``space_options``: per-space choices). A space overrides this
        to say how those factors map onto its options (width, capacity, epochs) and calls
        :meth:`suggest_width`, :meth:`suggest_epochs` and :meth:`apply_choices` so shared
        factors keep shared parameter names. The default varies only :attr:`sweep_choices`
        (a fixed space, or a user's space that declares nothing, is swept as it is)."""
        return cls.apply_choices(trial, sweep, dict(options))

    @staticmethod
    def suggest_width(trial: Any, sweep: Any) -> int:
        """The trial's latent width (parameter ``latent_width``, from ``sweep.latent_widths``)."""
        return trial.suggest_categorical("latent_width", list(sweep.latent_widths))

    @staticmethod
    def suggest_epochs(trial: Any, sweep: Any) -> int:
        """The trial's autoencoder-epochs factor (parameter ``ae_epochs``)."""
        lo, hi = sweep.ae_epochs_range
        return trial.suggest_int("ae_epochs", int(lo), int(hi))

    @classmethod
    def apply_choices(cls, trial: Any, sweep: Any, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with :attr:`sweep_choices` (replaced per option by the config's
        ``sweep.space_options.<space>``) applied: several values -> a categorical trial
        parameter ``"<space>.<option>"``, one value -> set."""
        name = getattr(cls, "registry_name", None) or cls.name
        choices = {**cls.sweep_choices, **(getattr(sweep, "space_options", None) or {}).get(name, {})}
        for option, values in choices.items():
            values = list(values)
            options[option] = (trial.suggest_categorical(f"{name}.{option}", values)
                               if len(values) > 1 else values[0])
        return options

    @property
    def space_name(self) -> str:
        """The registry name (set by ``@SPACES.register``), else the class's ``name``."""
        return getattr(type(self), "registry_name", None) or self.name

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``space.json`` (name, elements, options, fit stats) and ``weights.pt``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        from harness.core.io import atomic_path

        with atomic_path(directory / "weights.pt") as tmp:
            torch.save(self.state_dict(), tmp)
        import inspect

        source = Path(inspect.getfile(type(self))).resolve()
        builtin = source.parent == Path(__file__).resolve().parent
        atomic_write_json(directory / "space.json", {
            "name": self.space_name, "elements": list(self.elements), "options": self.options,
            "fit_stats": self.fit_stats,
            # a user's space: remember its file so load() can import it again — by absolute
            # path and relative to this folder (a run directory moved together with its
            # plugin file still loads)
            "plugin": None if builtin else str(source),
            "plugin_relative": None if builtin else os.path.relpath(source, directory.resolve()),
        })
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "Space":
        """Rebuild a saved space; called on the base class it dispatches on the saved name."""
        directory = Path(directory)
        meta = json.loads((directory / "space.json").read_text())
        target = cls
        if cls is Space or meta["name"] != getattr(cls, "registry_name", cls.name):
            from harness.core.registry import SPACES, load_plugin

            if meta["name"] not in SPACES and meta.get("plugin"):
                load_plugin(_plugin_file(directory, meta))
            target = SPACES.get(meta["name"])
        space = target(elements=meta["elements"], **meta["options"])
        space.fit_stats = meta.get("fit_stats", {})
        space.load_state_dict(torch.load(directory / "weights.pt", weights_only=True))
        return space

    @torch.no_grad()
    def encode_dataset(self, dataset: "MolDataset", batch_size: int = 256,
                       progress: bool = False) -> LatentBatch:
        """Encode every molecule of a dataset (in order) into one LatentBatch."""
        from tqdm.auto import tqdm

        parts = [self.encode(b) for b in tqdm(dataset.iter_batches(batch_size), disable=not progress,
                                              total=-(-len(dataset) // batch_size),
                                              desc=f"{self.name}: encoding", unit="batch")]
        return LatentBatch.cat(parts)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


# every class registered as a space must subclass Space (a clear error at registration)
from harness.core.registry import SPACES as _SPACES  # noqa: E402

_SPACES.set_base(Space)


def _plugin_file(directory: Path, meta: dict) -> str:
    """The saved space's plugin file: its recorded absolute path, else the path relative to
    the space folder; a clear error naming both when neither exists."""
    candidates = [Path(meta["plugin"])]
    if meta.get("plugin_relative"):
        candidates.append((directory / meta["plugin_relative"]).resolve())
    for path in candidates:
        if path.is_file():
            return str(path)
    raise FileNotFoundError(f"{directory / 'space.json'}: space {meta['name']!r} comes from a plugin "
                            f"file that is not there ({' or '.join(map(str, candidates))}); put the "
                            "file back or pass it with `plugins:`")
