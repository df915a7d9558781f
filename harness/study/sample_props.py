"""Samples people can open: SD properties on every record of a study's ``samples.sdf``.

Each record says where it came from and how it scored, so a file dragged into PyMOL,
ChimeraX, Avogadro or a notebook explains itself::

    >  <space>          raw
    >  <seed>           0
    >  <sampler>        ddim
    >  <nfe>            50                  network evaluations per trajectory
    >  <sample_index>   3                   position in samples.pt / metrics
    >  <bonds>          perceived           decoder | perceived | none
    >  <n_atoms>        19
    >  <n_hydrogens>    9
    >  <edm_valid>      1                   EDM validity rule (1/0)
    >  <edm_mol_stable> 0                   every atom EDM-stable (1/0)
    >  <edm_atom_stability> 0.842           stable atoms / atoms
    >  <smiles>         CC(=O)N...          EDM validity SMILES (largest fragment), valid only
    >  <flags_by>       edm/qm9 (distance tables; metrics/edm.py)

Two steps, both pure functions: :func:`molecule_flags` scores each decoded molecule with the
EDM rules (vectorised; the same code as the ``edm`` metric), :func:`sample_properties`
turns provenance + flags into one ``{name: str}`` dict per record, which
``harness.core.chem.write_sdf(mols, path, props)`` writes. :func:`set_sample_props` sets
the same on RDKit molecules for callers that write SDF themselves.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

#: SD property names written by :func:`sample_properties`, in order
PROPERTY_NAMES = ("space", "seed", "sampler", "nfe", "sample_index", "bonds", "n_atoms",
                  "n_hydrogens", "edm_valid", "edm_mol_stable", "edm_atom_stability", "smiles",
                  "flags_by")


def molecule_flags(batch, profile: str = "qm9") -> list[dict[str, Any]]:
    """Per-molecule EDM flags of decoded samples.

    Args:
        batch: a :class:`~harness.core.types.MolBatch` (``atom_types [B, N]``, ``pos
            [B, N, 3]`` Å, ``mask [B, N]``), e.g. ``space.decode(latent)``.
        profile: EDM distance-table profile (``qm9`` or ``geom``), as the suite uses.
    Returns:
        one dict per molecule, in batch order: ``n_atoms``, ``n_hydrogens``, ``edm_valid``
        (bool), ``edm_mol_stable`` (bool), ``edm_atom_stability`` (float in [0, 1], NaN
        for an empty molecule), ``smiles`` (str, "" unless valid), ``flags_by``; a molecule
        that cannot be scored (no atoms, NaN/inf coordinates) is invalid and unstable, with
        ``unscored`` giving the reason.
    """
    import torch

    from metrics.edm import EdmMetric
    from metrics.samples import Samples

    cpu = batch.to("cpu")
    mask = cpu.mask.bool()
    numbers = cpu.numbers
    counts = mask.sum(1)
    n_h = ((numbers == 1) & mask).sum(1)
    finite = torch.where(mask[..., None], torch.isfinite(cpu.pos), torch.ones_like(cpu.pos, dtype=torch.bool))
    usable = (counts > 0) & finite.all(-1).all(-1)
    label = f"edm/{profile} (distance tables; metrics/edm.py)"
    out = [{"n_atoms": int(counts[k]), "n_hydrogens": int(n_h[k]), "edm_valid": False,
            "edm_mol_stable": False, "edm_atom_stability": float("nan"), "smiles": "",
            "flags_by": label} for k in range(len(counts))]
    for k in torch.nonzero(~usable).flatten().tolist():
        out[k]["unscored"] = "no atoms" if int(counts[k]) == 0 else "coordinates contain NaN or inf"
    keep = torch.nonzero(usable).flatten()
    if len(keep) == 0:
        return out
    samples = Samples.from_batch(cpu[keep], bond_source="auto")
    res = EdmMetric(profile=profile).analyse(samples)
    valid = np.asarray(res["valid"], bool)
    smiles = iter(res["smiles"])                        # one per valid molecule, in order
    atoms = np.asarray(res["atoms"], np.int64)
    stable = np.asarray(res["atoms_stable"], np.int64)
    for j, k in enumerate(keep.tolist()):
        out[k]["edm_valid"] = bool(valid[j])
        out[k]["edm_mol_stable"] = bool(res["mol_stable"][j])
        out[k]["edm_atom_stability"] = float(stable[j] / atoms[j]) if atoms[j] else float("nan")
        if valid[j]:
            out[k]["smiles"] = next(smiles) or ""
    return out


def _text(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.4g}"
    return str(value)


def sample_properties(n: int, *, space: str, seed: int, sampler: str, nfe: float | int | None,
                      bonds: str, flags: Sequence[Mapping[str, Any]] | None = None,
                      extra: Mapping[str, Any] | None = None) -> list[dict[str, str]]:
    """One SD property dict per sample record (values as text; booleans ``1``/``0``).

    Args:
        n: number of records.
        space, seed, sampler: provenance (registry names, the study seed).
        nfe: network evaluations per trajectory (the sampler's ``stats["nfe"]``; with
            classifier-free guidance each step evaluates twice).
        bonds: where the record's bonds come from: ``decoder``, ``perceived`` or ``none``
            (one string for all, or pass per-record values in ``extra``).
        flags: :func:`molecule_flags` output (len ``n``), or None to omit quality flags.
        extra: more properties, each a scalar (same for all) or a sequence of length ``n``.
    Raises:
        ValueError when ``flags`` or an ``extra`` sequence has the wrong length (names it).
    """
    if flags is not None and len(flags) != n:
        raise ValueError(f"sample_properties: {len(flags)} flag dicts for {n} records")
    per_record: dict[str, Sequence[Any]] = {}
    constant: dict[str, Any] = {}
    for key, value in (extra or {}).items():
        if isinstance(value, (list, tuple, np.ndarray)):
            if len(value) != n:
                raise ValueError(f"sample_properties: extra[{key!r}] has {len(value)} values for {n} records")
            per_record[key] = value
        else:
            constant[key] = value
    out = []
    for k in range(n):
        props: dict[str, Any] = {"space": space, "seed": seed, "sampler": sampler,
                                 "nfe": "" if nfe is None else nfe, "sample_index": k,
                                 "bonds": bonds}
        if flags is not None:
            f = flags[k]
            for key in ("n_atoms", "n_hydrogens", "edm_valid", "edm_mol_stable",
                        "edm_atom_stability", "smiles", "flags_by", "unscored"):
                if key in f and not (key == "smiles" and not f[key]):
                    props[key] = f[key]
        props.update(constant)
        props.update({key: values[k] for key, values in per_record.items()})
        out.append({key: _text(v) for key, v in props.items()})
    return out


def set_sample_props(mols: Sequence[Any], props: Sequence[Mapping[str, str]]) -> list[Any]:
    """RDKit molecules with the given SD properties set (copies; a None sample becomes an
    empty molecule flagged ``l3dg_invalid``, as ``write_sdf`` writes it)."""
    from rdkit import Chem

    if len(mols) != len(props):
        raise ValueError(f"set_sample_props: {len(mols)} molecules but {len(props)} property dicts")
    out = []
    for mol, p in zip(mols, props):
        m = Chem.Mol(mol) if mol is not None else Chem.Mol()
        if mol is None:
            m.SetProp("l3dg_invalid", "1")
        for key, value in p.items():
            m.SetProp(str(key), str(value))
        out.append(m)
    return out
