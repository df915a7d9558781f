"""``StudyContext``: what a stage function sees of the running study.

Stage modules (``sample.py``, ``scoring.py``, ``nfe.py``, ``conditional.py``, ``budget.py``,
``curves.py``, ``stages.py``, ``distributed.py``) take the study as this protocol instead of
importing the runner (which imports them): the runner's :class:`~harness.study.runner.Study`
implements it, and a test double needs only these members.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

    from harness.config import StudyConfig
    from harness.core.data.base import MolDataset

__all__ = ["StudyContext"]


class StudyContext(Protocol):
    """The running study, as its stages use it."""

    #: the resolved study config
    config: "StudyConfig"
    #: ``runs/<study>`` (or a seed's sub-directory)
    root: Path
    #: show progress bars (a terminal is attached and ``progress: true``)
    progress: bool

    @property
    def dataset(self) -> "MolDataset": ...

    def split(self, which: str) -> "MolDataset":
        """``train`` (capped, generator half in conditional studies), ``val`` or ``test``."""

    def trainer_kwargs(self) -> dict[str, Any]:
        """Lightning ``Trainer`` keywords of the study (devices, precision, progress view)."""

    def train_generator(self, name: str, space: Any, directory: Path) -> dict[str, Any]:
        """Train space ``name``'s generator on its latents (the ``train_generator`` stage)."""

    def final_checkpoint(self, directory: Path) -> Path:
        """``<space>/generator/checkpoints/last.ckpt`` (a clear error when missing)."""

    def load_generator(self, name: str) -> Any:
        """The trained generator of one space."""

    def context_table(self, names: list[str]) -> "tuple[torch.Tensor, dict[str, Any]] | None":
        """Normalised conditioning values of the training molecules and their normalisation."""

    def stage_fingerprints(self, name: str) -> dict[str, str]:
        """The fingerprint of every stage of space ``name`` (``stages.fingerprints``)."""
