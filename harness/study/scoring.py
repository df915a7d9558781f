"""The study's scoring stages: samples, controls and the reference row, each with 95 %
intervals (``metrics.intervals``) and the versioned quality score.

Files (per space ``runs/<study>/<space>/``):

* ``metrics.json`` — ``values`` (suite on the samples + latent diagnostics + ``quality``),
  ``intervals`` (key -> [low, high]), ``metadata``;
* ``controls.json`` — per control (``prior``, ``shuffled``, ``reconstruction``; see
  :mod:`harness.study.controls`): ``values`` and ``intervals`` of the same suite on the same number
  of molecules, and ``lift`` = samples - control with the interval of the difference.

Every row is raw decoder output; MMFF-relaxed output, where a space offers it, is labelled
``relaxed`` by the space and never mixed in here.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.io import atomic_write_json, read_json
from harness.results.state import (
    decoded_samples,
    load_latents,
    load_molbatch,
    load_resolved_bonds,
)
from harness.study.context import StudyContext

log = logging.getLogger(__name__)


def _bonds(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metric family -> where its bonds came from (as the suite recorded it)."""
    return metadata.get("bond_source_by_family") or {"all": metadata.get("bond_source")}


def _provenance(study: StudyContext, metrics: list[str], bonds: dict[str, Any] | None
                ) -> dict[str, Any]:
    """The provenance block of one results file (``harness/study/provenance.py``)."""
    from harness.study.provenance import study_provenance

    block = study_provenance(study, metrics)
    block["bonds"] = dict(bonds or {})
    return block


def score_batch(study: StudyContext, decoded: Any, bonds_path: Path | None = None) -> tuple[dict, dict, dict]:
    """``(values, intervals, metadata)`` of a decoded MolBatch with the study's suite."""
    from metrics.intervals import score_with_intervals

    samples = decoded_samples(decoded)
    if bonds_path is not None and bonds_path.exists():
        samples.attach_resolved_bonds(load_resolved_bonds(bonds_path))
    m = study.config.metrics
    return score_with_intervals(samples, m.suite, study.split("train"), m.options,
                                n_boot=m.bootstrap, seed=study.config.seed, progress=study.progress)


def score_space(study: StudyContext, name: str, space: Any, directory: Path) -> dict[str, Any]:
    """The ``score`` stage: the suite on the samples, latent diagnostics on test molecules."""
    from metrics import score_molecules

    values, intervals, metadata = score_batch(study, load_molbatch(directory / "samples.pt"),
                                              directory / "samples.bonds.npz")
    test = study.split("test")
    n_latent = min(study.config.metrics.latent_molecules, len(test))
    latent_results = score_molecules(test.batch(np.arange(n_latent)), suite="latent/v1",
                                     reference=None, bond_source="dataset", space=space,
                                     progress=False)
    payload = {"space": name, "suite": study.config.metrics.suite,
               "values": {**values, **dict(latent_results)}, "intervals": intervals,
               "metadata": {"samples": metadata, "latent": latent_results.metadata},
               "provenance": _provenance(study, list(values), {name: _bonds(metadata)})}
    atomic_write_json(directory / "metrics.json", payload)
    return {"metrics": len(payload["values"])}


def run_controls(study: StudyContext, name: str, space: Any, directory: Path) -> dict[str, Any]:
    """The ``controls`` stage (see :mod:`harness.study.controls`); ``controls: false`` records that
    they were not run."""
    from harness.study.controls import (
        CONTROLS,
        lift,
        prior_latents,
        reconstruction_batch,
        shuffled_latents,
    )

    if not study.config.controls:
        atomic_write_json(directory / "controls.json", {"disabled": True})
        return {"disabled": True}
    samples = read_json(directory / "metrics.json")
    n = study.config.sampling.n_samples
    seed = study.config.seed
    out: dict[str, Any] = {"n": n, "controls": {}, "lift": {}}
    bonds: dict[str, Any] = {}
    for control in CONTROLS:
        t0 = time.perf_counter()
        if control == "prior":
            decoded = space.decode(prior_latents(study.load_generator(name), n, seed))
        elif control == "shuffled":
            decoded = space.decode(shuffled_latents(load_latents(directory / "latents.pt", space.spec), n, seed))
        else:
            decoded = reconstruction_batch(space, study.split("test"), n)
        values, intervals, metadata = score_batch(study, decoded)
        bonds[control] = _bonds(metadata)
        out["controls"][control] = {"values": values, "intervals": intervals,
                                    "molecules": metadata["counts"]["molecules"],
                                    "seconds": round(time.perf_counter() - t0, 2)}
        if control != "reconstruction":
            out["lift"][control] = lift(samples["values"], samples.get("intervals", {}),
                                        values, intervals)
    generated = directory / "samples.latents.pt"
    if generated.exists():
        # the space's own ablations of the generated latents (e.g. invariant: z_geo zeroed)
        for control, decoded in space.ablations(load_latents(generated, space.spec)).items():
            t0 = time.perf_counter()
            values, intervals, metadata = score_batch(study, decoded)
            bonds[control] = _bonds(metadata)
            out["controls"][control] = {"values": values, "intervals": intervals,
                                        "molecules": metadata["counts"]["molecules"],
                                        "seconds": round(time.perf_counter() - t0, 2),
                                        "ablation": True}
    out["provenance"] = _provenance(study, list(samples["values"]), bonds)
    atomic_write_json(directory / "controls.json", out)
    return {"controls": list(out["controls"])}


def score_reference(study: StudyContext) -> None:
    """The reference row: the suite on the dataset's own test molecules (bonds perceived
    from coordinates, like a bond-free space's samples)."""
    import dataclasses

    from harness.core.data.base import fingerprint_of
    from metrics.intervals import score_with_intervals
    from metrics.samples import Samples

    path = study.root / "reference" / "metrics.json"
    m = study.config.metrics
    fingerprint = fingerprint_of([dataclasses.asdict(study.config.data), dataclasses.asdict(m)])
    if path.exists():
        try:
            cached = read_json(path)
            if cached.get("fingerprint") == fingerprint:
                if cached.get("content_sha256") == _content_hash(cached):
                    return
                # an edited (or planted) value keeps the fingerprint but not the hash; a row
                # written before hashes were recorded cannot be checked: both are rescored
                if "content_sha256" in cached:
                    log.warning("%s: its values do not match their recorded hash (edited?); "
                                "scoring the reference row again", path)
        except (OSError, ValueError):
            pass                                    # damaged: rescore
    t0 = time.perf_counter()
    test = study.split("test")
    n = min(m.reference_molecules, len(test))
    samples = Samples.from_batch(test.batch(np.arange(n)), "perceive")
    values, intervals, metadata = score_with_intervals(
        samples, m.suite, study.split("train"), m.options, n_boot=m.bootstrap,
        seed=study.config.seed, progress=study.progress)
    record = {"values": values, "intervals": intervals}
    atomic_write_json(path, {"space": "reference", "suite": m.suite,
                             "source": f"{test.name} (first {n}, bonds perceived from coordinates)",
                             "values": values, "intervals": intervals,
                             "content_sha256": _content_hash(record),
                             "metadata": {"samples": metadata}, "fingerprint": fingerprint,
                             "seconds": round(time.perf_counter() - t0, 2),
                             "provenance": _provenance(study, list(values),
                                                       {"reference": _bonds(metadata)})})


def _content_hash(record: dict[str, Any]) -> str:
    """sha256 of a reference row's values and intervals (canonical JSON; NaN as null, as
    they are written), so a value edited on disk is noticed and rescored."""
    import hashlib
    import json

    def clean(v):
        if isinstance(v, float) and v != v:
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    text = json.dumps(clean({"values": record.get("values"), "intervals": record.get("intervals")}),
                      sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()

