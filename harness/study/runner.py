"""The comparative study: every configured space through one generator family and one
metric suite, with resumable stages.

Per space (``runs/<study>/<space>/``)::

    fit_space         space/                       (autoencoder weights + space.json)
    encode            latents.pt                   (training latents)
    train_generator   generator/                   (checkpoints/last.ckpt, CSV/TensorBoard logs)
    sample            samples.sdf, samples.pt      (decoded molecules, raw decoder output)
    score             metrics.json                 (suite on samples + latent diagnostics)

plus ``reference/metrics.json`` (the dataset's own molecules), ``results.json``,
``record.json``, ``config.yaml`` and ``report.md``. Each finished stage is recorded in the
space's ``state.json`` (atomically), so a killed study resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from harness.config import StudyConfig, load_config, validate_components
from harness.config.rules import space_type
from harness.core.io import atomic_write_json, atomic_write_text, read_json
from harness.results.guard import RunDirLock
from harness.results.records import base_record
from harness.results.state import (
    SpaceState,
    collect_results,
    load_latents,
    load_molbatch,  # noqa: F401  (re-exported for callers)
    read_run_config,
)
from harness.study import stages as S
from harness.study.stages import STAGES  # noqa: F401  (re-exported)
from metrics.conditional import ATOM_COUNT

log = logging.getLogger(__name__)



class StaleResults(ValueError):
    """Results on disk were produced by a different config than the one now given."""


class StudyInterrupted(RuntimeError):
    """Raised by ``stop_after`` (tests of resume) after the named stage completed."""


class Study:
    """A comparative study rooted at ``runs/<study>`` (see the module docstring)."""

    def __init__(self, config: StudyConfig, root: Path | None = None, force: bool = False):
        self.config = config
        self.root = Path(root) if root else Path(config.output_dir) / config.study
        self.force = force
        # progress bars only on a terminal: redirected logs would fill with bar redraws
        from harness.term.progress import StudyProgress

        # one progress view per study: stage lines, a training bar on a terminal, plain
        # lines when redirected (harness/term/progress.py)
        self.view = StudyProgress(config.study, list(config.spaces),
                                  bars=config.progress and sys.stderr.isatty())
        self.progress = self.view.bars
        self._dataset = None
        self._train = None

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_source(cls, source, overrides: list[str] | None = None, force: bool = False) -> "Study":
        config = load_config(source, overrides)
        validate_components(config)
        return cls(config, force=force)

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[str] | None = None,
               force: bool = False) -> "Study":
        run_dir = Path(run_dir)
        config = load_config(read_run_config(run_dir), overrides)
        # a run directory's plugin paths are relative to it, not to the current directory
        config.plugins = [str((run_dir / p).resolve()) if p.endswith(".py") and not Path(p).is_absolute()
                          and (run_dir / p).exists() else p for p in config.plugins]
        validate_components(config)
        return cls(config, root=run_dir, force=force)

    # -- what each stage depends on ------------------------------------------------------
    def stage_fingerprints(self, name: str) -> dict[str, str]:
        """A hash per stage of the config keys that shape its output (``stages.py``)."""
        return S.fingerprints(self.config, name)

    def _check_stale(self, name: str, state: "SpaceState", directory: Path) -> None:
        """Refuse (or, with ``force``, redo) stages whose recorded config differs."""
        wanted = self.stage_fingerprints(name)
        for stage in S.stages_from(S.PIPELINE[0].name):
            have = state.fingerprint(stage)
            if have is None or have == wanted[stage]:
                continue
            redo = S.stages_from(stage)
            if not self.force:
                raise StaleResults(
                    f"{directory}: stage {stage!r} was run with a different config than the one "
                    f"given now. Use another study name (study=NAME), or --force to redo "
                    f"{', '.join(redo)} with the new config (their old results are replaced).")
            log.warning("%s: config changed; redoing %s", name, ", ".join(redo))
            state.forget(redo)
            if "train_generator" in redo and (directory / "generator").exists():
                import shutil

                shutil.rmtree(directory / "generator")  # never resume from another config's checkpoint
            return

    # -- data -----------------------------------------------------------------------------
    @property
    def dataset(self):
        if self._dataset is None:
            from harness.core.data import load_dataset

            options = dict(self.config.data.options)
            if self.config.data.dataset == "qm9":
                options.setdefault("progress", self.progress)
            self._dataset = load_dataset(self.config.data.dataset, **options)
        return self._dataset

    def split(self, which: str):
        """A split of the study's dataset. ``train`` is capped by ``data.max_train`` and, in
        a conditional study, restricted to the generator half ``Db`` (the property
        predictor that scores the study trains on ``Da``)."""
        if which == "train" and self._train is not None:
            return self._train
        ds = self.dataset.split(getattr(self.config.data, f"{which}_split"))
        if which == "train" and self.config.data.max_train and len(ds) > self.config.data.max_train:
            ds = ds.subset(np.arange(self.config.data.max_train), f"{ds.name}[:{self.config.data.max_train}]")
        if which == "train":
            from harness.study.conditional import is_conditional, predictor_dataset

            if is_conditional(self.config):
                from harness.conditional.protocol import generator_half

                ds = generator_half(ds, predictor_dataset(self))
            self._train = ds
        return ds

    # -- running --------------------------------------------------------------------------
    def run(self, stop_after: str | None = None, spaces: list[str] | None = None) -> dict[str, Any]:
        """Run (or resume) every stage; returns the results table rows.

        ``stop_after="<space>/<stage>"`` raises :class:`StudyInterrupted` after that stage
        (used to test resume).
        """
        from harness.study import distributed

        if distributed.is_follower(self.config):   # rank > 0 of a DDP run: trains along, writes nothing
            return distributed.follow(self, spaces)
        with RunDirLock(self.root):
            if self.config.seeds:
                return self._run_seeds()
            return self._run(stop_after, spaces)

    def _run_seeds(self) -> dict[str, Any]:
        import dataclasses

        from harness.report.write import write_report
        from harness.results.seeds import seed_dir

        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / "config.yaml", yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        for k in self.config.seeds:      # one complete, resumable study per seed
            sub = dataclasses.replace(self.config, seed=int(k), seeds=[])
            Study(sub, root=seed_dir(self.root, k), force=self.force).run()
        rows = collect_results(self.root)
        from harness.study.provenance import write_results

        record = base_record(self.config.seeds[0])    # the seeds' own records are in seed-<k>/
        record.update(seeds=list(self.config.seeds), status="finished",
                      provenance=write_results(self, rows))
        atomic_write_json(self.root / "record.json", record)
        write_report(self.root)
        from harness.report.html import write_html_report
        from harness.results.manifest import write_manifest

        write_html_report(self.root)
        write_manifest(self.root)
        return rows

    def _run(self, stop_after: str | None, spaces: list[str] | None) -> dict[str, Any]:
        torch.manual_seed(self.config.seed)
        for name in spaces or list(self.config.spaces):
            if (self.root / name / "state.json").exists():  # before config.yaml is replaced
                self._check_stale(name, SpaceState(self.root / name), self.root / name)
        self.root.mkdir(parents=True, exist_ok=True)
        config_path = self.root / "config.yaml"
        atomic_write_text(config_path, yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        record_path = self.root / "record.json"
        record = read_json(record_path) if record_path.exists() else base_record(self.config.seed)
        record.setdefault("sessions", []).append({"started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        record["status"] = "running"
        atomic_write_json(record_path, record)
        t0 = time.perf_counter()
        try:
            if self.config.metrics.reference_row:
                with self.view.stage("reference", "score"):
                    self.score_reference()
            for name in spaces or list(self.config.spaces):
                self.run_space(name, stop_after=stop_after)
        except BaseException as err:    # killed by a signal, Ctrl-C, or a failing stage
            record["status"] = f"interrupted ({type(err).__name__})"
            atomic_write_json(record_path, record)
            raise
        rows = self.collect_results()
        from harness.study.provenance import write_results

        record["provenance"] = write_results(self, rows)
        record["status"] = "finished"
        record["sessions"][-1]["seconds"] = round(time.perf_counter() - t0, 2)
        record["stages"] = {name: SpaceState(self.root / name).seconds for name in self.config.spaces}
        atomic_write_json(record_path, record)
        from harness.report.html import write_html_report
        from harness.report.write import write_report
        from harness.results.manifest import write_manifest

        write_report(self.root)
        write_html_report(self.root)
        write_manifest(self.root)       # last: every artefact above, hashed
        self.view.close()
        return rows

    def _stage(self, state: SpaceState, space_name: str, stage: str, fn: Callable[[], dict | None],
               stop_after: str | None) -> None:
        if state.done(stage) and not S.stage_output_ok(state.path.parent, stage):
            log.warning("%s/%s: finished earlier but its output is missing or unreadable; redoing "
                        "it and the stages after it", space_name, stage)
            state.forget(S.stages_from(stage))
        if state.done(stage):
            log.debug("%s/%s: done already, skipped", space_name, stage)
            self.view.skipped(space_name, stage)
            return
        fingerprint = self.stage_fingerprints(space_name)[stage]
        state.start(stage, fingerprint)
        t0 = time.perf_counter()
        with self.view.stage(space_name, stage) as handle:
            extra = fn() or {}
            handle.info = extra
        elapsed = time.perf_counter() - t0
        if "shared_from" in extra:      # a copied fit costs what its twin's did
            elapsed = SpaceState(self.root / extra["shared_from"]).seconds.get(stage, elapsed)
        state.mark(stage, elapsed, extra, fingerprint)
        if stop_after == f"{space_name}/{stage}":
            raise StudyInterrupted(f"stopped after {stop_after}")

    def run_space(self, name: str, stop_after: str | None = None) -> None:
        """Every stage of :data:`~harness.study.stages.PIPELINE` the config enables, in order;
        finished ones are skipped."""
        from harness.core.registry import SPACES
        from spaces.base import Space

        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        state = SpaceState(directory)
        self._check_stale(name, state, directory)
        space_dir = directory / "space"
        cache: dict[str, Any] = {}

        def get_space() -> Space:
            if "space" not in cache:
                if space_dir.joinpath("space.json").exists() and state.done("fit_space"):
                    cache["space"] = Space.load(space_dir)
                else:
                    cls = SPACES.get(space_type(name))
                    cache["space"] = cls(elements=self.dataset.elements, **self.config.spaces.get(name, {}))
            return cache["space"]

        for stage in S.PIPELINE:
            if stage.when(self.config):
                self._stage(state, name, stage.name,
                            lambda stage=stage: stage.run(self, name, get_space, directory), stop_after)

    def trainer_kwargs(self) -> dict[str, Any]:
        t = self.config.trainer
        # the progress view's Lightning callback rides along: never serialise these kwargs
        return {"accelerator": t.accelerator, "devices": t.devices, "strategy": t.strategy,
                "precision": t.precision, "num_nodes": t.num_nodes, **self.view.trainer_kwargs()}

    # -- generator ------------------------------------------------------------------------
    def _build_generator(self, name: str, space):
        """A fresh generator of the configured family for this space's latent (its config
        is the space's ``generator`` section; the atom-count prior is fitted on the
        training latents by ``fit``). A sampler of the other family fails here, before
        training."""
        from generators import build_generator, check_sampler
        from harness.study.conditional import generator_context

        gen_cfg = self.config.generator_for(name)
        context = generator_context(self.config, name, space.spec)
        if context != gen_cfg.context:     # + the target atom count (vector latents, EDM targets)
            gen_cfg = dataclasses.replace(gen_cfg, context=context)
        check_sampler(gen_cfg.family, self.config.sampling.sampler)
        return build_generator(space.spec, gen_cfg, seed=self.config.seed), gen_cfg

    def context_table(self, names: list[str]) -> tuple[torch.Tensor, dict[str, Any]] | None:
        """Normalised conditioning values [M, C] of the training molecules (properties
        ``names``; ``n_atoms`` is the molecule's atom count), and the normalisation (mean,
        std in the dataset's units)."""
        if not names:
            return None
        train = self.split("train")
        missing = [n for n in names if n not in train.prop_names and n != ATOM_COUNT]
        if missing:
            raise ValueError(f"generator.context: {missing} not among the dataset's properties "
                             f"{list(train.prop_names)}")
        columns = [train.atom_counts.astype(np.float64) if n == ATOM_COUNT
                   else train.packed.props[:, train.prop_names.index(n)] for n in names]
        props = torch.as_tensor(np.stack(columns, 1), dtype=torch.float32)
        mean, std = props.nanmean(0), props.std(0).clamp_min(1e-8)
        values = torch.nan_to_num((props - mean) / std)
        return values, {"names": names, "mean": mean.tolist(), "std": std.tolist()}

    def train_generator(self, name: str, space, directory: Path) -> dict[str, Any]:
        """The ``train_generator`` stage: budget, learning curve, Lightning fit."""
        torch.manual_seed(self.config.seed)
        gen, gen_cfg = self._build_generator(name, space)
        latents = load_latents(directory / "latents.pt", space.spec)
        table = self.context_table(gen_cfg.context)
        from harness.study.budget import plan_training
        from harness.study.curves import decode_and_score_fn

        # budget -> max_steps (None: the config's), training clock, learning curve
        plan = plan_training(self, name, gen, latents, directory, decode_and_score_fn(self, space),
                             context=None if table is None else table[0])
        tk = self.trainer_kwargs()
        tk["callbacks"] = [*(tk.get("callbacks") or []), *plan.callbacks]
        stats = gen.fit(latents, None, out_dir=directory / "generator", max_steps=plan.max_steps,
                        trainer_kwargs=tk, progress=self.progress,
                        resume=True, context=None if table is None else table[0])
        out = {k: v for k, v in stats.items() if isinstance(v, (int, float, str))}
        out.update(plan.summary(stats))
        if table is not None:
            out["context"] = table[1]
        return out

    def final_checkpoint(self, directory: Path) -> Path:
        path = directory / "generator" / "checkpoints" / "last.ckpt"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; rerun the train_generator stage")
        return path

    def load_generator(self, name: str):
        """The trained generator of one space (either family); a damaged checkpoint is a
        one-line ``CheckpointError`` (a ``ValueError``) naming the file."""
        from generators import load_generator

        return load_generator(self.final_checkpoint(self.root / name))

    # -- sampling -------------------------------------------------------------------------
    def sample_more(self, name: str, n: int, sampler: str | None = None, steps: int | None = None,
                    out_name: str = "samples") -> dict[str, Any]:
        """Sample ``n`` more molecules of space ``name`` from its trained generator into
        ``<space>/<out_name>.sdf`` / ``.pt`` (``l3dg sample``; the study's own samples are
        ``out_name="samples"``)."""
        from harness.study.sample import sample_space
        from spaces.base import Space

        return sample_space(self, name, Space.load(self.root / name / "space"), self.root / name,
                            n, sampler, steps, out_name)

    # -- scoring (harness/study/scoring.py) ---------------------------------------------------
    def score_reference(self) -> None:
        from harness.study.scoring import score_reference

        score_reference(self)

    # -- results --------------------------------------------------------------------------
    def collect_results(self) -> dict[str, Any]:
        return collect_results(self.root)
