"""The ``probes`` stage: three controls the field is missing (#26.1-3), in ``probes.json``.

* **interpolation** ("dark-area rate") — decode :data:`POINTS` evenly spaced interior points
  on the path between the latents of :data:`PAIRS` pairs of test molecules: the straight line
  and, for vector latents, the spherical path (slerp about the training latents' mean, for
  Gaussian-like latents). Per-atom latents (``raw``, ``per_atom``) are interpolated only
  between test molecules of the same composition, after atom matching (per element,
  Hungarian on distances) and Kabsch alignment of the second onto the first (the latent's
  coordinate channels rotate with the molecule; its features do not); a space with no such
  pair says so. Scored: valid and connected (``rdkit.valid_connected``), EDM validity and
  molecule stability, with Wilson intervals (interpolants of one pair are not independent:
  the intervals are optimistic).
* **noise restart** — noise :data:`RESTART_N` test latents to ``t`` in :data:`RESTART_T` of the
  schedule (``z_t = alpha_t z_0 + sigma_t eps`` in the generator's normalised space),
  denoise with the trained generator (deterministic DDIM, ``ceil(t x sampling.steps)``
  steps), decode and score with the study's suite. ``t = 1`` is a fresh sample; small ``t``
  approaches the reconstruction row. Diffusion family only (a flow generator says so).
* **memorisation** — share of valid samples whose canonical SMILES is in the training set,
  and of those, share with a training conformer within :data:`RMSD_MAX` Å heavy-atom RMSD
  (best alignment, symmetry-aware); vector latents: nearest-neighbour Euclidean distance
  of sample latents to training latents vs training latents to the other training latents
  (mean, percentile-bootstrap 95 % interval over molecules).

Everything is seeded from the study seed on private generators; the global RNG state is
restored, so later stages see what they would have without this one.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.core.io import atomic_write_json
from harness.study.context import StudyContext

VERSION = "probes/v1"
PAIRS, POINTS = 4, 5                  # interpolation: pairs of test molecules, interior points
RESTART_T = (0.1, 0.25, 0.5, 0.75, 1.0)
RESTART_N = 16                        # test latents per restart level
RMSD_MAX = 0.5                        # Å, "the same conformer"
NN_TRAIN = 512                        # training latents in the nearest-neighbour control
SEARCH = 200                          # test molecules searched for same-composition pairs
KEYS = ("quality", "edm.validity", "rdkit.valid_connected", "edm.mol_stability",
        "edm.atom_stability")


def _summary(values: dict, intervals: dict, n: int) -> dict[str, Any]:
    return {"n": n, "values": {k: values.get(k) for k in KEYS if k in values},
            "intervals": {k: intervals.get(k) for k in KEYS if k in intervals}}


def _score(study: StudyContext, decoded) -> dict[str, Any]:
    from harness.study.scoring import score_batch

    values, intervals, meta = score_batch(study, decoded)
    return _summary(values, intervals, int(meta["counts"]["molecules"]))


# -- interpolation ----------------------------------------------------------------------------
def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation of two vectors (linear when they are nearly parallel)."""
    na, nb = a.norm(), b.norm()
    cos = torch.clamp((a @ b) / (na * nb).clamp_min(1e-12), -1.0, 1.0)
    omega = torch.arccos(cos)
    if float(omega) < 1e-4:
        return (1 - w) * a + w * b
    return (torch.sin((1 - w) * omega) * a + torch.sin(w * omega) * b) / torch.sin(omega)


def match_atoms(za: np.ndarray, xa: np.ndarray, zb: np.ndarray, xb: np.ndarray,
                rounds: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``(perm, R)``: atom ``i`` of A matches atom ``perm[i]`` of B (same element), and
    ``R`` rotates B's centred coordinates onto A's (Kabsch), alternating Hungarian matching
    on distances and alignment."""
    from scipy.optimize import linear_sum_assignment

    from harness.core.geometry import kabsch_rotation

    xa, xb = xa - xa.mean(0), xb - xb.mean(0)
    R = np.eye(3)
    perm = np.arange(len(za))
    for _ in range(rounds):
        rb = xb @ R.T
        for el in np.unique(za):
            ia, ib = np.where(za == el)[0], np.where(zb == el)[0]
            cost = ((xa[ia, None] - rb[None, ib]) ** 2).sum(-1)
            r, c = linear_sum_assignment(cost)
            perm[ia[r]] = ib[c]
        src, tgt = torch.as_tensor(xb[perm])[None], torch.as_tensor(xa)[None]
        R = kabsch_rotation(src, tgt, torch.ones(1, len(za), dtype=torch.bool))[0].numpy()
    return perm, R


def _pairs_same_composition(test, n_pairs: int) -> list[tuple[int, int]]:
    seen: dict[tuple, int] = {}
    pairs: list[tuple[int, int]] = []
    for i in range(min(SEARCH, len(test))):
        key = tuple(sorted(test.packed.record(i).numbers.tolist()))
        if key in seen:
            pairs.append((seen.pop(key), i))
            if len(pairs) == n_pairs:
                break
        else:
            seen[key] = i
    return pairs


def interpolants(space, test, train_latents, n_pairs: int = PAIRS, points: int = POINTS
                 ) -> tuple[dict[str, Any], str | None]:
    """``({path: LatentBatch}, reason)``: the interpolated latents per path (``linear``,
    ``spherical``), or a reason why none could be made."""
    from harness.core.types import LatentBatch

    ws = [(k + 1) / (points + 1) for k in range(points)]
    spec = space.spec
    if spec.kind == "vector":
        idx = np.arange(min(2 * n_pairs, len(test)) // 2 * 2)
        if len(idx) < 2:
            return {}, "fewer than two test molecules"
        with torch.no_grad():
            z = space.encode(test.batch(idx)).h.float()
        mean = train_latents.h.float().mean(0)
        lin, sph = [], []
        for a, b in zip(z[0::2], z[1::2]):
            for w in ws:
                lin.append((1 - w) * a + w * b)
                sph.append(mean + slerp(a - mean, b - mean, w))
        return {p: LatentBatch(h=torch.stack(v), x=None, mask=None, spec=spec)
                for p, v in (("linear", lin), ("spherical", sph))}, None
    pairs = _pairs_same_composition(test, n_pairs)
    if not pairs:
        return {}, (f"no two of the first {SEARCH} test molecules share a composition, so no "
                    "atom matching exists between per-atom latents")
    hs, xs, masks = [], [], []
    for i, j in pairs:
        ra, rb = test.packed.record(i), test.packed.record(j)
        perm, R = match_atoms(ra.numbers, ra.pos, rb.numbers, rb.pos)
        with torch.no_grad():
            la, lb = space.encode(test.batch([i])), space.encode(test.batch([j]))
        n = int(la.mask[0].sum())
        ha, hb = la.h[0, :n].float(), lb.h[0, :n][perm].float()
        Rt = torch.as_tensor(R, dtype=torch.float32)
        xa = None if la.x is None else la.x[0, :n].float()
        xb = None if lb.x is None else (lb.x[0, :n][perm].float() - lb.x[0, :n].float().mean(0)) @ Rt.T
        for w in ws:
            hs.append((1 - w) * ha + w * hb)
            if xa is not None:
                x = (1 - w) * (xa - xa.mean(0)) + w * xb
                xs.append(x - x.mean(0))
            masks.append(torch.ones(n, dtype=torch.bool))
    N = max(len(m) for m in masks)
    pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, N - t.shape[0]))  # noqa: E731
    h = torch.stack([pad(t) for t in hs])
    x = torch.stack([pad(t) for t in xs]) if xs else None
    mask = torch.stack([torch.nn.functional.pad(m, (0, N - len(m))) for m in masks])
    return {"linear": LatentBatch(h=h, x=x, mask=mask, spec=spec)}, None


# -- noise restart ----------------------------------------------------------------------------
@torch.no_grad()
def restart_latents(gen, latents, t_frac: float, steps: int, seed: int):
    """Test latents noised to ``t_frac`` of the schedule and denoised by ``gen`` (DDIM,
    ``steps`` evaluations from ``round(t_frac T)`` to 0), as a LatentBatch."""
    lay, dev, T = gen.layout, gen.device, gen.schedule.T
    z0, mask = lay.from_batch(latents)
    z0 = gen.normalize(z0.to(dev).float(), None if mask is None else mask.to(dev))
    mask = None if mask is None else mask.to(dev)
    g = torch.Generator(device=dev).manual_seed(int(seed) * 7919 + 303)
    t0 = max(1, int(round(t_frac * T)))
    eps = lay.noise(tuple(z0.shape), mask, g, dev, z0.dtype)
    B = z0.shape[0]
    z = lay.project(gen.schedule.add_noise(z0, eps, torch.full((B,), t0, device=dev)), mask)
    ts = np.unique(np.linspace(t0, 0, max(1, steps) + 1).round().astype(int))[::-1]
    for t, s in zip(ts[:-1], ts[1:]):
        e, x0 = gen.predict(z, int(t), mask)
        a_s, s_s = gen.schedule.alpha(int(s)), gen.schedule.sigma(int(s))
        z = lay.project(float(a_s) * x0 + float(s_s) * e, mask)
    z = gen.normalizer.denormalize(z, mask)
    if gen.spec.bounded:
        z[..., :lay.feat] = z[..., :lay.feat].clamp(-1, 1)
        z = lay.project(z, mask)
    return lay.to_batch(z.cpu(), None if mask is None else mask.cpu())


# -- memorisation -----------------------------------------------------------------------------
def _canonical(smiles: str | None) -> str | None:
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles) if smiles else None
    return Chem.MolToSmiles(mol) if mol is not None else None


def _mean_ci(x: np.ndarray, seed: int, n_boot: int = 200) -> dict[str, Any]:
    if not len(x):
        return {"mean": None, "interval": None, "n": 0}
    rng = np.random.default_rng(seed)
    boots = [float(rng.choice(x, len(x)).mean()) for _ in range(n_boot)]
    return {"mean": float(x.mean()), "interval": [float(np.percentile(boots, 2.5)),
                                                  float(np.percentile(boots, 97.5))], "n": int(len(x))}


def memorisation(study: StudyContext, space, directory: Path) -> dict[str, Any]:
    """The memorisation control (see the module docstring)."""
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign

    from harness.core.chem import read_sdf, record_to_mol
    from harness.results.state import load_latents
    from metrics.intervals import wilson

    train = study.split("train")
    index: dict[str, list[int]] = {}
    for i, s in enumerate(train.smiles):
        c = _canonical(s)
        if c:
            index.setdefault(c, []).append(i)
    records, _ = read_sdf(directory / "samples.sdf", perceive_missing_bonds=False)
    valid, copies, conformers, rms_checked = 0, 0, 0, 0
    for record, _props in records:
        try:
            mol = record_to_mol(record)
            Chem.SanitizeMol(mol)
            smi = _canonical(Chem.MolToSmiles(mol))
        except Exception:          # an unsanitisable sample is not valid
            continue
        if not smi or "." in smi:
            continue
        valid += 1
        if smi not in index:
            continue
        copies += 1
        if rms_checked >= 20:       # cap the 3D check (best RMSD is costly on symmetric molecules)
            continue
        rms_checked += 1
        probe = Chem.RemoveHs(mol)
        best = math.inf
        for i in index[smi][:3]:
            ref = Chem.RemoveHs(record_to_mol(train.packed.record(i)), sanitize=False)
            try:
                best = min(best, rdMolAlign.GetBestRMS(Chem.Mol(probe), ref))
            except Exception:      # no atom mapping (charges, aromaticity): not the same conformer
                continue
        conformers += best <= RMSD_MAX
    out: dict[str, Any] = {
        "valid": valid, "in_train": copies,
        "share_in_train": copies / valid if valid else None,
        "interval": list(wilson(copies, valid)) if valid else None,
        "conformer_checked": rms_checked, "conformer_within": conformers,
        "share_conformer": conformers / rms_checked if rms_checked else None,
        "conformer_interval": list(wilson(conformers, rms_checked)) if rms_checked else None,
        "rmsd_max": RMSD_MAX}
    latents = directory / "samples.latents.pt"
    if space.spec.kind != "vector" or not latents.exists():
        out["latent_nn"] = {"skipped": "per-atom latents of different sizes have no common "
                                       "distance" if space.spec.kind != "vector" else "no samples.latents.pt"}
        return out
    tr = load_latents(directory / "latents.pt", space.spec).h.float()
    g = torch.Generator().manual_seed(int(study.config.seed) * 7919 + 404)
    tr = tr[torch.randperm(len(tr), generator=g)[:NN_TRAIN]]
    smp = load_latents(latents, space.spec).h.float()
    d_s = torch.cdist(smp, tr).min(1).values.numpy()
    d_tt = torch.cdist(tr, tr)
    d_tt.fill_diagonal_(math.inf)
    d_t = d_tt.min(1).values.numpy()
    out["latent_nn"] = {"samples_to_train": _mean_ci(d_s, study.config.seed),
                        "train_to_train": _mean_ci(d_t, study.config.seed + 1),
                        "train_latents": int(len(tr))}
    return out


# -- the stage --------------------------------------------------------------------------------
def run_probes(study: StudyContext, name: str, space, directory: Path) -> dict[str, Any]:
    """The ``probes`` stage: ``probes.json`` (see the module docstring)."""
    from harness.results.state import load_latents

    state = torch.random.get_rng_state()
    np_state = np.random.get_state()
    try:
        out: dict[str, Any] = {"version": VERSION, "seconds": {}}
        test = study.split("test")
        t0 = time.perf_counter()
        paths, reason = interpolants(space, test, load_latents(directory / "latents.pt", space.spec))
        out["interpolation"] = {"pairs": PAIRS, "points": POINTS, "reason": reason,
                                "paths": {p: _score(study, space.decode(z)) for p, z in paths.items()}}
        out["seconds"]["interpolation"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        gen = study.load_generator(name)
        if getattr(gen, "family", None) != "diffusion" or not hasattr(gen, "schedule"):
            out["restart"] = {"reason": f"noise restart needs a diffusion schedule; this "
                                        f"generator is {getattr(gen, 'family', '?')}"}
        else:
            n = min(RESTART_N, len(test))
            with torch.no_grad():
                latents = space.encode(test.batch(np.arange(n)))
            steps = study.config.sampling.steps or 50
            out["restart"] = {"n": n, "levels": {
                str(t): _score(study, space.decode(restart_latents(
                    gen, latents, t, math.ceil(t * steps), study.config.seed)))
                for t in RESTART_T}}
        out["seconds"]["restart"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        out["memorisation"] = memorisation(study, space, directory)
        out["seconds"]["memorisation"] = round(time.perf_counter() - t0, 2)
    finally:
        torch.random.set_rng_state(state)
        np.random.set_state(np_state)
    atomic_write_json(directory / "probes.json", out)
    return {"probes": VERSION, "seconds": out["seconds"]}
