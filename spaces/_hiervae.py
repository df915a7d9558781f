"""HierVAE: the ``topology: hiervae`` option of the ``invariant`` space (LDM-3DG's topology
autoencoder; Jin, Barzilay & Jaakkola, "Hierarchical generation of molecular graphs using
structural motifs", ICML 2020), written in the harness's own code from the paper and the
public code's behaviour.

* Motifs: :mod:`spaces._hiervae_motifs` (decomposition, templates, assembly); vocabularies
  and batches: :mod:`spaces._hiervae_vocab` (built from the training split, plus the motifs
  of a user's SMILES file with ``hier_vocab``; unknown entries map to ``<unk>``, never a
  ``KeyError``).
* Encoder: :mod:`spaces._hiervae_encoder` (atom -> attachment -> motif message passing); the
  **latent is the root vector** ``tanh(LayerNorm(W h_root))`` of width ``topo_width`` (LDM-3DG:
  250, without the LayerNorm: see the encoder), not
  the VAE sample.
* VAE head: ``R_mean`` / ``R_var`` map the root vector to a ``hier_latent``-d Gaussian (paper:
  32; ``log var = -|R_var(.)|``); training decodes a sample, decoding uses ``R_mean(root)``
  (exactly LDM-3DG's ``decode``: ``rsample(..., perturb=False)``).
* Decoder: :mod:`spaces._hiervae_decoder` (topology / motif / attachment / assembly
  predictions, teacher forced in training, greedy with at most ``hier_max_steps`` steps
  when decoding; paper: 150).
* Loss: the decoder's summed cross-entropies per molecule plus ``beta * KL`` with the
  paper's schedule: ``beta = 0`` for ``warmup`` steps, then ``+step`` every ``every`` steps
  up to ``max`` (``hier_kl = [warmup, every, step, max]``; the paper's
  ``[10000, 2000, 0.001, 1.0]``; the CPU default anneals sooner).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spaces._hiervae_decoder import HierDecoder
from spaces._hiervae_encoder import HierEncoder
from spaces._hiervae_motifs import decompose
from spaces._hiervae_vocab import MotifVocab, TreeCollate, collate, featurize

log = logging.getLogger(__name__)

#: molecules per encoder / decoder call outside training
CHUNK = 256


def read_smiles_file(path: str | Path) -> list[str]:
    """First whitespace-separated field of every non-empty, non-``#`` line."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"invariant: hier_vocab={str(path)!r} is not a file (a SMILES list, "
                         "one molecule per line, whose motifs join the vocabulary)")
    out = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line.split()[0])
    return out


def hier_args(options: dict[str, Any]) -> dict[str, Any]:
    """:class:`HierVAE` keywords from the invariant space's options."""
    return dict(width=options["topo_width"], hidden=options["hier_hidden"],
                depth=options["hier_depth"], latent=options["hier_latent"],
                kl=options["hier_kl"], max_steps=options["hier_max_steps"])


def check_options(options: dict[str, Any]) -> None:
    """Clear errors for a bad ``topology`` or HierVAE option (raised at construction)."""
    kind = options["topology"]
    if kind not in ("selfies", "hiervae"):
        raise ValueError(f"invariant: topology must be 'selfies' or 'hiervae', got {kind!r}")
    if kind != "hiervae":
        return
    sizes = {k: options[k] for k in ("hier_hidden", "hier_depth", "hier_latent", "hier_max_steps")}
    bad = [k for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad:
        raise ValueError(f"invariant: {bad[0]} must be an integer >= 1, got {sizes[bad[0]]!r}")
    lr = options.get("hier_lr", 1e-3)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"invariant: hier_lr must be a number > 0 (the paper's 1e-3), got {lr!r}")
    kl = options["hier_kl"]
    if (isinstance(kl, (str, bytes)) or not hasattr(kl, "__len__") or len(kl) != 4
            or any(isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0 for x in kl)):
        raise ValueError(f"invariant: hier_kl must be [warmup_steps, every_steps, beta_step, "
                         f"beta_max] (numbers >= 0; the paper's [10000, 2000, 0.001, 1.0]), "
                         f"got {kl!r}")
    if options["hier_vocab"] is not None and not Path(str(options["hier_vocab"])).is_file():
        raise ValueError(f"invariant: hier_vocab={options['hier_vocab']!r} is not a file (a "
                         "SMILES list, one molecule per line, whose motifs join the vocabulary)")


class HierVAE(nn.Module):
    """Root vector autoencoder over motif trees; ``vocab`` fixes the embedding sizes."""

    def __init__(self, vocab: MotifVocab, width: int, hidden: int = 96, depth: int = 3,
                 latent: int = 32, kl: Sequence[float] = (300, 50, 0.005, 0.1),
                 max_steps: int = 150):
        super().__init__()
        self.vocab, self.width, self.latent = vocab, width, latent
        self.kl, self.max_steps = [float(x) for x in kl], int(max_steps)
        sizes = vocab.sizes()
        self.emb = nn.ModuleDict({"label": nn.Embedding(sizes["labels"], hidden),
                                  "motif": nn.Embedding(sizes["motifs"], hidden),
                                  "att": nn.Embedding(sizes["attachments"], hidden)})
        self.encoder = HierEncoder(self.emb, hidden, depth, width)
        self.R_mean = nn.Linear(width, latent)
        self.R_var = nn.Linear(width, latent)
        self.decoder = HierDecoder(self.emb, hidden, latent, torch.from_numpy(vocab.att_motif),
                                   torch.from_numpy(vocab.att_root))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def beta(self) -> float:
        warmup, every, step, top = self.kl
        done = int(self.steps) - warmup
        if done < 0:
            return 0.0
        return min(top, step * (1 + done // every)) if every > 0 else top

    def loss(self, batch) -> dict[str, torch.Tensor]:
        t = batch.t
        root = self.encoder(t)[0]
        mean = self.R_mean(root)
        log_var = -torch.abs(self.R_var(root))
        kl = -0.5 * torch.sum(1.0 + log_var - mean * mean - torch.exp(log_var)) / len(root)
        z = mean + torch.exp(log_var / 2) * torch.randn_like(mean) if self.training else mean
        out = self.decoder(z, t)
        beta = self.beta()
        if self.training:
            self.steps += 1
        return {"loss": out["recon"] + beta * kl, "kl": kl.detach(),
                "beta": torch.tensor(beta), **{k: v.detach() for k, v in out.items()}}

    # -- SMILES in, SMILES out -----------------------------------------------------------------
    def arrays(self, smiles: Sequence[str | None]):
        """Featurised motif trees (None where a SMILES cannot be decomposed)."""
        out = []
        for s in smiles:
            tree = decompose(s) if s else None
            out.append(featurize(tree, self.vocab) if tree is not None else None)
        return out

    @torch.no_grad()
    def encode_smiles(self, smiles: Sequence[str | None]) -> tuple[torch.Tensor, dict[str, int]]:
        """SMILES -> root vectors ``[B, width]``; None, or a SMILES that cannot be cut into
        motifs (counted in ``undecomposable``), encodes as zeros; unknown atom labels, motifs
        and attachments are counted in ``unknown_motifs`` (they encode through ``<unk>``)."""
        items = self.arrays(smiles)
        device = next(self.parameters()).device
        z = torch.zeros(len(items), self.width, device=device)
        ok = [k for k, x in enumerate(items) if x is not None]
        for s in range(0, len(ok), CHUNK):
            part = ok[s:s + CHUNK]
            t = collate([items[k] for k in part]).to(device).t
            z[torch.tensor(part, device=device)] = self.encoder(t)[0]
        return z, {"undecomposable": sum(x is None and bool(s) for x, s in zip(items, smiles)),
                   "unknown_motifs": int(sum(x.unknown for x in items if x is not None))}

    @torch.no_grad()
    def decode_smiles(self, z: torch.Tensor) -> list[str]:
        """Root vectors ``[B, width]`` -> canonical SMILES (``""`` = invalid), greedily."""
        out: list[str] = []
        for s in range(0, len(z), CHUNK):
            out += self.decoder.greedy(self.R_mean(z[s:s + CHUNK]), self.vocab, self.max_steps)
        return out

    def exact_rate(self, smiles: Sequence[str | None]) -> float:
        """Exact (canonical SMILES) reconstruction rate of encode -> greedy decode."""
        return exact_match(self.decode_smiles(self.encode_smiles(smiles)[0]), smiles)


def build_vocab(smiles: Sequence[str], extra_file: str | None = None, trees=None
                ) -> tuple[MotifVocab, dict[str, int]]:
    """Vocabulary of the training SMILES (or their motif ``trees``, if already cut; plus
    ``extra_file``'s); counts of what could not be decomposed."""
    trees = [decompose(s) for s in smiles] if trees is None else trees
    vocab = MotifVocab.from_trees(t for t in trees if t is not None)
    counts = {"train_undecomposable": sum(t is None for t in trees)}
    if extra_file:
        extra = [decompose(s) for s in read_smiles_file(extra_file)]
        vocab = vocab.merged(MotifVocab.from_trees(t for t in extra if t is not None))
        counts["file_molecules"] = len(extra)
        counts["file_undecomposable"] = sum(t is None for t in extra)
    return vocab, counts


def fit_hiervae(model_args: dict[str, Any], train_smiles: Sequence[str], val_smiles: Sequence[str],
                vocab_file: str | None, epochs: int, lr: float, batch_size: int, seed: int,
                progress: bool, trainer_kwargs: dict[str, Any] | None) -> tuple[HierVAE, dict[str, Any]]:
    """Build the vocabulary, then train a fresh :class:`HierVAE` (teacher forcing, KL
    schedule) with the shared Lightning loop. Molecules with unknown parts or that cannot be
    decomposed are left out of the loss (counted)."""
    from torch.utils.data import DataLoader

    from harness.core.data.base import IndexDataset
    from spaces._autoencoder import train_autoencoder

    t0 = time.perf_counter()
    trees = [decompose(s) if s else None for s in train_smiles]
    vocab, counts = build_vocab(train_smiles, vocab_file, trees)
    torch.manual_seed(seed)
    model = HierVAE(vocab, **model_args)
    train_items = [x for x in (featurize(t, vocab) for t in trees if t is not None) if x.known]
    val_items = [x for x in model.arrays(val_smiles) if x is not None and x.known]
    if not train_items:
        raise ValueError("invariant.fit (topology: hiervae): no training molecule could be cut "
                         f"into motifs ({counts})")
    counts.update(train_used=len(train_items), val_used=len(val_items), **vocab.sizes())

    def loader(items, shuffle):
        return DataLoader(IndexDataset(len(items)), batch_size=batch_size, shuffle=shuffle,
                          collate_fn=TreeCollate(items), generator=torch.Generator().manual_seed(seed))

    prep = time.perf_counter() - t0
    model.train()
    stats = train_autoencoder(model, loader(train_items, True),
                              loader(val_items, False) if val_items else None, epochs=epochs,
                              lr=lr, progress=progress, seed=seed, trainer_kwargs=trainer_kwargs)
    model.eval()
    stats.update(vocabulary=counts, preparation_seconds=round(prep, 2))
    return model, stats


def exact_match(decoded: Sequence[str], reference: Sequence[str | None]) -> float:
    """Fraction of decoded canonical SMILES equal to the reference's (canonicalised alike)."""
    from harness.core.chem import smiles_canonical

    hits = [bool(d) and r is not None and d == smiles_canonical(r) for d, r in zip(decoded, reference)]
    return float(np.mean(hits)) if hits else float("nan")
