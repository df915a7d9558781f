"""``LatentDataModule``: training latents as Lightning batches, with exact (bitwise) resume.

The latents of one spec are packed once into ``z [M, W]`` or ``[M, N, W]`` (+ ``mask``,
optional ``context [M, C]``), kept on the CPU and normalised once by the generator's
normaliser (:meth:`LatentDataModule.ready`, called after a checkpoint is restored).

Data order is a pure function of ``(seed, global step, rank)``: training batch ``k`` is the
``k``-th slice of the global batch (``batch_size x world_size``) of a per-epoch permutation
seeded by ``(seed, epoch)``, and rank ``r`` takes every ``world_size``-th molecule of it. The
loaders themselves only yield indices; :meth:`on_before_batch_transfer` replaces a training
index by the batch of the trainer's *global step* (a validation index by that slice of the
validation set). A run resumed mid-epoch from a checkpoint therefore sees exactly the batches
the uninterrupted run would, whatever the loader state, and multi-GPU DDP needs nothing
beyond Trainer options. Atom slots no molecule of a batch uses are trimmed.

Batches are dicts ``{"z", "mask" (None for vector latents), "ctx" (None: unconditional),
"step"}``; Lightning moves them to the device.
"""
from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from harness.core.data.base import IndexDataset
from harness.core.types import LatentBatch

from .layout import LatentLayout

__all__ = ["LatentDataModule", "mix_seed"]

_MASK64 = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """Deterministic 63-bit seed from integers (splitmix64-style)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & _MASK64


class LatentDataModule(pl.LightningDataModule):
    """Train (and optionally validation) latents of one generator.

    Args:
        layout: the generator's :class:`LatentLayout` (its spec is checked against the data).
        context_dim: C of the generator (0: unconditional; then no context may be given).
        train / val: :class:`LatentBatch` of that spec.
        context / val_context: ``[M, C]`` conditioning vectors.
        batch_size: per-device training batch size.
        val_batch_size: validation batch (default ``max(batch_size, 256)``).
        seed: seed of the data order.
    """

    def __init__(self, layout: LatentLayout, context_dim: int, train: LatentBatch,
                 val: LatentBatch | None = None, *, context: torch.Tensor | None = None,
                 val_context: torch.Tensor | None = None, batch_size: int = 64,
                 val_batch_size: int | None = None, seed: int = 0):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.layout, self.context_dim, self.seed = layout, context_dim, seed
        self.batch_size = batch_size
        self.train_data = self._prepare(train, context, "train_latents")
        self.val_data = None
        if val is not None:
            self.val_data = self._prepare(val, val_context, "val_latents")
        self.val_batch_size = val_batch_size or max(batch_size, 256)
        self._perm_cache: dict[int, torch.Tensor] = {}

    def _prepare(self, latents: LatentBatch, context, what: str) -> dict[str, Any]:
        lay = self.layout
        if not isinstance(latents, LatentBatch):
            raise TypeError(f"{what} must be a LatentBatch, got {type(latents).__name__}")
        if latents.spec != lay.spec:
            raise ValueError(f"{what} has spec {latents.spec}, but this generator was built "
                             f"for {lay.spec}")
        if len(latents) == 0:
            raise ValueError(f"{what} is empty")
        z, mask = lay.from_batch(latents.to("cpu"))
        z = z.to(torch.get_default_dtype())
        C = self.context_dim
        if context is not None:
            context = torch.as_tensor(context, dtype=z.dtype).cpu()
            if context.shape != (len(latents), C):
                raise ValueError(f"{what} context must be [{len(latents)}, {C}], got "
                                 f"{tuple(context.shape)}")
        elif C:
            raise ValueError(f"this generator has context_dim={C}: pass a context for the "
                             f"{what}")
        return {"z": z, "mask": mask, "ctx": context, "ready": False}

    # -- normalisation (once, with the generator's restored normaliser) ----------------------
    @property
    def train_z(self) -> torch.Tensor:
        return self.train_data["z"]

    @property
    def train_mask(self) -> torch.Tensor | None:
        return self.train_data["mask"]

    def ready(self, normalize) -> None:
        """Apply ``normalize(z, mask)`` to the train and validation latents (idempotent)."""
        for d in (self.train_data, self.val_data):
            if d is not None and not d["ready"]:
                d["z"] = normalize(d["z"], d["mask"])
                d["ready"] = True

    # -- loaders --------------------------------------------------------------------------
    def steps_per_epoch(self, world_size: int = 1) -> int:
        """Steps of one pass over the data with the global batch."""
        return max(1, math.ceil(self.train_z.shape[0] / (self.batch_size * world_size)))

    def _world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.world_size, t.global_rank) if t is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        # item k is just k: the batch is derived from the global step, never the loader state
        return DataLoader(IndexDataset(self.steps_per_epoch(self._world()[0])), batch_size=None,
                          shuffle=False)

    def val_dataloader(self):
        if self.val_data is None:
            return []
        n_val = math.ceil(self.val_data["z"].shape[0] / self.val_batch_size)
        return DataLoader(IndexDataset(n_val), batch_size=None, shuffle=False)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> dict[str, Any]:
        trainer = self.trainer
        if trainer is not None and trainer.training:
            return self.train_batch(int(trainer.global_step))
        return self.val_batch(int(batch))

    # -- batches ---------------------------------------------------------------------------
    def batch_indices(self, step: int) -> torch.Tensor:
        """``[batch_size]`` training-molecule indices of global step ``step`` on this rank."""
        world, rank = self._world()
        M = self.train_z.shape[0]
        gbs = self.batch_size * world
        epoch, pos = divmod(step, self.steps_per_epoch(world))
        perm = self._perm_cache.get(epoch)
        if perm is None:
            g = torch.Generator().manual_seed(mix_seed(self.seed, 1, epoch))
            perm = torch.randperm(M, generator=g)
            self._perm_cache = {epoch: perm}
        glob = perm[(pos * gbs + torch.arange(gbs)) % M]
        return glob[rank::world]

    def _take(self, d: dict[str, Any], idx) -> dict[str, Any]:
        z = d["z"][idx]
        mask = None if d["mask"] is None else d["mask"][idx]
        ctx = None if d["ctx"] is None else d["ctx"][idx]
        z, mask = self.layout.trim(z, mask)
        return {"z": z, "mask": mask, "ctx": ctx}

    def train_batch(self, step: int) -> dict[str, Any]:
        return {**self._take(self.train_data, self.batch_indices(step)), "step": step}

    def val_batch(self, k: int) -> dict[str, Any]:
        bs = self.val_batch_size
        return {**self._take(self.val_data, slice(k * bs, (k + 1) * bs)), "step": k}
