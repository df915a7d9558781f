"""``invariant``: the seed paper's latent space (LDM-3DG, You et al., ICLR 2024).

Two cascaded autoencoders give **one vector per molecule**, ``z = concat(z_topo, z_geo)``,
each part a ``tanh`` output in [-1, 1]:

* **Topology AE** (2D graph <-> ``z_topo``, width ``topo_width``). The molecule's canonical,
  stereo-free, heavy-atom SMILES (RDKit canonicalisation, so permutation-invariant by
  construction) is written as SELFIES tokens; a bidirectional GRU encodes them, a GRU decoder
  (teacher forcing in training, batched greedy decoding at decode time) writes them back.
  Any token string decodes to a molecule (SELFIES), so decoding never fails chemically; the
  vocabulary is the training set's tokens, so decoded elements are the training elements.
  ``topology="hiervae"`` uses the paper's own topology AE instead (HierVAE: motif tree,
  hierarchical encoder, root vector as ``z_topo``; :mod:`spaces._hiervae`).
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

Failure modes, counted in ``last_encode_info`` / ``last_decode_info`` (and ``fit_stats``):
unsanitisable molecules and SELFIES longer than ``max_selfies_len`` encode as the empty
string (fit skips and warns; ``unencodable``, ``too_long``), unknown tokens map to ``[UNK]``;
a decoded string with no atom or a foreign element becomes one bare carbon named
``<k>:invalid-topology`` (unstable for every metric).

Parts (private, beside this file): ``_topology.py`` (SELFIES tokens, topology AE),
``_conformers.py`` (RDKit preparation, ETKDG / stereo candidates, relaxation),
``_geometry.py`` (pair features, geometry AE), ``_e3nn_encoder.py`` (chirality-aware
encoder), ``_ablations.py`` (controls that separate the latent from RDKit); Kabsch alignment
is :mod:`harness.core.geometry`'s.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch

from harness.core.registry import SPACES
from harness.core.types import ATOMIC_NUMBER, LatentBatch, LatentSpec, MolBatch
from spaces._ablations import invariant_ablations
from spaces._conformers import (DecodedGraph, decode_graphs, prepare_dataset, relax_coordinates,
                                stereo_candidates)
from spaces._geometry import (GeometryAutoencoder, WithInitialCoordinates, first_nearest,
                              reconstruction_rmsds)
from spaces._hiervae import HierVAE, check_options, hier_args
from spaces._hiervae_vocab import MotifVocab
from spaces._invariant_topology import fit_topology, topology_exact, topology_graphs
from spaces._topology import (BOS, EOS, SPECIAL_TOKENS, UNK, TopologyAutoencoder,
                              default_alphabet, encode_selfies, record_smiles, table_strings,
                              token_table)
from spaces.base import Space

log = logging.getLogger(__name__)


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
        gssl_weight: graph self-supervision on z_topo and z_geo: InfoNCE between a molecule
            and a view with 20 % of its SELFIES tokens / atoms dropped, the batch's other
            molecules as negatives (:mod:`spaces._regularizers`; ~1e-3; 0 disables).
        latent_noise: Gaussian noise (std) added to z_topo before decoding in training
            (smoother latent space; 0 disables).
        max_selfies_len: sequence cap of the topology AE: longest SELFIES trained on, encoded
            or decoded (drug-like molecules of ~100 atoms need ~60-100; longer ones are
            skipped by fit and encoded as the empty graph, with a warning).
        max_batch_pairs: size-grouped geometry batches of at most ``batch_size`` molecules
            and this many padded atom pairs (B x N_max^2; 64 QM9 molecules ~ 5e4) each, so
            memory does not grow with molecule size; None = fixed ``batch_size`` batches.
        checkpoint: gradient checkpointing of the geometry AE's EGNN / e3nn blocks (training
            memory / ~layers for ~1/3 more compute; large molecules).
        stereo_candidates: stereoisomers tried per decoded molecule (1 = ETKDG's choice).
        topology: ``"selfies"`` (the GRU above) or ``"hiervae"``; ``hier_*``: HierVAE's own
            options (:mod:`spaces._hiervae`; ``topo_width`` = its root-vector width;
            ``hier_lr`` its learning rate and ``hier_kl`` its KL schedule, both the paper's:
            they reconstruct 3.6x more test molecules than lr 2e-3 with a KL that reaches
            0.1 after 1,300 updates, BENCHMARKS.md "Topology autoencoders").
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
                 seed: int = 0, gssl_weight: float = 0.0, max_batch_pairs: int | None = None,
                 checkpoint: bool = False, topology: str = "selfies", hier_hidden: int = 96,
                 hier_depth: int = 3, hier_latent: int = 32,
                 hier_kl: Sequence[float] = (10000, 2000, 0.001, 1.0), hier_max_steps: int = 150,
                 hier_vocab: str | None = None, hier_lr: float = 1e-3):
        hier_kl = list(hier_kl) if isinstance(hier_kl, tuple) else hier_kl   # as saved (JSON)
        options = self.options_from(locals())
        super().__init__(elements, **options)
        if min(topo_width, geo_width, topo_hidden, topo_layers, geo_hidden, geo_layers) < 1:
            raise ValueError(f"invariant: widths, hidden sizes and layers must be >= 1 ({options})")
        if geo_encoder not in ("egnn", "e3nn"):
            raise ValueError(f"invariant: geo_encoder must be 'egnn' or 'e3nn', got {geo_encoder!r}")
        check_options(options)
        unknown = [e for e in self.elements if e not in ATOMIC_NUMBER]
        if unknown:
            raise ValueError(f"invariant: unknown element symbols {unknown}")
        for key, value in options.items():
            setattr(self, key, value)
        self.topology_kind = topology       # self.topology holds the network
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

    @classmethod
    def sweep_options(cls, trial, sweep, options: dict[str, Any]) -> dict[str, Any]:
        """Sweep factors: width -> ``topo_width = geo_width``; epochs e -> ``epochs_geo = e``,
        ``epochs_topo = 5 e`` (a topology epoch is ~10x cheaper than a geometry epoch and needs
        many more to reconstruct); choices (e.g. ``geo_encoder: [egnn, e3nn]``, the symmetry
        sub-factor) from ``sweep.space_options.invariant``."""
        epochs = cls.suggest_epochs(trial, sweep)
        width = cls.suggest_width(trial, sweep)
        options = dict(options, topo_width=width, geo_width=width, epochs_topo=5 * epochs,
                       epochs_geo=epochs)
        return cls.apply_choices(trial, sweep, options)

    # -- vocabulary ---------------------------------------------------------------------------
    def _build_topology(self, vocab: MotifVocab | None = None) -> TopologyAutoencoder | HierVAE:
        if self.topology_kind == "hiervae":
            return HierVAE(vocab or MotifVocab(), **hier_args(self.options))
        return TopologyAutoencoder(len(self.vocab), self.topo_width, self.topo_hidden,
                                   self.topo_layers, uniformity_weight=self.uniformity_weight,
                                   latent_noise=self.latent_noise, gssl_weight=self.gssl_weight)

    def _build_geometry(self) -> GeometryAutoencoder:
        return GeometryAutoencoder(
            len(self.elements), self.geo_width, self.geo_hidden, self.geo_layers,
            encoder=self.geo_encoder, bond_weight=self.bond_weight, distance_weight=self.distance_weight,
            uniformity_weight=self.uniformity_weight, hydrogen_index=self._hydrogen_index,
            gssl_weight=self.gssl_weight, checkpoint=self.checkpoint)

    @property
    def _token_index(self) -> dict[str, int]:
        return {t: k for k, t in enumerate(self.vocab)}

    def _token_table(self, token_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, int]:
        """``[M, max_selfies_len + 2]`` ids (``[BOS] .. [EOS]``, 0-padded; longer strings are
        truncated) and the number of unknown tokens."""
        return token_table(token_lists, self.vocab, self.max_selfies_len)

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
        """See :func:`spaces._conformers.prepare_dataset` (tokens + stereo-aware ETKDG starts)."""
        return prepare_dataset(dataset, self.max_selfies_len, self.seed, limit, progress)

    # -- training -----------------------------------------------------------------------------
    def fit(self, train, val=None, progress: bool = True,
            trainer_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Build the SELFIES vocabulary from ``train``, then train the topology AE and the
        geometry AE (each with :func:`spaces._autoencoder.train_autoencoder`). Returns
        per-AE histories, preparation counts, validation reconstruction figures (topology
        exact-match rate; geometry Kabsch RMSD from the stereo-aware initial conformer with
        the true graph) and seconds."""
        from spaces._autoencoder import mol_loader, train_autoencoder

        t0 = time.perf_counter()
        keep, tokens, init_flat, init_ptr, counts = self._prepare(train, progress=progress)
        if len(keep) == 0:
            raise ValueError(f"invariant.fit: no usable training molecule in {train.name} ({counts}"
                             + (f"; 'too_long' counts SELFIES above max_selfies_len="
                                f"{self.max_selfies_len}: raise spaces.invariant.max_selfies_len"
                                if counts["too_long"] else "") + ")")
        if counts["too_long"]:
            log.warning("invariant.fit: %d of %d training molecules have SELFIES longer than "
                        "max_selfies_len=%d and are skipped (raise max_selfies_len to keep them)",
                        counts["too_long"], len(train), self.max_selfies_len)
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

        topo_stats = fit_topology(self, [train[int(m)] for m in keep], table, val_parts,
                                  progress, trainer_kwargs)
        self.topology.eval()
        self.geometry.train()
        geo_stats = train_autoencoder(
            self.geometry,
            mol_loader(train_kept, self.batch_size, True, self.seed,
                       WithInitialCoordinates(init_flat, init_ptr), self.max_batch_pairs),
            mol_loader(val_parts[0], self.batch_size, False, self.seed,
                       WithInitialCoordinates(val_parts[2], val_parts[3]),
                       self.max_batch_pairs) if val_parts else None,
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
        exact = topology_exact(self, val_kept, table)
        step = max(1, min(256, self.EVAL_PAIRS // max(1, int(val_kept.atom_counts.max()) ** 2)))
        rmsd = reconstruction_rmsds(self.geometry, val_kept, WithInitialCoordinates(init_flat, init_ptr),
                                    step, self._hydrogen_index)
        return {"molecules": len(val_kept), "preparation": counts, "unknown_tokens": unknown,
                "topology_exact_match": round(exact, 4), **rmsd,
                "rmsd_note": "true graph, stereo-aware ETKDG start; "
                             + ("up to reflection" if self.geometry.allow_reflection else "proper")}

    #: most padded atom pairs (B x N^2) the geometry networks see at once outside training
    EVAL_PAIRS = 2 ** 20

    def _chunk(self, mask: torch.Tensor, cap: int) -> int:
        """Molecules per geometry-network call for batches padded like ``mask [B, N]``: at
        most ``cap``, and at most :attr:`EVAL_PAIRS` padded pairs (memory at drug scale)."""
        return max(1, min(cap, self.EVAL_PAIRS // max(1, mask.shape[1] ** 2)))

    @property
    def _hydrogen_index(self) -> int:
        """Index of H in ``elements`` (-1 when absent: no atom is then treated as H)."""
        return self.elements.index("H") if "H" in self.elements else -1

    def _strings(self, table: np.ndarray) -> list[str]:
        """Token-id rows -> SELFIES strings (up to ``[EOS]``; specials dropped)."""
        return table_strings(table, self.vocab)

    def _greedy(self, z_topo: torch.Tensor) -> list[str]:
        """``z_topo [B, topo_width]`` -> decoded SELFIES strings."""
        index = self._token_index
        ids = self.topology.greedy_decode_chunked(z_topo, self.decode_len + 1, index[BOS], index[EOS],
                                                  banned=(0, index[BOS], index[UNK]))
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
        if self.topology_kind == "hiervae":
            z_topo, info = self.topology.encode_smiles(smiles)
        else:
            z_topo, info = encode_selfies(self.topology, smiles, [r.name for r in records],
                                          self.vocab, self.max_selfies_len)
        z_geo = self._encode_geometry(batch)
        self.last_encode_info = {"molecules": len(batch), **info,
                                 "unencodable": int(sum(s is None for s in smiles))
                                 + info.get("unencodable", 0)}
        return LatentBatch(h=torch.cat([z_topo.to(z_geo.dtype), z_geo], -1), spec=self.spec)

    def _encode_geometry(self, batch: MolBatch) -> torch.Tensor:
        step = self._chunk(batch.mask, len(batch))
        return torch.cat([self.geometry.encode(batch.atom_types[s:s + step], batch.charges[s:s + step],
                                                batch.bonds[s:s + step], batch.pos[s:s + step],
                                                batch.mask[s:s + step])
                           for s in range(0, len(batch), step)]) if len(batch) else \
            self.geometry.encode(batch.atom_types, batch.charges, batch.bonds, batch.pos, batch.mask)

    def _decode_graphs(self, strings: Sequence[str]) -> list[DecodedGraph]:
        """Greedy-decoded SELFIES strings -> graphs (:func:`spaces._conformers.decode_graphs`)."""
        return decode_graphs(strings, self.elements)

    def _topology_graphs(self, z_topo: torch.Tensor) -> list[DecodedGraph]:
        return topology_graphs(self, z_topo)

    @torch.no_grad()
    def topology_atom_counts(self, latent: LatentBatch) -> torch.Tensor:
        """``[B]`` atom counts (with H) of the graphs ``z_topo`` decodes to: greedy SELFIES and
        RDKit hydrogens only, no conformer or geometry network; equal to what :meth:`decode`
        returns (an invalid topology counts its one carbon)."""
        z_topo = latent.h[:, : self.topo_width].to(next(self.topology.parameters()).dtype)
        return torch.tensor([len(g.numbers) for g in self._topology_graphs(z_topo)],
                            dtype=torch.long)

    @torch.no_grad()
    def decode(self, latent: LatentBatch, refine: bool = True) -> MolBatch:
        """Latents ``[B, topo_width + geo_width]`` -> molecules with explicit H, bonds (from
        the topology), formal charges and decoded coordinates (Å).

        Steps: greedy SELFIES decoding of ``z_topo`` -> graph with H -> ``stereo_candidates``
        stereoisomers, each with a seeded ETKDG start -> geometry decoder -> the candidate whose
        re-encoded ``z_geo`` is nearest -> optional MMFF relaxation (``relax``).
        ``refine=False`` (an ablation) keeps the first candidate's ETKDG start as it is."""
        h = latent.h
        if h.dim() != 2 or h.shape[1] != self.topo_width + self.geo_width:
            raise ValueError(f"invariant.decode expects [B, {self.topo_width + self.geo_width}] "
                             f"latents, got {tuple(h.shape)}")
        dtype = next(self.geometry.parameters()).dtype
        z_topo = h[:, : self.topo_width].to(next(self.topology.parameters()).dtype)
        z_geo = h[:, self.topo_width:].to(dtype)
        graphs = self._topology_graphs(z_topo)
        owner, cand_records, init_kinds = stereo_candidates(
            graphs, self.stereo_candidates, self.geo_encoder == "egnn", self.seed)
        cand = MolBatch.from_records(cand_records, self.elements)
        device = z_geo.device
        cand = cand.to(device)
        owner_t = torch.as_tensor(owner, device=device)
        pos = torch.zeros_like(cand.pos, dtype=dtype)
        step = self._chunk(cand.mask, 256)
        for s in range(0, len(cand), step):
            sl = slice(s, s + step)
            pos[sl] = self.geometry.decode(cand.atom_types[sl], cand.charges[sl], cand.bonds[sl],
                                           cand.pos[sl], cand.mask[sl], z_geo[owner_t[sl]]) \
                if refine else cand.pos[sl].to(dtype)
        choice = torch.arange(len(cand), device=device)
        if not refine:
            choice = first_nearest(torch.zeros(len(cand), device=device), owner_t, len(graphs))
        elif len(cand) > len(graphs):
            z_back = torch.cat([self.geometry.encode(cand.atom_types[s:s + step], cand.charges[s:s + step],
                                                     cand.bonds[s:s + step], pos[s:s + step],
                                                     cand.mask[s:s + step])
                                for s in range(0, len(cand), step)])
            choice = first_nearest(((z_back - z_geo[owner_t]) ** 2).sum(-1), owner_t, len(graphs))
        chosen = cand[choice.cpu() if choice.device.type != "cpu" else choice]
        pos = pos[choice][:, : chosen.max_atoms]
        relaxed = bool(self.relax)
        names = [f"{b}" if g.valid else f"{b}:invalid-topology" for b, g in enumerate(graphs)]
        pos_np = pos.float().cpu().numpy()
        if relaxed:
            pos_np = relax_coordinates(graphs, pos_np)
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

    def ablations(self, latent: LatentBatch) -> dict[str, MolBatch]:
        """What the learned latent adds beyond RDKit (``spaces/_ablations.py``)."""
        return invariant_ablations(self, latent)

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"vocab": list(self.vocab), "decode_len": int(self.decode_len),
                "topology": self.topology.state_dict(),
                "geometry": self.geometry.state_dict(),
                **({"motif_vocab": self.topology.vocab.state()} if self.topology_kind == "hiervae" else {})}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.vocab = list(state["vocab"])
        self.decode_len = int(state.get("decode_len", self.max_selfies_len))
        self.topology = self._build_topology(MotifVocab.from_state(state["motif_vocab"])
                                             if self.topology_kind == "hiervae" else None)
        self.topology.load_state_dict(state["topology"])
        self.geometry.load_state_dict(state["geometry"])
        self.topology.eval()
        self.geometry.eval()

