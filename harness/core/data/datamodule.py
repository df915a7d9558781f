"""A Lightning DataModule over any registered dataset (padded :class:`MolBatch` batches)."""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from harness.core.data import load_dataset
from harness.core.data.base import CollateIndices, IndexDataset, MolDataset


class MolDataModule(pl.LightningDataModule):
    """Train / val / test loaders of dense padded batches.

    Args:
        dataset: registry name (``qm9``, ``sdf``, ...) or an already loaded :class:`MolDataset`.
        dataset_options: builder options (``subset``, ``remove_h``, ``path`` ...).
        batch_size: molecules per batch; num_workers: DataLoader worker processes.
    """

    def __init__(self, dataset: str | MolDataset = "qm9", dataset_options: dict[str, Any] | None = None,
                 batch_size: int = 64, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.dataset_name = dataset if isinstance(dataset, str) else dataset.name
        self._dataset = None if isinstance(dataset, str) else dataset
        self.dataset_options = dict(dataset_options or {})
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.splits: dict[str, MolDataset] = {}

    def prepare_data(self) -> None:
        # builds the on-disk cache once (rank 0); setup() then only loads it
        if self._dataset is None:
            load_dataset(self.dataset_name, **self.dataset_options)

    def setup(self, stage: str | None = None) -> None:
        if self._dataset is None:
            self._dataset = load_dataset(self.dataset_name, **self.dataset_options)
        for name in ("train", "val", "test"):
            if name in self._dataset.splits:
                self.splits[name] = self._dataset.split(name)

    @property
    def dataset(self) -> MolDataset:
        if self._dataset is None:
            self.setup()
        return self._dataset

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.splits:
            self.setup()
        ds = self.splits[split]
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(IndexDataset(len(ds)), batch_size=self.batch_size, shuffle=shuffle,
                          collate_fn=CollateIndices(ds), num_workers=self.num_workers,
                          generator=generator, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device)
