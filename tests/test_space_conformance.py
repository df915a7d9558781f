"""Every registered space — and any a user adds — passes the same conformance checks."""
import pytest

from harness.conformance import run_conformance
from harness.core.registry import SPACES


@pytest.mark.parametrize("name", SPACES.names())
def test_registered_space_conforms(name):
    report = run_conformance(SPACES.get(name))
    print(report.table())
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
    assert not failed, "\n".join(failed)
