import numpy as np
import pytest
import torch

from harness.core.types import LatentBatch, LatentSpec, MolBatch, MolRecord

ELEMENTS = ("H", "C", "N", "O", "F")


def water(name="w"):
    return MolRecord(numbers=[8, 1, 1], pos=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]],
                     bonds=[[0, 1, 1], [0, 2, 1]], name=name)


def methane(name="m"):
    pos = np.array([[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                    [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])
    return MolRecord(numbers=[6, 1, 1, 1, 1], pos=pos, bonds=[[0, k, 1] for k in range(1, 5)],
                     name=name, props=[1.0, 2.0])


def test_collation_pads_masks_and_maps_elements_to_vocabulary_indices():
    batch = MolBatch.from_records([water(), methane()], ELEMENTS)
    assert batch.pos.shape == (2, 5, 3)
    assert batch.mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch.atom_types[0, :3].tolist() == [3, 0, 0]          # O, H, H
    assert batch.numbers[1].tolist() == [6, 1, 1, 1, 1]
    assert batch.bonds[1, 0, 3] == 1 and batch.bonds[1, 3, 0] == 1  # symmetric
    assert batch.bonds[0, 3:].abs().sum() == 0                      # padding has no bonds
    assert torch.isnan(batch.props[0]).all() and batch.props[1].tolist() == [1.0, 2.0]


def test_unknown_element_in_collation_is_a_clear_error():
    rec = MolRecord(numbers=[16, 1], pos=np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\['S'\] are not in the vocabulary"):
        MolBatch.from_records([rec], ELEMENTS)


def test_slicing_trims_padding_and_keeps_names():
    batch = MolBatch.from_records([water("a"), methane("b"), water("c")], ELEMENTS)
    sub = batch[[0, 2]]
    assert sub.max_atoms == 3 and sub.names == ["a", "c"] and len(sub) == 2
    assert batch[1].names == ["b"] and batch[1:].max_atoms == 5
    assert batch[torch.tensor([True, False, True])].names == ["a", "c"]


def test_to_records_round_trip_is_exact():
    records = [water(), methane()]
    back = MolBatch.from_records(records, ELEMENTS).to_records()
    for r, b in zip(records, back):
        np.testing.assert_array_equal(r.numbers, b.numbers)
        np.testing.assert_allclose(r.pos, b.pos)
        assert sorted(map(tuple, r.bonds.tolist())) == sorted(map(tuple, b.bonds.tolist()))


def test_to_moves_floats_and_keeps_integer_dtypes():
    batch = MolBatch.from_records([water()], ELEMENTS).to("cpu", dtype=torch.float64)
    assert batch.pos.dtype == torch.float64 and batch.atom_types.dtype == torch.long
    assert batch.mask.dtype == torch.bool


def test_latent_spec_dimension_counts_zero_com_coordinates():
    per_atom = LatentSpec("per_atom", width=2, has_coords=True)
    assert per_atom.dim(10) == 10 * 2 + 9 * 3
    assert LatentSpec("vector", width=500).dim(29) == 500
    with pytest.raises(ValueError):
        LatentSpec("vector", width=4, has_coords=True)


def test_latent_batch_validates_shapes_and_concatenates_with_padding():
    spec = LatentSpec("per_atom", width=2, has_coords=True)
    a = LatentBatch(h=torch.ones(2, 3, 2), x=torch.ones(2, 3, 3), mask=torch.ones(2, 3, dtype=torch.bool), spec=spec)
    b = LatentBatch(h=torch.ones(1, 5, 2), x=torch.ones(1, 5, 3), mask=torch.ones(1, 5, dtype=torch.bool), spec=spec)
    cat = LatentBatch.cat([a, b])
    assert cat.h.shape == (3, 5, 2) and cat.mask[:2, 3:].sum() == 0
    with pytest.raises(ValueError, match="vector latent must be"):
        LatentBatch(h=torch.ones(2, 3), spec=LatentSpec("vector", width=4))
