"""The Lightning side of :mod:`harness.term.progress`: a ``ProgressBar`` callback that replaces
Lightning's own bar and draws training progress (step, loss, ETA) into the study's view.

Kept apart so ``harness.term.progress`` imports without Lightning.
"""
from __future__ import annotations

import math
from typing import Any

from pytorch_lightning.callbacks import ProgressBar


def _loss_of(outputs: Any) -> float | None:
    """The training loss from a ``training_step`` output (tensor, dict with ``loss``, or None)."""
    value = outputs.get("loss") if isinstance(outputs, dict) else outputs
    if value is None:
        return None
    try:
        return float(value.detach() if hasattr(value, "detach") else value)
    except (TypeError, ValueError, RuntimeError):
        return None


class LightningBar(ProgressBar):
    """Training steps of one ``Trainer.fit`` as a :class:`harness.term.progress.StepMeter`.

    Total = ``trainer.estimated_stepping_batches`` (optimizer steps, from ``max_steps`` or
    ``max_epochs``); a resumed fit starts at its restored global step. Draws on global rank
    0 only; validation loss (``val/loss``), when logged, joins the postfix.
    """

    def __init__(self, view, desc: str = "training"):
        super().__init__()
        self.view = view
        self.desc = desc
        self.meter = None
        self._enabled = True

    # Lightning's ProgressBar protocol
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.view.mode != "off"

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        self.view.line(sep.join(map(str, args)))

    # hooks
    def on_train_start(self, trainer, pl_module) -> None:
        if not (self.is_enabled and trainer.is_global_zero):
            return
        total = trainer.estimated_stepping_batches
        total = total if isinstance(total, (int, float)) and math.isfinite(total) else None
        self.meter = self.view.meter(total, self.desc, unit="step", initial=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.meter is not None:
            self.meter.update_to(trainer.global_step, loss=_loss_of(outputs))

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.meter is not None and not trainer.sanity_checking:
            val = trainer.callback_metrics.get("val/loss")
            if val is not None:
                self.meter.update_to(trainer.global_step, val_loss=float(val))

    def _close(self) -> None:
        if self.meter is not None:
            self.meter.close()
            self.meter = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._close()
