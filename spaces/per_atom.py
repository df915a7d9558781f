"""``per_atom``: GeoLDM's varying-dimension latent (Xu et al., 2023).

An EGNN encoder maps each atom to ``k`` invariant features plus one equivariant 3-vector; an
EGNN decoder maps them back to atom types and coordinates. The latent's size grows with the
atom count: dim = N * k + (N - 1) * 3.

GeoLDM's known weak point is that the autoencoder may collapse towards the identity on
coordinates (the latent 3-vectors are just the input positions), adding little; ``fit``
records ``coord_identity_rmsd`` (Å between latent vectors and centred input positions) so
reports can show it.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.nn import DenseEGNN, masked_mean, remove_mean
from harness.core.registry import SPACES
from harness.core.types import LatentBatch, LatentSpec, MolBatch
from spaces._regularizers import drop_nodes, info_nce
from spaces.base import Space
from spaces.raw import E3_EQUIVARIANT


class PerAtomAutoencoder(nn.Module):
    """EGNN encoder/decoder pair on dense padded batches.

    encode: one-hot types [B, N, T], centred pos [B, N, 3] -> h [B, N, k], x [B, N, 3]
    decode: h, x -> type logits [B, N, T], pos [B, N, 3] (zero-CoM, Å)
    """

    def __init__(self, n_types: int, k: int, hidden: int, layers: int, latent_noise: float,
                 kl_weight: float, gssl_weight: float = 0.0, checkpoint: bool = False):
        super().__init__()
        self.gssl_weight = gssl_weight
        self.n_types, self.k = n_types, k
        self.encoder = DenseEGNN(n_types, k, hidden=hidden, layers=layers, sublayers=1,
                                 coords_range=15.0, checkpoint=checkpoint)
        self.decoder = DenseEGNN(k, n_types, hidden=hidden, layers=layers, sublayers=1,
                                 coords_range=15.0, checkpoint=checkpoint)
        self.latent_noise, self.kl_weight = latent_noise, kl_weight

    def encode(self, types: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor):
        onehot = F.one_hot(types, self.n_types).to(pos.dtype) * mask[..., None]
        h, x = self.encoder(onehot, remove_mean(pos, mask), mask)
        return torch.tanh(h) * mask[..., None], remove_mean(x, mask)

    def decode(self, h: torch.Tensor, x: torch.Tensor, mask: torch.Tensor):
        logits, pos = self.decoder(h, remove_mean(x, mask), mask)
        return logits, remove_mean(pos, mask)

    def loss(self, batch: MolBatch) -> dict[str, torch.Tensor]:
        mask = batch.mask
        m = mask[..., None].to(batch.pos.dtype)
        h, x = self.encode(batch.atom_types, batch.pos, mask)
        summary = self.summary(h, x, mask) if self.gssl_weight and self.training else None
        if self.training and self.latent_noise > 0:
            # VAE-style noise keeps the decoder robust to the diffusion model's imprecision
            h = h + self.latent_noise * torch.randn_like(h) * m
            x = remove_mean(x + self.latent_noise * torch.randn_like(x), mask)
        logits, pos = self.decode(h, x, mask)
        target = remove_mean(batch.pos, mask)
        n_atoms = m.sum()
        type_loss = F.cross_entropy(logits[mask], batch.atom_types[mask])
        coord_loss = (((pos - target) ** 2).sum(-1) * mask).sum() / n_atoms
        reg = (h ** 2).sum() / n_atoms  # keeps invariant features near the unit scale
        accuracy = (logits.argmax(-1) == batch.atom_types)[mask].float().mean()
        out = {"loss": type_loss + coord_loss + self.kl_weight * reg,
               "type_ce": type_loss.detach(), "coord_mse": coord_loss.detach(),
               "type_accuracy": accuracy.detach()}
        if self.gssl_weight and self.training:
            view = drop_nodes(mask)
            nce = info_nce(summary, self.summary(*self.encode(batch.atom_types, batch.pos, view), view))
            out["gssl"] = nce.detach()
            out["loss"] = out["loss"] + self.gssl_weight * nce
        return out

    @staticmethod
    def summary(h: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Invariant molecule-level summary of a per-atom latent for the contrastive term:
        the mean over atoms of ``[h_i, |x_i|]`` (x zero-CoM) -> ``[B, k + 1]``."""
        radius = torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-12)
        return masked_mean(torch.cat([h, radius], -1), mask)[:, 0]


@SPACES.register("per_atom")
class PerAtomSpace(Space):
    """GeoLDM-style per-atom latent: k invariant features + an equivariant 3-vector per atom.

    Args:
        k: invariant latent features per atom (GeoLDM: 1-2).
        hidden / layers: EGNN width and depth of encoder and decoder (capacity knob).
        epochs / batch_size / lr: autoencoder training budget.
        latent_noise: std of Gaussian noise on the latent while training (robust decoding).
        kl_weight: weight of the L2 penalty on invariant latent features.
        gssl_weight: graph self-supervision: InfoNCE between each molecule's mean ``[h, |x|]``
            and that of a view with 20 % of its atoms dropped, the batch's other molecules as
            negatives (:mod:`spaces._regularizers`; ~1e-3; 0 disables; needs k >= 1).
        max_batch_pairs: size-grouped batches of at most ``batch_size`` molecules and this
            many padded atom pairs (B x N_max^2) each (large molecules); None = fixed batches.
        checkpoint: gradient checkpointing of the EGNN blocks (large molecules).
        autoencoder: ``"harness"`` (the default network above) or ``"geoldm"``: GeoLDM's
            first stage (:mod:`spaces._geoldm`: unscaled one-hot + atomic-number input, a
            1-block EGNN encoder with GeoLDM's output MLP, no tanh, GeoLDM's VAE loss with
            ``latent_noise`` as its fixed sigma (GeoLDM: 0.0032) and ``kl_weight``).
        geoldm: options of :class:`spaces._geoldm.GeoLDMAutoencoder` for
            ``autoencoder="geoldm"`` (``sublayers``, ``agg_norm``, ``sin_embedding``,
            ``norm_constant``, ``attention``, ``tanh``, ``include_charges``,
            ``encoder_layers``); None: GeoLDM's defaults.
    """

    name = "per_atom"
    bond_source = "perceive"
    trainable = True
    #: the sweep's dimensionality factor for this space: invariant features per atom
    sweep_choices = {"k": [1, 2, 4]}

    def __init__(self, elements: Sequence[str], k: int = 2, hidden: int = 64, layers: int = 3,
                 epochs: int = 20, batch_size: int = 64, lr: float = 1e-3,
                 latent_noise: float = 0.05, kl_weight: float = 0.01, seed: int = 0,
                 gssl_weight: float = 0.0, max_batch_pairs: int | None = None,
                 checkpoint: bool = False, autoencoder: str = "harness",
                 geoldm: dict[str, Any] | None = None):
        super().__init__(elements, **self.options_from(locals()))
        torch.manual_seed(seed)
        if autoencoder == "geoldm":
            from spaces._geoldm import GeoLDMAutoencoder

            if gssl_weight:
                raise ValueError("per_atom: gssl_weight is not available with autoencoder='geoldm'")
            self.net = GeoLDMAutoencoder(self.elements, k, hidden, layers, latent_noise,
                                         kl_weight, checkpoint=checkpoint, **(geoldm or {}))
        elif autoencoder == "harness":
            if geoldm:
                raise ValueError("per_atom: geoldm options need autoencoder='geoldm'")
            self.net = PerAtomAutoencoder(len(self.elements), k, hidden, layers, latent_noise,
                                          kl_weight, gssl_weight, checkpoint)
        else:
            raise ValueError(f"per_atom: autoencoder must be 'harness' or 'geoldm', got "
                             f"{autoencoder!r}")
        self.net.eval()

    @classmethod
    def test_options(cls) -> dict[str, Any]:
        return {"k": 2, "hidden": 16, "layers": 2, "epochs": 1, "batch_size": 32}

    @classmethod
    def sweep_options(cls, trial, sweep, options: dict[str, Any]) -> dict[str, Any]:
        """Sweep factors: epochs e -> ``epochs = e``; the width is ``k`` per atom, chosen from
        :attr:`sweep_choices` (or ``sweep.space_options.per_atom.k``)."""
        epochs = cls.suggest_epochs(trial, sweep)
        return cls.apply_choices(trial, sweep, dict(options, epochs=epochs))

    @property
    def spec(self) -> LatentSpec:
        return LatentSpec("per_atom", width=self.options["k"], has_coords=True,
                          symmetry=E3_EQUIVARIANT, bounded=False)

    def fit(self, train, val=None, progress=True, trainer_kwargs=None) -> dict[str, Any]:
        from spaces._autoencoder import mol_loader, train_autoencoder

        o = self.options
        self.net.train()
        stats = train_autoencoder(
            self.net, mol_loader(train, o["batch_size"], shuffle=True, seed=o["seed"],
                                 max_pairs=o["max_batch_pairs"]),
            mol_loader(val, 256, shuffle=False, max_pairs=o["max_batch_pairs"])
            if val is not None and len(val) else None,
            epochs=o["epochs"], lr=o["lr"], progress=progress, seed=o["seed"],
            trainer_kwargs=trainer_kwargs)
        stats["coord_identity_rmsd"] = self.coord_identity_rmsd(val if val is not None and len(val) else train)
        self.fit_stats = stats
        return stats

    @torch.no_grad()
    def coord_identity_rmsd(self, dataset, limit: int = 512) -> float:
        """RMS distance (Å) between the latent 3-vectors and the centred input positions; near
        0 means the autoencoder collapsed towards the identity on coordinates."""
        batch = dataset.batch(torch.arange(min(limit, len(dataset))).numpy())
        latent = self.encode(batch)
        target = remove_mean(batch.pos, batch.mask)
        sq = ((latent.x - target) ** 2).sum(-1)[batch.mask]
        return float(sq.mean().sqrt())

    @torch.no_grad()
    def encode(self, batch: MolBatch) -> LatentBatch:
        h, x = self.net.encode(batch.atom_types, batch.pos.float(), batch.mask)
        return LatentBatch(h=h, x=x, mask=batch.mask, spec=self.spec)

    @torch.no_grad()
    def decode(self, latent: LatentBatch) -> MolBatch:
        mask = latent.mask
        logits, pos = self.net.decode(latent.h.float(), latent.x.float(), mask)
        types = logits.argmax(-1) * mask
        return MolBatch(atom_types=types, pos=pos, mask=mask, elements=self.elements,
                        charges=torch.zeros_like(types), bonds=None)

    def state_dict(self) -> dict[str, Any]:
        return self.net.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state)
        self.net.eval()
