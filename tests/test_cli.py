"""The command line: fast start-up, listing, dataset statistics, clear errors."""
import json
import subprocess
import sys

from harness.cli import main

from conftest import QM9_SAMPLE


def test_cli_start_up_does_not_import_torch_or_lightning():
    code = ("import sys, harness.cli; harness.cli.build_parser(); "
            "bad = [m for m in ('torch', 'pytorch_lightning', 'rdkit') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_help_lists_commands(capsys):
    try:
        main(["--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    out = capsys.readouterr().out
    for cmd in ("list", "data"):
        assert cmd in out


def test_list_prints_every_kind(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in ("datasets", "spaces", "denoisers", "samplers", "schedules", "metrics", "suites"):
        assert f"{kind} (" in out
    assert "qm9" in out and "sdf" in out


def test_data_prints_statistics_for_an_sdf_dataset(capsys):
    assert main(["data", "sdf", "--path", str(QM9_SAMPLE), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["molecules"] == 200 and stats["splits"]["train"] == 160
    assert set(stats["element_counts"]) == {"H", "C", "N", "O", "F"}
    assert main(["data", "sdf", "--path", str(QM9_SAMPLE)]) == 0
    assert "atom-count histogram" in capsys.readouterr().out


def test_unknown_dataset_is_a_clear_error(capsys):
    assert main(["data", "qm10"]) == 2
    assert "unknown dataset 'qm10'; valid datasets: geom, moses, qm9, sdf" in capsys.readouterr().err
