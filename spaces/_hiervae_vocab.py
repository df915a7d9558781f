"""Vocabularies and tensors of the HierVAE topology option.

:class:`MotifVocab` holds three vocabularies built from motif trees (the training split, and
optionally a user's SMILES file): atom labels, motif keys and attachments (a motif with the
positions it shares; :mod:`spaces._hiervae_motifs`). Entry 0 of each is ``<unk>``. **No lookup
raises**: an unseen label, motif or attachment maps to ``<unk>`` (id 0), the molecule still
encodes (its unknown parts through the ``<unk>`` embeddings) and is counted in
``unknown``; the decoder never emits ``<unk>``, and a molecule with an unknown motif or
attachment is left out of the reconstruction loss (it has no target to learn).

:func:`featurize` turns one motif tree into numpy arrays (encoder graph + the decoder's
teacher-forcing script); :class:`TreeCollate` pads and packs a batch of them.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from spaces._hiervae_motifs import (
    MAX_SHARED,
    MotifTree,
    attachment_name,
    candidates,
    parse_attachment,
    template_from_key,
)

UNK = "<unk>"


class MotifVocab:
    """Atom labels, motif keys and attachments, each with ``<unk>`` at id 0."""

    def __init__(self, labels: Sequence[str] = (), motifs: Sequence[str] = (),
                 attachments: Sequence[str] = ()):
        self.labels = [UNK] + sorted(set(labels) - {UNK})
        self.motifs = [UNK] + sorted(set(motifs) - {UNK})
        # every motif may be a root: its "<key>||" attachment always exists
        atts = set(attachments) | {attachment_name(m) for m in self.motifs[1:]}
        self.attachments = [UNK] + sorted(atts - {UNK})
        self.label_id = {x: i for i, x in enumerate(self.labels)}
        self.motif_id = {x: i for i, x in enumerate(self.motifs)}
        self.att_id = {x: i for i, x in enumerate(self.attachments)}
        parsed = [parse_attachment(a) if a != UNK else (UNK, (), ()) for a in self.attachments]
        #: motif id of each attachment; whether it is a root attachment; its positions
        self.att_motif = np.array([self.motif_id.get(p[0], 0) for p in parsed], np.int64)
        self.att_root = np.array([not p[1] and not p[2] and a != UNK
                                  for p, a in zip(parsed, self.attachments)], bool)
        self.att_parts = [(p[1], p[2]) for p in parsed]
        self.root_att = np.zeros(len(self.motifs), np.int64)
        for i, m in enumerate(self.motifs[1:], 1):
            self.root_att[i] = self.att_id[attachment_name(m)]
        #: attachments (non-root) of each motif, for the hierarchical choice at decode time
        self.motif_atts: list[list[int]] = [[] for _ in self.motifs]
        for i in range(1, len(self.attachments)):
            if not self.att_root[i]:
                self.motif_atts[int(self.att_motif[i])].append(i)
        #: template size of each motif (0 for <unk>)
        self.motif_size = np.array([0] + [template_from_key(m).size if template_from_key(m) else 0
                                          for m in self.motifs[1:]], np.int64)

    @classmethod
    def from_trees(cls, trees: Iterable[MotifTree]) -> MotifVocab:
        labels, motifs, atts = set(), set(), set()
        for t in trees:
            labels.update(t.atom_labels)
            motifs.update(t.keys)
            atts.update(t.attachment(k) for k in range(len(t.keys)))
        return cls(labels, motifs, atts)

    def merged(self, other: MotifVocab) -> MotifVocab:
        return MotifVocab(self.labels[1:] + other.labels[1:], self.motifs[1:] + other.motifs[1:],
                          self.attachments[1:] + other.attachments[1:])

    def state(self) -> dict[str, list[str]]:
        return {"labels": self.labels[1:], "motifs": self.motifs[1:],
                "attachments": self.attachments[1:]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MotifVocab:
        return cls(state["labels"], state["motifs"], state["attachments"])

    def sizes(self) -> dict[str, int]:
        return {"labels": len(self.labels), "motifs": len(self.motifs),
                "attachments": len(self.attachments)}


@dataclass
class TreeArrays:
    """One molecule's arrays. Encoder: ``labels [n]``, ``bonds [E, 3]``, ``motif / att
    [K]``, ``parent [K]``, ``members`` ``[M, 2]`` (node, atom). Decoder script (depth-first
    walk; ``S = 2K - 1`` events): ``cur, topo, child [S]``; per event ``cands [C, MAX_SHARED]``
    (creation ids, -1 pad) with ``label`` (index of the true one, -1 when not an expansion);
    per node its new atoms ``new_pos [K, P]`` (template positions, -1 pad) whose creation ids
    are ``new_ids [K, P]``. ``known``: every motif and attachment is in the vocabulary;
    ``unknown``: how many are not."""

    labels: np.ndarray
    bonds: np.ndarray
    motif: np.ndarray
    att: np.ndarray
    parent: np.ndarray
    members: np.ndarray
    cur: np.ndarray
    topo: np.ndarray
    child: np.ndarray
    cands: list
    label: np.ndarray
    new_pos: list
    new_ids: list
    known: bool
    unknown: int


def featurize(tree: MotifTree, vocab: MotifVocab) -> TreeArrays:
    K = len(tree.keys)
    labels = np.array([vocab.label_id.get(x, 0) for x in tree.atom_labels], np.int64)
    motif = np.array([vocab.motif_id.get(k, 0) for k in tree.keys], np.int64)
    att = np.array([vocab.att_id.get(tree.attachment(k), 0) for k in range(K)], np.int64)
    members = np.array([(k, a) for k in range(K) for a in tree.atoms[k]], np.int64).reshape(-1, 2)
    unknown = int((labels == 0).sum() + (motif == 0).sum() + (att == 0).sum())
    # creation ids of each node's new atoms, and the candidate tuples of each child
    new_pos, new_ids, cand_of, label_of = [], [], {}, {}
    where: list[list[int]] = []
    created_labels: list[str] = []
    for k, key in enumerate(tree.keys):
        to_parent, to_other = tree.shared[k]
        shared = set(to_parent + to_other)
        if k:
            p = tree.parent[k]
            cands = candidates(tree.keys[p], where[p], created_labels, key, to_parent, to_other)
            cand_of[k] = cands
            label_of[k] = cands.index(tree.targets[k]) if tree.targets[k] in cands else -1
        mapping = dict(zip(to_parent + to_other, tree.targets[k]))
        pos = [j for j in range(len(tree.atoms[k])) if j not in shared]
        ids = list(range(len(created_labels), len(created_labels) + len(pos)))
        for j, i in zip(pos, ids):
            mapping[j] = i
        created_labels += [tree.atom_labels[tree.atoms[k][j]] for j in pos]
        where.append([mapping[j] for j in range(len(tree.atoms[k]))])
        new_pos.append(pos)
        new_ids.append(ids)
    children: list[list[int]] = [[] for _ in range(K)]
    for k in range(1, K):
        children[tree.parent[k]].append(k)
    cur, topo, child, cands, label = [], [], [], [], []
    stack, nxt = [0], [0] * K
    while stack:
        v = stack[-1]
        cur.append(v)
        if nxt[v] < len(children[v]):
            c = children[v][nxt[v]]
            nxt[v] += 1
            topo.append(1)
            child.append(c)
            cands.append(cand_of[c])
            label.append(label_of[c])
            stack.append(c)
        else:
            topo.append(0)
            child.append(-1)
            cands.append([])
            label.append(-1)
            stack.pop()
    known = unknown == 0 and all(x >= 0 for x, t in zip(label, topo) if t)
    return TreeArrays(labels, tree.bonds, motif, att, np.array(tree.parent, np.int64), members,
                      np.array(cur, np.int64), np.array(topo, np.int64), np.array(child, np.int64),
                      cands, np.array(label, np.int64), new_pos, new_ids, known, unknown)


def _pad(rows: list[np.ndarray], width: int, fill: int = -1) -> np.ndarray:
    out = np.full((len(rows), width), fill, np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


class TreeCollate:
    """indices -> :class:`TreeBatch` from a list of :class:`TreeArrays` (picklable)."""

    def __init__(self, items: Sequence[TreeArrays]):
        self.items = items

    def __call__(self, indices) -> TreeBatch:
        return collate([self.items[int(i)] for i in indices])


@dataclass
class TreeBatch:
    """Packed encoder graph and padded decoder script of ``B`` molecules (see
    :func:`collate`)."""

    t: dict[str, torch.Tensor]

    def to(self, device) -> TreeBatch:
        return TreeBatch({k: v.to(device) for k, v in self.t.items()})

    def __len__(self) -> int:
        return int(self.t["root"].shape[0])


def collate(items: Sequence[TreeArrays]) -> TreeBatch:
    """Pack: atoms and nodes of all molecules in one graph each (``atom_off`` / ``node_off``
    offsets), bonds and tree edges in both directions; pad the scripts to ``[B, S]`` and the
    candidates to ``[B, S, C, MAX_SHARED]``."""
    B = len(items)
    n_atoms = np.array([len(x.labels) for x in items])
    n_nodes = np.array([len(x.motif) for x in items])
    atom_off = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    node_off = np.concatenate([[0], np.cumsum(n_nodes)[:-1]])
    bonds = np.concatenate([x.bonds + [o, o, 0] for x, o in zip(items, atom_off)]) \
        if B else np.zeros((0, 3), np.int64)
    tree = [np.stack([np.arange(1, len(x.parent)), x.parent[1:]], 1) + o
            for x, o in zip(items, node_off)]
    tree = np.concatenate(tree) if tree else np.zeros((0, 2), np.int64)
    members = np.concatenate([x.members + [no, ao] for x, no, ao in zip(items, node_off, atom_off)])
    S = max(len(x.cur) for x in items)
    C = max([len(c) for x in items for c in x.cands] + [1])
    cands = np.full((B, S, C, MAX_SHARED), -1, np.int64)
    for b, x in enumerate(items):
        for s, cs in enumerate(x.cands):
            for c, tup in enumerate(cs):            # a child always shares >= 1 atom
                cands[b, s, c, : min(len(tup), MAX_SHARED)] = tup[:MAX_SHARED]
    K = int(n_nodes.max())
    P = max([len(p) for x in items for p in x.new_pos] + [1])
    new_pos = np.full((B, K, P), -1, np.int64)
    new_ids = np.full((B, K, P), -1, np.int64)
    for b, x in enumerate(items):
        for k, (p, i) in enumerate(zip(x.new_pos, x.new_ids)):
            new_pos[b, k, : len(p)] = p
            new_ids[b, k, : len(i)] = i
    t = {
        "labels": np.concatenate([x.labels for x in items]),
        "bond_src": np.concatenate([bonds[:, 0], bonds[:, 1]]),
        "bond_dst": np.concatenate([bonds[:, 1], bonds[:, 0]]),
        "bond_type": np.concatenate([bonds[:, 2], bonds[:, 2]]),
        "motif": np.concatenate([x.motif for x in items]),
        "att": np.concatenate([x.att for x in items]),
        "parent": np.concatenate([x.parent for x in items]),
        "tree_src": np.concatenate([tree[:, 0], tree[:, 1]]),
        "tree_dst": np.concatenate([tree[:, 1], tree[:, 0]]),
        "member_node": members[:, 0], "member_atom": members[:, 1],
        "root": node_off, "node_off": node_off,
        "cur": _pad([x.cur for x in items], S, 0),
        "topo": _pad([x.topo for x in items], S, -1),
        "child": _pad([x.child for x in items], S, -1),
        "label": _pad([x.label for x in items], S, -1),
        "cands": cands, "new_pos": new_pos, "new_ids": new_ids,
        "max_atoms": np.array([int(n_atoms.max())]),
    }
    return TreeBatch({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in t.items()})
