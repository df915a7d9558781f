"""GeoLDM's first-stage autoencoder (Xu et al., 2023, github.com/MinkaiXu/GeoLDM), built from
the harness's :class:`harness.core.nn.DenseEGNN`: the ``per_atom`` space's
``autoencoder="geoldm"`` option (:mod:`spaces.per_atom`).

What GeoLDM's ``EGNN_encoder_QM9`` / ``EGNN_decoder_QM9`` / ``EnHierarchicalVAE`` compute,
written on dense padded batches (``B`` molecules, ``N`` atom slots, ``mask [B, N]`` bool,
``T`` atom types, ``c = int(include_charges)``, ``k`` latent features, ``H`` hidden):

* encoder input ``[one-hot, Z] [B, N, T + c]`` -- **unscaled** (GeoLDM feeds the raw one-hot
  and atomic number; its ``normalize_factors`` are not used by the latent model) and
  zero-CoM positions ``[B, N, 3]`` (Å);
* encoder: an EGNN ``(T + c) -> H`` with ``encoder_layers`` blocks (GeoLDM: always 1), then
  GeoLDM's ``final_mlp`` ``Linear(H, H)-SiLU-Linear(H, 2k + 1)`` of which only the ``k`` mean
  rows are kept (the others give standard deviations GeoLDM computes and discards: its
  ``q(z | x)`` has the fixed ``sigma = 0.0032``); the latent 3-vector is the EGNN's updated
  coordinates, zero-CoM. No ``tanh``, no latent scaling: GeoLDM diffuses the encoder mean
  plus ``sigma_0`` noise as it is;
* decoder: an EGNN ``k -> T + c`` with ``layers`` blocks; outputs type logits, an atomic-
  number estimate (rounded by GeoLDM's ``decode``) and zero-CoM coordinates;
* every EGNN: GeoLDM's settings -- ``sublayers`` GCLs per block, the full ``coords_range`` in
  every block (``coords_range_split=False``), ``agg_norm`` = its ``normalization_factor``.

:meth:`GeoLDMAutoencoder.reconstruction_error` and :meth:`GeoLDMAutoencoder.vae_loss` are
GeoLDM's ``compute_reconstruction_error`` and ``EnHierarchicalVAE`` training loss; weights
load from GeoLDM's state dict through ``harness.importers.geoldm_weights``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.nn import DenseEGNN, remove_mean
from harness.core.types import ATOMIC_NUMBER, MolBatch

__all__ = ["GeoLDMAutoencoder", "GEOLDM_SIGMA"]

#: the fixed standard deviation of GeoLDM's q(z | x) (``EnHierarchicalVAE.encode``)
GEOLDM_SIGMA = 0.0032


class GeoLDMAutoencoder(nn.Module):
    """GeoLDM's EGNN encoder / decoder pair (module docstring).

    Args:
        elements: atom types in one-hot order (their atomic numbers are the charge feature).
        k: latent features per atom (GeoLDM's ``latent_nf``).
        hidden / layers: ``nf`` / ``n_layers`` (the decoder's depth).
        latent_noise: std of the latent noise in :meth:`loss` (GeoLDM: 0.0032).
        kl_weight: GeoLDM's ``kl_weight``.
        sublayers, attention, tanh, norm_constant, agg_norm, sin_embedding, coords_range:
            GeoLDM's ``inv_sublayers``, ``attention``, ``tanh``, ``norm_constant``,
            ``normalization_factor``, ``sin_embedding`` (and EGNN's default range 15).
        include_charges: the atomic number as an extra input / output feature.
        encoder_layers: encoder depth (GeoLDM hard-codes 1).
    """

    def __init__(self, elements: Sequence[str], k: int, hidden: int, layers: int,
                 latent_noise: float = GEOLDM_SIGMA, kl_weight: float = 0.01,
                 sublayers: int = 1, attention: bool = True, tanh: bool = True,
                 norm_constant: float = 1.0, agg_norm: float = 1.0,
                 sin_embedding: bool = False, coords_range: float = 15.0,
                 include_charges: bool = True, encoder_layers: int = 1,
                 checkpoint: bool = False):
        super().__init__()
        self.n_types, self.k = len(elements), int(k)
        self.include_charges = bool(include_charges)
        self.latent_noise, self.kl_weight = float(latent_noise), float(kl_weight)
        width = self.n_types + int(self.include_charges)
        egnn = dict(hidden=hidden, sublayers=sublayers, attention=attention, tanh=tanh,
                    coords_range=coords_range, norm_constant=norm_constant, agg_norm=agg_norm,
                    sin_embedding=sin_embedding, coords_range_split=False, checkpoint=checkpoint)
        self.encoder = DenseEGNN(width, hidden, layers=encoder_layers, **egnn)
        self.encoder_head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(),
                                          nn.Linear(hidden, self.k))
        self.decoder = DenseEGNN(self.k, width, layers=layers, **egnn)
        self.register_buffer("atomic_numbers", torch.tensor(
            [float(ATOMIC_NUMBER[e]) for e in elements]), persistent=False)

    # -- GeoLDM's inputs and outputs ---------------------------------------------------------
    def features(self, types: torch.Tensor, mask: torch.Tensor, dtype) -> torch.Tensor:
        """Type indices ``[B, N]`` -> GeoLDM's node features ``[B, N, T + c]``: one-hot and
        (``include_charges``) the atomic number, unscaled; padded rows zero."""
        m = mask.to(dtype)[..., None]
        onehot = F.one_hot(types.long().clamp_min(0), self.n_types).to(dtype)
        parts = [onehot]
        if self.include_charges:
            parts.append(self.atomic_numbers.to(dtype)[types.long().clamp_min(0)][..., None])
        return torch.cat(parts, -1) * m

    def encode_features(self, feat: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor):
        """GeoLDM's ``q(z | x)`` means: ``feat [B, N, T + c]``, ``pos [B, N, 3]`` ->
        ``(h [B, N, k], x [B, N, 3] zero-CoM)``."""
        m = mask.to(pos.dtype)[..., None]
        h, x = self.encoder(feat * m, remove_mean(pos, mask), mask)
        return self.encoder_head(h) * m, remove_mean(x, mask)

    def encode(self, types: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor):
        """Type indices ``[B, N]`` and positions -> latent means ``(h, x)``."""
        return self.encode_features(self.features(types, mask, pos.dtype), pos, mask)

    def decode_features(self, h: torch.Tensor, x: torch.Tensor, mask: torch.Tensor):
        """GeoLDM's decoder: latent ``h [B, N, k]``, ``x [B, N, 3]`` -> ``(out [B, N, T + c]``
        (type logits, then the atomic-number estimate), ``pos [B, N, 3]`` zero-CoM, Å)."""
        out, pos = self.decoder(h, x * mask.to(x.dtype)[..., None], mask)
        return out, remove_mean(pos, mask)

    def decode(self, h: torch.Tensor, x: torch.Tensor, mask: torch.Tensor):
        """Latent -> ``(type logits [B, N, T], pos [B, N, 3])`` (the harness's interface)."""
        out, pos = self.decode_features(h, x, mask)
        return out[..., :self.n_types], pos

    # -- GeoLDM's losses ---------------------------------------------------------------------
    def reconstruction_error(self, out: torch.Tensor, pos: torch.Tensor, feat: torch.Tensor,
                             target_pos: torch.Tensor, mask: torch.Tensor,
                             per_dim: bool = True) -> torch.Tensor:
        """``[B]`` GeoLDM's ``compute_reconstruction_error``: squared error of the positions
        + cross-entropy of the type logits + squared error of the atomic number, summed over
        atoms; ``per_dim`` divides by ``(3 + T + c) * N`` (GeoLDM in training mode). As in
        GeoLDM the cross-entropy also runs over padded slots (zero logits against class 0:
        ``log T`` each, a constant without gradient)."""
        B, N = mask.shape
        err = ((pos - target_pos) ** 2).reshape(B, -1).sum(-1)
        ce = F.cross_entropy(out[..., :self.n_types].reshape(B * N, -1),
                             feat[..., :self.n_types].reshape(B * N, -1).argmax(-1),
                             reduction="none").view(B, N).sum(-1)
        err = err + ce
        if self.include_charges:
            err = err + ((out[..., -1] - feat[..., -1]) ** 2).sum(-1)
        if per_dim:
            err = err / ((3 + out.shape[-1]) * N)
        return err

    def vae_loss(self, feat: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor,
                 noise: torch.Tensor) -> torch.Tensor:
        """``[B]`` GeoLDM's first-stage training loss (``EnHierarchicalVAE`` in training
        mode): ``z = mu + sigma * noise`` (``noise [B, N, k + 3]`` as ``[h, x]``, coordinates
        zero-CoM), reconstruction error per dimension + ``kl_weight`` x the KL of
        ``N(mu, 1)`` to ``N(0, 1)`` (``|mu_h|^2 / 2 + |mu_x|^2 / 2``: GeoLDM takes unit
        variances in its KL)."""
        h, x = self.encode_features(feat, pos, mask)
        kl = 0.5 * ((h ** 2).flatten(1).sum(-1) + (x ** 2).flatten(1).sum(-1))
        s = self.latent_noise
        out, rec = self.decode_features(h + s * noise[..., :self.k], x + s * noise[..., self.k:],
                                        mask)
        err = self.reconstruction_error(out, rec, feat, remove_mean(pos, mask), mask)
        return err + self.kl_weight * kl

    def loss(self, batch: MolBatch) -> dict[str, torch.Tensor]:
        """The harness's training interface: the batch mean of :meth:`vae_loss` with fresh
        noise, plus diagnostics."""
        mask, pos = batch.mask, batch.pos
        m = mask.to(pos.dtype)[..., None]
        feat = self.features(batch.atom_types, mask, pos.dtype)
        noise = torch.randn(*mask.shape, self.k + 3, dtype=pos.dtype, device=pos.device) * m
        noise = torch.cat([noise[..., :self.k], remove_mean(noise[..., self.k:], mask)], -1)
        loss = self.vae_loss(feat, pos, mask, noise).mean()
        with torch.no_grad():
            logits, rec = self.decode(*self.encode_features(feat, pos, mask), mask)
            acc = (logits.argmax(-1) == batch.atom_types)[mask].float().mean()
            mse = (((rec - remove_mean(pos, mask)) ** 2).sum(-1) * mask).sum() / m.sum()
        return {"loss": loss, "type_accuracy": acc, "coord_mse": mse}
