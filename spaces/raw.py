"""``raw``: the identity space of EDM (Hoogeboom et al., 2022).

Per atom: scaled one-hot atom type (optionally the scaled atomic number, EDM's "charge"
feature) plus zero-centre-of-mass coordinates. Decoding takes the argmax type; bonds are
not part of the space, so metrics perceive them from the coordinates.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from harness.core.registry import SPACES
from harness.core.types import LatentBatch, LatentSpec, MolBatch
from spaces.base import Space

E3_EQUIVARIANT = (("permutation", "equivariant"), ("rotation", "equivariant"),
                  ("translation", "invariant"), ("reflection", "equivariant"))


@SPACES.register("raw")
class RawSpace(Space):
    """EDM's raw 3D graph: one-hot types x type_scale + zero-CoM coordinates / coord_scale.

    Args:
        type_scale: multiplies the one-hot (EDM: 0.25, i.e. normalisation factor 4).
        coord_scale: coordinates are divided by it (EDM: 1).
        include_charge: append atomic number x charge_scale (EDM: 0.1) as one more feature.
    """

    name = "raw"
    bond_source = "perceive"
    expected_reconstruction = 1.0   # the identity: every atom comes back

    def __init__(self, elements: Sequence[str], type_scale: float = 0.25, coord_scale: float = 1.0,
                 include_charge: bool = False, charge_scale: float = 0.1):
        super().__init__(elements, **self.options_from(locals()))
        self.type_scale, self.coord_scale = type_scale, coord_scale
        self.include_charge, self.charge_scale = include_charge, charge_scale
        self.n_types = len(self.elements)

    @property
    def spec(self) -> LatentSpec:
        return LatentSpec("per_atom", width=self.n_types + int(self.include_charge),
                          has_coords=True, symmetry=E3_EQUIVARIANT)

    def encode(self, batch: MolBatch) -> LatentBatch:
        mask = batch.mask
        m = mask[..., None].to(batch.pos.dtype)
        h = F.one_hot(batch.atom_types, self.n_types).to(batch.pos.dtype) * self.type_scale
        if self.include_charge:
            h = torch.cat([h, batch.numbers[..., None].to(h.dtype) * self.charge_scale], -1)
        com = (batch.pos * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1)
        x = (batch.pos - com) * m / self.coord_scale
        return LatentBatch(h=h * m, x=x, mask=mask, spec=self.spec)

    def decode(self, latent: LatentBatch) -> MolBatch:
        mask = latent.mask
        types = latent.h[..., : self.n_types].argmax(-1) * mask
        pos = latent.x * self.coord_scale * mask[..., None]
        return MolBatch(atom_types=types, pos=pos, mask=mask, elements=self.elements,
                        charges=torch.zeros_like(types), bonds=None)
