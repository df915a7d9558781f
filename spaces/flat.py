"""``flat``: the no-symmetry ablation.

An MLP autoencoder over the padded atom list in the dataset's fixed atom order: per slot a
one-hot over (elements + "empty") and the raw Cartesian coordinates, flattened. No centring,
alignment, canonical ordering or pooling, so the latent is deliberately neither rotation-,
translation- nor permutation-invariant. Its width matches ``invariant``'s total width, so a
sweep comparing the two isolates symmetry preservation.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.registry import SPACES
from harness.core.types import LatentBatch, LatentSpec, MolBatch
from spaces._regularizers import drop_nodes, info_nce
from spaces.base import Space

NO_SYMMETRY = (("permutation", "none"), ("rotation", "none"), ("translation", "none"),
               ("reflection", "none"))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.SiLU()]
    return nn.Sequential(*layers[:-1])


class FlatAutoencoder(nn.Module):
    """[B, N_max * (T + 1 + 3)] <-> tanh latent [B, width]."""

    def __init__(self, n_types: int, max_atoms: int, width: int, hidden: int, layers: int,
                 gssl_weight: float = 0.0):
        super().__init__()
        self.gssl_weight = gssl_weight
        self.n_types, self.max_atoms = n_types, max_atoms
        slot = n_types + 1 + 3
        self.encoder = _mlp([max_atoms * slot] + [hidden] * layers + [width])
        self.decoder = _mlp([width] + [hidden] * layers + [max_atoms * slot])

    def flatten(self, batch: MolBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pad to max_atoms; returns inputs [B, N_max*(T+4)], class targets [B, N_max]
        (T = empty), positions [B, N_max, 3]."""
        B, N = batch.mask.shape
        if N > self.max_atoms:
            raise ValueError(f"flat space was fitted for at most {self.max_atoms} atoms; "
                             f"got a molecule with {int(batch.n_atoms.max())}")
        pad = self.max_atoms - N
        classes = torch.where(batch.mask, batch.atom_types, torch.full_like(batch.atom_types, self.n_types))
        classes = F.pad(classes, (0, pad), value=self.n_types)
        pos = F.pad(batch.pos.float() * batch.mask[..., None], (0, 0, 0, pad))
        onehot = F.one_hot(classes, self.n_types + 1).float()
        return torch.cat([onehot, pos], -1).flatten(1), classes, pos

    def encode(self, batch: MolBatch) -> torch.Tensor:
        return torch.tanh(self.encoder(self.flatten(batch)[0]))

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.decoder(z).view(z.shape[0], self.max_atoms, self.n_types + 4)
        return out[..., : self.n_types + 1], out[..., self.n_types + 1:]

    def loss(self, batch: MolBatch) -> dict[str, torch.Tensor]:
        _, classes, pos = self.flatten(batch)
        z = self.encode(batch)
        logits, pred = self.decode(z)
        real = classes < self.n_types
        type_loss = F.cross_entropy(logits.flatten(0, 1), classes.flatten())
        coord_loss = ((pred - pos) ** 2).sum(-1)[real].mean()
        accuracy = (logits.argmax(-1) == classes).float().mean()
        out = {"loss": type_loss + coord_loss, "type_ce": type_loss.detach(),
               "coord_mse": coord_loss.detach(), "slot_accuracy": accuracy.detach()}
        if self.gssl_weight and self.training:
            # augmented view: 20 % of the atoms emptied from their slots
            nce = info_nce(z, self.encode(replace(batch, mask=drop_nodes(batch.mask))))
            out["gssl"] = nce.detach()
            out["loss"] = out["loss"] + self.gssl_weight * nce
        return out


@SPACES.register("flat")
class FlatSpace(Space):
    """Ablation without symmetry: MLP autoencoder over padded types + raw coordinates.

    Args:
        width: latent width (match ``invariant``'s topo_width + geo_width).
        max_atoms: padded slots; None = the largest training molecule (set by ``fit``).
        hidden / layers: MLP capacity; epochs / batch_size / lr: training budget.
        gssl_weight: graph self-supervision: InfoNCE between a molecule's latent and that of
            a view with 20 % of its atoms emptied, the batch's other molecules as negatives
            (:mod:`spaces._regularizers`; ~1e-3; 0 disables).
    """

    name = "flat"
    bond_source = "perceive"
    trainable = True

    def __init__(self, elements: Sequence[str], width: int = 128, max_atoms: int | None = 29,
                 hidden: int = 512, layers: int = 2, epochs: int = 40, batch_size: int = 64,
                 lr: float = 1e-3, seed: int = 0, gssl_weight: float = 0.0):
        super().__init__(elements, **self.options_from(locals()))
        self._build()

    def _build(self) -> None:
        torch.manual_seed(self.options["seed"])
        o = self.options
        self.net = FlatAutoencoder(len(self.elements), o["max_atoms"] or 1, o["width"], o["hidden"],
                                   o["layers"], o["gssl_weight"]).eval()

    @classmethod
    def test_options(cls) -> dict[str, Any]:
        return {"width": 16, "hidden": 32, "layers": 1, "epochs": 1, "batch_size": 32}

    @classmethod
    def sweep_options(cls, trial, sweep, options: dict[str, Any]) -> dict[str, Any]:
        """Sweep factors: width w -> ``width = 2 w`` (``invariant``'s total at the same w);
        epochs e -> ``epochs = 4 e`` (an MLP epoch is cheap); choices from
        ``sweep.space_options.flat``."""
        epochs = cls.suggest_epochs(trial, sweep)
        width = cls.suggest_width(trial, sweep)
        return cls.apply_choices(trial, sweep, dict(options, width=2 * width, epochs=4 * epochs))

    @property
    def spec(self) -> LatentSpec:
        return LatentSpec("vector", width=self.options["width"], symmetry=NO_SYMMETRY, bounded=True)

    def fit(self, train, val=None, progress=True, trainer_kwargs=None) -> dict[str, Any]:
        from spaces._autoencoder import mol_loader, train_autoencoder

        o = self.options
        needed = int(train.atom_counts.max())
        if o["max_atoms"] is None or o["max_atoms"] < needed:
            self.options["max_atoms"] = needed
            self._build()
        self.net.train()
        self.fit_stats = train_autoencoder(
            self.net, mol_loader(train, o["batch_size"], shuffle=True, seed=o["seed"]),
            mol_loader(val, 256, shuffle=False) if val is not None and len(val) else None,
            epochs=o["epochs"], lr=o["lr"], progress=progress, seed=o["seed"],
            trainer_kwargs=trainer_kwargs)
        return self.fit_stats

    @torch.no_grad()
    def encode(self, batch: MolBatch) -> LatentBatch:
        return LatentBatch(h=self.net.encode(batch), spec=self.spec)

    @torch.no_grad()
    def decode(self, latent: LatentBatch) -> MolBatch:
        logits, pos = self.net.decode(latent.h.float())
        classes = logits.argmax(-1)                               # [B, N_max]
        real = classes < len(self.elements)
        # pack real atoms first (stable), as every MolBatch expects
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)
        real = torch.gather(real, 1, order)
        classes = torch.gather(classes, 1, order) * real
        pos = torch.gather(pos, 1, order[..., None].expand(-1, -1, 3)) * real[..., None]
        n = max(1, int(real.sum(1).max()))
        return MolBatch(atom_types=classes[:, :n], pos=pos[:, :n], mask=real[:, :n],
                        elements=self.elements, charges=torch.zeros_like(classes[:, :n]), bonds=None)

    def state_dict(self) -> dict[str, Any]:
        return self.net.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state)
        self.net.eval()
