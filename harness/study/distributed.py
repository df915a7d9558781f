"""A study in several training processes (Lightning DDP: ``trainer.devices``,
``trainer.num_nodes``, ``trainer.strategy=ddp``), with one writer.

Every process of a DDP run executes the same ``l3dg run`` command: Lightning's own launcher
re-runs it once per extra device when the first ``Trainer.fit`` starts; ``torchrun`` and
SLURM's ``srun`` start all of them at once. Rank 0 runs the study as usual (it alone takes
the run-directory lock and writes config, record, checkpoints, logs, samples, metrics and
the report). Every other rank *follows* (:func:`follow`): it joins each Lightning fit rank 0
makes — the space autoencoders (``fit_space``) and the generator (``train_generator``) — in
the same order, and writes nothing (Lightning's checkpoint and logger calls are rank-0 only).

Which fits rank 0 makes is read, never guessed from timing: a stage runs when it, or a stage
before it, is not finished, its outputs are missing, or its config fingerprint changed (what
``Study._check_stale`` and ``Study._stage`` decide); a follower evaluates the same rule on the
same ``state.json`` files. It waits (file polling, no collective) until rank 0 has finished
the previous space and, before a generator fit, the encoded latents, so a long sampling or
scoring stage on rank 0 never runs into the process group's timeout. All ranks need the run
directory on a shared filesystem.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from harness.config.rules import space_type

log = logging.getLogger(__name__)

#: environment variables in which launchers put a process's rank (Lightning's launcher:
#: LOCAL_RANK / NODE_RANK; torchrun: RANK, LOCAL_RANK, GROUP_RANK; SLURM: SLURM_PROCID;
#: Open MPI / MPICH: OMPI_COMM_WORLD_RANK / PMI_RANK)
RANK_KEYS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
POLL_S = 0.5


def launcher_rank() -> int:
    """0 for the process that runs the study, > 0 for another process of the same DDP run
    (the largest rank any launcher variable gives; SLURM_PROCID only in multi-task steps)."""
    ranks = [int(os.environ.get(k) or 0) for k in RANK_KEYS]
    if int(os.environ.get("SLURM_NTASKS") or 1) > 1:
        ranks.append(int(os.environ.get("SLURM_PROCID") or 0))
    return max(ranks)


def multi_process(config) -> bool:
    """The trainer section may start more than one training process."""
    t = config.trainer
    devices = t.devices
    one_device = devices in (1, "1") or (isinstance(devices, (list, tuple)) and len(devices) == 1)
    return not one_device or int(t.num_nodes or 1) > 1 or "ddp" in str(t.strategy).lower()


def is_follower(config) -> bool:
    """True in a rank > 0 process of a multi-process study (see module docstring).

    Raises:
        ValueError: the config combines several training processes with a feature that
            runs only in one (repeated seeds).
    """
    if multi_process(config) and getattr(config, "seeds", None):
        raise ValueError("config key 'seeds' runs one study per seed and is not supported with "
                         "several training processes (trainer.devices/num_nodes/strategy=ddp); "
                         "run each seed as its own study (seed=N)")
    return launcher_rank() > 0 and multi_process(config)


def _record_status(root: Path) -> str | None:
    from harness.core.io import read_json

    try:
        return read_json(root / "record.json").get("status")
    except (OSError, ValueError, AttributeError):
        return None


class RankZeroStopped(RuntimeError):
    """Rank 0 ended its study (finished early, interrupted or failed) while a follower
    waited for it."""


class _Waiter:
    """Polls for rank 0's progress; gives up once rank 0 is seen to have ended."""

    def __init__(self, root: Path):
        self.root = root
        self.seen_running = False

    def until(self, done: Callable[[], bool], what: str) -> None:
        while True:
            if done():
                return
            status = _record_status(self.root)
            if status == "running":
                self.seen_running = True
            elif self.seen_running:
                raise RankZeroStopped(f"rank 0 stopped ({status}) before {what}")
            time.sleep(POLL_S)


def _will_run(study, name: str, stage: str) -> bool:
    """Whether rank 0 runs ``stage`` of space ``name`` in this session (see module docstring)."""
    from harness.results.state import SpaceState
    from harness.study.stages import STAGES, stage_output_ok

    directory = study.root / name
    state = SpaceState(directory)
    wanted = study.stage_fingerprints(name)
    for s in STAGES[:STAGES.index(stage) + 1]:
        have = state.fingerprint(s)
        if not state.done(s) or not stage_output_ok(directory, s) or (have is not None and have != wanted[s]):
            return True
    return False


def _all_done(study, name: str) -> bool:
    from harness.results.state import SpaceState
    from harness.study.stages import PIPELINE

    stages = [s.name for s in PIPELINE if s.when(study.config)]
    path = study.root / name
    return (path / "state.json").exists() and all(SpaceState(path).done(s) for s in stages)


def _done(study, name: str, stage: str) -> Callable[[], bool]:
    from harness.results.state import SpaceState

    path = study.root / name
    return lambda: (path / "state.json").exists() and SpaceState(path).done(stage)


def follow(study, spaces: list[str] | None = None) -> dict[str, Any]:
    """Rank > 0: make the same Lightning fits as rank 0, in the same order, writing nothing.
    Returns an empty results table (rank 0 prints and writes the real one)."""
    names = spaces or list(study.config.spaces)
    study.progress = False
    wait = _Waiter(study.root)
    log.info("rank %d follows the study in %s", launcher_rank(), study.root)
    try:
        if study.config.metrics.reference_row:   # rank 0 scores the reference row first
            wait.until(lambda: (study.root / "reference" / "metrics.json").exists(),
                       "the reference row")
        _follow(study, names, wait)
    except RankZeroStopped as err:   # rank 0 reports why; nothing is left to train along
        log.info("%s", err)
    return {}


def _follow(study, names: list[str], wait: _Waiter) -> None:
    from harness.core.registry import SPACES
    from spaces.base import Space

    previous = None
    for name in names:
        if previous is not None:             # rank 0 is past the previous space
            wait.until(lambda p=previous: _all_done(study, p), f"finishing space {previous}")
        previous = name
        space_dir = study.root / name / "space"
        if _will_run(study, name, "fit_space"):
            space = SPACES.get(space_type(name))(elements=study.dataset.elements, **study.config.spaces.get(name, {}))
            if space.trainable:
                space.fit(study.split("train"), study.split("val"), progress=False,
                          trainer_kwargs=study.trainer_kwargs())
        if _will_run(study, name, "train_generator"):
            wait.until(_done(study, name, "encode"), f"the latents of {name}")
            study.train_generator(name, Space.load(space_dir), study.root / name)
