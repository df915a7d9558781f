"""Motif decomposition and assembly of the HierVAE topology option (the chemistry, no
networks). After Jin, Barzilay & Jaakkola (ICML 2020), written from the paper and the public
code's behaviour.

A molecule (its canonical, stereo-free heavy-atom SMILES, kekulised) is cut into **motifs**:
every bond outside a ring, every ring of RDKit's symmetrised SSSR, and, where one atom is shared
by more than two motifs of which at least two are bonds (or by more than two rings), that atom
alone. Motifs overlap in the atoms they share; a maximum spanning tree of the "shares atoms"
graph (weight = shared atoms) is the **motif tree**, rooted at the motif holding the SMILES's
first atom and walked depth first, children in motif order.

Each motif is named by its canonical kekulé fragment SMILES (the **motif key**); the order in
which RDKit writes that fragment is the motif's **template** (atom ``j`` of the template is
the ``j``-th atom written), so a motif's atoms have fixed positions. A child's **attachment**
names its template positions shared with the parent and those shared only with other,
earlier motifs (fused and caged rings; ``"<key>|i,j|k"``; the root's is ``"<key>||"``); its
**assembly** is the tuple of existing atoms those positions sit on: the parent's for the
first part (labels and bonds must match), any other atom of the same label for the rest.
Bond orders come from the templates (kekulé), implicit hydrogens from RDKit's valence model,
so decompose -> assemble returns the same canonical SMILES (tested on QM9).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from functools import cache, lru_cache

import numpy as np

#: longest assembly tuple scored position by position (longer shared sets, rare bridged
#: rings, use their first positions for the score but are still matched exactly)
MAX_SHARED = 4
#: most assembly candidates enumerated per step (a molecule whose true assembly lies beyond
#: is left out of training, counted as not ``known``; decoding picks among these)
MAX_CANDIDATES = 256


def _chem():
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    return Chem


@dataclass(frozen=True)
class Template:
    """One motif's fixed atom order: ``labels[j]`` = ``"C"``, ``"N+"``, ...; ``bonds`` =
    ``(i, j, order)`` with kekulé orders 1/2/3."""

    key: str
    labels: tuple[str, ...]
    bonds: tuple[tuple[int, int, int], ...]

    @property
    def size(self) -> int:
        return len(self.labels)

    @property
    def adjacency(self) -> set[tuple[int, int]]:
        return {(i, j) for i, j, _ in self.bonds} | {(j, i) for i, j, _ in self.bonds}


def atom_label(atom) -> str:
    charge = atom.GetFormalCharge()
    return atom.GetSymbol() + ("" if charge == 0 else f"{charge:+d}")


_LABEL = re.compile(r"^([A-Z][a-z]?)([+-]\d+)?$")


@cache
def template_from_key(key: str) -> Template | None:
    """The template of a motif key (parsed without sanitising: atoms in written order), None
    when RDKit cannot read it."""
    Chem = _chem()
    mol = Chem.MolFromSmiles(key, sanitize=False)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    orders = {1.0: 1, 2.0: 2, 3.0: 3}
    bonds = []
    for b in mol.GetBonds():
        order = orders.get(b.GetBondTypeAsDouble())
        if order is None:
            return None
        bonds.append((b.GetBeginAtomIdx(), b.GetEndAtomIdx(), order))
    return Template(key, tuple(atom_label(a) for a in mol.GetAtoms()), tuple(bonds))


@dataclass
class MotifTree:
    """A molecule cut into motifs. Node ``k`` (depth-first pre-order; 0 = root) has
    ``keys[k]``, ``atoms[k]`` (molecule atom of each template position), ``parent[k]``
    (-1 at the root), ``shared[k]`` = (positions shared with the parent, positions shared
    only with other earlier nodes), and ``targets[k]``: the atoms those positions sit on, as
    creation ids (atoms are numbered as the tree creates them: the root's template, then each
    node's new atoms in template order)."""

    smiles: str
    atom_labels: list[str]
    bonds: np.ndarray                   # [E, 3] (i, j, kekulé order)
    keys: list[str] = field(default_factory=list)
    atoms: list[list[int]] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    shared: list[tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    targets: list[tuple[int, ...]] = field(default_factory=list)

    def attachment(self, k: int) -> str:
        return attachment_name(self.keys[k], *self.shared[k])


def attachment_name(key: str, to_parent: tuple[int, ...] = (), to_other: tuple[int, ...] = ()) -> str:
    """``"<key>|<positions shared with the parent>|<positions shared with other nodes>"``."""
    return f"{key}|{','.join(map(str, to_parent))}|{','.join(map(str, to_other))}"


def parse_attachment(name: str) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
    key, to_parent, to_other = name.rsplit("|", 2)
    ints = lambda text: tuple(int(x) for x in text.split(",") if x)
    return key, ints(to_parent), ints(to_other)


def _clusters(mol) -> list[list[int]]:
    Chem = _chem()
    n = mol.GetNumAtoms()
    if n == 1:
        return [[0]]
    clusters = [[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] for b in mol.GetBonds() if not b.IsInRing()]
    clusters += [list(r) for r in Chem.GetSymmSSSR(mol)]
    return clusters


def _tree_edges(clusters: list[list[int]], n_atoms: int) -> list[tuple[int, int]]:
    """Maximum spanning tree (Kruskal) of the shared-atom graph; adds singleton motifs for
    atoms shared by > 2 motifs with >= 2 bonds among them, or by > 2 rings."""
    owners: list[list[int]] = [[] for _ in range(n_atoms)]
    for c, cl in enumerate(clusters):
        for a in cl:
            owners[a].append(c)
    weighted = []
    for atom in range(n_atoms):
        near = owners[atom]
        if len(near) <= 1:
            continue
        n_bonds = sum(len(clusters[c]) == 2 for c in near)
        n_rings = sum(len(clusters[c]) > 4 for c in near)
        if len(near) > 2 and (n_bonds >= 2 or n_rings > 2):
            clusters.append([atom])
            hub = len(clusters) - 1
            weighted += [(100, c, hub) for c in near]
        else:
            for i, c1 in enumerate(near):
                for c2 in near[i + 1:]:
                    weighted.append((len(set(clusters[c1]) & set(clusters[c2])), c1, c2))
    root = list(range(len(clusters)))

    def find(x):
        while root[x] != x:
            root[x] = root[root[x]]
            x = root[x]
        return x

    edges = []
    for _, c1, c2 in sorted(weighted, key=lambda e: (-e[0], e[1], e[2])):
        r1, r2 = find(c1), find(c2)
        if r1 != r2:
            root[r1] = r2
            edges.append((c1, c2))
    return edges


def decompose(smiles: str) -> MotifTree | None:
    """Motif tree of a SMILES; None when RDKit cannot parse or kekulise it, or the
    shared-atom graph is not connected."""
    Chem = _chem()
    mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception:  # RDKit raises several types for kekulisation failures
        return None
    n = mol.GetNumAtoms()
    clusters = _clusters(mol)
    edges = _tree_edges(clusters, n)
    if len(edges) != len(clusters) - 1:
        return None
    root = next(c for c, cl in enumerate(clusters) if 0 in cl)
    near: list[list[int]] = [[] for _ in clusters]
    for a, b in edges:
        near[a].append(b)
        near[b].append(a)
    bonds = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx(), int(b.GetBondTypeAsDouble()))
                      for b in mol.GetBonds()], np.int64).reshape(-1, 3)
    tree = MotifTree(smiles, [atom_label(a) for a in mol.GetAtoms()], bonds)
    created: dict[int, int] = {}              # molecule atom -> creation id
    stack = [(root, -1, -1)]                  # (cluster, parent cluster, parent node)
    while stack:
        c, parent_cluster, parent_node = stack.pop()
        key = Chem.MolFragmentToSmiles(mol, atomsToUse=sorted(clusters[c]), kekuleSmiles=True,
                                       canonical=True, isomericSmiles=False)
        order = [int(x) for x in re.findall(r"\d+", mol.GetProp("_smilesAtomOutputOrder"))]
        node = len(tree.keys)
        tree.keys.append(key)
        tree.atoms.append(order)
        tree.parent.append(parent_node)
        in_parent = set(tree.atoms[parent_node]) if parent_node >= 0 else set()
        to_parent = tuple(j for j, a in enumerate(order) if a in in_parent)
        to_other = tuple(j for j, a in enumerate(order) if a in created and a not in in_parent)
        tree.shared.append((to_parent, to_other))
        tree.targets.append(tuple(created[order[j]] for j in to_parent + to_other))
        for a in order:
            if a not in created:
                created[a] = len(created)
        for x in sorted((x for x in near[c] if x != parent_cluster), reverse=True):
            stack.append((x, c, node))         # popped in ascending order: depth-first pre-order
    return tree


def candidates(parent_key: str, parent_atoms: list[int], labels: list[str], child_key: str,
               to_parent: tuple[int, ...], to_other: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Where a child attached by ``to_parent`` / ``to_other`` positions can sit in a partial
    molecule: tuples of creation ids, the first part on the parent's atoms (``parent_atoms``:
    creation id of each parent template position; labels and bonds among them must match the
    child's), the rest on other existing atoms (``labels``: label of each creation id) with
    matching labels. Deterministic order, at most :data:`MAX_CANDIDATES`."""
    child = template_from_key(child_key)
    if child is None or (to_parent + to_other and max(to_parent + to_other) >= child.size):
        return []
    heads = [tuple(parent_atoms[p] for p in combo)
             for combo in _parent_candidates(parent_key, child_key, to_parent)]
    if not to_other:
        return heads[:MAX_CANDIDATES]
    inside = set(parent_atoms)
    pools = [[i for i, lab in enumerate(labels) if lab == child.labels[j] and i not in inside]
             for j in to_other]
    tails = (c for c in itertools.product(*pools) if len(set(c)) == len(c))
    return list(itertools.islice((h + t for t in tails for h in heads), MAX_CANDIDATES))


@lru_cache(maxsize=200_000)
def _parent_candidates(parent_key: str, child_key: str, shared: tuple[int, ...]
                       ) -> tuple[tuple[int, ...], ...]:
    """Parent template positions for the child's ``shared`` positions (labels and bonds
    among them match)."""
    parent, child = template_from_key(parent_key), template_from_key(child_key)
    if parent is None or child is None:
        return ()
    if not shared:
        return ((),)
    want = [child.labels[j] for j in shared]
    adj_p, adj_c = parent.adjacency, child.adjacency
    pools = [[i for i in range(parent.size) if parent.labels[i] == w] for w in want]
    out = []
    for combo in itertools.product(*pools):
        if len(set(combo)) != len(combo):
            continue
        if all(((combo[s], combo[t]) in adj_p) == ((shared[s], shared[t]) in adj_c)
               for s in range(len(combo)) for t in range(s + 1, len(combo))):
            out.append(tuple(combo))
    return tuple(out)


class Builder:
    """A molecule under construction from motifs (creation ids = RDKit atom indices)."""

    def __init__(self):
        Chem = _chem()
        self.mol = Chem.RWMol()
        self.labels: list[str] = []
        self.where: list[list[int]] = []       # per node: creation id of each template position
        self.keys: list[str] = []
        self.ok = True

    def add(self, key: str, positions: tuple[int, ...], targets: tuple[int, ...]) -> int:
        """Add a motif whose ``positions`` sit on existing atoms ``targets``; returns the
        node's index (marks the build failed when the template or the targets do not fit)."""
        Chem = _chem()
        t = template_from_key(key)
        if t is None or len(positions) != len(targets) or any(
                j >= t.size or a >= len(self.labels) for j, a in zip(positions, targets)):
            self.ok = False
            t = t or Template(key, (), ())
        mapping = [-1] * t.size
        for j, a in zip(positions, targets):
            if j < t.size and a < len(self.labels):
                mapping[j] = a
        for j, label in enumerate(t.labels):
            if mapping[j] < 0:
                m = _LABEL.match(label)
                atom = Chem.Atom(m.group(1))
                atom.SetFormalCharge(int(m.group(2) or 0))
                mapping[j] = self.mol.AddAtom(atom)
                self.labels.append(label)
        orders = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
        for i, j, order in t.bonds:
            a, b = mapping[i], mapping[j]
            if a == b:
                self.ok = False
            elif self.mol.GetBondBetweenAtoms(a, b) is None:
                self.mol.AddBond(a, b, orders[order])
        self.where.append(mapping)
        self.keys.append(key)
        return len(self.where) - 1

    def smiles(self) -> str:
        """Canonical SMILES, or ``""`` when the build failed or RDKit cannot sanitise it."""
        Chem = _chem()
        if not self.ok or not self.labels:
            return ""
        try:
            out = self.mol.GetMol()
            Chem.SanitizeMol(out)
            return Chem.MolToSmiles(out, isomericSmiles=False)
        except Exception:  # RDKit raises several types for impossible valences
            return ""


def tree_smiles(tree: MotifTree) -> str:
    """Assemble a decomposed tree again (decompose -> assemble round trip)."""
    build = Builder()
    for k, key in enumerate(tree.keys):
        build.add(key, tree.shared[k][0] + tree.shared[k][1], tree.targets[k])
    return build.smiles()
