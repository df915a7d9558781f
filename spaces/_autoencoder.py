"""Shared Lightning training for the autoencoder spaces (not a space itself).

A space's network implements ``loss(batch) -> dict`` (with key ``"loss"`` plus any
diagnostics, all scalar tensors); :func:`train_autoencoder` runs it under a Lightning
``Trainer`` with AdamW and gradient clipping, so device/strategy options pass through from
the config exactly as for the diffusion generators.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from harness.core.data.base import CollateIndices, IndexDataset, MolDataset


def mol_loader(dataset: MolDataset, batch_size: int, shuffle: bool, seed: int = 0,
               transform: Callable | None = None, max_pairs: int | None = None) -> DataLoader:
    """A DataLoader of padded MolBatch (optionally transformed with per-index extras).

    ``max_pairs``: size-grouped batches (:class:`SizeGroupedBatches`) of at most
    ``batch_size`` molecules and ``max_pairs`` padded atom pairs (B x N_max^2) each, so a
    batch of large molecules costs the dense pair networks what a batch of small ones does.
    None: fixed-size batches in (shuffled) dataset order."""
    if max_pairs:
        sampler = SizeGroupedBatches(dataset.atom_counts, batch_size, max_pairs, shuffle, seed)
        return DataLoader(IndexDataset(len(dataset)), batch_sampler=sampler,
                          collate_fn=CollateIndices(dataset, transform))
    return DataLoader(IndexDataset(len(dataset)), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=CollateIndices(dataset, transform),
                      generator=torch.Generator().manual_seed(seed))


class SizeGroupedBatches(torch.utils.data.Sampler):
    """Index batches of molecules of similar size under a pair budget (fairseq's
    ``batch_by_size``: batches formed once, their order shuffled every epoch).

    The molecules are permuted (seeded), cut into windows of ``window * batch_size``, sorted
    by atom count inside each window (so each batch is a random draw of similar sizes) and
    cut greedily into batches of at most ``batch_size`` molecules with
    ``B * N_max^2 <= max_pairs`` (a molecule alone above the budget forms its own batch).
    With ``shuffle`` every epoch visits the batches in a new seeded order. The number of
    batches is fixed, so ``len`` is exact.
    """

    def __init__(self, counts: np.ndarray, batch_size: int, max_pairs: int, shuffle: bool = True,
                 seed: int = 0, window: int = 50):
        if batch_size < 1 or max_pairs < 1:
            raise ValueError(f"SizeGroupedBatches: batch_size ({batch_size}) and max_pairs "
                             f"({max_pairs}) must be >= 1")
        counts = np.asarray(counts, np.int64)
        self.shuffle, self.seed, self.epoch = shuffle, int(seed), 0
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(counts)) if shuffle else np.arange(len(counts))
        span = int(window) * int(batch_size)
        self.batches: list[list[int]] = []
        for lo in range(0, len(order), span):
            chunk = order[lo:lo + span]
            chunk = chunk[np.argsort(counts[chunk], kind="stable")]
            sizes = counts[chunk]
            start = 0
            while start < len(chunk):
                # the largest b <= batch_size with b * n_max^2 <= max_pairs (sizes ascend)
                stop = min(start + int(batch_size), len(chunk))
                b = np.arange(1, stop - start + 1)
                fits = (b * sizes[start:stop] ** 2 <= max_pairs).nonzero()[0]
                take = int(fits.max()) + 1 if len(fits) else 1
                self.batches.append(chunk[start:start + take].tolist())
                start += take

    def __iter__(self):
        order = np.arange(len(self.batches))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.batches))
        self.epoch += 1
        return iter([self.batches[i] for i in order])

    def __len__(self) -> int:
        return len(self.batches)


class AutoencoderTask(pl.LightningModule):
    """Wraps a network exposing ``loss(batch) -> {"loss": ..., ...}``."""

    def __init__(self, net: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0,
                 epochs: int = 1):
        super().__init__()
        self.net, self.lr, self.weight_decay, self.epochs = net, lr, weight_decay, epochs
        self.history: list[dict[str, float]] = []
        self._epoch_sums: dict[str, float] = {}
        self._epoch_count = 0

    def training_step(self, batch, batch_idx):
        out = self.net.loss(batch)
        for k, v in out.items():
            self.log(f"train/{k}", v.detach(), prog_bar=k == "loss", batch_size=_size(batch))
            self._epoch_sums[k] = self._epoch_sums.get(k, 0.0) + float(v.detach())
        self._epoch_count += 1
        return out["loss"]

    def on_train_epoch_end(self):
        if self._epoch_count:
            self.history.append({k: v / self._epoch_count for k, v in self._epoch_sums.items()})
        self._epoch_sums, self._epoch_count = {}, 0

    def validation_step(self, batch, batch_idx):
        out = self.net.loss(batch)
        for k, v in out.items():
            self.log(f"val/{k}", v, batch_size=_size(batch))

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device) if hasattr(batch, "to") else super().transfer_batch_to_device(
            batch, device, dataloader_idx)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.epochs), eta_min=self.lr * 0.05)
        return {"optimizer": opt, "lr_scheduler": sched}


def _size(batch) -> int:
    return len(batch) if hasattr(batch, "__len__") else 1


def train_autoencoder(net: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None,
                      epochs: int, lr: float = 1e-3, weight_decay: float = 0.0,
                      grad_clip: float = 1.0, progress: bool = True, seed: int = 0,
                      trainer_kwargs: dict[str, Any] | None = None,
                      log_dir: str | None = None) -> dict[str, Any]:
    """Train ``net`` with Lightning; returns per-epoch mean losses and wall time."""
    pl.seed_everything(seed, workers=True, verbose=False)
    task = AutoencoderTask(net, lr=lr, weight_decay=weight_decay, epochs=epochs)
    kwargs = dict(accelerator="cpu", devices=1, max_epochs=epochs, gradient_clip_val=grad_clip,
                  enable_progress_bar=progress, enable_model_summary=False,
                  enable_checkpointing=False, logger=False, num_sanity_val_steps=0)
    if log_dir:
        from pytorch_lightning.loggers import CSVLogger

        kwargs["logger"] = CSVLogger(log_dir, name="autoencoder")
    kwargs.update(trainer_kwargs or {})
    kwargs["max_epochs"] = epochs
    t0 = time.perf_counter()
    trainer = pl.Trainer(**kwargs)
    trainer.fit(task, train_dataloaders=train_loader, val_dataloaders=val_loader)
    net.cpu().eval()  # spaces encode/decode on the batch's device; CPU by default
    return {"epochs": epochs, "seconds": round(time.perf_counter() - t0, 2),
            "history": task.history,
            "final": task.history[-1] if task.history else {}}
