"""Core data types: per-molecule records, dense padded :class:`MolBatch`, latents.

Only numpy and torch are imported here, so every other package can depend on this module
without cycles (see DESIGN.md, import direction).

Conventions
-----------
* Coordinates are in Å.
* ``atom_types`` index into the dataset's element vocabulary ``elements`` (e.g. QM9's
  ``("H", "C", "N", "O", "F")``); padded slots hold 0 and are masked out.
* ``bonds[b, i, j]`` is the bond order between atoms i and j (0 none, 1 single, 2 double,
  3 triple; aromatic systems are stored kekulised), symmetric.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Literal, Sequence

import numpy as np
import torch

# Symbols by atomic number (index 0 is a placeholder); enough for organic chemistry datasets.
PERIODIC_TABLE: tuple[str, ...] = (
    "*", "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P",
    "S", "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn",
    "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh",
    "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd",
    "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re",
    "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi",
)
ATOMIC_NUMBER: dict[str, int] = {s: z for z, s in enumerate(PERIODIC_TABLE) if z > 0}


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol; a clear error for an unknown one."""
    try:
        return ATOMIC_NUMBER[symbol]
    except KeyError:
        raise ValueError(f"unknown element symbol {symbol!r}") from None


@dataclass
class MolRecord:
    """One molecule, unpadded (numpy arrays).

    Attributes:
        numbers: [n] atomic numbers.
        pos: [n, 3] float32 coordinates in Å.
        bonds: [m, 3] int64 rows ``(i, j, order)`` with i < j; empty if unknown.
        charges: [n] int formal charges (zeros if unknown).
        smiles: reference SMILES if the source had one, else "".
        props: [P] float32 properties (units given by the dataset's ``prop_units``).
        name: identifier (dataset index, SDF title, ...).
    """

    numbers: np.ndarray
    pos: np.ndarray
    bonds: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))
    charges: np.ndarray | None = None
    smiles: str = ""
    props: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    name: str = ""

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=np.int64)
        self.pos = np.asarray(self.pos, dtype=np.float32).reshape(-1, 3)
        self.bonds = np.asarray(self.bonds, dtype=np.int64).reshape(-1, 3)
        if self.charges is None:
            self.charges = np.zeros(len(self.numbers), np.int64)
        self.charges = np.asarray(self.charges, dtype=np.int64)
        self.props = np.asarray(self.props, dtype=np.float32).reshape(-1)
        n = len(self.numbers)
        if len(self.pos) != n:
            raise ValueError(f"record {self.name!r}: {n} atoms but {len(self.pos)} coordinate rows")
        if len(self.charges) != n:
            raise ValueError(f"record {self.name!r}: {n} atoms but {len(self.charges)} charges")
        if len(self.bonds):
            i, j, order = self.bonds.T
            if (i < 0).any() or (j < 0).any() or (i >= n).any() or (j >= n).any() or (i == j).any():
                raise ValueError(f"record {self.name!r}: bond indices must be distinct atoms in 0..{n - 1}")
            if ((order < 1) | (order > 3)).any():
                raise ValueError(f"record {self.name!r}: bond orders must be 1, 2 or 3 (kekulised), "
                                 f"got {sorted(set(order.tolist()) - {1, 2, 3})}")

    @property
    def n_atoms(self) -> int:
        return int(len(self.numbers))

    @property
    def symbols(self) -> list[str]:
        return [PERIODIC_TABLE[z] for z in self.numbers]


@dataclass
class MolBatch:
    """A dense, padded batch of B molecules with at most N atoms.

    Attributes:
        atom_types: [B, N] long, index into ``elements`` (0 in padded slots).
        pos: [B, N, 3] float, Å (0 in padded slots).
        mask: [B, N] bool, True for real atoms.
        elements: element vocabulary, e.g. ``("H", "C", "N", "O", "F")``.
        charges: [B, N] long formal charges, or None.
        bonds: [B, N, N] long bond orders (0 none, 1/2/3), or None when unknown
            (e.g. a bond-free space's raw output).
        props: [B, P] float properties, or None.
        names: B identifiers (may be empty).
    """

    atom_types: torch.Tensor
    pos: torch.Tensor
    mask: torch.Tensor
    elements: tuple[str, ...]
    charges: torch.Tensor | None = None
    bonds: torch.Tensor | None = None
    props: torch.Tensor | None = None
    names: list[str] = field(default_factory=list)

    _TENSORS = ("atom_types", "pos", "mask", "charges", "bonds", "props")

    def __post_init__(self) -> None:
        self.elements = tuple(self.elements)
        if self.atom_types.shape != self.mask.shape or self.pos.shape[:2] != self.mask.shape:
            raise ValueError(f"MolBatch shape mismatch: atom_types {tuple(self.atom_types.shape)}, "
                             f"pos {tuple(self.pos.shape)}, mask {tuple(self.mask.shape)}")

    # -- shape --------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.mask.shape[0])

    @property
    def batch_size(self) -> int:
        return len(self)

    @property
    def max_atoms(self) -> int:
        return int(self.mask.shape[1])

    @property
    def n_atoms(self) -> torch.Tensor:
        """[B] long, atoms per molecule."""
        return self.mask.sum(dim=1)

    @property
    def device(self) -> torch.device:
        return self.pos.device

    @property
    def numbers(self) -> torch.Tensor:
        """[B, N] long atomic numbers (0 in padded slots)."""
        table = torch.tensor([ATOMIC_NUMBER[e] for e in self.elements], device=self.device)
        return torch.where(self.mask, table[self.atom_types], torch.zeros_like(self.atom_types))

    # -- conversions --------------------------------------------------------------------
    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "MolBatch":
        """Move every tensor to ``device``; ``dtype`` applies to floating tensors only."""
        changes = {}
        for name in self._TENSORS:
            t = getattr(self, name)
            if t is None:
                continue
            if dtype is not None and t.is_floating_point():
                changes[name] = t.to(device=device, dtype=dtype)
            else:
                changes[name] = t.to(device)
        return replace(self, **changes)

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> "MolBatch":
        """Select molecules; the result is trimmed to its own largest molecule."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        if isinstance(index, slice):
            idx = torch.arange(len(self))[index]
        else:
            idx = torch.as_tensor(index)
            idx = idx.nonzero().flatten() if idx.dtype == torch.bool else idx.long()
        idx = idx.to(self.mask.device)
        n = int(self.mask[idx].sum(dim=1).max().item()) if len(idx) else 0
        changes: dict = {}
        for name in self._TENSORS:
            t = getattr(self, name)
            if t is None:
                continue
            t = t[idx]
            if name == "bonds":
                t = t[:, :n, :n]
            elif name != "props":
                t = t[:, :n]
            changes[name] = t
        names = [self.names[i] for i in idx.tolist()] if self.names else []
        return replace(self, names=names, **changes)

    def to_records(self) -> list[MolRecord]:
        """Unpad into per-molecule records (numpy, CPU)."""
        cpu = self.to("cpu")
        numbers = cpu.numbers.numpy()
        counts = cpu.n_atoms.tolist()
        out = []
        for b, n in enumerate(counts):
            # Real atoms are packed first by construction (collate and every space's decode).
            bonds = np.zeros((0, 3), np.int64)
            if cpu.bonds is not None:
                sub = cpu.bonds[b, :n, :n]
                i, j = torch.triu_indices(n, n, offset=1)
                orders = sub[i, j]
                keep = orders > 0
                bonds = torch.stack([i[keep], j[keep], orders[keep].long()], 1).numpy()
            out.append(MolRecord(
                numbers=numbers[b, :n],
                pos=cpu.pos[b, :n].numpy(),
                bonds=bonds,
                charges=None if cpu.charges is None else cpu.charges[b, :n].numpy(),
                props=np.zeros(0, np.float32) if cpu.props is None else cpu.props[b].numpy(),
                name=self.names[b] if self.names else str(b),
            ))
        return out

    @classmethod
    def from_records(cls, records: Sequence[MolRecord], elements: Sequence[str],
                     with_bonds: bool = True, with_props: bool = True) -> "MolBatch":
        """Collate records into a padded batch (vectorised; no loop over atoms)."""
        return collate_arrays(*pack_records(records), elements=elements,
                              with_bonds=with_bonds, with_props=with_props,
                              names=[r.name for r in records])


def pack_records(records: Sequence[MolRecord]):
    """Concatenate records into flat arrays: numbers, pos, charges, atom counts, bonds
    ([E, 3], molecule-local indices), bond counts, props [M, P]."""
    counts = np.fromiter((r.n_atoms for r in records), np.int64, len(records))
    bond_counts = np.fromiter((len(r.bonds) for r in records), np.int64, len(records))
    cat = (lambda xs, shape, dt: np.concatenate(xs) if len(xs) else np.zeros(shape, dt))
    numbers = cat([r.numbers for r in records], (0,), np.int64)
    pos = cat([r.pos for r in records], (0, 3), np.float32)
    charges = cat([r.charges for r in records], (0,), np.int64)
    bonds = cat([r.bonds for r in records], (0, 3), np.int64)
    n_props = max((len(r.props) for r in records), default=0)
    props = np.full((len(records), n_props), np.nan, np.float32)
    for k, r in enumerate(records):
        props[k, : len(r.props)] = r.props
    return numbers, pos, charges, counts, bonds, bond_counts, props


def collate_arrays(numbers: np.ndarray, pos: np.ndarray, charges: np.ndarray,
                   counts: np.ndarray, bonds: np.ndarray, bond_counts: np.ndarray,
                   props: np.ndarray, elements: Sequence[str], with_bonds: bool = True,
                   with_props: bool = True, names: list[str] | None = None) -> MolBatch:
    """Scatter flat per-atom arrays of M molecules into a padded :class:`MolBatch`.

    Args:
        numbers: [A] atomic numbers, pos: [A, 3] Å, charges: [A]; atoms of molecule m are
            the ``counts[m]`` rows after those of molecules < m.
        bonds: [E, 3] (i, j, order) with molecule-local i, j; ``bond_counts[m]`` per molecule.
        props: [M, P].
    """
    elements = tuple(elements)
    lookup = np.full(max(ATOMIC_NUMBER.values()) + 1, -1, np.int64)
    lookup[[ATOMIC_NUMBER[e] for e in elements]] = np.arange(len(elements))
    types = lookup[numbers]
    if (types < 0).any():
        bad = sorted({PERIODIC_TABLE[z] for z in numbers[types < 0]})
        raise ValueError(f"elements {bad} are not in the vocabulary {elements}")
    m = len(counts)
    n_max = int(counts.max()) if m else 0
    mol_of_atom = np.repeat(np.arange(m), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if m else np.zeros(0, np.int64)
    slot = np.arange(len(numbers)) - np.repeat(starts, counts)
    mask = np.zeros((m, n_max), bool)
    mask[mol_of_atom, slot] = True
    atom_types = np.zeros((m, n_max), np.int64)
    atom_types[mol_of_atom, slot] = types
    dense_pos = np.zeros((m, n_max, 3), np.float32)
    dense_pos[mol_of_atom, slot] = pos
    dense_charges = np.zeros((m, n_max), np.int64)
    dense_charges[mol_of_atom, slot] = charges
    dense_bonds = None
    if with_bonds:
        dense_bonds = np.zeros((m, n_max, n_max), np.int64)
        mol_of_bond = np.repeat(np.arange(m), bond_counts)
        dense_bonds[mol_of_bond, bonds[:, 0], bonds[:, 1]] = bonds[:, 2]
        dense_bonds[mol_of_bond, bonds[:, 1], bonds[:, 0]] = bonds[:, 2]
    return MolBatch(
        atom_types=torch.from_numpy(atom_types),
        pos=torch.from_numpy(dense_pos),
        mask=torch.from_numpy(mask),
        elements=elements,
        charges=torch.from_numpy(dense_charges),
        bonds=None if dense_bonds is None else torch.from_numpy(dense_bonds),
        props=torch.from_numpy(props) if with_props and props.shape[1] else None,
        names=list(names) if names else [],
    )


SymmetryKind = Literal["invariant", "equivariant", "none"]
from harness.core.geometry import SYMMETRY_GROUPS  # noqa: E402  (the one list; torch only)


@dataclass(frozen=True)
class LatentSpec:
    """What a space declares about its latent (see DESIGN.md, core types).

    Attributes:
        kind: ``"vector"`` (one ``[width]`` vector per molecule) or ``"per_atom"``
            (``[N, width]`` invariant features per atom, plus ``[N, 3]`` equivariant
            coordinates when ``has_coords``).
        width: feature width (D for vectors, F per atom).
        has_coords: per-atom latents only: carries an equivariant 3-vector per atom, which
            generators keep in the zero centre-of-mass subspace.
        symmetry: for each of ``permutation``, ``rotation``, ``translation``, ``reflection``,
            how the latent transforms: ``invariant``, ``equivariant`` or ``none``.
        bounded: latent values are in [-1, 1] (e.g. tanh outputs); samplers may clip.
    """

    kind: Literal["vector", "per_atom"]
    width: int
    has_coords: bool = False
    symmetry: tuple[tuple[str, SymmetryKind], ...] = ()
    bounded: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("vector", "per_atom"):
            raise ValueError(f"LatentSpec.kind must be 'vector' or 'per_atom', got {self.kind!r}")
        if self.kind == "vector" and self.has_coords:
            raise ValueError("vector latents carry no per-atom coordinates")
        symmetry = dict(self.symmetry)
        bad = sorted(set(symmetry) - set(SYMMETRY_GROUPS))
        if bad:
            raise ValueError(f"LatentSpec.symmetry: unknown transform(s) {bad}; valid: {list(SYMMETRY_GROUPS)}")
        wrong = {k: v for k, v in symmetry.items() if v not in ("invariant", "equivariant", "none")}
        if wrong:
            raise ValueError(f"LatentSpec.symmetry values must be invariant, equivariant or none, got {wrong}")
        object.__setattr__(self, "symmetry", tuple(sorted(symmetry.items())))

    @property
    def symmetries(self) -> dict[str, SymmetryKind]:
        return dict(self.symmetry)

    def dim(self, n_atoms: int | torch.Tensor) -> int | torch.Tensor:
        """Diffused degrees of freedom for a molecule of ``n_atoms`` atoms (zero-CoM
        coordinates count (n - 1) * 3)."""
        if self.kind == "vector":
            return self.width if isinstance(n_atoms, int) else torch.full_like(n_atoms, self.width)
        coords = (n_atoms - 1) * 3 if self.has_coords else 0
        return n_atoms * self.width + coords


@dataclass
class LatentBatch:
    """A batch of latents.

    Attributes:
        h: [B, D] (vector) or [B, N, F] (per-atom) features.
        spec: the producing space's :class:`LatentSpec`.
        x: [B, N, 3] equivariant coordinates (per-atom latents with ``has_coords``), else None.
        mask: [B, N] bool atom mask for per-atom latents, else None.
    """

    h: torch.Tensor
    spec: LatentSpec
    x: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.spec.kind == "vector":
            if self.h.dim() != 2 or self.h.shape[1] != self.spec.width:
                raise ValueError(f"vector latent must be [B, {self.spec.width}], "
                                 f"got {tuple(self.h.shape)}")
        else:
            if self.mask is None or self.h.dim() != 3 or self.h.shape[2] != self.spec.width:
                raise ValueError(f"per-atom latent must be [B, N, {self.spec.width}] with a "
                                 f"mask, got h {tuple(self.h.shape)}")
            if self.spec.has_coords and (self.x is None or self.x.shape != (*self.mask.shape, 3)):
                raise ValueError("per-atom latent with coordinates needs x [B, N, 3]")

    def __len__(self) -> int:
        return int(self.h.shape[0])

    def to(self, device: torch.device | str) -> "LatentBatch":
        return LatentBatch(
            h=self.h.to(device), spec=self.spec,
            x=None if self.x is None else self.x.to(device),
            mask=None if self.mask is None else self.mask.to(device),
        )

    def __getitem__(self, index) -> "LatentBatch":
        return LatentBatch(
            h=self.h[index], spec=self.spec,
            x=None if self.x is None else self.x[index],
            mask=None if self.mask is None else self.mask[index],
        )

    def flat(self) -> torch.Tensor:
        """[B, D'] features for per-molecule statistics (PCA, distances): vector latents as
        they are; per-atom latents padded and flattened (h then x)."""
        if self.spec.kind == "vector":
            return self.h
        parts = [self.h * self.mask[..., None]]
        if self.x is not None:
            parts.append(self.x * self.mask[..., None])
        return torch.cat([p.flatten(1) for p in parts], dim=1)

    @staticmethod
    def cat(batches: Iterable["LatentBatch"]) -> "LatentBatch":
        """Concatenate batches along B, padding per-atom latents to the largest N."""
        batches = list(batches)
        spec = batches[0].spec
        if spec.kind == "vector":
            return LatentBatch(h=torch.cat([b.h for b in batches]), spec=spec)
        n = max(b.h.shape[1] for b in batches)
        pad = lambda t, extra: torch.nn.functional.pad(t, (0, 0) * extra + (0, n - t.shape[1]))
        h = torch.cat([pad(b.h, 1) for b in batches])
        mask = torch.cat([torch.nn.functional.pad(b.mask, (0, n - b.mask.shape[1])) for b in batches])
        x = torch.cat([pad(b.x, 1) for b in batches]) if spec.has_coords else None
        return LatentBatch(h=h, spec=spec, x=x, mask=mask)
