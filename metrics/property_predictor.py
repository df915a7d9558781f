"""The property predictor (evaluator) of EDM's conditional-generation protocol.

An invariant, fully connected EGNN over one-hot atom types and coordinates whose
coordinates are *not* updated (EDM's ``qm9/property_prediction`` model, after Satorras et
al.'s QM9 EGNN): every message-passing layer sees the squared interatomic distance as its
pair feature, node embeddings are decoded per atom, summed over the molecule and decoded to
one number. EDM's sizes: 7 layers, 128 features, attention; L1 loss on the standardised
target ``(y - mean) / MAD`` (mean and mean absolute deviation of the validation split);
Adam (lr 1e-3, weight decay 1e-16), cosine annealing over the epochs, batch 96, the epoch
with the lowest validation MAE kept.

Built on :class:`harness.core.nn.DenseEGNN` with ``coords=False`` and the squared distance
as its one edge feature, which is that model exactly (no coordinate update, pair MLP input
``[h_i, h_j, |x_i - x_j|^2]``, attention gate, sum aggregation, residual node MLP).

Units: inputs in Å; predictions in the dataset's units of the property (QM9 from qm9pack:
``alpha`` bohr^3, ``homo``/``lumo``/``gap`` Ha, ``mu`` D, ``Cv`` cal/(mol K)).
Weights are a plain tensor state dict (``torch.save``), read back with
``torch.load(weights_only=True)``; the configuration and normalisation travel in JSON.

A second family (``PredictorConfig.family = "schnet"``: :mod:`metrics.schnet_predictor`,
continuous-filter convolutions on interatomic distances) trains, predicts and saves through
the same functions, so a conditional table can be judged twice (:data:`PREDICTOR_FAMILIES`).
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.io import atomic_path, atomic_write_json
from harness.core.nn import DenseEGNN, tune_cpu_allocator
from harness.core.types import MolBatch

__all__ = ["PREDICTOR_FAMILIES", "PREDICTOR_VERSION", "PredictorConfig", "PropertyPredictor",
           "build_predictor", "fit_predictor", "predict", "predict_batch", "save_predictor",
           "load_predictor", "mean_mad"]

#: predictor families (network kinds) that train through :func:`fit_predictor`
PREDICTOR_FAMILIES = ("egnn", "schnet")

#: bump when the network, features or training loop change: cached predictors become stale.
PREDICTOR_VERSION = 1


@dataclass
class PredictorConfig:
    """Size and training recipe of a predictor (EDM's defaults).

    Attributes:
        family: ``egnn`` (EDM's evaluator) or ``schnet`` (the second judge).
        hidden / layers / attention: width, message-passing (interaction) layers, attention
            gate (EGNN only).
        epochs / batch_size / lr / weight_decay: Adam + cosine annealing over ``epochs``.
        max_train: cap on training molecules (first ones of a seeded shuffle; None = all).
        max_val: cap on validation molecules used for model selection (None = all).
        eval_every: validate every k epochs (and after the last).
        seed: initialisation and shuffling.
        device: ``cpu``, ``cuda`` or ``auto``.
    """

    hidden: int = 128
    layers: int = 7
    attention: bool = True
    epochs: int = 1000
    batch_size: int = 96
    lr: float = 1e-3
    weight_decay: float = 1e-16
    max_train: int | None = None
    max_val: int | None = None
    eval_every: int = 1
    seed: int = 0
    device: str = "cpu"
    family: str = "egnn"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PredictorConfig":
        names = {f.name for f in fields(cls)}
        bad = sorted(set(values) - names)
        if bad:
            raise ValueError(f"predictor config: unknown keys {bad}; valid: {sorted(names)}")
        cfg = cls(**values)
        if min(cfg.hidden, cfg.layers, cfg.epochs, cfg.batch_size, cfg.eval_every) < 1:
            raise ValueError(f"predictor config: sizes must be >= 1, got {asdict(cfg)}")
        if cfg.family not in PREDICTOR_FAMILIES:
            raise ValueError(f"predictor config: family {cfg.family!r} is not one of "
                             f"{list(PREDICTOR_FAMILIES)}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class PropertyPredictor(nn.Module):
    """Invariant EGNN regressor: ``MolBatch -> [B]`` property values (dataset units).

    Args:
        n_types: element vocabulary size (one-hot width).
        hidden / layers / attention: see :class:`PredictorConfig`.
        mean / mad: target normalisation, dataset units (stored as buffers).
    """

    family = "egnn"

    def __init__(self, n_types: int, hidden: int = 128, layers: int = 7,
                 attention: bool = True, mean: float = 0.0, mad: float = 1.0):
        super().__init__()
        self.n_types = n_types
        self.egnn = DenseEGNN(n_types, hidden, hidden=hidden, layers=layers, sublayers=1,
                              edge_dim=1, coords=False, attention=attention, agg_norm=1.0)
        self.node_dec = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(),
                                      nn.Linear(hidden, hidden))
        self.graph_dec = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(),
                                       nn.Linear(hidden, 1))
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("mad", torch.tensor(float(mad)))

    def network_args(self) -> dict[str, Any]:
        """Constructor arguments saved beside the weights (``predictor.json``)."""
        return {"n_types": self.n_types, "hidden": self.egnn.hidden, "layers": len(self.egnn.blocks),
                "attention": self.egnn.blocks[0].gcls[0].att is not None}

    def normalised(self, atom_types: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor
                   ) -> torch.Tensor:
        """``atom_types: [B, N]`` long, ``pos: [B, N, 3]`` Å, ``mask: [B, N]`` bool ->
        ``[B]`` standardised predictions ``(y - mean) / mad``. Invariant to rotation,
        translation, reflection and atom order."""
        m = mask.to(pos.dtype)
        h = F.one_hot(atom_types.clamp(0, self.n_types - 1), self.n_types).to(pos.dtype)
        h = h * m[..., None]
        diff = pos[:, :, None, :] - pos[:, None, :, :]
        sq_dist = (diff * diff).sum(-1, keepdim=True)                      # [B, N, N, 1] Å^2
        h, _ = self.egnn(h, None, mask, edge_attr=sq_dist)
        h = self.node_dec(h) * m[..., None]
        return self.graph_dec(h.sum(1)).squeeze(-1)

    def forward(self, batch: MolBatch) -> torch.Tensor:
        """``[B]`` predictions in the dataset's units."""
        dev = self.mean.device
        z = self.normalised(batch.atom_types.to(dev), batch.pos.to(dev, torch.float32),
                            batch.mask.to(dev))
        return z * self.mad + self.mean


def build_predictor(network: dict[str, Any], mean: float = 0.0, mad: float = 1.0) -> nn.Module:
    """A predictor network from its saved arguments (:meth:`network_args`; no ``family``
    = EGNN, as written before the second family existed)."""
    args = {k: v for k, v in network.items() if k != "family"}
    family = network.get("family", "egnn")
    if family == "schnet":
        from metrics.schnet_predictor import SchNetPredictor

        return SchNetPredictor(**args, mean=mean, mad=mad)
    if family != "egnn":
        raise ValueError(f"unknown predictor family {family!r}; families: {list(PREDICTOR_FAMILIES)}")
    return PropertyPredictor(**args, mean=mean, mad=mad)


def mean_mad(values: np.ndarray) -> tuple[float, float]:
    """Mean and mean absolute deviation from the mean (EDM's ``compute_mean_mad``),
    ignoring NaN."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        raise ValueError("mean_mad: no finite values")
    mean = float(v.mean())
    mad = float(np.abs(v - mean).mean())
    return mean, mad if mad > 0 else 1.0


def _batches(n: int, batch_size: int, order: np.ndarray | None = None) -> Iterator[np.ndarray]:
    order = np.arange(n) if order is None else order
    for lo in range(0, n, batch_size):
        yield order[lo:lo + batch_size]


@torch.no_grad()
def predict_batch(model: PropertyPredictor, batch: MolBatch) -> np.ndarray:
    """``[B]`` float64 predictions (dataset units) for one padded batch."""
    was = model.training
    model.eval()
    try:
        return model(batch).double().cpu().numpy()
    finally:
        model.train(was)


def predict(model: PropertyPredictor, dataset, batch_size: int = 256) -> np.ndarray:
    """``[M]`` predictions for every molecule of a ``MolDataset`` (or anything with
    ``len`` and ``batch(index) -> MolBatch``), in order."""
    out = [predict_batch(model, dataset.batch(idx)) for idx in _batches(len(dataset), batch_size)]
    return np.concatenate(out) if out else np.zeros(0)


def _targets(dataset, prop: str) -> np.ndarray:
    if prop not in dataset.prop_names:
        raise KeyError(f"{dataset.name}: no property {prop!r}; properties: {list(dataset.prop_names)}")
    return np.asarray(dataset.packed.props[:, dataset.prop_names.index(prop)], np.float64)


def _finite_subset(dataset, prop: str, cap: int | None, seed: int):
    """Molecules of ``dataset`` with a finite ``prop`` (at most ``cap``, seeded choice)."""
    y = _targets(dataset, prop)
    keep = np.flatnonzero(np.isfinite(y))
    if cap is not None and len(keep) > cap:
        keep = np.sort(np.random.default_rng(seed).choice(keep, cap, replace=False))
    if not len(keep):
        raise ValueError(f"{dataset.name}: no molecule with a finite {prop!r}")
    sub = dataset if len(keep) == len(dataset) else dataset.subset(keep)
    return sub, y[keep]


def fit_predictor(train, val, prop: str, config: PredictorConfig,
                  progress: bool = False, log: Callable[[str], None] | None = None
                  ) -> tuple[PropertyPredictor, dict[str, Any]]:
    """Train a predictor for property ``prop`` on ``train``, selecting the epoch with the
    lowest MAE on ``val`` (both ``MolDataset``; EDM: ``Da`` and QM9-valid).

    Returns:
        ``(model, history)``; ``history`` has ``epochs`` (list of ``{epoch, train_loss,
        val_mae, seconds}``), ``best_epoch``, ``best_val_mae`` (dataset units),
        ``train_molecules``, ``seconds``, ``molecules_per_second`` (training throughput),
        ``mean``/``mad`` (normalisation from ``val``).
    """
    dev = _device(config.device)
    if dev.type == "cpu":
        tune_cpu_allocator()
    train, y_train = _finite_subset(train, prop, config.max_train, config.seed)
    val, y_val = _finite_subset(val, prop, config.max_val, config.seed + 1)
    mean, mad = mean_mad(y_val)
    torch.manual_seed(config.seed)
    network = {"n_types": len(train.elements), "hidden": config.hidden, "layers": config.layers}
    if config.family == "egnn":
        network["attention"] = config.attention
    model = build_predictor({**network, "family": config.family}, mean, mad).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    rng = np.random.default_rng(config.seed)
    y_norm = torch.as_tensor((y_train - mean) / mad, dtype=torch.float32)
    history: list[dict[str, Any]] = []
    best, best_state, best_epoch = math.inf, None, -1
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.epochs, desc=f"predictor {prop}", leave=False)
    t_start, t_train = time.perf_counter(), 0.0
    for epoch in range(config.epochs):
        model.train()
        t0 = time.perf_counter()
        total, count = 0.0, 0
        for idx in _batches(len(train), config.batch_size, rng.permutation(len(train))):
            b = train.batch(idx)
            pred = model.normalised(b.atom_types.to(dev), b.pos.to(dev, torch.float32),
                                    b.mask.to(dev))
            loss = F.l1_loss(pred, y_norm[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        sched.step()
        seconds = time.perf_counter() - t0
        t_train += seconds
        row: dict[str, Any] = {"epoch": epoch, "train_loss": total / max(count, 1),
                               "seconds": round(seconds, 3)}
        if (epoch + 1) % config.eval_every == 0 or epoch == config.epochs - 1:
            val_mae = float(np.mean(np.abs(predict(model, val) - y_val)))
            row["val_mae"] = val_mae
            if val_mae < best:
                best, best_epoch = val_mae, epoch
                best_state = copy.deepcopy(model.state_dict())
        history.append(row)
        if log is not None:
            log(f"predictor {prop} epoch {epoch}: loss {row['train_loss']:.4f}"
                + (f" val MAE {row['val_mae']:.4g}" if "val_mae" in row else ""))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", best_val=f"{best:.4g}")
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, {
        "epochs": history, "best_epoch": best_epoch, "best_val_mae": best,
        "train_molecules": len(train), "val_molecules": len(val),
        "seconds": round(time.perf_counter() - t_start, 2),
        "molecules_per_second": round(len(train) * config.epochs / max(t_train, 1e-9), 1),
        "mean": mean, "mad": mad,
    }


def save_predictor(directory: str | Path, model: PropertyPredictor, meta: dict[str, Any]) -> Path:
    """Write ``weights.pt`` (tensor state dict) and ``predictor.json`` (``meta`` plus the
    network's constructor arguments), both atomically. ``meta`` must hold ``config``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / "weights.pt", ".pt") as tmp:
        torch.save(state, tmp)
    net = model.network_args()
    atomic_write_json(directory / "predictor.json", {**meta, "network": net,
                                                     "predictor_version": PREDICTOR_VERSION})
    return directory


def load_predictor(directory: str | Path, device: str = "cpu"
                   ) -> tuple[PropertyPredictor, dict[str, Any]]:
    """Read a predictor written by :func:`save_predictor` (``weights_only=True``)."""
    directory = Path(directory)
    meta_path, weights = directory / "predictor.json", directory / "weights.pt"
    if not (meta_path.exists() and weights.exists()):
        raise FileNotFoundError(f"{directory}: not a predictor folder (needs predictor.json "
                                "and weights.pt)")
    meta = json.loads(meta_path.read_text())
    if meta.get("predictor_version") != PREDICTOR_VERSION:
        raise ValueError(f"{meta_path}: predictor version {meta.get('predictor_version')} != "
                         f"{PREDICTOR_VERSION} (retrain it)")
    model = build_predictor(meta["network"])
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model.to(_device(device)), meta
