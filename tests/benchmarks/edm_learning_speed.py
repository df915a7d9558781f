"""Learning speed side by side (issue #23, section 3): EDM's own training loop against the
harness's EDM-compatible configuration, same data, network and recipe.

A benchmark script, not a test (pytest does not collect it; CI never runs it). It imports
EDM (Hoogeboom et al., 2022, github.com/ehoogeboom/e3_diffusion_for_molecules, MIT) from the
checkout given on the command line; nothing of EDM is copied into the harness::

    mkdir -p /tmp/edm && git --git-dir=<mirror> archive HEAD | tar -x -C /tmp/edm
    OMP_NUM_THREADS=2 .venv/bin/python tests/benchmarks/edm_learning_speed.py /tmp/edm \\
        --steps 2000 --samples 500 --timesteps 500 --out /tmp/edm_speed.json

What each side runs:

* **EDM**: its ``EnVariationalDiffusion`` + ``EGNN_dynamics_QM9`` built by its
  ``qm9.models.get_model``, its optimiser (``get_optim``: AdamW, amsgrad, weight decay
  1e-12), and its ``train_test.train_epoch`` called once over ``--steps`` batches (its loss
  ``qm9.losses.compute_loss_and_nll``, its adaptive gradient clipping with the queue seeded
  at 3000 as ``main_qm9.py`` does, its EMA without warm-up). Its QM9 loaders download QM9,
  so the batches are built here from the harness's QM9 arrays exactly as EDM's
  ``PreprocessQM9.collate_fn`` builds them (positions, one-hot H C N O F, atomic numbers as
  ``charges [B, n, 1]``, ``atom_mask``, ``edge_mask`` without the diagonal, padding dropped to
  the batch's largest molecule). ``wandb`` and ``imageio`` (logging / GIFs only, not
  installed) are replaced by empty modules. Samples: its ``qm9.sampling.sample`` with the
  EMA model in batches of 100 (as its ``analyze_and_save``), atom counts from its
  ``DistributionNodes`` over the training subset's histogram.
* **harness**: the study config ``l3dg import edm`` writes for the same EDM arguments
  (``harness.importers.edm._config``: ``raw`` space with EDM's normalisation [1, 4, 10] and
  the charge feature, ``egnn_edm`` denoiser, ``polynomial_2``, eps prediction, same lr /
  batch / EMA / T), trained by ``LatentGenerator.fit`` (Lightning) on the same training
  molecules; sampled with the ``edm`` sampler (ancestral, T steps + ``p(x | z_0)``).

Both sides: the same QM9 training subset (``load_dataset("qm9", subset=...)`` train split),
same seed for their own randomness (not the same draws). Both are scored by the harness's
``edm/v1`` suite (EDM's QM9 rules) with the report's intervals (molecule stability and
validity: Wilson; atom stability: bootstrap over molecules, ``metrics.intervals``), and both
final EMA models get EDM's validation NLL (its VLB with ``- log p(N)``, one t per molecule)
on the same validation molecules -- EDM's ``compute_loss_and_nll`` for EDM, the harness's
parity-tested ``DiffusionGenerator.edm_nll`` for the harness -- a lower-noise learning signal
than stability at a few thousand steps. Steps per second: EDM = steps / wall time of its
``train_epoch`` call; harness = steps / the ``seconds`` ``fit`` reports (Lightning loop,
two checkpoints included).

``--side edm`` / ``--side harness`` runs one side (the JSON of a previous run given with
``--merge`` supplies the other row of the table). ``--harness-checkpoint`` samples a
previous run's trained harness generator instead of training one; ``--save-samples DIR``
keeps each side's molecules (``edm.npz`` / ``harness.npz``) and ``--rescore DIR`` scores
them again without training. EDM's side keeps its samples after every batch of 100 and its
training figures in ``<out>.edm.partial.json`` as soon as they exist, so a run cut during
its long sampling can still be scored (``--rescore``). Each row also gets the
samples' structure on EDM's distance bonds (fragments, one-fragment validity, over- and
under-valent atoms), which is what separates EDM's validity from its stability.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import platform
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

ELEMENTS = ("H", "C", "N", "O", "F")
CHARGES = torch.tensor([1, 6, 7, 8, 9])
EDM_SAMPLE_BATCH = 100          # EDM's analyze_and_save batch size


# -- recipe ------------------------------------------------------------------------------------
def edm_args(a: argparse.Namespace) -> argparse.Namespace:
    """EDM's ``main_qm9.py`` arguments for this run (its QM9 recipe, sizes from ``a``)."""
    return argparse.Namespace(
        exp_name="learning_speed", model="egnn_dynamics", probabilistic_model="diffusion",
        diffusion_steps=a.timesteps, diffusion_noise_schedule="polynomial_2",
        diffusion_noise_precision=1e-5, diffusion_loss_type="l2", batch_size=a.batch,
        lr=a.lr, clip_grad=True, condition_time=True, n_layers=a.layers, inv_sublayers=1,
        nf=a.hidden, tanh=True, attention=True, norm_constant=1, sin_embedding=False,
        ode_regularization=1e-3, dataset="qm9", remove_h=False, include_charges=True,
        normalize_factors=[1, 4, 10], normalization_factor=1, aggregation_method="sum",
        ema_decay=a.ema, augment_noise=0, data_augmentation=False, conditioning=[],
        context_node_nf=0, n_report_steps=a.report_every, test_epochs=10,
        visualize_every_batch=1e8, break_train_epoch=False, dp=False,
        n_stability_samples=a.samples, cuda=False)


# -- data --------------------------------------------------------------------------------------
def load_split(subset: int, split: str):
    from harness.core.data import load_dataset

    return load_dataset("qm9", subset=subset).split(split)


def histogram(ds) -> dict[int, int]:
    n, c = np.unique(ds.atom_counts, return_counts=True)
    return {int(k): int(v) for k, v in zip(n, c)}


def edm_collate(batch) -> dict[str, torch.Tensor]:
    """A harness ``MolBatch`` as EDM's ``PreprocessQM9.collate_fn`` returns a batch."""
    mask = batch.mask
    keep = mask.any(0)
    mask = mask[:, keep]
    types = batch.atom_types[:, keep]
    B, n = mask.shape
    charges = CHARGES[types] * mask
    edge = mask[:, None, :] & mask[:, :, None] & ~torch.eye(n, dtype=torch.bool)[None]
    return {"positions": batch.pos[:, keep].float() * mask[..., None],
            "one_hot": torch.nn.functional.one_hot(types, len(ELEMENTS)).bool() & mask[..., None],
            "charges": charges[..., None], "atom_mask": mask,
            "edge_mask": edge.reshape(B * n * n, 1)}


class EpochBatches:
    """``steps`` training batches: per-epoch permutations (numpy, seeded), EDM's collate."""

    def __init__(self, ds, batch_size: int, steps: int, seed: int):
        self.ds, self.bs, self.steps, self.seed = ds, batch_size, steps, seed

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        perm, pos = rng.permutation(len(self.ds)), 0
        for _ in range(self.steps):
            if pos + self.bs > len(perm):          # drop the last partial batch, new epoch
                perm, pos = rng.permutation(len(self.ds)), 0
            yield edm_collate(self.ds.batch(perm[pos:pos + self.bs]))
            pos += self.bs


# -- scoring -----------------------------------------------------------------------------------
def score(mol_batch, n_boot: int, seed: int) -> dict[str, Any]:
    """``edm/v1`` values with the report's 95 % intervals (Wilson; bootstrap for atoms), and
    the structure of the samples on EDM's distance bonds (:func:`structure`)."""
    from metrics.intervals import bootstrap_intervals, proportion_intervals
    from metrics.samples import Samples
    from metrics.suites import score_molecules

    samples = Samples.from_batch(mol_batch, bond_source="perceive")
    res = score_molecules(samples, suite="edm/v1", reference=None)
    values = {k: float(v) for k, v in dict(res).items()}
    iv = proportion_intervals(values, res.metadata)
    iv.update({k: v for k, v in bootstrap_intervals(samples, values, None, n_boot, seed).items()
               if k == "edm.atom_stability"})
    keys = ("edm.atom_stability", "edm.mol_stability", "edm.validity", "edm.valid_unique")
    return {k: {"value": values.get(k, math.nan), "interval": iv.get(k)} for k in keys} | {
        "n_molecules": len(samples), "structure": structure(samples)}


def structure(samples) -> dict[str, Any]:
    """What EDM's validity rule sees, on its own distance-table bonds (``qm9`` profile):
    fragments per molecule, the share of one-fragment molecules and of valid one-fragment
    ones (Wilson intervals), the largest fragment's share of the atoms, and the share of
    atoms above / below every valence EDM allows their element (RDKit sanitisation fails on
    the first; the second passes it, so fragmented, under-bonded samples count as valid)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from metrics.edm import EdmAnalysis, EdmMetric, tables
    from metrics.intervals import wilson

    analysis = EdmAnalysis(samples)
    valid = np.asarray(EdmMetric().analyse(samples)["valid"], bool)
    allowed = tables("qm9").allowed.numpy()                       # [Z, valence] bool
    columns = np.arange(allowed.shape[1])
    lowest = np.where(allowed.any(1), np.where(allowed, columns, 99).min(1), 0)
    highest = np.where(allowed, columns, -1).max(1)
    frags, largest, over, under, atoms, bonds = [], [], 0, 0, 0, 0
    for k in range(len(samples)):
        n, e = int(samples.counts[k]), analysis.edges[k]
        z = samples.numbers[samples.atoms(k)]
        graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
        count, label = connected_components(graph, directed=False)
        frags.append(count)
        largest.append(np.bincount(label).max())
        bonds += len(e)
        valence = np.bincount(e[:, 0], e[:, 2], n) + np.bincount(e[:, 1], e[:, 2], n)
        over += int((valence > highest[z]).sum())
        under += int((valence < lowest[z]).sum())
        atoms += n
    frags_a, largest_a = np.asarray(frags), np.asarray(largest)
    counts = np.asarray(samples.counts)
    m = len(frags_a)
    one = int((frags_a == 1).sum())
    valid_one = int((valid & (frags_a == 1)).sum())
    return {"fragments_mean": float(frags_a.mean()), "connected": one / m,
            "connected_interval": list(wilson(one, m)),
            "valid_connected": valid_one / m,
            "valid_connected_interval": list(wilson(valid_one, m)),
            "largest_fragment_share": float(np.mean(largest_a / counts)),
            "bonds_per_atom": bonds / atoms,
            "atoms_over_valent": over / atoms, "atoms_under_valent": under / atoms,
            # what the valid molecules are made of
            "valid_fragments_mean": float(frags_a[valid].mean()) if valid.any() else math.nan,
            "valid_largest_fragment_atoms": float(largest_a[valid].mean()) if valid.any() else math.nan,
            "valid_atoms_mean": float(counts[valid].mean()) if valid.any() else math.nan}


def load_samples(path: Path):
    """A ``MolBatch`` from a ``--save-samples`` file (atomic numbers -> H C N O F)."""
    from harness.core.types import MolBatch

    d = np.load(path)
    numbers, mask = torch.as_tensor(d["numbers"]), torch.as_tensor(d["mask"]).bool()
    lookup = torch.zeros(10, dtype=torch.long)
    lookup[CHARGES] = torch.arange(len(CHARGES))
    types = lookup[numbers.clamp(0, 9)] * mask
    return MolBatch(atom_types=types, pos=torch.as_tensor(d["pos"]).double() * mask[..., None],
                    mask=mask, elements=ELEMENTS, charges=torch.zeros_like(types), bonds=None)


def save_samples(mol_batch, path: Path | None) -> None:
    """The samples as ``npz`` (atomic numbers, positions Å, mask) for later analysis."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, numbers=mol_batch.numbers.numpy(), pos=mol_batch.pos.numpy(),
                            mask=mol_batch.mask.numpy())


def mol_batch_from_edm(one_hot, x, node_mask):
    from harness.core.types import MolBatch

    mask = node_mask[..., 0].bool().cpu()
    types = one_hot.float().argmax(-1).cpu() * mask
    return MolBatch(atom_types=types, pos=x.detach().double().cpu() * mask[..., None],
                    mask=mask, elements=ELEMENTS, charges=torch.zeros_like(types), bonds=None)


# -- EDM's side --------------------------------------------------------------------------------
def import_edm(root: Path):
    sys.path.insert(0, str(root))
    for name in ("wandb", "imageio"):        # logging / GIFs only; not installed here
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.log = mod.save = mod.init = lambda *a, **k: None
            sys.modules[name] = mod
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        import train_test  # noqa: F401
        import utils  # noqa: F401
        from configs.datasets_config import get_dataset_info  # noqa: F401
        from qm9 import losses, models, sampling  # noqa: F401


def run_edm(a, train, val) -> dict[str, Any]:
    import_edm(a.edm)
    import train_test
    import utils
    from configs.datasets_config import get_dataset_info
    from equivariant_diffusion import utils as flow_utils
    from qm9 import losses
    from qm9.models import get_model, get_optim
    from qm9.sampling import sample

    hist = histogram(train)
    args = edm_args(a)
    info = dict(get_dataset_info("qm9", False))
    info["n_nodes"] = hist                       # p(N) of the training subset, as the harness
    torch.manual_seed(a.seed)
    dev, dtype = torch.device("cpu"), torch.float32
    with contextlib.redirect_stdout(io.StringIO()):
        model, nodes_dist, prop_dist = get_model(args, dev, info, None)
    optim = get_optim(args, model)
    gradnorm_queue = utils.Queue()
    gradnorm_queue.add(3000)                     # main_qm9.py: flushed large first value
    model_ema = copy.deepcopy(model)
    ema = flow_utils.EMA(args.ema_decay)
    n_params = sum(p.numel() for p in model.parameters())
    loader = EpochBatches(train, a.batch, a.steps, a.seed)
    print(f"[edm] {n_params:,} parameters; training {a.steps} steps", flush=True)
    t0 = time.perf_counter()
    train_test.train_epoch(args=args, loader=loader, epoch=0, model=model, model_dp=model,
                           model_ema=model_ema, ema=ema, device=dev, dtype=dtype,
                           property_norms=None, nodes_dist=nodes_dist, dataset_info=info,
                           gradnorm_queue=gradnorm_queue, optim=optim, prop_dist=prop_dist)
    train_s = time.perf_counter() - t0
    print(f"\n[edm] trained {a.steps} steps in {train_s:.0f} s "
          f"({a.steps / train_s:.2f} steps/s)", flush=True)

    # validation NLL: EDM's evaluation mode (t0_always), its compute_loss_and_nll
    def val_nll(net) -> float:
        net.eval()
        torch.manual_seed(a.seed + 1)
        nll_sum, n_val = 0.0, 0
        with torch.no_grad():
            for k in range(0, a.val, 64):
                d = edm_collate(val.batch(np.arange(k, min(k + 64, a.val))))
                node_mask = d["atom_mask"].float()[..., None]
                x = flow_utils.remove_mean_with_mask(d["positions"], node_mask)
                h = {"categorical": d["one_hot"].float(), "integer": d["charges"].float()}
                nll, _, _ = losses.compute_loss_and_nll(args, net, nodes_dist, x, h, node_mask,
                                                        d["edge_mask"].float(), None)
                nll_sum += float(nll) * x.shape[0]
                n_val += x.shape[0]
        return nll_sum / n_val

    nll_ema, nll_raw = val_nll(model_ema), val_nll(model)
    print(f"[edm] validation NLL: EMA {nll_ema:.1f}, raw {nll_raw:.1f}", flush=True)
    trained = {"parameters": n_params, "train_seconds": train_s, "steps_per_s": a.steps / train_s,
               "val_nll": nll_ema, "val_nll_raw": nll_raw}
    if a.out:                                    # EDM's sampling is long: keep what exists
        a.out.with_suffix(".edm.partial.json").write_text(json.dumps(trained, indent=1))

    torch.manual_seed(a.seed + 2)
    parts = {"one_hot": [], "x": [], "node_mask": []}
    t0 = time.perf_counter()
    done = 0
    while done < a.samples:
        bs = min(EDM_SAMPLE_BATCH, a.samples - done)
        nodesxsample = nodes_dist.sample(bs)
        one_hot, _charges, x, node_mask = sample(args, dev, model_ema, info, prop_dist,
                                                nodesxsample=nodesxsample)
        for key, v in (("one_hot", one_hot), ("x", x), ("node_mask", node_mask)):
            parts[key].append(v.detach().cpu())
        done += bs
        print(f"[edm] sampled {done}/{a.samples} ({time.perf_counter() - t0:.0f} s)", flush=True)
        mols = mol_batch_from_edm(*(torch.cat(parts[k]) for k in parts))
        save_samples(mols, a.save_samples and a.save_samples / "edm.npz")  # a cut run: --rescore
    sample_s = time.perf_counter() - t0
    return {"side": "EDM's code", **trained, "sample_seconds": sample_s,
            "scores": score(mols, a.n_boot, a.seed)}


# -- the harness's side ------------------------------------------------------------------------
def harness_config(a, work: Path):
    from harness.importers.edm import _config

    args = vars(edm_args(a))
    return _config(args, "learning_speed", str(work),
                   {"dataset": "qm9", "options": {"subset": a.subset}})


def run_harness(a, train, val) -> dict[str, Any]:
    from generators import build_generator
    from harness.core.registry import SPACES

    work = Path(tempfile.mkdtemp(prefix="edm_speed_harness_"))
    config = harness_config(a, work)
    space = SPACES.get("raw")(ELEMENTS, **config.spaces["raw"])
    gen_cfg = config.generator_for("raw")
    gen = build_generator(space.spec, gen_cfg, seed=a.seed)
    n_params = sum(p.numel() for p in gen.denoiser.parameters())
    latents = space.encode(train.batch(np.arange(len(train))))
    print(f"[harness] {n_params:,} parameters; training {a.steps} steps "
          f"(grad_clip {gen_cfg.grad_clip}, ema {gen_cfg.ema_decay}, lr {gen_cfg.lr})", flush=True)
    if a.harness_checkpoint:     # a previous run's trained generator: sample and score it
        from generators import load_generator

        gen = load_generator(a.harness_checkpoint)
        stats = {"seconds": math.nan, "steps": a.steps, "final_loss": math.nan}
    else:
        stats = gen.fit(latents, None, out_dir=work / "generator", max_steps=a.steps,
                        progress=False)
    train_s = stats["seconds"]
    print(f"[harness] trained {stats['steps']} steps in {train_s:.0f} s "
          f"({stats['steps'] / train_s:.2f} steps/s)", flush=True)

    gen.eval()

    def val_nll(use_ema: bool) -> float:
        nll_sum, n_val = 0.0, 0
        for k in range(0, a.val, 64):
            lat = space.encode(val.batch(np.arange(k, min(k + 64, a.val))))
            z0 = torch.cat([lat.h, lat.x], -1)
            out = gen.edm_nll(z0, lat.mask, seed=a.seed + 1 + k, use_ema=use_ema)
            nll_sum += float(out["nll"].sum())
            n_val += z0.shape[0]
        return nll_sum / n_val

    nll_ema, nll_raw = val_nll(True), val_nll(False)
    print(f"[harness] validation NLL: EMA {nll_ema:.1f}, raw {nll_raw:.1f}", flush=True)

    t0 = time.perf_counter()
    lat = gen.sample(a.samples, sampler="edm", steps=a.timesteps, seed=a.seed + 2,
                     progress=False)
    sample_s = time.perf_counter() - t0
    print(f"[harness] sampled {a.samples} in {sample_s:.0f} s", flush=True)
    mols = space.decode(lat)
    save_samples(mols, a.save_samples and a.save_samples / "harness.npz")
    return {"side": "harness (egnn_edm)", "parameters": n_params, "train_seconds": train_s,
            "steps_per_s": stats["steps"] / train_s, "sample_seconds": sample_s,
            "final_loss": stats["final_loss"], "val_nll": nll_ema, "val_nll_raw": nll_raw,
            "scores": score(mols, a.n_boot, a.seed),
            "run_dir": str(a.harness_checkpoint or work)}


# -- table -------------------------------------------------------------------------------------
def pct(entry) -> str:
    v, iv = entry["value"], entry["interval"]
    if iv is None:
        return f"{100 * v:.1f}"
    return f"{100 * v:.1f} [{100 * iv[0]:.1f}, {100 * iv[1]:.1f}]"


def table(rows: list[dict], a) -> str:
    head = ("| side | atom stability % [95 %] | molecule stability % [95 %] | validity % [95 %] "
            "| val NLL EMA / raw (nats) | train steps/s | sampling s / molecule |")
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        s = r["scores"]
        lines.append(f"| {r['side']} | {pct(s['edm.atom_stability'])} | "
                     f"{pct(s['edm.mol_stability'])} | {pct(s['edm.validity'])} | "
                     f"{r['val_nll']:.1f} / {r['val_nll_raw']:.1f} | {r['steps_per_s']:.2f} | "
                     f"{r['sample_seconds'] / s['n_molecules']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("edm", type=Path, help="checkout of e3_diffusion_for_molecules")
    p.add_argument("--side", choices=("both", "edm", "harness"), default="both")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--timesteps", type=int, default=500, help="T (training and sampling)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--subset", type=int, default=26000, help="QM9 subset (train = ~76 %%)")
    p.add_argument("--val", type=int, default=1024, help="validation molecules for the NLL")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--report-every", type=int, default=100)
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    p.add_argument("--merge", type=Path, default=None, help="rows of a previous --out to add")
    p.add_argument("--save-samples", type=Path, default=None,
                   help="folder for each side's samples (edm.npz / harness.npz)")
    p.add_argument("--harness-checkpoint", type=Path, default=None,
                   help="the harness side samples this trained generator instead of training "
                        "(a previous run's <run_dir>/generator/checkpoints/step*.ckpt)")
    p.add_argument("--rescore", type=Path, default=None,
                   help="score the samples a --save-samples folder holds (no training) and exit")
    a = p.parse_args()
    if a.rescore:
        for path in sorted(a.rescore.glob("*.npz")):
            print(json.dumps({"side": path.stem, **score(load_samples(path), a.n_boot, a.seed)}))
        return
    a.edm = a.edm.resolve()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    train, val = load_split(a.subset, "train"), load_split(a.subset, "val")
    a.val = min(a.val, len(val))
    print(f"QM9 subset {a.subset}: {len(train)} training molecules, {a.val} validation; "
          f"{a.layers} x {a.hidden}, batch {a.batch}, lr {a.lr}, EMA {a.ema}, T {a.timesteps}, "
          f"seed {a.seed}, {torch.get_num_threads()} threads", flush=True)
    rows = []
    for side, run in (("edm", run_edm), ("harness", run_harness)):
        if a.side in ("both", side):
            rows.append(run(a, train, val))
            if a.out:                             # keep each row as soon as it exists
                a.out.with_suffix(f".{side}.json").write_text(json.dumps(rows[-1], indent=1))
    if a.merge:
        rows = json.loads(a.merge.read_text())["rows"] + rows
    recipe = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}
    recipe.update(threads=torch.get_num_threads(), torch=torch.__version__,
                  python=platform.python_version(), n_train=len(train),
                  finished=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    if a.out:
        a.out.write_text(json.dumps({"recipe": recipe, "rows": rows}, indent=1))
    print(json.dumps({"recipe": recipe, "rows": rows}, indent=1))
    print(table(rows, a))


if __name__ == "__main__":
    main()
