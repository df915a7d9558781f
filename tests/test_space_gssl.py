"""Graph self-supervision (``gssl_weight``) of the autoencoder spaces: the augmentations, the
InfoNCE term, that it is present and trainable, and that weight 0 changes nothing."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.core.registry import SPACES
from spaces._geometry import GeometryAutoencoder, GeometryBatch
from spaces._regularizers import GSSL_DROP, drop_nodes, drop_tokens, info_nce
from spaces._topology import EOS_ID, TopologyAutoencoder

torch.set_num_threads(1)


def test_node_dropping_removes_a_fifth_of_each_molecule_and_keeps_one():
    torch.manual_seed(0)
    mask = torch.zeros(4, 12, dtype=torch.bool)
    for b, n in enumerate((12, 10, 4, 1)):
        mask[b, :n] = True
    view = drop_nodes(mask)
    assert not (view & ~mask).any()
    assert view.sum(1).tolist() == [12 - math.floor(GSSL_DROP * 12), 10 - 2, 4, 1]


def test_token_dropping_keeps_bos_eos_and_order():
    torch.manual_seed(1)
    tokens = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 2], [1, 5, 6, 2, 0, 0, 0, 0, 0, 0, 0, 0]])
    view = drop_tokens(tokens, EOS_ID)
    row = view[0][view[0] != 0].tolist()
    assert row[0] == 1 and row[-1] == EOS_ID and len(row) == 12 - 2
    assert row[1:-1] == sorted(row[1:-1]) and set(row) <= set(tokens[0].tolist())
    assert torch.equal(view[1], tokens[1])            # 2 body tokens: floor(0.4) = 0 dropped


def test_info_nce_rewards_matching_views():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 8, generator=g)
    assert info_nce(z, z) < info_nce(z, torch.randn(16, 8, generator=g))
    assert info_nce(z[:1], z[:1]) == 0.0


@pytest.fixture(scope="module")
def batch(qm9_sample):
    return qm9_sample.split("train").batch(np.arange(32))


def test_geometry_and_topology_terms_are_present_and_decrease(batch):
    torch.manual_seed(0)
    geo = GeometryAutoencoder(5, 8, 16, 2, gssl_weight=1.0)
    gb = GeometryBatch(batch.atom_types, batch.charges, batch.bonds, batch.mask, batch.pos, batch.pos)
    geo.eval()
    assert "gssl" not in geo.loss(gb)                 # training only
    values = []
    opt = torch.optim.Adam(geo.parameters(), lr=3e-3)
    geo.train()
    for _ in range(20):
        torch.manual_seed(0)
        out = geo.loss(gb)
        values.append(float(out["gssl"]))
        z = geo.encode(gb.atom_types, gb.charges, gb.bonds, gb.pos, gb.mask)
        torch.manual_seed(0)
        term = info_nce(z, geo.encode(gb.atom_types, gb.charges, gb.bonds, gb.pos, drop_nodes(gb.mask)))
        opt.zero_grad()
        term.backward()
        opt.step()
    print(f"\ngssl {values[0]:.3f} -> {values[-1]:.3f} (chance: log 32 = 3.466, log 16 = 2.773)")
    assert values[-1] < values[0] - 0.1, values

    torch.manual_seed(0)
    topo = TopologyAutoencoder(20, 8, 16, 1, gssl_weight=1.0)
    tokens = torch.randint(4, 20, (16, 10))
    tokens[:, 0], tokens[:, -1] = 1, EOS_ID
    topo.train()
    opt = torch.optim.Adam(topo.parameters(), lr=3e-3)
    values = []
    for _ in range(20):
        torch.manual_seed(0)
        out = topo.loss(type("T", (), {"tokens": tokens})())
        values.append(float(out["gssl"]))
        torch.manual_seed(0)
        term = info_nce(topo.encode(tokens), topo.encode(drop_tokens(tokens, EOS_ID)))
        opt.zero_grad()
        term.backward()
        opt.step()
    print(f"\ngssl {values[0]:.3f} -> {values[-1]:.3f} (chance: log 32 = 3.466, log 16 = 2.773)")
    assert values[-1] < values[0] - 0.1, values


FAST = {"flat": {"width": 8, "hidden": 32, "layers": 1, "epochs": 2, "batch_size": 32},
        "per_atom": {"k": 2, "hidden": 16, "layers": 1, "epochs": 1, "batch_size": 32}}


@pytest.mark.parametrize("name", sorted(FAST))
def test_zero_weight_is_identical_and_a_weight_adds_the_term(name, qm9_sample):
    train, test = qm9_sample.split("train"), qm9_sample.split("test").batch(np.arange(8))

    def fit(**extra):
        space = SPACES.get(name)(qm9_sample.elements, **FAST[name], **extra)
        space.fit(train, None, progress=False)
        return space

    default, zero, on = fit(), fit(gssl_weight=0.0), fit(gssl_weight=1e-3)
    assert torch.equal(default.encode(test).flat(), zero.encode(test).flat())
    assert default.fit_stats["history"] == zero.fit_stats["history"]
    assert "gssl" not in default.fit_stats["history"][-1]
    assert math.isfinite(on.fit_stats["history"][-1]["gssl"])
    assert not torch.equal(default.encode(test).flat(), on.encode(test).flat())


def test_zero_weight_networks_of_the_invariant_space_are_unchanged(batch):
    gb = GeometryBatch(batch.atom_types, batch.charges, batch.bonds, batch.mask, batch.pos, batch.pos)
    outs = []
    for extra in ({}, {"gssl_weight": 0.0}):
        torch.manual_seed(0)
        net = GeometryAutoencoder(5, 8, 16, 2, **extra).train()
        torch.manual_seed(1)
        outs.append(net.loss(gb))
    assert outs[0].keys() == outs[1].keys() and torch.equal(outs[0]["loss"], outs[1]["loss"])


def test_invariant_fit_reports_the_term_of_both_autoencoders(qm9_sample):
    from spaces.invariant import InvariantSpace

    space = InvariantSpace(qm9_sample.elements, **{**InvariantSpace.test_options(), "gssl_weight": 1e-3,
                                                   "epochs_topo": 1, "epochs_geo": 1})
    stats = space.fit(qm9_sample.split("train"), None, progress=False)
    for part in ("topology", "geometry"):
        assert math.isfinite(stats[part]["final"]["gssl"]), part
