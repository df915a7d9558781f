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

class SavedSpaceError(ValueError):
    """A saved space's ``space.json`` / ``weights.pt`` that cannot be used (the message names
    the file and says how to recover)."""


def _refit_hint(directory: Path) -> str:
    return (f"restore it, or delete {directory} and run `l3dg run --resume` on the study to "
            "refit the space")


def read_space_weights(directory: str | Path) -> dict[str, Any]:
    """The state dict in ``<directory>/weights.pt``, loaded as tensors only
    (``weights_only=True``: never code). A missing, truncated or foreign file is a one-line
    :class:`SavedSpaceError` naming it."""
    directory = Path(directory)
    path = directory / "weights.pt"
    if not path.is_file():
        raise SavedSpaceError(f"{path} is missing; {_refit_hint(directory)}")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:   # truncated zip, refused pickle, EOF: never retried unsafely
        raise SavedSpaceError(f"{path}: corrupt or not a weights file ({type(err).__name__}); "
                              f"{_refit_hint(directory)}") from None
    if not isinstance(state, dict):
        raise SavedSpaceError(f"{path}: not a weights file (holds a {type(state).__name__}, "
                              f"not a state dict); {_refit_hint(directory)}")
    return state


def _read_space_json(directory: Path) -> dict[str, Any]:
    path = directory / "space.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise SavedSpaceError(f"{path} is missing; {_refit_hint(directory)}") from None
    except (OSError, ValueError) as err:
        raise SavedSpaceError(f"{path}: damaged ({type(err).__name__}); {_refit_hint(directory)}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise SavedSpaceError(f"{path}: not a saved space (no name); {_refit_hint(directory)}")
    return meta


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

    @staticmethod
    def options_from(local_vars: dict[str, Any]) -> dict[str, Any]:
        """A subclass constructor's keyword options from its ``locals()`` taken first thing
        (``super().__init__(elements, **self.options_from(locals()))``): every parameter but
        ``self`` and ``elements``, in signature order, so none is listed twice."""
        return {k: v for k, v in local_vars.items() if k not in ("self", "elements", "__class__")}

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

    def topology_atom_counts(self, latent: LatentBatch) -> "torch.Tensor | None":
        """``[B]`` int64 atom counts (explicit H included) of the molecules ``latent`` would
        decode to, read from the topology alone (no geometry decoded), or None when the space
        cannot tell the count without a full decode (the default). A conditional sampler uses
        it to draw several vector latents per target and keep one with the requested count
        (:mod:`harness.conditional.count`); per-atom latents fix the count by their mask."""
        return None

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
        """Rebuild a saved space; called on the base class it dispatches on the saved name.
        A damaged ``space.json`` or ``weights.pt`` is a :class:`SavedSpaceError` naming the
        file, raised before anything is built."""
        directory = Path(directory)
        meta = _read_space_json(directory)
        state = read_space_weights(directory)
        target = cls
        if cls is Space or meta["name"] != getattr(cls, "registry_name", cls.name):
            from harness.core.registry import SPACES, load_plugin

            if meta["name"] not in SPACES and meta.get("plugin"):
                load_plugin(_plugin_file(directory, meta))
            target = SPACES.get(meta["name"])
        space = target(elements=meta["elements"], **meta["options"])
        space.fit_stats = meta.get("fit_stats", {})
        try:
            space.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError, TypeError) as err:
            raise SavedSpaceError(f"{directory / 'weights.pt'}: does not fit the space saved in "
                                  f"space.json ({type(err).__name__}); "
                                  f"{_refit_hint(directory)}") from None
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
