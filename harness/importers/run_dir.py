"""What every importer shares: checking a published model's noise schedule against the
harness's, loading mapped weights and the atom-count prior into a generator, and writing
the run directory (space, generator checkpoint, config, stages marked done, ``import.json``)
that ``l3dg sample`` / ``eval`` / ``report`` read like a trained run's."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from harness.results.manifest import sha256_of

__all__ = ["check_gamma", "load_generator_weights", "write_run", "import_record"]


def check_gamma(gen, gamma: torch.Tensor | None, weights_path: Path, who: str,
                error: type[Exception]) -> float:
    """Largest |gamma| difference between the published table and the generator's schedule
    (EDM's ``gamma = log(sigma^2 / alpha^2)``); ``error`` when it does not fit or differs
    by more than 1e-4."""
    ac = gen.schedule.alphas_cumprod
    ours = torch.log1p(-ac) - torch.log(ac)
    if gamma is None or gamma.shape != ours.shape:
        raise error(f"{weights_path}: gamma table {None if gamma is None else tuple(gamma.shape)} "
                    f"does not fit T = {gen.schedule.T}")
    diff = float((gamma.double() - ours).abs().max())
    if diff > 1e-4:
        raise error(f"{weights_path}: {who}'s gamma table differs from the harness's "
                    f"{gen.schedule.name} by {diff:.2e}")
    return diff


def load_generator_weights(gen, mapped: dict[str, torch.Tensor],
                           atom_counts: dict[int, int]) -> None:
    """Mapped denoiser weights into the network and its EMA copy; the training atom-count
    histogram ``{n_atoms: count}`` into the generator's ``p(N)``."""
    mapped = {k: v.to(torch.float32) for k, v in mapped.items()}
    gen.denoiser.load_state_dict(mapped)
    if gen.ema is not None:
        gen.ema.load_state_dict(mapped)
    hist = torch.zeros(max(atom_counts) + 1, dtype=torch.float64)
    for n, c in atom_counts.items():
        hist[int(n)] = float(c)
    gen.prior.hist = hist


def import_record(fmt: str, source: Path, commit: str | None, files: tuple[Path, ...],
                  args: dict[str, Any], checks: dict[str, Any],
                  atom_counts: dict[int, int]) -> dict[str, Any]:
    """``import.json``: where the model came from (sha256 of each file), its arguments, the
    checks it passed and the atom counts used."""
    plain = {k: (list(v) if isinstance(v, (tuple, set, frozenset)) else v) for k, v in args.items()}
    return {"format": fmt, "source": str(source), "commit": commit,
            "files": {p.name: {"sha256": sha256_of(p), "bytes": p.stat().st_size} for p in files},
            "args": json.loads(json.dumps(plain, default=str)), "checks": checks,
            "atom_counts": {str(n): c for n, c in sorted(atom_counts.items())}}


def write_run(out_dir: Path, space_name: str, space, gen, config, info: dict,
              record: dict[str, Any], global_step: int = 0) -> None:
    """The run directory: ``<space>/space``, the generator's ``last.ckpt``, ``config.yaml``,
    ``state.json`` with fit_space and train_generator done (their fingerprints as a study
    of this config computes them) and ``import.json``."""
    import yaml

    from harness.core.io import atomic_path, atomic_write_json, atomic_write_text
    from harness.study.runner import Study

    space_dir = out_dir / space_name
    space.save(space_dir / "space")
    ckpt = space_dir / "generator" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(ckpt, ".ckpt") as tmp:
        torch.save({"state_dict": gen.state_dict(), "hyper_parameters": dict(gen.hparams),
                    "global_step": int(global_step)}, tmp)
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    prints = Study(config, root=out_dir).stage_fingerprints(space_name)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic_write_json(space_dir / "state.json", {
        "done": {"fit_space": now, "train_generator": now},
        "seconds": {"fit_space": 0.0, "train_generator": 0.0}, "info": info,
        "fingerprints": {k: prints[k] for k in ("fit_space", "train_generator")}})
    atomic_write_json(out_dir / "import.json", {**record, "imported_at": now})
