"""One progress view per study: which space and stage, and a bar for what takes time.

Two renderings of the same events, chosen once per study:

* ``"tty"`` (stdout is a terminal and the config allows bars): a line when a stage starts
  (``[1/2 raw] train_generator ...``), a live bar below it for training (step, loss, ETA;
  a Lightning callback that replaces Lightning's own bar) and the library's own bars for
  encoding and sampling, and a closing line with the stage's time. Lines go through
  ``tqdm.write`` so they never tear a bar.
* ``"lines"`` (output redirected, CI logs, ``progress: false``): plain lines, no carriage
  returns: one when a stage starts and one when it ends, and during training a step line
  about every tenth of the run (or every 60 s), so ``l3dg run ... > log.txt`` reads well.
* ``"off"`` (``-q``): nothing; the final table is still printed by the CLI.

Use from the study runner::

    view = StudyProgress(config.study, list(config.spaces), bars=config.progress)
    with view.stage("raw", "train_generator") as st:
        info = gen.fit(..., progress=view.bars,
                       trainer_kwargs={**trainer_kwargs, **view.trainer_kwargs()})
        st.info = info          # summarised on the stage's closing line
    view.skipped("flat", "fit_space")
    view.close()

Output goes to stdout (the CLI's results table follows on the same stream); warnings and
errors stay on stderr.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from collections import deque
from typing import Any, Iterator, Sequence, TextIO

from harness.term import quiet

MODES = ("tty", "lines", "off")
STAGE_ORDER = ("fit_space", "encode", "train_generator", "sample", "score")


def _clock(seconds: float) -> str:
    """``75.3`` -> ``1:15``; ``3725`` -> ``1:02:05``."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else _clock(seconds)


def choose_mode(stream: TextIO, bars: bool = True, level: int | None = None) -> str:
    """``"off"`` at ``-q``; ``"tty"`` when ``stream`` is a terminal and ``bars``; else
    ``"lines"``."""
    level = quiet.verbosity() if level is None else level
    if level <= quiet.QUIET:
        return "off"
    isatty = getattr(stream, "isatty", None)
    tty = bool(isatty and isatty())
    import os

    if os.environ.get("TERM") == "dumb":
        tty = False
    return "tty" if (tty and bars) else "lines"


def summarise(info: dict[str, Any] | None) -> str:
    """A few words from a stage's info dict (its closing line): loss, steps, molecules."""
    if not info:
        return ""
    parts = []
    for key, label in (("final_loss", "loss"), ("steps", "steps"), ("molecules", "molecules"),
                       ("n", "molecules"), ("metrics", "metrics")):
        value = info.get(key)
        if isinstance(value, float):
            parts.append(f"{label} {value:.4g}")
        elif isinstance(value, int) and not isinstance(value, bool):
            parts.append(f"{value} {label}")
    return ", ".join(parts)


class StageHandle:
    """What the caller may attach to a running stage: ``info`` (summarised on its closing
    line)."""

    def __init__(self, label: str, stage: str):
        self.label = label
        self.stage = stage
        self.info: dict[str, Any] | None = None
        self.started = time.perf_counter()


class StepMeter:
    """Progress of a counted loop (training steps, molecules): a tqdm bar in ``"tty"``
    mode, periodic plain lines in ``"lines"`` mode, nothing in ``"off"``.

    ``update_to(n, loss=...)`` sets the count; losses are shown as the mean of the last 20.
    """

    def __init__(self, view: "StudyProgress", total: float | None, desc: str, unit: str = "step",
                 initial: int = 0):
        self.view = view
        self.total = int(total) if total is not None and math.isfinite(total) and total > 0 else None
        self.desc = desc
        self.unit = unit
        self.n = int(initial)
        self.start_n = int(initial)
        self.t0 = time.perf_counter()
        self.last_line = self.t0
        self.losses: deque[float] = deque(maxlen=20)
        self.extra: dict[str, str] = {}
        self.every = max(1, math.ceil(self.total / 10)) if self.total else 50
        self.bar = None
        self._closed = False
        if view.mode == "tty":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.n, desc=f"  {desc}", unit=unit,
                            leave=False, file=view.stream, dynamic_ncols=True,
                            smoothing=0.1)
        elif view.mode == "lines" and self.n:
            view.line(f"{desc}: resuming at {unit} {self.n}")

    def loss(self) -> float | None:
        return sum(self.losses) / len(self.losses) if self.losses else None

    def update_to(self, n: int, loss: float | None = None, **extra: Any) -> None:
        if loss is not None and math.isfinite(loss):
            self.losses.append(float(loss))
        for key, value in extra.items():
            self.extra[key] = f"{value:.4g}" if isinstance(value, float) else str(value)
        step, self.n = self.n, int(n)
        if self.bar is not None:
            post = {} if self.loss() is None else {"loss": f"{self.loss():.4g}"}
            post.update(self.extra)
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(self.n - step)
        elif self.view.mode == "lines":
            # the last line waits for close(), so a final validation loss joins it
            now = time.perf_counter()
            crossed = self.n // self.every > step // self.every
            if self.n != self.total and self.n > step and (crossed or now - self.last_line > 60):
                self.last_line = now
                self.view.line(self.status())

    def status(self) -> str:
        """``step 40/400  loss 0.512  12.3 s, ETA 1:48``."""
        elapsed = time.perf_counter() - self.t0
        done = self.n - self.start_n
        text = f"  {self.unit} {self.n}" + (f"/{self.total}" if self.total else "")
        if self.loss() is not None:
            text += f"  loss {self.loss():.4g}"
        for key, value in self.extra.items():
            text += f"  {key} {value}"
        text += f"  {_seconds(elapsed)}"
        if self.total and done > 0 and self.n < self.total:
            text += f", ETA {_clock(elapsed / done * (self.total - self.n))}"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.view.mode == "lines" and self.n > self.start_n and not self._closed:
            self.view.line(self.status())
        self._closed = True


class StudyProgress:
    """The progress view of one study (see the module docstring).

    Args:
        study: study name (first line).
        spaces: the spaces in run order (for ``[i/n space]`` labels).
        bars: the config allows live bars (``progress:`` key).
        stream: where the view writes (default ``sys.stdout``).
        mode: force ``"tty"``, ``"lines"`` or ``"off"`` (default: :func:`choose_mode`).
    """

    def __init__(self, study: str, spaces: Sequence[str], bars: bool = True,
                 stream: TextIO | None = None, mode: str | None = None):
        self.study = study
        self.spaces = list(spaces)
        self.stream = stream or sys.stdout
        self.mode = mode or choose_mode(self.stream, bars)
        if self.mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, got {self.mode!r}")
        self._skipped: dict[str, list[str]] = {}
        self._current: StageHandle | None = None

    # -- what callers pass on -----------------------------------------------------------
    @property
    def bars(self) -> bool:
        """Whether library code may draw its own tqdm bars (encode, sample): terminal only."""
        return self.mode == "tty"

    def trainer_kwargs(self, desc: str | None = None) -> dict[str, Any]:
        """Lightning ``Trainer`` keywords that put training progress into this view:
        ``{"callbacks": [bar], "enable_progress_bar": True}`` (or the bar switched off)."""
        if self.mode == "off":
            return {"enable_progress_bar": False}
        return {"callbacks": [self.lightning_callback(desc)], "enable_progress_bar": True}

    def lightning_callback(self, desc: str | None = None):
        """A Lightning ``ProgressBar`` callback drawing into this view."""
        from harness.term.lightning_bar import LightningBar

        if desc is None:
            desc = "training" if self._current is None else (
                "fitting" if self._current.stage == "fit_space" else "training")
        return LightningBar(self, desc)

    def meter(self, total: float | None, desc: str, unit: str = "step", initial: int = 0) -> StepMeter:
        """A :class:`StepMeter` for any counted loop of the current stage."""
        return StepMeter(self, total, desc, unit=unit, initial=initial)

    # -- output ---------------------------------------------------------------------------
    def line(self, text: str) -> None:
        """One line, written so it never tears a live bar."""
        if self.mode == "off":
            return
        label = self._label_of_current()
        text = f"{label} {text}" if label and text.startswith("  ") else text
        if self.mode == "tty":
            from tqdm.auto import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def _label_of_current(self) -> str:
        return self._current.label if self._current else ""

    def label(self, space: str) -> str:
        if space in self.spaces:
            return f"[{self.spaces.index(space) + 1}/{len(self.spaces)} {space}]"
        return f"[{space}]"

    # -- stages ---------------------------------------------------------------------------
    def skipped(self, space: str, stage: str) -> None:
        """A stage found done on disk (resume): reported once per space, in one line."""
        self._skipped.setdefault(space, []).append(stage)

    def _flush_skipped(self) -> None:
        for space, stages in self._skipped.items():
            self.line(f"{self.label(space)} done already: {', '.join(stages)}")
        self._skipped.clear()

    @contextlib.contextmanager
    def stage(self, space: str, stage: str) -> Iterator[StageHandle]:
        """Bracket one stage: a line when it starts, one when it ends (with its time and
        :func:`summarise` of ``handle.info``), or says it failed."""
        self._flush_skipped()
        handle = StageHandle(self.label(space), stage)
        self._current = handle
        self.line(f"{handle.label} {stage} ...")
        ok = False
        try:
            yield handle
            ok = True
        finally:
            self._current = None
            elapsed = time.perf_counter() - handle.started
            if ok:
                summary = summarise(handle.info)
                self.line(f"{handle.label} {stage} done in {_seconds(elapsed)}"
                          + (f" ({summary})" if summary else ""))
            else:
                self.line(f"{handle.label} {stage} failed after {_seconds(elapsed)}")

    def close(self) -> None:
        """End of the study: report stages still pending as skipped."""
        self._flush_skipped()
