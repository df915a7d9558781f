"""EGNN speed against EDM's own code, interleaved in one process (issue #29).

    L3DG_EDM_CODE=/path/to/e3_diffusion_for_molecules \\
    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=ACTIVE .venv/bin/python -m pytest \\
        tests/benchmarks/test_bench_edm_side_by_side.py --benchmark-only --benchmark-enable \\
        -p no:cacheprovider -s

or, for the table only, ``python tests/benchmarks/test_bench_edm_side_by_side.py EDM_DIR``.
Skipped when ``L3DG_EDM_CODE`` is unset. EDM (github.com/ehoogeboom/e3_diffusion_for_molecules,
MIT) is imported from that path and run as it is; nothing of it is copied here.

Both sides get the same network (EDM's QM9 settings at the given size: 1 GCL per block,
attention, tanh updates, coords_range 15, norm_constant 1, sum aggregation / 1, time as a node
feature, include_charges: 6 features), the same weights (EDM's state dict mapped by the
importer), the same batch of 64 QM9-like molecules and the same optimiser (AdamW, lr 1e-4,
amsgrad, EDM's settings). *train* = the loss (EDM: its ``EnVariationalDiffusion`` forward in
training mode; harness: ``DiffusionGenerator.diffusion_loss``) + backward + gradient clipping
+ optimiser step; *reverse* = one ancestral step (EDM: ``sample_p_zs_given_zt``; harness:
``predict`` + the ``ddpm`` sampler's step) under ``no_grad``. Steps alternate A, B, A, B ...
so both see the same machine; each side reports the median molecules/s and its min..max
spread, and the ratio of medians. Both run with the harness's allocator setting
(:func:`harness.core.nn.tune_cpu_allocator`), which is process-wide.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import pytest
import torch

B = 64
SIZES = [(4, 64), (6, 128), (9, 256)]
ROUNDS = {64: 40, 128: 20, 256: 6}
EDM_CODE = os.environ.get("L3DG_EDM_CODE")
CHARGES = torch.tensor([1.0, 6.0, 7.0, 8.0, 9.0])


def qm9_batch(seed: int = 0):
    """64 QM9-like molecules (``test_bench_generators.qm9_like`` with 5 types): ``(onehot
    [B, N, 5], charges [B, N, 1], x [B, N, 3], mask [B, N])``, positions zero-CoM in Angstrom."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_generators", Path(__file__).with_name("test_bench_generators.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    onehot, x, mask = mod.qm9_like(B, seed=seed, feat=5)
    m = mask[..., None].float()
    x = (x - (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)) * m
    return onehot, (onehot @ CHARGES)[..., None], x, mask


def edm_model(edm_root: str, layers: int, hidden: int, T: int = 1000):
    """EDM's EGNN dynamics + EnVariationalDiffusion with its QM9 settings at this size."""
    if edm_root not in sys.path:
        sys.path.insert(0, edm_root)
    from egnn.models import EGNN_dynamics_QM9
    from equivariant_diffusion import en_diffusion

    dyn = EGNN_dynamics_QM9(in_node_nf=7, context_node_nf=0, n_dims=3, hidden_nf=hidden,
                            act_fn=torch.nn.SiLU(), n_layers=layers, attention=True, tanh=True,
                            mode="egnn_dynamics", norm_constant=1, inv_sublayers=1,
                            sin_embedding=False, normalization_factor=1,
                            aggregation_method="sum")
    return en_diffusion.EnVariationalDiffusion(
        dynamics=dyn, in_node_nf=6, n_dims=3, timesteps=T, noise_schedule="polynomial_2",
        noise_precision=1e-5, loss_type="l2", norm_values=[1, 4, 10], include_charges=True)


def harness_generator(edm, layers: int, hidden: int, T: int = 1000, layout: str = "pairs"):
    """The harness's EDM-compatible generator (``egnn_edm``, polynomial_2, the given pair
    ``layout``) with EDM's weights."""
    from generators import DiffusionGenerator
    from harness.core.types import LatentSpec
    from harness.importers.edm_weights import edm_to_harness_state_dict

    spec = LatentSpec("per_atom", 6, has_coords=True)
    gen = DiffusionGenerator(spec, denoiser="egnn_edm",
                             denoiser_kwargs=dict(layers=layers, hidden=hidden, layout=layout),
                             schedule="polynomial_2", timesteps=T)
    gen.denoiser.load_state_dict(edm_to_harness_state_dict(edm.state_dict(), 6))
    return gen


def _optimiser(params):
    return torch.optim.AdamW(params, lr=1e-4, amsgrad=True, weight_decay=1e-12)


def edm_steps(edm_root: str, edm, batch):
    """``(train_step, reverse_step)`` closures running EDM's code."""
    import utils as edm_utils   # EDM's, on sys.path since edm_model()

    onehot, charges, x, mask = batch
    node_mask = mask[..., None].float()
    Bn, N = mask.shape
    edge = (mask[:, :, None] & mask[:, None, :]) & ~torch.eye(N, dtype=torch.bool)[None]
    edge_mask = edge.reshape(Bn, N * N).float()
    h = {"categorical": onehot, "integer": charges}
    opt = _optimiser(edm.parameters())
    queue = edm_utils.Queue()
    queue.add(3000)      # EDM's main_qm9.py seeds the gradient-norm queue with 3000

    def train():
        edm.train()
        opt.zero_grad()
        nll = edm(x, h, node_mask, edge_mask, None).mean(0)
        nll.backward()
        edm_utils.gradient_clipping(edm, queue)
        opt.step()

    z = edm.sample_combined_position_feature_noise(Bn, N, node_mask)
    t = torch.full((Bn, 1), 0.5)
    s = t - 1.0 / edm.T

    def reverse():
        edm.eval()
        with torch.no_grad():
            edm.sample_p_zs_given_zt(s, t, z, node_mask, edge_mask, None)
    return train, reverse


def harness_steps(gen, batch):
    """``(train_step, reverse_step)`` closures running the harness's generator."""
    from generators.families.diffusion.samplers import make_sampler

    onehot, charges, x, mask = batch
    h = torch.cat([onehot, charges], -1)
    z0 = gen.layout.project(gen.layout.pack(h, x), mask)
    g = torch.Generator().manual_seed(1)
    opt = _optimiser(gen.denoiser.parameters())

    def train():
        gen.denoiser.train()
        loss = gen.diffusion_loss(gen.denoiser, z0, mask, None, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.denoiser.parameters(), 1.0)
        opt.step()

    smp = make_sampler("ddpm", gen.schedule)
    z = gen.layout.noise(tuple(z0.shape), mask, g)
    t, s = smp.pairs()[len(smp.pairs()) // 2]

    def reverse():
        gen.denoiser.eval()
        with torch.no_grad():
            eps, x0 = gen.predict(z, t, mask, use_ema=False)
            noise = gen.layout.noise(tuple(z.shape), mask, g)
            smp.step(z, t, s, eps=eps, x0=x0, noise=noise)
    return train, reverse


def interleave(*fns, rounds: int, warmup: int = 2) -> list[list[float]]:
    """Time ``fns`` in turn, A, B, (C,) A, B, ... (``rounds`` each, after ``warmup`` untimed
    turns) -> one list of seconds per function."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return times


def summary(times: list[float]) -> dict:
    """Molecules/s: median and min..max over the rounds."""
    rates = sorted(B / t for t in times)
    return {"median": round(statistics.median(rates), 1), "min": round(rates[0], 1),
            "max": round(rates[-1], 1)}


def compare(edm_root: str, layers: int, hidden: int, mode: str, rounds: int,
            layouts: tuple[str, ...] = ("pairs",)) -> dict:
    """One interleaved comparison of EDM's code and the harness in each pair ``layout``
    -> ``{"edm": summary, "harness": summary, "ratio": float}`` for the first layout, plus
    ``"harness_<layout>"`` / ``"ratio_<layout>"`` for every layout."""
    from harness.core.nn import tune_cpu_allocator

    tune_cpu_allocator()
    torch.manual_seed(0)
    batch = qm9_batch()
    edm = edm_model(edm_root, layers, hidden)
    steps = [edm_steps(edm_root, edm, batch)]
    steps += [harness_steps(harness_generator(edm, layers, hidden, layout=lay), batch)
              for lay in layouts]
    times = interleave(*(st[0 if mode == "train" else 1] for st in steps), rounds=rounds)
    res: dict = {"edm": summary(times[0])}
    for lay, t in zip(layouts, times[1:]):
        res[f"harness_{lay}"] = summary(t)
        res[f"ratio_{lay}"] = round(res[f"harness_{lay}"]["median"] / res["edm"]["median"], 2)
    res["harness"], res["ratio"] = res[f"harness_{layouts[0]}"], res[f"ratio_{layouts[0]}"]
    return res


@pytest.mark.skipif(not EDM_CODE, reason="set L3DG_EDM_CODE to a checkout of EDM's code")
@pytest.mark.parametrize("size", SIZES, ids=[f"{l}x{h}" for l, h in SIZES])
@pytest.mark.parametrize("mode", ["train", "reverse"])
def test_egnn_vs_edm_interleaved(benchmark, size, mode):
    benchmark.group = f"egnn vs EDM's code, {mode}, interleaved (64 QM9-like molecules)"
    out = {}

    def run():
        out.update(compare(EDM_CODE, *size, mode, ROUNDS[size[1]], ("pairs", "dense")))
    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(out, threads=torch.get_num_threads(),
                                load_avg=os.getloadavg()[0])
    print(f"\n{size[0]}x{size[1]} {mode}: {out}")


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="EGNN vs EDM's code, interleaved")
    p.add_argument("edm", help="checkout of e3_diffusion_for_molecules")
    p.add_argument("--sizes", default="4x64,6x128,9x256")
    p.add_argument("--modes", default="train,reverse")
    p.add_argument("--rounds", type=int, default=0, help="0: per-size default")
    p.add_argument("--layouts", default="pairs",
                   help="the harness's pair layouts, interleaved with EDM (pairs, dense)")
    args = p.parse_args()
    layouts = tuple(args.layouts.split(","))
    print(f"threads {torch.get_num_threads()}, OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print("| size | mode | EDM median (min..max) | "
          + " | ".join(f"harness {lay} median (min..max) | ratio" for lay in layouts) + " |")
    print("|---|---|---|" + "---|---|" * len(layouts))
    for size in args.sizes.split(","):
        layers, hidden = map(int, size.split("x"))
        for mode in args.modes.split(","):
            r = compare(str(Path(args.edm).resolve()), layers, hidden, mode,
                        args.rounds or ROUNDS[hidden], layouts)
            e = r["edm"]
            cells = [f"{r['harness_' + lay]['median']} ({r['harness_' + lay]['min']}.."
                     f"{r['harness_' + lay]['max']}) | {r['ratio_' + lay]}x" for lay in layouts]
            print(f"| {size} | {mode} | {e['median']} ({e['min']}..{e['max']}) | "
                  + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
