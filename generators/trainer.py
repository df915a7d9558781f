"""Trainer and logger construction, atomic checkpoint IO, and safe checkpoint reading.

* :func:`build_trainer` — the Lightning ``Trainer`` every generator trains under: a
  :class:`ModelCheckpoint` (``out_dir/checkpoints/step<k>.ckpt`` every ``checkpoint_every``
  steps plus ``last.ckpt``), CSV + TensorBoard loggers under ``out_dir/logs``, and
  :class:`AtomicCheckpointIO`; user ``trainer_kwargs`` (accelerator, devices, strategy,
  precision, callbacks (appended), logger, plugins, ...) pass through.
* :class:`AtomicCheckpointIO` — writes to a temporary file and renames it into place (a crash
  never leaves a half-written checkpoint) and reads through :func:`read_checkpoint`.
* :func:`read_checkpoint` — ``torch.load(weights_only=True)`` that turns every way a file can
  be damaged (truncated zip, garbage bytes, empty file, foreign pickle) into one
  :class:`CheckpointError` line naming the file.
* :func:`find_resume_checkpoint` — the newest *readable* checkpoint of a run: ``last.ckpt``,
  else the newest ``step*.ckpt``; damaged ones are skipped with a warning.
"""
from __future__ import annotations

import contextlib
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

__all__ = ["CheckpointError", "read_checkpoint", "find_resume_checkpoint", "build_trainer",
           "default_loggers", "AtomicCheckpointIO", "quiet_fit"]

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read; the message names the file."""


def _reason(err: BaseException) -> str:
    text = str(err)
    if isinstance(err, EOFError) or not text.strip():
        return "empty or truncated file"
    if "PytorchStreamReader" in text or "zip archive" in text:
        return "truncated or not a torch zip archive"
    if isinstance(err, OSError):
        return f"truncated or unreadable file: {err.strerror or text}"
    if "Weights only load failed" in text or type(err).__name__ == "UnpicklingError":
        return "not a torch checkpoint of plain tensors (garbage bytes or a foreign pickle)"
    return f"{type(err).__name__}: {text.splitlines()[0][:120]}"


def read_checkpoint(path: str | Path, map_location: Any = "cpu",
                    require: tuple[str, ...] = ("state_dict",)) -> dict[str, Any]:
    """Load a generator checkpoint with ``weights_only=True``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file is damaged or lacks the keys in ``require``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:   # noqa: BLE001 - every failure becomes one line naming the file
        raise CheckpointError(f"checkpoint {path} is unreadable ({_reason(err)}); delete it "
                              "and retrain or resume from another checkpoint") from None
    if not isinstance(data, dict) or any(k not in data for k in require):
        raise CheckpointError(f"checkpoint {path} is not a generator checkpoint (missing "
                              f"{', '.join(k for k in require if not isinstance(data, dict) or k not in data)})")
    return data


def _step_of(path: Path) -> int:
    m = re.search(r"step(\d+)", path.stem)
    return int(m.group(1)) if m else -1


def find_resume_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """Newest readable checkpoint in ``ckpt_dir`` (``last.ckpt`` first, then ``step*.ckpt``
    by step, newest first); None when the folder holds no checkpoint.

    Raises:
        CheckpointError: checkpoints exist but none can be read.
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    steps = sorted(ckpt_dir.glob("step*.ckpt"), key=lambda p: (_step_of(p), p.stat().st_mtime_ns),
                   reverse=True)
    candidates = [p for p in [ckpt_dir / "last.ckpt"] if p.exists()] + steps
    bad = []
    for path in candidates:
        try:
            read_checkpoint(path)
        except CheckpointError as err:
            bad.append(str(err))
            log.warning("%s; trying an older checkpoint", err)
            continue
        if bad:
            log.warning("resuming from %s instead", path)
        return path
    if bad:
        raise CheckpointError(f"no readable checkpoint in {ckpt_dir}: {bad[0]}")
    return None


def default_loggers(out_dir: Path) -> list:
    """CSV logger (always) and TensorBoard logger (if installed) under ``out_dir/logs``."""
    from pytorch_lightning.loggers import CSVLogger

    loggers = [CSVLogger(str(out_dir), name="logs")]
    try:
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(out_dir), name="logs", default_hp_metric=False))
    except (ImportError, ModuleNotFoundError):   # tensorboard not installed
        pass
    return loggers


def _checkpoint_io_base():
    from lightning_fabric.plugins import TorchCheckpointIO

    return TorchCheckpointIO


class AtomicCheckpointIO(_checkpoint_io_base()):
    """Checkpoint writer that writes to a temporary file and renames it into place, and a
    reader whose errors name the file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        from harness.core.io import atomic_path

        with atomic_path(path, suffix=".ckpt") as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return read_checkpoint(path, map_location=map_location or "cpu", require=())


def _is_checkpoint_io(p) -> bool:
    from lightning_fabric.plugins import CheckpointIO

    return isinstance(p, CheckpointIO)


def build_trainer(out_dir: str | Path, trainer_kwargs: dict | None = None, *,
                  progress: bool = True, checkpoint_every: int = 1000,
                  validate: bool = False):
    """The ``pl.Trainer`` of :meth:`LatentGenerator.fit` (see module docstring). Its loop
    length is set by the caller (``fit_loop.epoch_loop.max_steps``)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    tk = dict(trainer_kwargs or {})
    for key in ("max_steps", "max_epochs"):
        if key in tk:
            raise ValueError(f"pass {key} to fit(), not in trainer_kwargs")
    if tk.get("accumulate_grad_batches", 1) != 1:
        raise ValueError("accumulate_grad_batches is not supported: raise batch_size or "
                         "the number of devices instead")
    out_dir = Path(out_dir)
    callbacks = list(tk.pop("callbacks", []) or [])
    if tk.get("enable_checkpointing", True):
        callbacks.append(ModelCheckpoint(
            dirpath=out_dir / "checkpoints", filename="step{step:08d}",
            auto_insert_metric_name=False, save_last=True, save_top_k=1,
            every_n_train_steps=max(1, checkpoint_every)))
    if "logger" not in tk:
        tk["logger"] = default_loggers(out_dir)
    plugins = tk.pop("plugins", None)
    plugins = list(plugins) if isinstance(plugins, (list, tuple)) else (
        [plugins] if plugins is not None else [])
    if not any(_is_checkpoint_io(p) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    settings = dict(
        max_steps=-1, max_epochs=-1, enable_progress_bar=progress,
        enable_model_summary=False, use_distributed_sampler=False,
        num_sanity_val_steps=0, log_every_n_steps=50,
        default_root_dir=str(out_dir), callbacks=callbacks, plugins=plugins,
    )
    if not validate:
        settings["limit_val_batches"] = 0
    settings.update(tk)
    return pl.Trainer(**settings)


@contextlib.contextmanager
def quiet_fit() -> Iterator[None]:
    """Silence Lightning warnings that do not apply to index-driven latent batches."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*resuming from a checkpoint that ended.*")
        warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
        warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
        yield
