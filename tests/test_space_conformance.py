"""Every registered space — and any a user adds — passes the same conformance checks."""
import pytest
import torch

from harness.checks.spaces import run_conformance
from harness.core.registry import SPACES


@pytest.mark.parametrize("name", SPACES.names())
def test_registered_space_conforms(name):
    report = run_conformance(SPACES.get(name))
    print(report.table())
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
    assert not failed, "\n".join(failed)


class DropLastAtomRaw(SPACES.get("raw")):
    """The raw space (which declares a lossless reconstruction), except that decoding loses
    each molecule's last atom; deliberately not registered."""

    def decode(self, latent):
        out = super().decode(latent)
        mask = out.mask.clone()
        mask[torch.arange(len(out)), out.mask.sum(1) - 1] = False
        out.mask, out.atom_types, out.pos = mask, out.atom_types * mask, out.pos * mask[..., None]
        return out


def _row(report, name):
    return next(c for c in report.checks if c.name == name)


def test_reconstruction_check_can_fail():
    assert SPACES.get("raw").expected_reconstruction == 1.0
    report = run_conformance(DropLastAtomRaw)
    row = _row(report, "reconstruction")
    assert not row.passed and "below the expected 1" in row.detail, row.detail
    assert _row(report, "decode").passed          # well-formed, just lossy
    # an explicit floor applies to any space: a briefly fitted autoencoder does not reach 1.0
    flat = run_conformance(SPACES.get("flat"), min_reconstruction=1.0)
    assert not _row(flat, "reconstruction").passed
    assert run_conformance(SPACES.get("flat")).passed   # no floor declared


def test_symmetry_rows_follow_the_one_transform_list():
    from harness.core.geometry import SYMMETRY_GROUPS
    from harness.core.types import SYMMETRY_GROUPS as declared_groups

    assert declared_groups is SYMMETRY_GROUPS
    report = run_conformance(SPACES.get("raw"))
    assert [c.name for c in report.checks if c.name.startswith("symmetry.")] == \
        [f"symmetry.{g}" for g in SYMMETRY_GROUPS]
