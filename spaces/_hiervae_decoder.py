"""The hierarchical autoregressive decoder of the HierVAE topology option.

The decoder grows the motif tree depth first. At the current node it decides
**topology** (expand a new child, or go back to the parent); on expanding it predicts the
child's **motif**, then (hierarchically, among that motif's attachments) its **attachment**,
then the **assembly**: which existing atoms the attachment's positions sit on, scored among
the candidates that fit (:func:`spaces._hiervae_motifs.candidates`) from the vectors of those
atoms. Every prediction sees the current node's state and the decoder's latent ``z``.

State: each node's vector comes from its parent's (a GRU cell fed the child's motif,
attachment and assembly), and when a subtree is finished the parent's vector absorbs the
child's (a second GRU cell), so later decisions know what was built; each new atom gets a
vector from its node's state and its template position, which the assembly scores read. (The
paper's decoder re-runs its hierarchical message passing over the partial graph after each
step; this carries the state along the tree instead, O(1) network calls per step.)

Training is teacher forced over the depth-first script, batched across molecules per step;
:meth:`HierDecoder.greedy` decodes greedily, also batched across molecules per step (the
chemistry bookkeeping of each molecule is Python, per step, not per atom).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spaces._hiervae_motifs import MAX_SHARED, Builder, candidates

#: template positions with their own embedding (larger positions share the last one)
MAX_POS = 64
#: motifs tried (best first) at a greedy step before the decoder goes back instead
MOTIF_TRIES = 8


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class HierDecoder(nn.Module):
    """Decoder networks. ``embeddings`` (shared with the encoder): ``label``, ``motif``,
    ``att``; ``att_motif [A]`` = motif id of each attachment, ``att_root [A]`` = root
    attachment flags (buffers, so they travel with the weights)."""

    def __init__(self, embeddings: nn.ModuleDict, hidden: int, latent: int,
                 att_motif: torch.Tensor, att_root: torch.Tensor):
        super().__init__()
        self.emb, self.hidden = embeddings, hidden
        n_motif = embeddings["motif"].num_embeddings
        n_att = embeddings["att"].num_embeddings
        self.register_buffer("att_motif", att_motif.long(), persistent=False)
        self.register_buffer("att_root", att_root.bool(), persistent=False)
        self.init = nn.Linear(latent, hidden)
        self.topo = _mlp(hidden + latent, hidden, 1)
        self.motif_head = _mlp(hidden + latent, hidden, n_motif)
        self.att_head = _mlp(2 * hidden + latent, hidden, n_att)
        self.query = _mlp(2 * hidden + latent, hidden, hidden)
        self.pos = nn.Embedding(MAX_POS, hidden)
        self.atom_state = nn.Linear(2 * hidden, hidden)
        self.slot = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(MAX_SHARED))
        self.assm_in = nn.Linear(hidden, hidden)
        self.cell = nn.GRUCell(hidden, hidden)
        self.merge = nn.GRUCell(hidden, hidden)

    # -- pieces shared by training and decoding -------------------------------------------------
    def _att_logits(self, h, z, motif):
        """``[n, A]`` attachment logits, restricted to the non-root attachments of ``motif``."""
        logits = self.att_head(torch.cat([h, z, self.emb["motif"](motif)], -1))
        allowed = (self.att_motif[None, :] == motif[:, None]) & ~self.att_root[None, :]
        return logits.masked_fill(~allowed, float("-inf"))

    def _cand_vectors(self, atoms: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """``atoms [n, Amax, H]``, ``cands [n, C, MAX_SHARED]`` (creation ids, -1 pad) ->
        ``[n, C, H]`` (sum over slots of a slot-specific map of each atom's vector)."""
        n, C, S = cands.shape
        H = atoms.shape[-1]
        out = atoms.new_zeros(n, C, H)
        # The slot maps have no bias, so map the (few) atoms first and gather per slot: never
        # builds the [n, C, S, H] tensor (25 MB at C = 256, and 4 zero-filled copies of it in
        # the backward pass of its slices).
        for s in range(S):
            idx = cands[..., s]
            mapped = self.slot[s](atoms).gather(1, idx.clamp_min(0)[..., None].expand(-1, -1, H))
            out = out + mapped * (idx >= 0)[..., None]
        return out

    def _assembly_scores(self, h, z, att, cand_vec, cand_mask):
        q = self.query(torch.cat([h, z, self.emb["att"](att)], -1))
        return (cand_vec * q[:, None, :]).sum(-1).masked_fill(~cand_mask, float("-inf"))

    def _child(self, h, motif, att, chosen_vec):
        x = self.emb["motif"](motif) + self.emb["att"](att) + self.assm_in(chosen_vec)
        return self.cell(x, h)

    def _atom_vectors(self, h_node, pos):
        """``h_node [n, H]``, ``pos [n, P]`` (template positions, -1 pad) -> ``[n, P, H]``."""
        e = self.pos(pos.clamp(0, MAX_POS - 1))
        return torch.tanh(self.atom_state(torch.cat([h_node[:, None].expand_as(e), e], -1)))

    # -- teacher forcing -----------------------------------------------------------------------
    def forward(self, z: torch.Tensor, t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Teacher-forced sums over the batch (divided by ``B``) of the topology BCE and the
        motif / attachment / assembly cross-entropies, plus accuracies."""
        B, H = z.shape[0], self.hidden
        rows = torch.arange(B, device=z.device)
        off = t["node_off"]
        K, S = t["new_pos"].shape[1], t["cur"].shape[1]
        h0 = torch.tanh(self.init(z))
        root_m, root_a = t["motif"][off], t["att"][off]
        logits_m = self.motif_head(torch.cat([h0, z], -1))
        terms = {"motif": F.cross_entropy(logits_m, root_m, reduction="sum")}
        hits = {"motif": [(logits_m.argmax(-1) == root_m).float()], "att": [], "topo": [], "assm": []}
        terms["att"] = terms["topo"] = terms["assm"] = z.new_zeros(())
        h_root = self._child(h0, root_m, root_a, z.new_zeros(B, H))
        states = z.new_zeros(B, K, H).index_put((rows, torch.zeros_like(rows)), h_root)
        atoms = self._write_atoms(z.new_zeros(B, int(t["max_atoms"][0]), H), rows, h_root,
                                  t["new_pos"][:, 0], t["new_ids"][:, 0])
        for s in range(S):
            topo, cur = t["topo"][:, s], t["cur"][:, s]
            valid = topo >= 0
            h = states[rows, cur]
            logit = self.topo(torch.cat([h, z], -1))[:, 0]
            terms["topo"] = terms["topo"] + F.binary_cross_entropy_with_logits(
                logit[valid], topo[valid].float(), reduction="sum")
            hits["topo"].append(((logit[valid] > 0).long() == topo[valid]).float())
            e = (topo == 1).nonzero()[:, 0]
            if len(e):
                child = t["child"][e, s]
                node = off[e] + child
                m, a = t["motif"][node], t["att"][node]
                lm = self.motif_head(torch.cat([h[e], z[e]], -1))
                la = self._att_logits(h[e], z[e], m)
                terms["motif"] = terms["motif"] + F.cross_entropy(lm, m, reduction="sum")
                terms["att"] = terms["att"] + F.cross_entropy(la, a, reduction="sum")
                hits["motif"].append((lm.argmax(-1) == m).float())
                hits["att"].append((la.argmax(-1) == a).float())
                cands = t["cands"][e, s]
                mask = cands[..., 0] >= 0
                # candidates are left-packed: keep this step's longest list, not the batch's
                width = max(int(mask.sum(-1).max()), 1)
                cands, mask = cands[:, :width], mask[:, :width]
                vec = self._cand_vectors(atoms[e], cands)
                label = t["label"][e, s].clamp_min(0)
                scored = mask.sum(-1) > 1
                if bool(scored.any()):
                    sc = self._assembly_scores(h[e], z[e], a, vec, mask)
                    terms["assm"] = terms["assm"] + F.cross_entropy(sc[scored], label[scored], reduction="sum")
                    hits["assm"].append((sc[scored].argmax(-1) == label[scored]).float())
                h_c = self._child(h[e], m, a, vec[torch.arange(len(e), device=z.device), label])
                states = states.index_put((e, child), h_c)
                atoms = self._write_atoms(atoms, e, h_c, t["new_pos"][e, child], t["new_ids"][e, child])
            parent = t["parent"][off + cur]
            p = ((topo == 0) & (parent >= 0)).nonzero()[:, 0]
            if len(p):
                states = states.index_put((p, parent[p]), self.merge(h[p], states[p, parent[p]]))
        out = {f"{k}_loss": v / B for k, v in terms.items()}
        out.update({f"{k}_acc": torch.cat(v).mean() if v else z.new_ones(()) for k, v in hits.items()})
        out["recon"] = sum(v for v in terms.values()) / B
        return out

    def _write_atoms(self, atoms, rows, h_node, pos, ids):
        vals = self._atom_vectors(h_node, pos)
        mask = ids >= 0
        r = rows[:, None].expand_as(ids)
        return atoms.index_put((r[mask], ids[mask]), vals[mask])

    # -- greedy decoding -----------------------------------------------------------------------
    @torch.no_grad()
    def greedy(self, z: torch.Tensor, vocab, max_steps: int) -> list[str]:
        """``z [B, latent]`` -> canonical SMILES (``""`` for an invalid molecule). Each step
        is one batched network pass over the molecules still decoding; at most ``max_steps``
        steps (a molecule still growing then is assembled as it stands)."""
        B, H, dev = z.shape[0], self.hidden, z.device
        if B == 0:
            return []
        h0 = torch.tanh(self.init(z))
        lm = self.motif_head(torch.cat([h0, z], -1))
        lm[:, 0] = float("-inf")
        root_m = lm.argmax(-1)
        root_a = torch.as_tensor(vocab.root_att, device=dev)[root_m]
        builds = [Builder() for _ in range(B)]
        for b in range(B):
            builds[b].add(vocab.motifs[int(root_m[b])], (), ())
        cap_nodes = max_steps // 2 + 2
        states = z.new_zeros(B, cap_nodes, H)
        states[:, 0] = self._child(h0, root_m, root_a, z.new_zeros(B, H))
        atoms = z.new_zeros(B, 64, H)
        atoms = self._grow(atoms, [len(x.labels) for x in builds])
        size = [len(x.labels) for x in builds]
        pos = torch.full((B, max(size)), -1, dtype=torch.long, device=dev)
        for b in range(B):
            pos[b, : size[b]] = torch.arange(size[b])
        ids = pos.clone()
        atoms = self._write_atoms(atoms, torch.arange(B, device=dev), states[:, 0], pos, ids)
        stacks = [[0] for _ in range(B)]
        for _ in range(max_steps):
            act = [b for b in range(B) if stacks[b]]
            if not act:
                break
            rows = torch.tensor(act, device=dev)
            cur = torch.tensor([stacks[b][-1] for b in act], device=dev)
            h, zz = states[rows, cur], z[rows]
            grow = self.topo(torch.cat([h, zz], -1))[:, 0] > 0
            chosen = self._expand(h, zz, rows, cur, grow, atoms, builds, stacks, vocab, cap_nodes)
            for i, b in enumerate(act):
                if i in chosen:
                    continue
                v = stacks[b].pop()                                  # go back to the parent
                if stacks[b]:
                    u = stacks[b][-1]
                    states[b, u] = self.merge(states[b, v][None], states[b, u][None])[0]
            if chosen:
                i_list = sorted(chosen)
                sel = torch.tensor(i_list, device=dev)
                m = torch.tensor([chosen[i][0] for i in i_list], device=dev)
                a = torch.tensor([chosen[i][1] for i in i_list], device=dev)
                h_c = self._child(h[sel], m, a, torch.stack([chosen[i][2] for i in i_list]))
                new_pos, new_ids = [], []
                for i, hc in zip(i_list, h_c):
                    b = act[i]
                    node = len(builds[b].where) - 1
                    states[b, node] = hc
                    stacks[b].append(node)
                    new_pos.append(chosen[i][3])
                    new_ids.append(chosen[i][4])
                atoms = self._grow(atoms, [len(x.labels) for x in builds])
                width = max([len(p) for p in new_pos] + [1])
                P = torch.full((len(i_list), width), -1, dtype=torch.long, device=dev)
                I = P.clone()
                for r, (p_, i_) in enumerate(zip(new_pos, new_ids)):
                    P[r, : len(p_)] = torch.tensor(p_, dtype=torch.long)
                    I[r, : len(i_)] = torch.tensor(i_, dtype=torch.long)
                atoms = self._write_atoms(atoms, rows[sel], h_c, P, I)
        return [x.smiles() for x in builds]

    @staticmethod
    def _grow(atoms, counts):
        need = max(counts + [1])
        if need <= atoms.shape[1]:
            return atoms
        extra = atoms.new_zeros(atoms.shape[0], max(need, 2 * atoms.shape[1]) - atoms.shape[1], atoms.shape[2])
        return torch.cat([atoms, extra], 1)

    def _expand(self, h, z, rows, cur, grow, atoms, builds, stacks, vocab, cap_nodes):
        """The expansions of one greedy step: ``{row i: (motif, att, chosen candidate vector,
        new positions, new creation ids)}`` for rows whose topology says expand and where some
        motif (best first, :data:`MOTIF_TRIES` at most), attachment and assembly fit; the
        child is added to that molecule's builder."""
        out = {}
        idx = [i for i in range(len(rows)) if bool(grow[i])
               and len(builds[int(rows[i])].where) < cap_nodes]
        if not idx:
            return out
        sel = torch.tensor(idx, device=h.device)
        lm = self.motif_head(torch.cat([h[sel], z[sel]], -1))
        lm[:, 0] = float("-inf")
        order = lm.argsort(-1, descending=True)[:, :MOTIF_TRIES]
        for r, i in enumerate(idx):
            b = int(rows[i])
            build, parent = builds[b], int(cur[i])
            parent_key = build.keys[parent]
            for m in order[r].tolist():
                if not torch.isfinite(lm[r, m]) or not vocab.motif_atts[m]:
                    continue
                m_t = torch.tensor([m], device=h.device)
                la = self._att_logits(h[i:i + 1], z[i:i + 1], m_t)[0]
                found = None
                for a in sorted(vocab.motif_atts[m], key=lambda x: -float(la[x])):
                    to_parent, to_other = vocab.att_parts[a]
                    cands = candidates(parent_key, build.where[parent], build.labels, vocab.motifs[m],
                                       to_parent, to_other)
                    if cands:
                        found = (a, cands)
                        break
                if found is None:
                    continue
                a, cands = found
                C = torch.full((1, len(cands), MAX_SHARED), -1, dtype=torch.long, device=h.device)
                for c, tup in enumerate(cands):
                    C[0, c, : min(len(tup), MAX_SHARED)] = torch.tensor(tup[:MAX_SHARED])
                vec = self._cand_vectors(atoms[b:b + 1], C)
                a_t = torch.tensor([a], device=h.device)
                sc = self._assembly_scores(h[i:i + 1], z[i:i + 1], a_t, vec, C[..., 0] >= 0)
                best = int(sc[0].argmax())
                before = len(build.labels)
                build.add(vocab.motifs[m], to_parent + to_other, cands[best])
                shared = set(to_parent + to_other)
                pos = [j for j in range(int(vocab.motif_size[m])) if j not in shared]
                out[i] = (m, a, vec[0, best], pos, list(range(before, len(build.labels))))
                break
        return out
