"""RDKit side of the ``invariant`` space: per-molecule preparation (tokens + a seeded ETKDG
start with the molecule's own stereo), decoded graphs with explicit H, stereoisomer
candidates, MMFF relaxation and an atom-order-free Kabsch RMSD.

Per-molecule RDKit work, done once per molecule (per fit or per decode), never per step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from harness.core.geometry import kabsch_rmsd
from harness.core.types import ATOMIC_NUMBER, PERIODIC_TABLE, MolRecord
from spaces._topology import record_smiles, smiles_to_tokens, tokens_to_smiles


def _rdkit():
    from rdkit import Chem

    return Chem


def graph_with_hydrogens(smiles: str):
    """RDKit molecule of a SMILES with explicit H (SMILES atom order, then each heavy atom's
    hydrogens), kekulised; None if RDKit cannot parse it."""
    Chem = _rdkit()
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    mol = Chem.AddHs(mol)
    Chem.Kekulize(mol, clearAromaticFlags=True)
    return mol


def embed_coordinates(mol, seed: int, use_stereo: bool, max_attempts: int = 3
                      ) -> tuple[np.ndarray, str]:
    """Initial 3D coordinates for a molecule with explicit H (atom order kept).

    ``use_stereo``: honour the molecule's chiral tags / double-bond stereo (a few attempts,
    then stereo-free). Returns ``(pos [n, 3] float32 Å, kind)`` with kind ``"etkdg-stereo"``,
    ``"etkdg"`` or ``"2d"`` (RDKit 2D depiction plus seeded 0.3 Å noise, when ETKDG fails).
    Each ETKDG attempt stops after :data:`EMBED_TIMEOUT_S` seconds: generated drug-sized
    graphs can keep the embedder busy for minutes (QM9 molecules embed in milliseconds).
    """
    Chem = _rdkit()
    from rdkit.Chem import rdDepictor, rdDistGeom

    work = Chem.Mol(mol)
    work.RemoveAllConformers()
    tries = [("etkdg-stereo", True, max_attempts)] if use_stereo else []
    tries.append(("etkdg", False, 0))
    for kind, stereo, attempts in tries:
        candidate = Chem.Mol(work)
        if not stereo:
            Chem.RemoveStereochemistry(candidate)
        params = rdDistGeom.ETKDGv3()
        params.randomSeed = int(seed)
        params.maxIterations = int(attempts)
        params.timeout = EMBED_TIMEOUT_S
        try:
            ok = rdDistGeom.EmbedMolecule(candidate, params) >= 0
        except RuntimeError:  # RDKit's optimiser can raise on strained cages
            ok = False
        if ok:
            return candidate.GetConformer().GetPositions().astype(np.float32), kind
    rdDepictor.Compute2DCoords(work)
    pos = work.GetConformer().GetPositions()
    noise = np.random.default_rng(seed).normal(0.0, 0.3, pos.shape)
    return (pos + noise).astype(np.float32), "2d"


#: heavier molecules keep ETKDG's own stereo choice (see ``stereo_isomers``)
MAX_STEREO_HEAVY_ATOMS = 40
#: above this many stereoisomers, candidates are drawn at random (seeded) rather than in order
MAX_ENUMERATED_STEREO = 1024
#: seconds one ETKDG embedding may take before the fallback (see ``embed_coordinates``)
EMBED_TIMEOUT_S = 10


def graph_arrays(mol) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(numbers [n], bonds [m, 3] (i, j, order), charges [n])`` of a kekulised molecule."""
    from harness.core.chem import bonds_of

    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.int64)
    charges = np.array([a.GetFormalCharge() for a in mol.GetAtoms()], np.int64)
    return numbers, bonds_of(mol), charges


def stereo_isomers(mol, limit: int, merge_enantiomers: bool) -> list:
    """Up to ``limit`` stereoisomers (explicit-H molecules, same atom order) of a stereo-free
    molecule; with ``merge_enantiomers`` one of each mirror-image pair. Always at least the
    molecule itself."""
    Chem = _rdkit()
    from rdkit.Chem.EnumerateStereoisomers import EnumerateStereoisomers, StereoEnumerationOptions

    if limit <= 1:
        return [mol]
    from rdkit.Chem.EnumerateStereoisomers import GetStereoisomerCount

    options = StereoEnumerationOptions(onlyUnassigned=True, unique=True,
                                       maxIsomers=2 * limit if merge_enantiomers else limit,
                                       rand=None, tryEmbedding=False)
    if GetStereoisomerCount(mol, options=options) > MAX_ENUMERATED_STEREO:
        # many stereo elements (drug-sized generated graphs): a seeded random draw instead of
        # walking 2^k flag combinations in order, which can take minutes
        options.rand = 20241201
    out, seen = [], set()
    try:
        isomers = list(EnumerateStereoisomers(mol, options=options))
    except Exception:
        return [mol]
    for isomer in isomers:
        key = Chem.MolToSmiles(isomer)
        if key in seen:
            continue
        seen.add(key)
        if merge_enantiomers:
            mirror = Chem.Mol(isomer)
            for atom in mirror.GetAtoms():
                tag = atom.GetChiralTag()
                if tag == Chem.ChiralType.CHI_TETRAHEDRAL_CW:
                    atom.SetChiralTag(Chem.ChiralType.CHI_TETRAHEDRAL_CCW)
                elif tag == Chem.ChiralType.CHI_TETRAHEDRAL_CCW:
                    atom.SetChiralTag(Chem.ChiralType.CHI_TETRAHEDRAL_CW)
            seen.add(Chem.MolToSmiles(mirror))
        out.append(isomer)
        if len(out) >= limit:
            break
    return out or [mol]


# -- training preparation --------------------------------------------------------------------
def prepare_dataset(dataset, max_selfies_len: int, seed: int, limit: int | None = None,
                    progress: bool = False):
    """Per-molecule preparation of a dataset (RDKit; once per fit): tokens and initial
    coordinates (stereo from the molecule's own 3D structure). Molecules without bonds, without
    a SMILES, or with more than ``max_selfies_len`` SELFIES tokens are skipped and counted.
    Returns ``(kept indices, token lists, init_flat [A, 3], init_ptr [K + 1], counts)``."""
    from tqdm.auto import tqdm

    Chem = _rdkit()
    from harness.core.chem import record_to_mol

    n = len(dataset) if limit is None else min(limit, len(dataset))
    keep, token_lists, inits = [], [], []
    counts = {"no_smiles": 0, "too_long": 0, "no_bonds": 0, "etkdg-stereo": 0, "etkdg": 0, "2d": 0}
    for m in tqdm(range(n), disable=not progress, desc="invariant: preparing", unit="mol"):
        record = dataset[m]
        if len(record.bonds) == 0 and record.n_atoms > 1:
            counts["no_bonds"] += 1
            continue
        smiles = record_smiles(record)
        if smiles is None:
            counts["no_smiles"] += 1
            continue
        tokens = smiles_to_tokens(smiles)
        if len(tokens) > max_selfies_len:
            counts["too_long"] += 1
            continue
        mol = record_to_mol(record)
        try:
            Chem.SanitizeMol(mol)
            Chem.AssignStereochemistryFrom3D(mol)
        except Exception:
            counts["no_smiles"] += 1
            continue
        pos, kind = embed_coordinates(mol, seed, use_stereo=True)
        counts[kind] += 1
        keep.append(m)
        token_lists.append(tokens)
        inits.append(pos)
    init_ptr = np.concatenate([[0], np.cumsum([len(p) for p in inits])]).astype(np.int64)
    init_flat = np.concatenate(inits) if inits else np.zeros((0, 3), np.float32)
    return np.asarray(keep, np.int64), token_lists, init_flat, init_ptr, counts


# -- decoding --------------------------------------------------------------------------------
@dataclass
class DecodedGraph:
    """One decoded molecule's graph (SMILES atom order, then hydrogens)."""

    smiles: str
    numbers: np.ndarray
    bonds: np.ndarray
    charges: np.ndarray
    mol: Any
    valid: bool


def decode_graphs(strings: Sequence[str], elements: Sequence[str]) -> list[DecodedGraph]:
    """Decoded SELFIES strings -> graphs with explicit H. A string that places no atom, or an
    element outside ``elements``, gives one bare carbon atom marked ``valid=False``."""
    return smiles_graphs([tokens_to_smiles([text]) if text else "" for text in strings], elements)


def smiles_graphs(smiles_list: Sequence[str], elements: Sequence[str]) -> list[DecodedGraph]:
    """Decoded SMILES -> graphs with explicit H (an empty or unreadable SMILES, or an element
    outside ``elements``, gives one bare carbon atom marked ``valid=False``)."""
    Chem = _rdkit()
    graphs = []
    for smiles in smiles_list:
        mol = graph_with_hydrogens(smiles)
        if mol is not None:
            numbers, bonds, charges = graph_arrays(mol)
            if all(PERIODIC_TABLE[z] in elements for z in numbers):
                graphs.append(DecodedGraph(Chem.MolToSmiles(Chem.MolFromSmiles(smiles)),
                                           numbers, bonds, charges, mol, True))
                continue
        carbon = "C" if "C" in elements else elements[-1]
        graphs.append(DecodedGraph("", np.array([ATOMIC_NUMBER[carbon]]), np.zeros((0, 3), np.int64),
                                   np.zeros(1, np.int64), None, False))
    return graphs


def stereo_candidates(graphs: Sequence[DecodedGraph], limit: int, merge_enantiomers: bool,
                      seed: int) -> tuple[list[int], list[MolRecord], dict[str, int]]:
    """Decoder starts: up to ``limit`` stereoisomers of each valid graph, each with a seeded
    ETKDG conformer (an invalid graph: its one atom at the origin). Returns ``(owner
    molecule per candidate, candidate records, counts of start kinds)``."""
    owner, records, kinds = [], [], {"etkdg-stereo": 0, "etkdg": 0, "2d": 0, "none": 0}
    for b, g in enumerate(graphs):
        if not g.valid:
            owner.append(b)
            records.append(MolRecord(numbers=g.numbers, pos=np.zeros((1, 3))))
            kinds["none"] += 1
            continue
        isomers = stereo_isomers(g.mol, limit, merge_enantiomers)
        for isomer in isomers:
            pos, kind = embed_coordinates(isomer, seed, use_stereo=len(isomers) > 1)
            kinds[kind] += 1
            owner.append(b)
            records.append(MolRecord(numbers=g.numbers, pos=pos, bonds=g.bonds, charges=g.charges))
    return owner, records, kinds


def relax_coordinates(graphs: Sequence[DecodedGraph], pos: np.ndarray) -> np.ndarray:
    """MMFF94 optimisation (UFF where MMFF has no parameters) of decoded coordinates
    ``pos [B, N, 3]`` Å (rows of invalid graphs, and failed optimisations, stay as they are)."""
    Chem = _rdkit()
    from rdkit.Geometry import Point3D

    from harness.core.forcefield import optimize_molecule

    out = pos.copy()
    for b, g in enumerate(graphs):
        if not g.valid:
            continue
        mol = Chem.Mol(g.mol)
        mol.RemoveAllConformers()
        conf = Chem.Conformer(mol.GetNumAtoms())
        for k in range(mol.GetNumAtoms()):
            conf.SetAtomPosition(k, Point3D(*map(float, pos[b, k])))
        mol.AddConformer(conf, assignId=True)
        try:
            if optimize_molecule(mol) >= 0:
                out[b, : mol.GetNumAtoms()] = mol.GetConformer().GetPositions()
        except Exception:       # RDKit raises several unrelated types for a bad molecule
            pass
    return out


# -- reconstruction helper (decoded vs. input molecule, different atom orders) ---------------
def matched_rmsd(reference: MolRecord, decoded: MolRecord, heavy_only: bool = True,
                 allow_reflection: bool = False, max_matches: int = 1000) -> float:
    """Kabsch RMSD (Å) between two molecules with the same graph but different atom orders:
    the minimum over graph isomorphisms (RDKit substructure matches, so symmetric atoms are
    handled) of the aligned RMSD over heavy atoms (or all atoms). NaN when the graphs differ."""
    from harness.core.chem import record_to_mol

    Chem = _rdkit()
    try:
        ref = record_to_mol(reference)
        dec = record_to_mol(decoded)
        Chem.SanitizeMol(ref)
        Chem.SanitizeMol(dec)
        if heavy_only:
            ref, dec = Chem.RemoveHs(ref), Chem.RemoveHs(dec)
        if ref.GetNumAtoms() != dec.GetNumAtoms():
            return float("nan")
        matches = dec.GetSubstructMatches(ref, uniquify=False, useChirality=False,
                                          maxMatches=max_matches)
    except Exception:
        return float("nan")
    if not matches:
        return float("nan")
    ref_pos = torch.from_numpy(ref.GetConformer().GetPositions())
    dec_pos = torch.from_numpy(dec.GetConformer().GetPositions())
    perms = torch.as_tensor(matches)                                  # [K, n]
    a = ref_pos[None].expand(len(perms), -1, -1)
    b = dec_pos[perms]
    mask = torch.ones(a.shape[:2], dtype=torch.bool)
    return float(kabsch_rmsd(a, b, mask, allow_reflection).min())
