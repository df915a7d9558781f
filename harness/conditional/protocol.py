"""Property-conditional generation under the EDM protocol: predictors, targets, evaluation.

The pieces a conditional study needs (see ``metrics/conditional.py`` for the protocol's
definitions and ``metrics/property_predictor.py`` for the evaluator network):

* :func:`get_predictor` — the evaluator for one property, trained on ``Da`` (first half of
  the training split), selected on the validation split, reported on ``Db`` with the
  Naive / #Atoms / QM9 baselines; cached under ``<cache>/predictors/<prop>-<fingerprint>/``
  (fingerprint = predictor config + dataset fingerprint + halves checksum + code version).
* :func:`generator_half` — the molecules a conditional generator may train on (``Db``).
* :func:`sample_targets` — EDM (atom count, value) pairs or LDM-3DG in/OOD targets.
* :func:`sample_conditional` — draw molecules for those targets from a trained generator.
* :func:`evaluate_conditional` / :func:`evaluate_sdf` — the MAE table row(s).
* :func:`guidance_sweep` — MAE and validity per CFG scale (tables and plots: ``report.py``).

Values are in the dataset's units (QM9: Ha for orbital energies); tables print EDM's
report units (meV).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harness.config.conditional import ConditionalConfig  # noqa: F401  (re-exported)
from harness.core.io import atomic_path

log = logging.getLogger(__name__)

#: predictor sizes: ``edm`` is EDM's recipe; ``cpu`` fits a few CPU-hours; ``tiny`` is for tests.
PREDICTOR_SIZES: dict[str, dict[str, Any]] = {
    "edm": {"hidden": 128, "layers": 7, "attention": True, "epochs": 1000, "batch_size": 96,
            "lr": 1e-3, "device": "auto"},
    "cpu": {"hidden": 64, "layers": 4, "attention": True, "epochs": 30, "batch_size": 96,
            "lr": 1e-3, "max_val": 5000, "eval_every": 2},
    "tiny": {"hidden": 8, "layers": 1, "epochs": 2, "batch_size": 16},
}


@dataclass
class TrainedPredictor:
    """A cached evaluator: the network, its metadata (``predictor.json``) and folder."""

    prop: str
    model: Any
    meta: dict[str, Any]
    path: Path

    @property
    def elements(self) -> tuple[str, ...]:
        return tuple(self.meta["elements"])

    @property
    def family(self) -> str:
        """The network family (``egnn``: EDM's evaluator; ``schnet``: the second judge)."""
        return str(self.meta["config"].get("family", "egnn"))

    @property
    def db_mae(self) -> float:
        """The predictor's own MAE on Db (dataset units): the table's QM9 lower bound."""
        return float(self.meta["db"]["qm9"])

    def predict(self, batch, batch_size: int = 256) -> np.ndarray:
        """``[B]`` predictions for a ``MolBatch`` (NaN where a molecule cannot be scored)."""
        return predict_molecules(self, batch, batch_size)


# -- data -----------------------------------------------------------------------------------
def load_predictor_data(source: str | None = None):
    """The dataset the predictor is trained from: ``qm9`` (default) or an SDF/XYZ path with
    QM9 property fields (tests)."""
    from harness.core.data import load_dataset
    from metrics.conditional import CONDITIONAL_PROPERTIES

    if source in (None, "", "qm9"):
        return load_dataset("qm9", progress=False)
    return load_dataset("sdf", path=source, property_fields=CONDITIONAL_PROPERTIES, report=False)


def generator_half(train, predictor_data=None):
    """The molecules of ``train`` (a study's training split, possibly a subset) that lie
    in ``Db``, matched by molecule name (QM9: ``gdb_<index>``), so a subset study's generator
    never sees the predictor's ``Da``. ``predictor_data``: the whole dataset the halves come
    from (default: QM9)."""
    from harness.core.data.halves import property_halves

    data = predictor_data if predictor_data is not None else load_predictor_data()
    halves, _ = property_halves(data)
    names = np.asarray(train.packed.names).astype(str)
    keep = np.flatnonzero(np.isin(names, np.asarray(halves["Db"].packed.names).astype(str)))
    if not len(keep):
        raise ValueError(f"{train.name}: no molecule of the generator half Db of {data.name} "
                         "(names do not match; is this the same dataset?)")
    leak = np.isin(names[keep], np.asarray(halves["Da"].packed.names).astype(str)).sum()
    if leak:
        raise RuntimeError(f"{train.name}: {leak} molecule names are in both halves")
    return train.subset(keep, f"{train.name}:Db")


# -- predictors -----------------------------------------------------------------------------
def predictor_config(size: str = "cpu", overrides: dict[str, Any] | None = None):
    """A :class:`~metrics.property_predictor.PredictorConfig` from a size name + overrides."""
    from metrics.property_predictor import PredictorConfig

    if size not in PREDICTOR_SIZES:
        raise KeyError(f"unknown predictor size {size!r}; sizes: {', '.join(PREDICTOR_SIZES)}")
    return PredictorConfig.from_dict({**PREDICTOR_SIZES[size], **(overrides or {})})


def predictor_fingerprint(dataset, halves_info: dict[str, Any], prop: str, config) -> str:
    from harness.core.data.base import fingerprint_of
    from metrics.property_predictor import PREDICTOR_VERSION

    # ``family`` enters only when not the EGNN, so EGNN predictors keep their fingerprints
    recipe = {k: v for k, v in config.to_dict().items()
              if k != "device" and not (k == "family" and v == "egnn")}
    return fingerprint_of({"dataset": dataset.fingerprint, "halves": halves_info["checksum"],
                           "property": prop, "config": recipe, "version": PREDICTOR_VERSION})


def get_predictor(prop: str, dataset=None, size: str = "cpu",
                  overrides: dict[str, Any] | None = None, cache_dir: str | Path | None = None,
                  retrain: bool = False, progress: bool = False,
                  family: str | None = None) -> TrainedPredictor:
    """The evaluator for ``prop``: loaded from the cache, or trained (on Da), selected (on
    the validation split), scored on Db with the baselines, and cached.

    Args:
        prop: property name of the dataset (``alpha``, ``gap``, ``homo``, ``lumo``, ``mu``,
            ``Cv``, ...).
        dataset: whole dataset with splits (default: QM9).
        size / overrides: :data:`PREDICTOR_SIZES` key and config overrides.
        cache_dir: cache root (default ``$L3DG_CACHE_DIR`` or the user cache dir).
        retrain: ignore a cached predictor.
        family: ``egnn`` or ``schnet`` (a second judge; same halves, code path and cache);
            default: the overrides' ``family``, else ``egnn``.
    """
    from harness.core.data.base import default_cache_dir
    from harness.core.data.halves import property_halves
    from metrics.conditional import baseline_maes
    from metrics.property_predictor import (
        fit_predictor,
        load_predictor,
        predict,
        save_predictor,
    )

    dataset = dataset if dataset is not None else load_predictor_data()
    if prop not in dataset.prop_names:
        raise KeyError(f"{dataset.name}: no property {prop!r}; properties: {list(dataset.prop_names)}")
    family = family or (overrides or {}).get("family", "egnn")
    config = predictor_config(size, {**(overrides or {}), "family": family})
    halves, hinfo = property_halves(dataset)
    fp = predictor_fingerprint(dataset, hinfo, prop, config)
    label = prop if family == "egnn" else f"{prop}-{family}"
    directory = Path(cache_dir or default_cache_dir()) / "predictors" / f"{label}-{fp}"
    if not retrain and (directory / "predictor.json").exists():
        try:
            model, meta = load_predictor(directory, config.device if config.device != "auto" else "cpu")
            if meta.get("fingerprint") == fp:
                return TrainedPredictor(prop, model, meta, directory)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            log.warning("predictor cache %s unusable (%s); retraining", directory, err)
    log.info("training the %s %s predictor (%s size) on %d molecules -> %s", prop, family, size,
             len(halves["Da"]), directory)
    model, history = fit_predictor(halves["Da"], dataset.split("val"), prop, config,
                                   progress=progress)
    model = model.cpu()
    k = dataset.prop_names.index(prop)
    y = {h: np.asarray(halves[h].packed.props[:, k], np.float64) for h in ("Da", "Db")}
    counts = {h: np.asarray(halves[h].atom_counts) for h in ("Da", "Db")}
    pred_db = predict(model, halves["Db"])
    ok = np.isfinite(y["Db"])
    base = baseline_maes(pred_db[ok], y["Db"][ok], counts["Da"], y["Da"], counts["Db"][ok],
                         seed=config.seed)
    unit = dataset.prop_units[k] if dataset.prop_units else ""
    meta = {
        "property": prop, "unit": unit, "size": size, "config": config.to_dict(),
        "fingerprint": fp, "dataset": {"name": dataset.name, "fingerprint": dataset.fingerprint},
        "halves": hinfo, "elements": list(dataset.elements),
        "training": {k2: v for k2, v in history.items() if k2 != "epochs"},
        "curve": [{"epoch": r["epoch"], "train_loss": r["train_loss"], "val_mae": r.get("val_mae")}
                  for r in history["epochs"]],
        "db": base, "db_molecules": int(ok.sum()),
    }
    save_predictor(directory, model, meta)
    return TrainedPredictor(prop, model, meta, directory)


def cached_predictors(cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Metadata of every cached predictor (for ``l3dg predictor list``)."""
    import json

    from harness.core.data.base import default_cache_dir

    root = Path(cache_dir or default_cache_dir()) / "predictors"
    out = []
    for meta_path in sorted(root.glob("*/predictor.json")):
        try:
            out.append({**json.loads(meta_path.read_text()), "path": str(meta_path.parent)})
        except (OSError, ValueError):
            continue
    return out


def predict_molecules(predictor: TrainedPredictor, batch, batch_size: int = 256) -> np.ndarray:
    """``[B]`` predictions (dataset units) for a ``MolBatch`` of generated molecules, NaN for
    one that cannot be scored (no atoms, an element outside the predictor's vocabulary,
    non-finite coordinates). Element indices are remapped by symbol."""
    from dataclasses import replace

    import torch

    from metrics.property_predictor import predict_batch

    elements = predictor.elements
    lookup = torch.tensor([elements.index(e) if e in elements else -1 for e in batch.elements]
                          or [-1], dtype=torch.long)
    types = torch.where(batch.mask, lookup[batch.atom_types.clamp(0, len(lookup) - 1)],
                        torch.zeros_like(batch.atom_types))
    ok = ((types >= 0) | ~batch.mask).all(1) & batch.mask.any(1) \
        & torch.isfinite(batch.pos).all(2).all(1)
    out = np.full(len(batch), np.nan)
    idx = ok.nonzero().flatten()
    for lo in range(0, len(idx), batch_size):
        sel = idx[lo:lo + batch_size]
        sub = batch[sel]
        sub = replace(sub, atom_types=types[sel][:, :sub.max_atoms].clamp_min(0),
                      elements=elements)
        out[sel.numpy()] = predict_batch(predictor.model, sub)
    return out


# -- targets and sampling -------------------------------------------------------------------
@dataclass
class ConditionalTargets:
    """Requested values (dataset units), optional atom counts, and a group label each."""

    prop: str
    values: np.ndarray
    n_atoms: np.ndarray | None
    groups: np.ndarray
    protocol: str

    def __len__(self) -> int:
        return len(self.values)

    def context(self, norm: dict[str, Any]):
        """``[n, C]`` float32 tensor of the normalised context columns ``(v - mean) / std``
        named by ``norm`` (the generator's context table: ``{"names", "mean", "std"}``): the
        requested value, and the target atom count for a column named ``n_atoms``."""
        import torch

        from metrics.conditional import ATOM_COUNT

        columns = []
        for name, mean, std in zip(norm["names"], norm["mean"], norm["std"]):
            if name == ATOM_COUNT:
                if self.n_atoms is None:
                    raise ValueError(f"the generator is conditioned on the atom count, but the "
                                     f"{self.protocol!r} targets carry none (use protocol edm)")
                raw = np.asarray(self.n_atoms, np.float64)
            elif name == self.prop:
                raw = np.asarray(self.values, np.float64)
            else:
                raise ValueError(f"the generator is conditioned on {list(norm['names'])}, the "
                                 f"targets are for [{self.prop!r}] (one property per conditional study)")
            columns.append((raw - mean) / std)
        return torch.as_tensor(np.stack(columns, 1), dtype=torch.float32)


def sample_targets(prop: str, train, n: int, protocol: str = "edm", seed: int = 0,
                   n_ood: int | None = None) -> ConditionalTargets:
    """Targets from the generator's training molecules ``train`` (Db, or its subset).

    ``edm``: ``n`` (atom count, value) pairs from Db's histograms. ``ldm``: ``n``
    in-distribution values plus ``n_ood`` (default ``n``) on each OOD side; no atom counts.
    """
    from metrics.conditional import edm_targets, ldm_targets

    if prop not in train.prop_names:
        raise KeyError(f"{train.name}: no property {prop!r}; properties: {list(train.prop_names)}")
    values = np.asarray(train.packed.props[:, train.prop_names.index(prop)], np.float64)
    if protocol == "edm":
        n_atoms, v = edm_targets(train.atom_counts, values, n, seed)
        return ConditionalTargets(prop, v, n_atoms, np.full(n, "edm"), protocol)
    if protocol == "ldm":
        parts = ldm_targets(values, n, n_ood)
        v = np.concatenate(list(parts.values()))
        groups = np.concatenate([np.full(len(p), k) for k, p in parts.items()])
        return ConditionalTargets(prop, v, None, groups, protocol)
    raise ValueError(f"unknown conditional protocol {protocol!r}; use edm or ldm")


def sample_conditional(generator, space, targets: ConditionalTargets, norm: dict[str, Any],
                       guidance_scale: float = 1.0, **sample_kwargs):
    """Decoded molecules (a ``MolBatch`` in target order) from a context-conditioned
    ``DiffusionGenerator`` for ``targets``. ``norm``: the study's context normalisation
    ``{"names": [prop(, "n_atoms")], "mean": [..], "std": [..]}``. Per-atom latents get the
    targets' atom counts; vector latents choose their own (or are told them as context).
    Other keywords go to ``generator.sample``."""
    per_atom = generator.spec.kind == "per_atom"
    latent = generator.sample(len(targets), context=targets.context(norm),
                              n_atoms=None if not per_atom or targets.n_atoms is None
                              else targets.n_atoms, guidance_scale=guidance_scale, **sample_kwargs)
    return space.decode(latent)


# -- evaluation -----------------------------------------------------------------------------
def edm_validity(batch) -> np.ndarray:
    """``[B]`` bool EDM validity (distance-table bonds, RDKit sanitisation)."""
    from metrics.edm import EdmMetric
    from metrics.samples import Samples

    return np.asarray(EdmMetric().analyse(Samples.from_batch(batch))["valid"], bool)


def evaluate_predictions(pred, targets: np.ndarray, predictor: TrainedPredictor,
                         groups=None, valid=None) -> dict[str, Any]:
    """The result record of one conditional evaluation (see :func:`evaluate_conditional`)."""
    from metrics.conditional import (
        PUBLISHED_MAE,
        REPORT_UNITS,
        score_conditional,
        to_report_units,
    )

    prop = predictor.prop
    score = score_conditional(pred, targets, valid, groups)
    def unit(k, v):
        if not k.startswith("mae") or v is None:
            return v
        return [float(x) for x in to_report_units(prop, v)] if k.endswith("_ci") else to_report_units(prop, v)

    conv = (lambda d: {k: unit(k, v) for k, v in d.items() if k != "groups"})
    report = conv(score)
    if "groups" in score:
        report["groups"] = {g: conv(s) for g, s in score["groups"].items()}
    return {
        "property": prop, "unit": predictor.meta.get("unit", ""),
        "report_unit": REPORT_UNITS.get(prop, ("", "", 1.0))[1],
        "score": score, "report": report,
        "baselines": {k: to_report_units(prop, v) for k, v in predictor.meta["db"].items()},
        "predictor": {"path": str(predictor.path), "fingerprint": predictor.meta["fingerprint"],
                      "family": predictor.family,
                      "size": predictor.meta["size"], "db_mae": to_report_units(prop, predictor.db_mae),
                      "val_mae": to_report_units(prop, predictor.meta["training"]["best_val_mae"])},
        "published": {row: vals.get(prop) for row, vals in PUBLISHED_MAE.items()},
        "invalid_rule": "every molecule scored (EDM); unscorable ones counted in n_unscorable",
    }


def evaluate_conditional(batch, targets, predictor: TrainedPredictor, groups=None,
                         validity: bool = True) -> dict[str, Any]:
    """Score generated molecules ``batch`` (a ``MolBatch``) against the values requested for
    them (``targets``: ``[B]`` array or :class:`ConditionalTargets`, dataset units)."""
    if isinstance(targets, ConditionalTargets):
        groups = targets.groups if groups is None else groups
        targets = targets.values
    valid = edm_validity(batch) if validity else None
    return evaluate_predictions(predict_molecules(predictor, batch), np.asarray(targets, float),
                                predictor, groups, valid)


def evaluate_sdf(path: str | Path, prop: str, predictor: TrainedPredictor,
                 field_name: str | None = None, field_unit: str = "dataset") -> dict[str, Any]:
    """Score a conditional SDF: each record carries its requested value in the SD field
    ``field_name`` (default: the property name), in the dataset's units (``field_unit=
    "dataset"``, QM9: Ha) or EDM's report units (``"report"``, meV). Records that cannot be
    read or scored count as unscorable; a record without the field is an error."""
    from harness.core.chem import read_molecules
    from harness.core.types import MolBatch
    from metrics.conditional import to_report_units

    key = field_name or prop
    pairs, skipped = read_molecules(path, None, perceive=False)
    missing = [k for k, (_, p) in enumerate(pairs) if key not in p]
    if missing:
        raise ValueError(f"{path}: {len(missing)} record(s) lack the SD field <{key}> holding the "
                         f"requested {prop} (first: record {missing[0]}); pass --field NAME")
    try:
        targets = np.array([float(p[key]) for _, p in pairs])
    except ValueError as err:
        raise ValueError(f"{path}: SD field <{key}> must be a number: {err}") from None
    if field_unit == "report":
        targets = targets / to_report_units(prop, 1.0)
    elif field_unit != "dataset":
        raise ValueError(f"field_unit must be dataset or report, got {field_unit!r}")
    records = [r for r, _ in pairs]
    extra = sorted({s for r in records for s in r.symbols} - set(predictor.elements))
    if records:   # other elements stay in the batch and make their molecule unscorable
        batch = MolBatch.from_records(records, predictor.elements + tuple(extra),
                                      with_bonds=False, with_props=False)
        pred, valid = predict_molecules(predictor, batch), edm_validity(batch)
    else:
        pred, valid = np.zeros(0), np.zeros(0, bool)
    if skipped:   # unreadable records stay in the denominators as unscorable
        pred = np.concatenate([pred, np.full(len(skipped), np.nan)])
        targets = np.concatenate([targets, np.full(len(skipped), np.nan)])
        valid = np.concatenate([valid, np.zeros(len(skipped), bool)])
    result = evaluate_predictions(pred, targets, predictor, None, valid)
    result.update(source=str(path), field=key, field_unit=field_unit,
                  skipped=[{"file": s.source, "record": s.index, "reason": s.reason} for s in skipped])
    return result


# -- guidance -------------------------------------------------------------------------------
def guidance_sweep(sample: Callable[[float], Any], targets: ConditionalTargets,
                   predictor: TrainedPredictor, scales: Sequence[float]) -> list[dict[str, Any]]:
    """MAE and validity per classifier-free guidance scale.

    Args:
        sample: ``scale -> MolBatch`` of decoded molecules in target order (e.g.
            ``lambda w: sample_conditional(gen, space, targets, norm, w, seed=0)``).
    Returns:
        one row per scale: ``{"scale", "mae", "mae_valid", "validity", "n", ...}`` in report
        units, plus ``result`` (the full record).
    """
    rows = []
    for w in scales:
        result = evaluate_conditional(sample(float(w)), targets, predictor)
        rows.append({"scale": float(w), **{k: v for k, v in result["report"].items()
                                           if k != "groups"}, "result": result})
    return rows


def save_targets(targets: "ConditionalTargets", path: Path) -> None:
    """Write a study's targets (``targets.npz``, atomically; no pickles)."""
    with atomic_path(path, ".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, values=targets.values, groups=targets.groups.astype(str),
                     n_atoms=np.zeros(0, np.int64) if targets.n_atoms is None else targets.n_atoms,
                     prop=np.array(targets.prop), protocol=np.array(targets.protocol))


def load_targets(path: Path) -> "ConditionalTargets":
    """Targets written by :func:`save_targets` (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as d:
        n_atoms = d["n_atoms"] if len(d["n_atoms"]) else None
        return ConditionalTargets(str(d["prop"]), d["values"], n_atoms, d["groups"], str(d["protocol"]))
