"""A user's space in their own file, registered from outside the package, gets the same
conformance checks (the README's example)."""
import subprocess
import sys
from pathlib import Path

from harness.checks.spaces import run_conformance
from harness.core.registry import SPACES, load_plugin

EXAMPLE = Path(__file__).parent / "fixtures" / "my_space.py"


def test_user_space_file_registers_and_passes_conformance():
    load_plugin(EXAMPLE)
    assert "scaled_raw" in SPACES
    report = run_conformance(SPACES.get("scaled_raw"))
    assert report.passed, report.table()


def test_check_space_command_prints_a_table_and_exit_code(tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness.cli", "check-space", str(EXAMPLE)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "conformance of space 'scaled_raw'" in out.stdout and "overall" in out.stdout

    broken = tmp_path / "broken_space.py"
    broken.write_text(EXAMPLE.read_text().replace('"scaled_raw"', '"broken_raw"').replace(
        "x = (batch.pos - centre)", "x = (batch.pos + 1.0 - centre * 0)"))
    out = subprocess.run([sys.executable, "-m", "harness.cli", "check-space", str(broken)],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "FAIL" in out.stdout and "symmetry.translation" in out.stdout


def test_plugin_file_that_does_not_exist_is_a_clear_error():
    import pytest

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_plugin("no/such/space.py")


def test_a_saved_user_space_loads_after_its_run_directory_moves(tmp_path):
    """The plugin file is recorded by absolute path *and* relative to the space folder."""
    import shutil

    import pytest

    from spaces.base import Space

    run = tmp_path / "run"
    (run / "plugins").mkdir(parents=True)
    plugin = run / "plugins" / "moved_space.py"
    plugin.write_text(EXAMPLE.read_text().replace('"scaled_raw"', '"moved_raw"'))
    load_plugin(plugin)
    SPACES.get("moved_raw")(elements=["H", "C"]).save(run / "space")
    moved = tmp_path / "elsewhere"
    shutil.move(str(run), str(moved))
    SPACES._entries.pop("moved_raw")                     # a fresh process: not registered yet
    for name in [m for m in sys.modules if "moved_space" in m]:
        del sys.modules[name]
    space = Space.load(moved / "space")
    assert type(space).__name__ == "ScaledRawSpace" and space.elements == ("H", "C")
    (moved / "plugins" / "moved_space.py").unlink()
    SPACES._entries.pop("moved_raw")
    with pytest.raises(FileNotFoundError, match="plugin file that is not there"):
        Space.load(moved / "space")
