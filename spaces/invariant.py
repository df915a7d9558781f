"""``invariant``: the seed paper's latent space (LDM-3DG, You et al., ICLR 2024).

Two cascaded autoencoders give **one vector per molecule**, ``z = concat(z_topo, z_geo)``,
each part a ``tanh`` output in [-1, 1]:

* **Topology AE** (2D graph <-> ``z_topo``, width ``topo_width``). The molecule's canonical,
  stereo-free, heavy-atom SMILES (RDKit canonicalisation, so permutation-invariant by
  construction) is written as SELFIES tokens; a bidirectional GRU encodes them, a GRU decoder
  (teacher forcing in training, batched greedy decoding at decode time) writes them back.
  Any token string decodes to a molecule (SELFIES), so decoding never fails chemically; the
  vocabulary is the training set's tokens, so decoded elements are the training elements.
* **Geometry AE** (3D coordinates given the graph with explicit H <-> ``z_geo``, width
  ``geo_width``). Encoder: a fully connected EGNN (:class:`harness.core.nn.DenseEGNN`) over atom
  type / formal charge one-hots with bond-order and 2-/3-hop pair features, masked mean pool
  of its invariant node features, MLP, ``tanh`` -- invariant to rotation, translation,
  reflection and atom order (``geo_encoder="egnn"``), or an e3nn network whose pooled
  pseudoscalars make the latent SE(3)- but not E(3)-invariant, i.e. chirality-aware
  (``geo_encoder="e3nn"``). Decoder: a seeded RDKit ETKDG conformer of the graph (2D
  coordinates plus seeded noise when embedding fails) refined by a DenseEGNN conditioned on
  ``z_geo``. Loss: Kabsch-aligned heavy-atom coordinate MSE (rotation from an SVD in
  float64, held fixed in the backward pass, which is exact at the optimum; up to reflection
  for the E(3)-invariant latent) plus distance MSEs over 1-2 pairs (weighted up: bond
  lengths decide distance-based stability) and 1-3/1-4 pairs, which also place the
  hydrogens; optional uniformity (anti-collapse) term on the latents.

Stereochemistry. The topology is stereo-free, so stereo lives in the geometry. In training the
decoder starts from an ETKDG conformer with the molecule's own stereo (assigned from its 3D
coordinates; stereo-free ETKDG where that embedding fails). At decode time the stereo is not
known: with ``stereo_candidates > 1`` the decoder embeds up to that many stereoisomers of the
decoded graph (enantiomer pairs merged for the reflection-invariant ``egnn`` latent), refines
each, re-encodes the result, and keeps the candidate whose re-encoded ``z_geo`` is nearest to
the requested one ("analysis by synthesis"; no extra training). With 1 it keeps ETKDG's own
stereo choice.

What gets scored is the decoder's raw output. ``relax=True`` MMFF-optimises the decoded
geometry; such batches are labelled ``relaxed`` (``last_decode_info["relaxed"]`` and a
``:relaxed`` suffix on every name) so reports keep raw and relaxed rows apart.

Failure modes, honestly reported:

* encode: a molecule RDKit cannot sanitise (no SMILES) gets the SELFIES of an empty string
  (just ``[EOS]``); tokens outside the vocabulary map to ``[UNK]``. Both are counted in
  :attr:`InvariantSpace.last_encode_info` (and in ``fit_stats`` for the validation split).
* decode: a token string that decodes to no atom, or to an element outside ``elements``
  (impossible with a training vocabulary, still guarded), yields a single bare carbon atom
  named ``<k>:invalid-topology`` (an unstable molecule for every stability metric) and is
  counted in :attr:`InvariantSpace.last_decode_info`.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.nn import DenseEGNN, masked_mean, pair_geometry, remove_mean
from harness.core.registry import SPACES
from harness.core.types import ATOMIC_NUMBER, PERIODIC_TABLE, LatentBatch, LatentSpec, MolBatch, MolRecord
from spaces.base import Space

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
#: formal charges -1, 0, +1 get one-hot columns (others are clamped into that range).
N_CHARGE_COLUMNS = 3
#: pair features: bond order 1/2/3 one-hot, 2-hop and 3-hop topological neighbours.
N_PAIR_FEATURES = 5
#: Gaussian radial basis of interatomic distances fed to the (invariant) EGNN encoder.
N_DISTANCE_BASIS = 16
DISTANCE_BASIS_MAX = 6.0  # Å


# =============================================================================================
# Chemistry preparation (per-molecule RDKit work; done once per molecule, never per step)
# =============================================================================================
def _rdkit():
    from rdkit import Chem

    return Chem


def record_smiles(record: MolRecord) -> str | None:
    """Canonical stereo-free heavy-atom SMILES of a record's graph (bonds, charges), or None
    when RDKit cannot sanitise it. Independent of atom order by construction."""
    from harness.core.chem import canonical_smiles, record_to_mol

    if record.n_atoms == 0:
        return None
    try:
        mol = record_to_mol(record)
    except Exception:  # RDKit raises several types for bad graphs
        return None
    return canonical_smiles(mol, stereo=False, remove_hs=True)


def smiles_to_tokens(smiles: str | None) -> list[str]:
    """SELFIES tokens of a SMILES (``[]`` for None/empty). SELFIES' kekulisation failures
    fall back to non-strict encoding, which may not round-trip (counted as unknowns later)."""
    import selfies as sf

    if not smiles:
        return []
    try:
        text = sf.encoder(smiles)
    except Exception:
        try:
            text = sf.encoder(smiles, strict=False)
        except Exception:
            return []
    return list(sf.split_selfies(text)) if text else []


def tokens_to_smiles(tokens: Sequence[str]) -> str:
    """SELFIES tokens -> SMILES (may be ``""`` when the tokens place no atom)."""
    import selfies as sf

    try:
        return sf.decoder("".join(tokens)) or ""
    except Exception:
        return ""


_TOKEN_ELEMENT = re.compile(r"^\[[=#/\\]?([A-Z][a-z]?)")


def token_element(token: str) -> str | None:
    """Element symbol a SELFIES atom token places (``"[=N+1]" -> "N"``), None for
    branch/ring/special tokens."""
    if "Branch" in token or "Ring" in token or token in SPECIAL_TOKENS:
        return None
    match = _TOKEN_ELEMENT.match(token)
    return match.group(1) if match else None


def default_alphabet(elements: Sequence[str]) -> list[str]:
    """SELFIES' semantically robust alphabet restricted to ``elements`` (plus branch and ring
    tokens): the vocabulary of an unfitted space."""
    import selfies as sf

    keep = []
    for token in sorted(sf.get_semantic_robust_alphabet()):
        element = token_element(token)
        if element is None or element in elements:
            keep.append(token)
    return keep


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
    options = StereoEnumerationOptions(onlyUnassigned=True, unique=True,
                                       maxIsomers=2 * limit if merge_enantiomers else limit,
                                       rand=None, tryEmbedding=False)
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


# =============================================================================================
# Tensor helpers
# =============================================================================================
def node_features(atom_types: torch.Tensor, charges: torch.Tensor | None, mask: torch.Tensor,
                  n_elements: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[B, N, n_elements + 3]``: element one-hot and formal-charge (-1/0/+1) one-hot,
    zero in padded rows."""
    types = F.one_hot(atom_types.clamp(0, n_elements - 1), n_elements)
    if charges is None:
        charges = torch.zeros_like(atom_types)
    charge = F.one_hot(charges.clamp(-1, 1) + 1, N_CHARGE_COLUMNS)
    return torch.cat([types, charge], -1).to(dtype) * mask[..., None].to(dtype)


def pair_features(bonds: torch.Tensor, mask: torch.Tensor,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Invariant pair features of the graph, vectorised.

    Args:
        bonds: [B, N, N] bond orders (0 none, 1/2/3); mask: [B, N] bool.
    Returns:
        features: [B, N, N, 5] (order-1/2/3 one-hot, 2-hop, 3-hop indicators).
        bonded: [B, N, N] bool 1-2 pairs; angle: [B, N, N] bool 1-3 pairs.
    """
    pair = mask[:, :, None] & mask[:, None, :]
    eye = torch.eye(bonds.shape[1], dtype=torch.bool, device=bonds.device)
    adj = (bonds > 0) & pair & ~eye
    a = adj.float()
    reach1 = adj | eye
    reach2 = (torch.bmm(a, a) > 0) | reach1
    hop2 = reach2 & ~reach1 & pair
    reach3 = (torch.bmm(reach2.float(), a) > 0) | reach2
    hop3 = reach3 & ~reach2 & pair
    order = F.one_hot(bonds.clamp(0, 3), 4)[..., 1:] * adj[..., None]
    feats = torch.cat([order.to(dtype), hop2[..., None].to(dtype), hop3[..., None].to(dtype)], -1)
    return feats, adj, hop2


def distance_basis(dist: torch.Tensor) -> torch.Tensor:
    """``dist [...]`` Å -> ``[..., 16]`` Gaussian radial basis (centres 0..6 Å, width equal
    to the spacing); invariant pair features."""
    centres = torch.linspace(0.0, DISTANCE_BASIS_MAX, N_DISTANCE_BASIS, device=dist.device,
                             dtype=dist.dtype)
    width = DISTANCE_BASIS_MAX / (N_DISTANCE_BASIS - 1)
    return torch.exp(-(((dist[..., None] - centres) / width) ** 2))


def kabsch_rotation(source: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                    allow_reflection: bool = False) -> torch.Tensor:
    """Orthogonal ``R [B, 3, 3]`` minimising ``sum_i |R (s_i - s_mean) - (t_i - t_mean)|^2``
    over real atoms (proper rotations, or any orthogonal matrix with ``allow_reflection``).
    Computed in float64 without gradient (the aligned loss is stationary in R)."""
    with torch.no_grad():
        s = remove_mean(source.double(), mask)
        t = remove_mean(target.double(), mask)
        cov = t.transpose(1, 2) @ s                                  # [B, 3, 3]
        u, _, vh = torch.linalg.svd(cov)
        if not allow_reflection:
            d = torch.sign(torch.linalg.det(u @ vh))
            d = torch.where(d == 0, torch.ones_like(d), d)
            fix = torch.ones(source.shape[0], 3, dtype=torch.float64, device=source.device)
            fix[:, 2] = d
            u = u * fix[:, None, :]
        return (u @ vh).to(source.dtype)


def aligned_squared_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                          allow_reflection: bool = False) -> torch.Tensor:
    """Per-molecule mean squared deviation (Å^2) between ``pred`` and the optimally aligned
    ``target`` (both ``[B, N, 3]``), over real atoms -> ``[B]``. Differentiable in ``pred``;
    invariant to rotating/translating either input (and reflecting, if allowed)."""
    m = mask.to(pred.dtype)
    p = remove_mean(pred, mask)
    t = remove_mean(target.to(pred.dtype), mask)
    counts = m.sum(1).clamp_min(1.0)
    # the unconstrained orthogonal optimum is the better of the proper and improper ones
    rot = kabsch_rotation(t, p, mask, allow_reflection=allow_reflection)  # target -> pred
    t_aligned = t @ rot.transpose(1, 2)
    return (((p - t_aligned) ** 2).sum(-1) * m).sum(1) / counts


def kabsch_rmsd(pos_a: torch.Tensor, pos_b: torch.Tensor, mask: torch.Tensor,
                allow_reflection: bool = False) -> torch.Tensor:
    """``[B]`` RMSD (Å) after optimal superposition of ``pos_b`` onto ``pos_a`` (float64)."""
    return aligned_squared_error(pos_a.double(), pos_b.double(), mask, allow_reflection).sqrt()


def uniformity_loss(z: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Wang & Isola's uniformity ``log mean_{i != j} exp(-t |z_i - z_j|^2)`` over a batch
    ``z: [B, D]`` (lower = more spread; an anti-collapse regulariser)."""
    if z.shape[0] < 2:
        return z.new_zeros(())
    sq = torch.cdist(z, z).pow(2)
    off = ~torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    return torch.logsumexp(-temperature * sq[off], 0) - math.log(int(off.sum()))


# =============================================================================================
# Batches fed to the networks
# =============================================================================================
@dataclass
class TokenBatch:
    """``tokens: [B, L]`` long: ``[BOS] t_1 .. t_k [EOS] [PAD] ..`` per row."""

    tokens: torch.Tensor

    def to(self, device) -> "TokenBatch":
        return TokenBatch(self.tokens.to(device))

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


@dataclass
class GeometryBatch:
    """Graph + coordinates for the geometry AE (dense, padded; dataset atom order).

    Attributes:
        atom_types: [B, N] long; charges: [B, N] long; bonds: [B, N, N] long; mask: [B, N].
        pos: [B, N, 3] Å target coordinates; init_pos: [B, N, 3] Å decoder start coordinates.
    """

    atom_types: torch.Tensor
    charges: torch.Tensor
    bonds: torch.Tensor
    mask: torch.Tensor
    pos: torch.Tensor
    init_pos: torch.Tensor

    def to(self, device) -> "GeometryBatch":
        return GeometryBatch(*(t.to(device) for t in (self.atom_types, self.charges, self.bonds,
                                                      self.mask, self.pos, self.init_pos)))

    def __len__(self) -> int:
        return int(self.mask.shape[0])


class _TokenCollate:
    """indices -> :class:`TokenBatch` from a ``[M, L]`` token table (picklable)."""

    def __init__(self, table: np.ndarray):
        self.table = table

    def __call__(self, indices) -> TokenBatch:
        rows = self.table[np.asarray(indices)]
        length = int((rows != 0).sum(1).max())
        return TokenBatch(torch.from_numpy(rows[:, :length].copy()))


class _WithInitialCoordinates:
    """mol_loader transform: MolBatch + cached initial coordinates -> GeometryBatch."""

    def __init__(self, init_flat: np.ndarray, init_ptr: np.ndarray):
        self.init_flat, self.init_ptr = init_flat, init_ptr

    def __call__(self, batch: MolBatch, indices: np.ndarray) -> GeometryBatch:
        indices = np.asarray(indices, np.int64)
        starts = self.init_ptr[indices]
        counts = self.init_ptr[indices + 1] - starts
        init = np.zeros((len(indices), batch.max_atoms, 3), np.float32)
        rows = np.repeat(np.arange(len(indices)), counts)
        slots = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        init[rows, slots] = self.init_flat[np.repeat(starts, counts) + slots]
        return GeometryBatch(atom_types=batch.atom_types, charges=batch.charges,
                             bonds=batch.bonds, mask=batch.mask, pos=batch.pos,
                             init_pos=torch.from_numpy(init))


# =============================================================================================
# Networks
# =============================================================================================
class TopologyAutoencoder(nn.Module):
    """SELFIES tokens <-> ``z_topo [B, width]`` in [-1, 1].

    Encoder: embedding -> bidirectional GRU (``layers``) -> last layer's final states of both
    directions -> Linear -> tanh. Decoder: GRU whose initial state is ``tanh(Linear(z))`` and
    whose input at each step is ``[embedding(previous token), z]`` -> Linear -> token logits.
    """

    def __init__(self, vocab_size: int, width: int, hidden: int, layers: int,
                 embed_dim: int = 64, uniformity_weight: float = 0.0, latent_noise: float = 0.0):
        super().__init__()
        self.vocab_size, self.width, self.hidden, self.layers = vocab_size, width, hidden, layers
        self.uniformity_weight, self.latent_noise = uniformity_weight, latent_noise
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.encoder_rnn = nn.GRU(embed_dim, hidden, num_layers=layers, batch_first=True,
                                  bidirectional=True)
        self.to_latent = nn.Linear(2 * hidden, width)
        self.from_latent = nn.Linear(width, layers * hidden)
        self.decoder_rnn = nn.GRU(embed_dim + width, hidden, num_layers=layers, batch_first=True)
        self.readout = nn.Linear(hidden, vocab_size)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens: [B, L]`` (``[BOS] .. [EOS] [PAD]..``) -> ``z_topo [B, width]``."""
        body = tokens[:, 1:]                                          # drop [BOS]
        lengths = (body != 0).sum(1).clamp_min(1)
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(body), lengths.cpu(),
                                                   batch_first=True, enforce_sorted=False)
        _, h_n = self.encoder_rnn(packed)                             # [layers * 2, B, H]
        last = torch.cat([h_n[-2], h_n[-1]], -1)
        return torch.tanh(self.to_latent(last))

    def _initial_state(self, z: torch.Tensor) -> torch.Tensor:
        h0 = torch.tanh(self.from_latent(z)).view(z.shape[0], self.layers, self.hidden)
        return h0.transpose(0, 1).contiguous()

    def logits(self, z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``[B, L - 1, V]`` predicting ``tokens[:, 1:]``."""
        inputs = self.embed(tokens[:, :-1])
        cond = z[:, None, :].expand(-1, inputs.shape[1], -1)
        out, _ = self.decoder_rnn(torch.cat([inputs, cond], -1), self._initial_state(z))
        return self.readout(out)

    def loss(self, batch: TokenBatch) -> dict[str, torch.Tensor]:
        tokens = batch.tokens
        z = self.encode(tokens)
        z_dec = z + self.latent_noise * torch.randn_like(z) if self.training and self.latent_noise else z
        logits = self.logits(z_dec, tokens)
        target = tokens[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, self.vocab_size), target.reshape(-1), ignore_index=0)
        with torch.no_grad():
            real = target != 0
            hit = (logits.argmax(-1) == target) | ~real
            out = {"token_acc": hit[real].float().mean() if real.any() else ce.new_zeros(()),
                   "exact": hit.all(1).float().mean()}
        loss = ce
        if self.uniformity_weight:
            uni = uniformity_loss(z)
            out["uniformity"] = uni.detach()
            loss = loss + self.uniformity_weight * uni
        return {"loss": loss, "ce": ce.detach(), **out}

    @torch.no_grad()
    def greedy_decode(self, z: torch.Tensor, max_len: int, bos: int, eos: int,
                      banned: Sequence[int]) -> torch.Tensor:
        """Batched greedy decoding -> ``[B, <= max_len]`` token ids (``[EOS]`` then 0s at the
        end of each row). ``banned`` ids are never emitted; ``[EOS]`` not as the first token."""
        B = z.shape[0]
        state = self._initial_state(z)
        prev = torch.full((B,), bos, dtype=torch.long, device=z.device)
        done = torch.zeros(B, dtype=torch.bool, device=z.device)
        ban = torch.zeros(self.vocab_size, dtype=torch.bool, device=z.device)
        ban[list(banned)] = True
        out = []
        for step in range(max_len):
            step_in = torch.cat([self.embed(prev), z], -1)[:, None, :]
            hidden, state = self.decoder_rnn(step_in, state)
            logits = self.readout(hidden[:, 0]).masked_fill(ban, float("-inf"))
            if step == 0:
                logits[:, eos] = float("-inf")
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)
            out.append(nxt)
            done = done | (nxt == eos)
            prev = nxt
            if bool(done.all()):
                break
        return torch.stack(out, 1) if out else torch.zeros(B, 0, dtype=torch.long)


class E3nnInvariantEncoder(nn.Module):
    """Chirality-aware SE(3)-invariant node features from an e3nn network (fully connected).

    Node features carry ``0e + 0o + 1o + 1e`` irreps; each layer is an equivariant
    convolution over all pairs within ``cutoff`` Å -- messages ``TP(h_j, Y(r_ij))`` (uvu
    tensor product, weights from an MLP of a radial basis and the pair features, smoothly cut
    off) summed over j -- followed by a gate nonlinearity and a residual linear. The outputs
    are the scalars ``0e`` and pseudoscalars ``0o`` (which flip sign under reflection: mirror
    images get different latents). Needs >= 3 layers for pseudoscalars to form
    (0e -> 1o -> 1e -> 0o).
    """

    def __init__(self, in_dim: int, edge_dim: int, hidden: int, out_dim: int, layers: int,
                 cutoff: float = 5.0, n_basis: int = 12):
        super().__init__()
        from e3nn import o3
        from e3nn.nn import Gate

        self.cutoff, self.n_basis = cutoff, n_basis
        mul_s, mul_v = max(8, hidden // 2), max(4, hidden // 8)
        self.sh = o3.SphericalHarmonics(o3.Irreps.spherical_harmonics(2), normalize=True,
                                        normalization="component")
        irreps_sh = self.sh.irreps_out
        hidden_irreps = o3.Irreps(f"{mul_s}x0e + {mul_v}x0o + {mul_v}x1o + {mul_v}x1e")
        self.input = o3.Linear(o3.Irreps(f"{in_dim}x0e"), hidden_irreps)
        self.convs, self.gates, self.self_links, self.radials = (nn.ModuleList() for _ in range(4))
        for _ in range(layers):
            gate = Gate(o3.Irreps(f"{mul_s}x0e + {mul_v}x0o"), [F.silu, torch.tanh],
                        o3.Irreps(f"{2 * mul_v}x0e"), [torch.sigmoid],
                        o3.Irreps(f"{mul_v}x1o + {mul_v}x1e"))
            mid, instructions = [], []
            for i, (mul, ir_in) in enumerate(hidden_irreps):
                for j, (_, ir_sh) in enumerate(irreps_sh):
                    for ir_out in ir_in * ir_sh:
                        if ir_out in gate.irreps_in:
                            instructions.append((i, j, len(mid), "uvu", True))
                            mid.append((mul, ir_out))
            mid_irreps = o3.Irreps(mid)
            tp = o3.TensorProduct(hidden_irreps, irreps_sh, mid_irreps, instructions,
                                  shared_weights=False, internal_weights=False)
            self.convs.append(nn.ModuleList([tp, o3.Linear(mid_irreps, gate.irreps_in)]))
            self.radials.append(nn.Sequential(nn.Linear(n_basis + edge_dim, 64), nn.SiLU(),
                                              nn.Linear(64, tp.weight_numel)))
            self.gates.append(gate)
            self.self_links.append(o3.Linear(hidden_irreps, hidden_irreps))
        self.hidden_irreps = hidden_irreps
        self.out = nn.Linear(mul_s + mul_v, out_dim)
        self.mul_s, self.mul_v = mul_s, mul_v

    def forward(self, h: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                edge_attr: torch.Tensor) -> torch.Tensor:
        """``h: [B, N, in]``, ``x: [B, N, 3]`` Å, ``mask: [B, N]``, ``edge_attr: [B, N, N, E]``
        -> invariant (under proper rotations) node features ``[B, N, out]``."""
        from e3nn.math import soft_one_hot_linspace

        B, N, _ = h.shape
        eye = torch.eye(N, dtype=torch.bool, device=h.device)
        pair = (mask[:, :, None] & mask[:, None, :] & ~eye)
        rel = x[:, None, :, :] - x[:, :, None, :]                     # r_j - r_i  [B, N, N, 3]
        dist = rel.norm(dim=-1)
        smooth = 0.5 * (torch.cos(math.pi * (dist / self.cutoff).clamp(max=1.0)) + 1.0)
        weight = (pair.to(h.dtype) * smooth * (dist < self.cutoff).to(h.dtype))[..., None]
        basis = soft_one_hot_linspace(dist, 0.0, self.cutoff, self.n_basis, basis="smooth_finite",
                                      cutoff=True) * math.sqrt(self.n_basis)
        radial_in = torch.cat([basis, edge_attr.to(h.dtype)], -1)     # [B, N, N, nb + E]
        sh = self.sh(rel)                                             # [B, N, N, 9]
        node = self.input(h) * mask[..., None].to(h.dtype)
        for (tp, lin), radial, gate, link in zip(self.convs, self.radials, self.gates, self.self_links):
            hj = node[:, None, :, :].expand(B, N, N, node.shape[-1])
            msg = tp(hj, sh, radial(radial_in)) * weight              # [B, N, N, mid]
            agg = msg.sum(2) / 4.0
            node = (link(node) + gate(lin(agg))) * mask[..., None].to(h.dtype)
        scalars = torch.cat([node[..., :self.mul_s], node[..., self.mul_s:self.mul_s + self.mul_v]], -1)
        return self.out(scalars) * mask[..., None].to(h.dtype)


class GeometryAutoencoder(nn.Module):
    """3D coordinates given the graph <-> ``z_geo [B, width]`` in [-1, 1].

    Encoder: DenseEGNN (or :class:`E3nnInvariantEncoder`) node features -> masked mean ->
    MLP -> tanh. Decoder: DenseEGNN over ``[node features, z_geo]`` refining the initial
    coordinates. Loss: see :meth:`loss`.
    """

    def __init__(self, n_elements: int, width: int, hidden: int, layers: int,
                 encoder: str = "egnn", bond_weight: float = 10.0, distance_weight: float = 1.0,
                 uniformity_weight: float = 0.0, coords_range: float = 3.0, agg_norm: float = 4.0,
                 hydrogen_index: int = 0):
        super().__init__()
        self.bond_weight, self.hydrogen_index = bond_weight, hydrogen_index
        if encoder not in ("egnn", "e3nn"):
            raise ValueError(f"geo_encoder must be 'egnn' or 'e3nn', got {encoder!r}")
        self.n_elements, self.width, self.encoder_kind = n_elements, width, encoder
        self.distance_weight, self.uniformity_weight = distance_weight, uniformity_weight
        #: the E(3)-invariant latent cannot tell mirror images apart: align up to reflection.
        self.allow_reflection = encoder == "egnn"
        feat = n_elements + N_CHARGE_COLUMNS
        if encoder == "egnn":
            # invariant message passing over distances (RBF) + graph pair features: the EGNN's
            # invariant stream; no coordinate updates are needed for a pooled invariant code
            self.encoder_net = DenseEGNN(feat, hidden, hidden=hidden, layers=layers, sublayers=1,
                                         edge_dim=N_PAIR_FEATURES + N_DISTANCE_BASIS,
                                         coords=False, agg_norm=agg_norm)
        else:
            self.encoder_net = E3nnInvariantEncoder(feat, N_PAIR_FEATURES, hidden, hidden,
                                                    max(3, layers))
        self.encoder_head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, width))
        self.decoder_net = DenseEGNN(feat + width, 1, hidden=hidden, layers=layers, sublayers=1,
                                     edge_dim=N_PAIR_FEATURES, coords=True,
                                     coords_range=coords_range, agg_norm=agg_norm)

    def _inputs(self, atom_types, charges, bonds, mask, dtype):
        feats = node_features(atom_types, charges, mask, self.n_elements, dtype)
        pairs, bonded, angle = pair_features(bonds, mask, dtype)
        return feats, pairs, bonded, angle

    def encode(self, atom_types, charges, bonds, pos, mask) -> torch.Tensor:
        """Graph ``[B, N]`` / ``[B, N, N]`` + ``pos [B, N, 3]`` Å -> ``z_geo [B, width]``."""
        dtype = next(self.parameters()).dtype
        feats, pairs, _, _ = self._inputs(atom_types, charges, bonds, mask, dtype)
        x = remove_mean(pos.to(dtype), mask)
        if self.encoder_kind == "egnn":
            dist = torch.sqrt(pair_geometry(x)[0] + 1e-12)
            h, _ = self.encoder_net(feats, None, mask, torch.cat([pairs, distance_basis(dist)], -1))
        else:
            h = self.encoder_net(feats, x, mask, pairs)
        pooled = masked_mean(h, mask)[:, 0]
        return torch.tanh(self.encoder_head(pooled))

    def decode(self, atom_types, charges, bonds, init_pos, mask, z) -> torch.Tensor:
        """Graph + initial coordinates ``[B, N, 3]`` Å + ``z_geo [B, width]`` -> ``[B, N, 3]`` Å
        (zero centre of mass, padded rows 0)."""
        dtype = next(self.parameters()).dtype
        feats, pairs, _, _ = self._inputs(atom_types, charges, bonds, mask, dtype)
        cond = z.to(dtype)[:, None, :].expand(-1, feats.shape[1], -1) * mask[..., None].to(dtype)
        x0 = remove_mean(init_pos.to(dtype), mask)
        _, x = self.decoder_net(torch.cat([feats, cond], -1), x0, mask, pairs)
        return remove_mean(x, mask)

    def loss(self, batch: GeometryBatch) -> dict[str, torch.Tensor]:
        """Kabsch-aligned heavy-atom MSE + ``bond_weight`` x 1-2 distance MSE +
        ``distance_weight`` x 1-3/1-4 distance MSE (all Å^2; hydrogens enter through the
        distance terms, which are also invariant to their exact rotamer alignment) +
        ``uniformity_weight`` x uniformity of z_geo."""
        z = self.encode(batch.atom_types, batch.charges, batch.bonds, batch.pos, batch.mask)
        pred = self.decode(batch.atom_types, batch.charges, batch.bonds, batch.init_pos,
                           batch.mask, z)
        heavy = batch.mask & (batch.atom_types != self.hydrogen_index)
        aligned = aligned_squared_error(pred, batch.pos, heavy, self.allow_reflection).mean()
        _, bonded, angle = pair_features(batch.bonds, batch.mask)
        torsion = _hop3(batch.bonds, batch.mask)
        target = batch.pos.to(pred.dtype)
        sq = (_distances(pred) - _distances(target)) ** 2
        zero = pred.new_zeros(())
        bond_mse = sq[bonded].mean() if bonded.any() else zero
        far = angle | torsion
        far_mse = sq[far].mean() if far.any() else zero
        loss = aligned + self.bond_weight * bond_mse + self.distance_weight * far_mse
        out = {"aligned_heavy_mse": aligned.detach(), "bond_rmse": bond_mse.detach().sqrt(),
               "far_pair_rmse": far_mse.detach().sqrt()}
        if self.uniformity_weight:
            uni = uniformity_loss(z)
            out["uniformity"] = uni.detach()
            loss = loss + self.uniformity_weight * uni
        return {"loss": loss, **out}


def _distances(x: torch.Tensor) -> torch.Tensor:
    """``[B, N, 3]`` -> ``[B, N, N]`` distances (Å), with a safe gradient at 0."""
    diff = x[:, :, None, :] - x[:, None, :, :]
    return torch.sqrt((diff * diff).sum(-1) + 1e-9)


def _hop3(bonds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, N, N] bool: atom pairs exactly 3 bonds apart (1-4 pairs)."""
    return pair_features(bonds, mask)[0][..., 4] > 0


# =============================================================================================
# The space
# =============================================================================================
@dataclass
class _DecodedGraph:
    """One decoded molecule's graph (SMILES atom order, then hydrogens)."""

    smiles: str
    numbers: np.ndarray
    bonds: np.ndarray
    charges: np.ndarray
    mol: Any
    valid: bool


@SPACES.register("invariant")
class InvariantSpace(Space):
    """Cascaded topology + geometry autoencoders; latent ``[B, topo_width + geo_width]``.

    Options (all saved; see the module docstring for the method):
        topo_width / geo_width: latent widths (paper: 250 + 250).
        topo_hidden / topo_layers: GRU size of the topology AE.
        geo_hidden / geo_layers: EGNN width / blocks of the geometry encoder and decoder.
        geo_encoder: ``"egnn"`` (E(3)-invariant latent) or ``"e3nn"`` (SE(3)-invariant,
            chirality-aware).
        epochs_topo / epochs_geo: training epochs of each AE; batch_size.
        lr / geo_lr: AdamW learning rates of the topology / geometry AE (cosine decay).
        bond_weight / distance_weight: weights of the 1-2 and of the 1-3/1-4 distance MSE
            (Å^2) next to the Kabsch-aligned heavy-atom MSE in the geometry loss.
        uniformity_weight: anti-collapse term on z_topo and z_geo (0 disables).
        latent_noise: Gaussian noise (std) added to z_topo before decoding in training
            (smoother latent space; 0 disables).
        max_selfies_len: longest token string trained on / decoded.
        stereo_candidates: stereoisomers tried per decoded molecule (1 = ETKDG's choice).
        relax: MMFF-optimise decoded geometries (rows are labelled ``relaxed``).
        max_val: at most this many validation molecules are prepared and scored in ``fit``.
        seed: network initialisation, training order, conformer embedding.
    """

    name = "invariant"
    bond_source = "decoder"
    trainable = True

    def __init__(self, elements: Sequence[str] = ("H", "C", "N", "O", "F"),
                 topo_width: int = 64, geo_width: int = 64,
                 topo_hidden: int = 128, topo_layers: int = 1,
                 geo_hidden: int = 64, geo_layers: int = 3, geo_encoder: str = "egnn",
                 epochs_topo: int = 40, epochs_geo: int = 6, batch_size: int = 64,
                 lr: float = 2e-3, geo_lr: float = 1e-3, bond_weight: float = 10.0,
                 distance_weight: float = 1.0, uniformity_weight: float = 0.0,
                 latent_noise: float = 0.0, max_selfies_len: int = 48,
                 stereo_candidates: int = 4, relax: bool = False, max_val: int = 500,
                 seed: int = 0):
        options = dict(topo_width=topo_width, geo_width=geo_width, topo_hidden=topo_hidden,
                       topo_layers=topo_layers, geo_hidden=geo_hidden, geo_layers=geo_layers,
                       geo_encoder=geo_encoder, epochs_topo=epochs_topo, epochs_geo=epochs_geo,
                       batch_size=batch_size, lr=lr, geo_lr=geo_lr, bond_weight=bond_weight,
                       distance_weight=distance_weight,
                       uniformity_weight=uniformity_weight, latent_noise=latent_noise,
                       max_selfies_len=max_selfies_len, stereo_candidates=stereo_candidates,
                       relax=relax, max_val=max_val, seed=seed)
        super().__init__(elements, **options)
        if min(topo_width, geo_width, topo_hidden, topo_layers, geo_hidden, geo_layers) < 1:
            raise ValueError(f"invariant: widths, hidden sizes and layers must be >= 1 ({options})")
        if geo_encoder not in ("egnn", "e3nn"):
            raise ValueError(f"invariant: geo_encoder must be 'egnn' or 'e3nn', got {geo_encoder!r}")
        unknown = [e for e in self.elements if e not in ATOMIC_NUMBER]
        if unknown:
            raise ValueError(f"invariant: unknown element symbols {unknown}")
        for key, value in options.items():
            setattr(self, key, value)
        self.vocab: list[str] = list(SPECIAL_TOKENS) + default_alphabet(self.elements)
        #: longest token string decode() writes (training maximum + 4 after fit).
        self.decode_len = max_selfies_len
        torch.manual_seed(seed)
        self.topology = self._build_topology()
        self.geometry = self._build_geometry()
        self.topology.eval()
        self.geometry.eval()
        #: counts from the last encode() call (unknown tokens, unencodable molecules).
        self.last_encode_info: dict[str, Any] = {}
        #: details of the last decode() call (invalid topologies, init kinds, relaxed flag).
        self.last_decode_info: dict[str, Any] = {}
        self.last_decode_relaxed = False

    @classmethod
    def test_options(cls) -> dict[str, Any]:
        """A tiny configuration (seconds to fit on ~160 molecules) for conformance tests."""
        return dict(topo_width=12, geo_width=10, topo_hidden=48, geo_hidden=24, geo_layers=2,
                    epochs_topo=2, epochs_geo=2, batch_size=32, lr=5e-3, geo_lr=3e-3,
                    stereo_candidates=2, max_val=20)

    # -- vocabulary ---------------------------------------------------------------------------
    def _build_topology(self) -> TopologyAutoencoder:
        return TopologyAutoencoder(len(self.vocab), self.topo_width, self.topo_hidden,
                                   self.topo_layers, uniformity_weight=self.uniformity_weight,
                                   latent_noise=self.latent_noise)

    def _build_geometry(self) -> GeometryAutoencoder:
        return GeometryAutoencoder(len(self.elements), self.geo_width, self.geo_hidden,
                                   self.geo_layers, encoder=self.geo_encoder,
                                   bond_weight=self.bond_weight,
                                   distance_weight=self.distance_weight,
                                   uniformity_weight=self.uniformity_weight,
                                   hydrogen_index=self._hydrogen_index)

    @property
    def _token_index(self) -> dict[str, int]:
        return {t: k for k, t in enumerate(self.vocab)}

    def _token_table(self, token_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, int]:
        """``[M, max_selfies_len + 2]`` ids (``[BOS] .. [EOS]``, 0-padded; longer strings are
        truncated) and the number of unknown tokens."""
        index = self._token_index
        unk, bos, eos = index[UNK], index[BOS], index[EOS]
        width = self.max_selfies_len + 2
        table = np.zeros((len(token_lists), width), np.int64)
        unknown = 0
        for m, tokens in enumerate(token_lists):
            ids = [index.get(t, unk) for t in tokens[: self.max_selfies_len]]
            unknown += sum(i == unk for i in ids)
            row = [bos, *ids, eos]
            table[m, : len(row)] = row
        return table, unknown

    # -- spec ---------------------------------------------------------------------------------
    @property
    def spec(self) -> LatentSpec:
        reflection = "invariant" if self.geo_encoder == "egnn" else "none"
        return LatentSpec(kind="vector", width=self.topo_width + self.geo_width,
                          symmetry=(("permutation", "invariant"), ("rotation", "invariant"),
                                    ("translation", "invariant"), ("reflection", reflection)),
                          bounded=True)

    # -- preparation --------------------------------------------------------------------------
    def _prepare(self, dataset, limit: int | None = None, progress: bool = False):
        """Per-molecule preparation of a dataset (RDKit; once per fit): tokens and initial
        coordinates (stereo from the molecule's own 3D structure). Returns ``(kept indices,
        token lists, init_flat [A, 3], init_ptr [K + 1], counts)``."""
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
            if len(tokens) > self.max_selfies_len:
                counts["too_long"] += 1
                continue
            mol = record_to_mol(record)
            try:
                Chem.SanitizeMol(mol)
                Chem.AssignStereochemistryFrom3D(mol)
            except Exception:
                counts["no_smiles"] += 1
                continue
            pos, kind = embed_coordinates(mol, self.seed, use_stereo=True)
            counts[kind] += 1
            keep.append(m)
            token_lists.append(tokens)
            inits.append(pos)
        init_ptr = np.concatenate([[0], np.cumsum([len(p) for p in inits])]).astype(np.int64)
        init_flat = np.concatenate(inits) if inits else np.zeros((0, 3), np.float32)
        return np.asarray(keep, np.int64), token_lists, init_flat, init_ptr, counts

    # -- training -----------------------------------------------------------------------------
    def fit(self, train, val=None, progress: bool = True,
            trainer_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Build the SELFIES vocabulary from ``train``, then train the topology AE and the
        geometry AE (each with :func:`spaces._autoencoder.train_autoencoder`). Returns
        per-AE histories, preparation counts, validation reconstruction figures (topology
        exact-match rate; geometry Kabsch RMSD from the stereo-aware initial conformer with
        the true graph) and seconds."""
        from torch.utils.data import DataLoader

        from harness.core.data.base import IndexDataset
        from spaces._autoencoder import mol_loader, train_autoencoder

        t0 = time.perf_counter()
        keep, tokens, init_flat, init_ptr, counts = self._prepare(train, progress=progress)
        if len(keep) == 0:
            raise ValueError(f"invariant.fit: no usable training molecule in {train.name} ({counts})")
        self.vocab = list(SPECIAL_TOKENS) + sorted({t for seq in tokens for t in seq})
        self.decode_len = min(self.max_selfies_len, max(len(t) for t in tokens) + 4)
        torch.manual_seed(self.seed)
        self.topology = self._build_topology()
        self.geometry = self._build_geometry()
        table, _ = self._token_table(tokens)
        train_kept = train.subset(keep, f"{train.name}:invariant")
        val_parts = None
        if val is not None and len(val):
            v_keep, v_tokens, v_flat, v_ptr, v_counts = self._prepare(val, limit=self.max_val)
            if len(v_keep):
                v_table, v_unknown = self._token_table(v_tokens)
                val_parts = (val.subset(v_keep, f"{val.name}:invariant"), v_table, v_flat, v_ptr,
                             v_counts, v_unknown)
        prep_seconds = time.perf_counter() - t0

        def token_loader(tab, shuffle):
            return DataLoader(IndexDataset(len(tab)), batch_size=self.batch_size, shuffle=shuffle,
                              collate_fn=_TokenCollate(tab),
                              generator=torch.Generator().manual_seed(self.seed))

        self.topology.train()
        topo_stats = train_autoencoder(
            self.topology, token_loader(table, True),
            token_loader(val_parts[1], False) if val_parts else None,
            epochs=self.epochs_topo, lr=self.lr, progress=progress, seed=self.seed,
            trainer_kwargs=trainer_kwargs)
        self.topology.eval()
        self.geometry.train()
        geo_stats = train_autoencoder(
            self.geometry,
            mol_loader(train_kept, self.batch_size, True, self.seed,
                       _WithInitialCoordinates(init_flat, init_ptr)),
            mol_loader(val_parts[0], self.batch_size, False, self.seed,
                       _WithInitialCoordinates(val_parts[2], val_parts[3])) if val_parts else None,
            epochs=self.epochs_geo, lr=self.geo_lr, progress=progress, seed=self.seed,
            trainer_kwargs=trainer_kwargs)
        self.geometry.eval()
        stats: dict[str, Any] = {
            "train_molecules": len(train), "train_used": int(len(keep)),
            "train_preparation": counts, "vocab_size": len(self.vocab),
            "preparation_seconds": round(prep_seconds, 2),
            "topology": topo_stats, "geometry": geo_stats,
        }
        if val_parts:
            stats["val"] = self._validation_figures(*val_parts)
        stats["seconds"] = round(time.perf_counter() - t0, 2)
        self.fit_stats = stats
        return stats

    @torch.no_grad()
    def _validation_figures(self, val_kept, table, init_flat, init_ptr, counts, unknown):
        """Topology exact-match rate (greedy-decoded SELFIES string equals the input's) and geometry
        Kabsch RMSDs (true graph, stereo-aware ETKDG start; the start's own RMSD for scale)."""
        z = torch.cat([self.topology.encode(torch.from_numpy(table[s:s + 256]))
                       for s in range(0, len(table), 256)])
        decoded = self._greedy(z)
        exact = float(np.mean([a == b for a, b in zip(decoded, self._strings(table))]))
        rmsd_all, rmsd_heavy, rmsd_init = [], [], []
        refl = self.geometry.allow_reflection
        transform = _WithInitialCoordinates(init_flat, init_ptr)
        for start in range(0, len(val_kept), 256):
            idx = np.arange(start, min(start + 256, len(val_kept)))
            batch = transform(val_kept.batch(idx), idx)
            zg = self.geometry.encode(batch.atom_types, batch.charges, batch.bonds, batch.pos, batch.mask)
            pred = self.geometry.decode(batch.atom_types, batch.charges, batch.bonds,
                                        batch.init_pos, batch.mask, zg)
            heavy = batch.mask & (batch.atom_types != self._hydrogen_index)
            rmsd_all.append(kabsch_rmsd(pred, batch.pos, batch.mask, refl))
            rmsd_heavy.append(kabsch_rmsd(pred, batch.pos, heavy, refl))
            rmsd_init.append(kabsch_rmsd(batch.init_pos, batch.pos, heavy, refl))
        return {"molecules": len(val_kept), "preparation": counts, "unknown_tokens": unknown,
                "topology_exact_match": round(exact, 4),
                "geometry_rmsd_median": round(float(torch.cat(rmsd_all).median()), 4),
                "geometry_heavy_rmsd_median": round(float(torch.cat(rmsd_heavy).median()), 4),
                "init_heavy_rmsd_median": round(float(torch.cat(rmsd_init).median()), 4),
                "rmsd_note": "true graph, stereo-aware ETKDG start; "
                             + ("up to reflection" if self.geometry.allow_reflection else "proper")}

    @property
    def _hydrogen_index(self) -> int:
        """Index of H in ``elements`` (-1 when absent: no atom is then treated as H)."""
        return self.elements.index("H") if "H" in self.elements else -1

    def _strings(self, table: np.ndarray) -> list[str]:
        """Token-id rows -> SELFIES strings (up to ``[EOS]``; specials dropped)."""
        eos = self._token_index[EOS]
        out = []
        for row in table:
            tokens = []
            for i in row.tolist()[1:] if row[0] == self._token_index[BOS] else row.tolist():
                if i == eos or i == 0:
                    break
                if self.vocab[i] not in SPECIAL_TOKENS:
                    tokens.append(self.vocab[i])
            out.append("".join(tokens))
        return out

    def _greedy(self, z_topo: torch.Tensor) -> list[str]:
        """``z_topo [B, topo_width]`` -> decoded SELFIES strings."""
        index = self._token_index
        ids = torch.cat([self.topology.greedy_decode(
            z_topo[s:s + 512], self.decode_len + 1, index[BOS], index[EOS],
            banned=(0, index[BOS], index[UNK])).cpu() for s in range(0, len(z_topo), 512)]
        ) if len(z_topo) else torch.zeros(0, 0, dtype=torch.long)
        return self._strings(ids.numpy())

    # -- encode / decode ----------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, batch: MolBatch) -> LatentBatch:
        """Molecules (with bonds) -> ``h [B, topo_width + geo_width]`` (deterministic)."""
        if batch.bonds is None:
            raise ValueError("invariant.encode needs bonds (perceive them first, e.g. "
                             "harness.core.chem.perceive_bonds)")
        if tuple(batch.elements) != self.elements:
            raise ValueError(f"invariant.encode: batch elements {batch.elements} differ from the "
                             f"space's {self.elements}")
        records = batch.to_records()
        smiles = [record_smiles(r) for r in records]
        token_lists = [smiles_to_tokens(s) for s in smiles]
        table, unknown = self._token_table(token_lists)
        length = max(2, int((table != 0).sum(1).max())) if len(table) else 2
        device = next(self.topology.parameters()).device
        z_topo = self.topology.encode(torch.from_numpy(table[:, :length]).to(device))
        z_geo = self.geometry.encode(batch.atom_types, batch.charges, batch.bonds, batch.pos,
                                     batch.mask)
        self.last_encode_info = {"molecules": len(batch), "unknown_tokens": int(unknown),
                                 "unencodable": int(sum(s is None for s in smiles)),
                                 "truncated": int(sum(len(t) > self.max_selfies_len for t in token_lists))}
        return LatentBatch(h=torch.cat([z_topo.to(z_geo.dtype), z_geo], -1), spec=self.spec)

    def _decode_graphs(self, strings: Sequence[str]) -> list[_DecodedGraph]:
        Chem = _rdkit()
        graphs = []
        for text in strings:
            smiles = tokens_to_smiles([text]) if text else ""
            mol = graph_with_hydrogens(smiles)
            if mol is not None:
                numbers, bonds, charges = graph_arrays(mol)
                if all(PERIODIC_TABLE[z] in self.elements for z in numbers):
                    graphs.append(_DecodedGraph(Chem.MolToSmiles(Chem.MolFromSmiles(smiles)),
                                                numbers, bonds, charges, mol, True))
                    continue
            carbon = "C" if "C" in self.elements else self.elements[-1]
            graphs.append(_DecodedGraph("", np.array([ATOMIC_NUMBER[carbon]]), np.zeros((0, 3), np.int64),
                                        np.zeros(1, np.int64), None, False))
        return graphs

    @torch.no_grad()
    def decode(self, latent: LatentBatch) -> MolBatch:
        """Latents ``[B, topo_width + geo_width]`` -> molecules with explicit H, bonds (from
        the topology), formal charges and decoded coordinates (Å).

        Steps: greedy SELFIES decoding of ``z_topo`` -> graph with H -> ``stereo_candidates``
        stereoisomers, each with a seeded ETKDG start -> geometry decoder -> the candidate whose
        re-encoded ``z_geo`` is nearest -> optional MMFF relaxation (``relax``)."""
        from harness.core.types import collate_arrays

        h = latent.h
        if h.dim() != 2 or h.shape[1] != self.topo_width + self.geo_width:
            raise ValueError(f"invariant.decode expects [B, {self.topo_width + self.geo_width}] "
                             f"latents, got {tuple(h.shape)}")
        dtype = next(self.geometry.parameters()).dtype
        z_topo = h[:, : self.topo_width].to(next(self.topology.parameters()).dtype)
        z_geo = h[:, self.topo_width:].to(dtype)
        graphs = self._decode_graphs(self._greedy(z_topo))
        # candidates: (molecule index, numbers, bonds, charges, init pos)
        owner, cand_records, init_kinds = [], [], {"etkdg-stereo": 0, "etkdg": 0, "2d": 0, "none": 0}
        merge = self.geo_encoder == "egnn"
        for b, g in enumerate(graphs):
            if not g.valid:
                owner.append(b)
                cand_records.append(MolRecord(numbers=g.numbers, pos=np.zeros((1, 3))))
                init_kinds["none"] += 1
                continue
            isomers = stereo_isomers(g.mol, self.stereo_candidates, merge)
            for isomer in isomers:
                pos, kind = embed_coordinates(isomer, self.seed, use_stereo=len(isomers) > 1)
                init_kinds[kind] += 1
                owner.append(b)
                cand_records.append(MolRecord(numbers=g.numbers, pos=pos, bonds=g.bonds, charges=g.charges))
        cand = MolBatch.from_records(cand_records, self.elements)
        device = z_geo.device
        cand = cand.to(device)
        owner_t = torch.as_tensor(owner, device=device)
        pos = torch.zeros_like(cand.pos, dtype=dtype)
        for s in range(0, len(cand), 256):
            sl = slice(s, s + 256)
            pos[sl] = self.geometry.decode(cand.atom_types[sl], cand.charges[sl], cand.bonds[sl],
                                           cand.pos[sl], cand.mask[sl], z_geo[owner_t[sl]])
        choice = torch.arange(len(cand), device=device)
        if len(cand) > len(graphs):
            z_back = torch.cat([self.geometry.encode(cand.atom_types[s:s + 256], cand.charges[s:s + 256],
                                                     cand.bonds[s:s + 256], pos[s:s + 256],
                                                     cand.mask[s:s + 256])
                                for s in range(0, len(cand), 256)])
            dist = ((z_back - z_geo[owner_t]) ** 2).sum(-1)
            best = torch.full((len(graphs),), float("inf"), dtype=dist.dtype, device=device)
            best = best.scatter_reduce(0, owner_t, dist, reduce="amin")
            is_best = dist <= best[owner_t]
            # first candidate reaching the minimum, per molecule
            first = torch.full((len(graphs),), len(cand), device=device)
            idx = torch.arange(len(cand), device=device)
            first = first.scatter_reduce(0, owner_t[is_best], idx[is_best], reduce="amin")
            choice = first
        chosen = cand[choice.cpu() if choice.device.type != "cpu" else choice]
        pos = pos[choice][:, : chosen.max_atoms]
        relaxed = bool(self.relax)
        names = [f"{b}" if g.valid else f"{b}:invalid-topology" for b, g in enumerate(graphs)]
        pos_np = pos.float().cpu().numpy()
        if relaxed:
            pos_np = self._relax(graphs, pos_np, chosen.mask.cpu().numpy())
            names = [f"{n}:relaxed" for n in names]
        result = replace(chosen.to("cpu"), pos=torch.from_numpy(pos_np) * chosen.mask.cpu()[..., None],
                         names=names, props=None)
        self.last_decode_relaxed = relaxed
        self.last_decode_info = {
            "molecules": len(graphs), "invalid_topology": int(sum(not g.valid for g in graphs)),
            "candidates": len(cand), "init_kinds": init_kinds, "relaxed": relaxed,
            "smiles": [g.smiles for g in graphs],
        }
        return result

    def _relax(self, graphs: Sequence[_DecodedGraph], pos: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """MMFF94 optimisation (UFF where MMFF has no parameters) of decoded coordinates."""
        Chem = _rdkit()
        from rdkit.Chem import AllChem
        from rdkit.Geometry import Point3D

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
                if AllChem.MMFFHasAllMoleculeParams(mol):
                    AllChem.MMFFOptimizeMolecule(mol, maxIters=500)
                else:
                    AllChem.UFFOptimizeMolecule(mol, maxIters=500)
                out[b, : mol.GetNumAtoms()] = mol.GetConformer().GetPositions()
            except Exception:
                pass
        return out

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"vocab": list(self.vocab), "decode_len": int(self.decode_len),
                "topology": self.topology.state_dict(),
                "geometry": self.geometry.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.vocab = list(state["vocab"])
        self.decode_len = int(state.get("decode_len", self.max_selfies_len))
        self.topology = self._build_topology()
        self.topology.load_state_dict(state["topology"])
        self.geometry.load_state_dict(state["geometry"])
        self.topology.eval()
        self.geometry.eval()


# =============================================================================================
# Reconstruction helper (decoded molecule vs. input molecule, different atom orders)
# =============================================================================================
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
