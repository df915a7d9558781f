"""Results I/O: what a study leaves on disk and how it is read back.

One module for every file format of a run directory, so the study (which writes them),
the report, the sweep and the CLI (which read them) never import each other:

* ``<space>/state.json`` — :class:`SpaceState`, finished stages, wall times, fingerprints
  (the stages themselves are declared in ``harness/study/stages.py``);
* ``<space>/latents.pt`` and ``<space>/samples.pt`` — tensors only (``weights_only`` loads);
* ``results.json`` — :func:`collect_results`, one row per space plus the reference row;
* the quality score (:func:`quality`) and the metric keys of the main table.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import yaml

from harness.core.io import atomic_path, atomic_write_json, read_json
from harness.errors import RunDirError


def _readable(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    if path.suffix == ".json":
        try:
            read_json(path)
        except (OSError, ValueError):
            return False
    if path.suffix == ".pt":           # latents / samples: tensors only, cheap to check
        try:
            _load_tensors(path)
        except RunDirError:
            return False
    return True


def _load_tensors(path: Path) -> dict[str, Any]:
    """A ``.pt`` file of tensors (``weights_only``: never code); a damaged or foreign file
    is a :class:`RunDirError` naming it."""
    try:
        data = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:     # truncated zip, unpickling refusal, EOF: all "damaged"
        raise RunDirError(f"{path}: damaged or not an l3dg tensor file ({type(err).__name__}); "
                          "`l3dg run --resume` redoes the stage that writes it") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: not an l3dg tensor file (a {type(data).__name__})")
    return data


def outputs_readable(space_dir: Path, outputs: tuple[str, ...]) -> bool:
    """True when every file of ``outputs`` (relative to ``space_dir``) is present and
    readable (a stage's declared outputs: ``harness/study/stages.py``)."""
    return all(_readable(space_dir / rel) for rel in outputs)


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """``<run_dir>/config.yaml`` as a mapping; a clear error names the file when it is
    missing or damaged."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise RunDirError(f"{run_dir} is not a study directory (no config.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path}: damaged config ({type(err).__name__}); restore it or rerun "
                          "the study into a new directory") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: damaged config (not a mapping)")
    return data

from metrics.intervals import QUALITY_VERSION, quality  # noqa: E402,F401  (re-exported: the study's score)


class SpaceState:
    """``state.json`` of one space: finished stages and their wall times (s)."""

    def __init__(self, directory: Path):
        self.path = directory / "state.json"
        self.data = {"done": {}, "seconds": {}}
        if self.path.exists():
            try:
                self.data = read_json(self.path)
                ok = isinstance(self.data, dict) and isinstance(self.data.get("done"), dict)
            except (OSError, ValueError):
                ok = False
            if not ok:
                raise RunDirError(f"{self.path}: damaged stage record; delete it to redo this "
                                  "space's stages (its other files are kept until redone)")

    def done(self, stage: str) -> bool:
        return stage in self.data["done"]

    def start(self, stage: str, fingerprint: str) -> None:
        self.data.setdefault("started", {})[stage] = fingerprint
        atomic_write_json(self.path, self.data)

    def fingerprint(self, stage: str) -> str | None:
        return self.data.get("fingerprints", {}).get(stage) or self.data.get("started", {}).get(stage)

    def forget(self, stages: list[str]) -> None:
        """Drop stages (to be redone) from the record."""
        for key in ("done", "seconds", "info", "fingerprints", "started"):
            for stage in stages:
                self.data.get(key, {}).pop(stage, None)
        atomic_write_json(self.path, self.data)

    def mark(self, stage: str, elapsed: float, info: dict[str, Any] | None = None,
             fingerprint: str | None = None) -> None:
        self.data.setdefault("fingerprints", {})[stage] = fingerprint
        self.data["done"][stage] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.data["seconds"][stage] = round(elapsed, 2)
        self.data.setdefault("info", {}).setdefault(stage, {}).update(info or {})
        atomic_write_json(self.path, self.data)

    @property
    def seconds(self) -> dict[str, float]:
        return dict(self.data["seconds"])


def save_latents(latent, path: Path) -> None:
    payload = {"h": latent.h, "x": latent.x, "mask": latent.mask}
    with atomic_path(path, ".pt") as tmp:
        torch.save(payload, tmp)


def load_latents(path: Path, spec):
    from harness.core.types import LatentBatch

    data = _load_tensors(path)
    return LatentBatch(h=data["h"], x=data["x"], mask=data["mask"], spec=spec)


def save_molbatch(batch, path: Path) -> None:
    payload = {k: getattr(batch, k) for k in ("atom_types", "pos", "mask", "charges", "bonds", "props")}
    payload["elements"] = list(batch.elements)
    with atomic_path(path, ".pt") as tmp:
        torch.save(payload, tmp)


def load_molbatch(path: Path):
    from harness.core.types import MolBatch

    data = _load_tensors(path)
    return MolBatch(atom_types=data["atom_types"], pos=data["pos"], mask=data["mask"],
                    elements=tuple(data["elements"]), charges=data["charges"], bonds=data["bonds"],
                    props=data.get("props"))


def decoded_samples(decoded):
    """A space's decoded :class:`~harness.core.types.MolBatch` as scored
    :class:`~metrics.samples.Samples`: the decoder's bonds where it predicts them, else
    bonds perceived from coordinates (``rdDetermineBonds``)."""
    from metrics.samples import Samples

    return Samples.from_batch(decoded, "decoder" if decoded.bonds is not None else "perceive")


def save_resolved_bonds(resolved, path: Path) -> None:
    """Bonds the metrics use (given or perceived), so later stages never perceive again."""
    import json

    import numpy as np

    with atomic_path(path, ".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, bonds=resolved.bonds, bond_ptr=resolved.bond_ptr, charges=resolved.charges,
                     status=resolved.status.astype(str),
                     reasons=np.array(json.dumps({str(k): v for k, v in resolved.reasons.items()})))


def load_resolved_bonds(path: Path):
    import json

    import numpy as np

    from metrics.samples import ResolvedBonds

    with np.load(path, allow_pickle=False) as data:
        return ResolvedBonds(bonds=data["bonds"], bond_ptr=data["bond_ptr"], charges=data["charges"],
                             status=data["status"],
                             reasons={int(k): v for k, v in json.loads(str(data["reasons"])).items()})


def write_samples_sdf(decoded, samples, resolved, path: Path, props: list[dict[str, str]]) -> Path:
    """Every decoded sample as one SDF record, in sample order, with the bonds and charges
    the metrics use and per-record SD properties ``props`` (``harness/study/sample_props.py``).
    Samples the metrics could not use (no atoms, NaN coordinates) are written without bonds
    (or empty), so record k is always sample k."""
    import numpy as np

    from harness.core.chem import write_sdf
    from harness.core.rdmol import mol_from_arrays

    skipped = {int(s["index"]) for s in samples.skipped}
    kept = [k for k in range(len(decoded)) if k not in skipped]
    numbers = decoded.numbers.cpu().numpy()
    pos = decoded.pos.detach().cpu().numpy().astype(np.float64)
    counts = decoded.mask.sum(1).cpu().numpy()
    mols = []
    where = {k: j for j, k in enumerate(kept)}
    for k in range(len(decoded)):
        j = where.get(k)
        if j is None:
            n = int(counts[k])
            finite = np.isfinite(pos[k, :n]).all()
            mol = mol_from_arrays(numbers[k, :n], pos[k, :n] if finite else None) if n else None
        else:
            atoms = samples.atoms(j)
            mol = mol_from_arrays(samples.numbers[atoms], samples.pos[atoms], resolved.of(j),
                                  resolved.charges[atoms])
        if mol is not None:
            mol.SetProp("_Name", str(decoded.names[k]) if decoded.names else f"sample_{k}")
        mols.append(mol)
    return write_sdf(mols, path, props)


def collect_results(root: Path) -> dict[str, Any]:
    """Rows of the results table from what is on disk (reference row first). A configured
    space whose ``metrics.json`` is missing or unreadable gets a row with ``"error"``
    naming the file (never silently dropped)."""
    rows: dict[str, Any] = {}
    ref = root / "reference" / "metrics.json"
    if ref.exists():
        try:
            rows["reference"] = {"values": read_json(ref)["values"], "intervals": _intervals_of(ref),
                                 "seconds": {}}
        except (OSError, ValueError, KeyError, TypeError):
            rows["reference"] = {"values": {}, "seconds": {}, "error": f"{ref} is unreadable"}
    config = read_run_config(root)
    if config.get("seeds"):
        from harness.results.seeds import aggregate

        return aggregate(root, config["seeds"], collect_results)
    for name in (config.get("spaces") or {}):
        path = root / name / "metrics.json"
        try:
            values = read_json(path)["values"]
        except FileNotFoundError:
            rows[name] = {"values": {}, "seconds": {}, "error": f"{path} is missing"}
            continue
        except (OSError, ValueError, KeyError, TypeError):
            rows[name] = {"values": {}, "seconds": {}, "error": f"{path} is unreadable"}
            continue
        state = SpaceState(root / name)
        rows[name] = {"values": values, "intervals": _intervals_of(path),
                      "seconds": state.seconds, "info": state.data.get("info", {})}
        controls = root / name / "controls.json"
        if controls.exists():
            try:
                rows[name]["controls"] = read_json(controls)
            except (OSError, ValueError):
                rows[name]["controls"] = {"error": f"{controls} is unreadable"}
    for orphan in sorted(p.parent.name for p in root.glob("*/state.json")):
        if orphan not in rows and orphan != "reference":   # results on disk, config silent
            rows[orphan] = {"values": {}, "seconds": {}, "error": (
                f"{root / orphan} holds results but config.yaml does not list space {orphan!r} "
                "(edited?); add it back under spaces or move the folder away")}
    return rows


def _intervals_of(path: Path) -> dict[str, list[float]]:
    return read_json(path).get("intervals") or {}


def row_errors(rows: dict[str, Any]) -> list[str]:
    """The ``error`` of every row (missing or damaged results)."""
    return [f"{name}: {row['error']}" for name, row in rows.items() if row.get("error")]
