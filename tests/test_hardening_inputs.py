"""Hostile or careless input (issue 12): every case is one parametrised test per family.

* cache: the metric reference cache is data, never unpickled;
* sdf bytes / rdkit reasons: non-UTF-8 bytes and unknown elements are one-line skips;
* geometry: huge coordinates and coincident atoms are skipped (loading) or excluded (scoring);
* xyz: a wrong atom-count line costs exactly one frame;
* cli: user errors are one line (``l3dg <cmd>: error: ...``) and exit 2.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.core import chem
from metrics.base import clear_memory_cache, reference_statistics

from conftest import QM9_SAMPLE

SAMPLE_BYTES = QM9_SAMPLE.read_bytes()
BLOCKS = [b + b"$$$$\n" for b in SAMPLE_BYTES.split(b"$$$$\n") if b.strip()]


@pytest.fixture(autouse=True)
def _fresh_reference_memory():
    clear_memory_cache()
    yield
    clear_memory_cache()


def _edm_metric():
    from harness.core.registry import METRICS, load_builtins

    load_builtins()
    return METRICS.get("edm")()


# -- cache: data only ------------------------------------------------------------------------
class _Touch:
    """A pickle that, when loaded, creates ``marker`` (stands in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("planted", ["pickle-as-pkl", "pickle-as-npz", "object-array-npz",
                                     "garbage-npz", "wrong-key-npz"])
def test_reference_cache_never_runs_code_and_recovers(tmp_path, qm9_sample, planted):
    reference = qm9_sample.subset(np.arange(12), "tiny-ref")
    reference.cache_dir = tmp_path / "cache"
    metric = _edm_metric()
    truth = reference_statistics(metric, reference)              # writes the real cache file
    clear_memory_cache()
    written = next(f for f in (tmp_path / "cache" / "metric-reference").rglob("*") if f.is_file())
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"format": 1, "key": ["x"], "stats": _Touch(marker)})
    if planted == "pickle-as-pkl":      # where the old code looked
        written.unlink()
        written.with_suffix(".pkl").write_bytes(payload)
    elif planted == "pickle-as-npz":
        written.write_bytes(payload)
    elif planted == "object-array-npz":
        with open(written, "wb") as fh:
            np.savez(fh, __meta__=np.array([_Touch(marker)], dtype=object))
    elif planted == "garbage-npz":
        written.write_bytes(b"\x00garbage" * 10)
    else:
        with open(written, "wb") as fh:
            np.savez(fh, __meta__=np.frombuffer(b'{"format": 2, "key": ["other"], "stats": 1}',
                                                np.uint8))
    again = reference_statistics(metric, reference)
    assert not marker.exists()
    assert again["smiles"] == truth["smiles"] and again["molecules"] == truth["molecules"]
    clear_memory_cache()
    assert reference_statistics(metric, reference)["smiles"] == truth["smiles"]  # rewritten, readable


@pytest.mark.parametrize("metric_name", ["edm", "rdkit", "distributions"])
def test_reference_cache_round_trips_every_statistic(tmp_path, qm9_sample, metric_name):
    from harness.core.registry import METRICS, load_builtins

    load_builtins()
    reference = qm9_sample.subset(np.arange(12), "tiny-ref")
    reference.cache_dir = tmp_path
    metric = METRICS.get(metric_name)()
    fresh = reference_statistics(metric, reference)
    clear_memory_cache()
    loaded = reference_statistics(metric, reference)
    assert loaded is not fresh
    _assert_same(fresh, loaded)


def _assert_same(a, b):
    assert type(a) is type(b) or (isinstance(a, np.ndarray) and isinstance(b, np.ndarray))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    else:
        assert a == b or (a != a and b != b)


# -- sdf bytes and RDKit reasons ---------------------------------------------------------------
def _with_bad_record(bad: bytes) -> bytes:
    """Records 0 and 2 of the sample, with ``bad`` as record 1."""
    return BLOCKS[0] + bad + BLOCKS[2]


_RECORD1 = BLOCKS[1]
SDF_VARIANTS = {   # name -> (record 1 bytes, record 1 survives)
    "0xff-in-atom-line": (_RECORD1.replace(b" C   0", b" \xff   0", 1), False),
    "latin1-in-coordinates": (_RECORD1.replace(b"0.0", b"0.\xe90", 1), False),
    "0xff-in-counts-line": (_RECORD1.replace(b"V2000", b"V2000\xff", 1), False),
    "nul-in-atom-line": (_RECORD1.replace(b" C   0", b" C\x00  0", 1), False),
    "element-Xx": (_RECORD1.replace(b" C   0", b" Xx  0", 1), False),
    "lone-0xff-record": (b"\xff\n$$$$\n", False),
    "latin1-title": (b"caf\xe9\n" + _RECORD1.split(b"\n", 1)[1], True),
    "0xff-in-property": (_RECORD1.replace(b"M  END\n", b"M  END\n>  <note>\n\xff\xfe\n\n", 1), True),
}


@pytest.mark.parametrize("layout", ["file", "folder"])
@pytest.mark.parametrize("variant", sorted(SDF_VARIANTS))
def test_bad_bytes_or_elements_cost_only_their_record(tmp_path, capfd, variant, layout):
    bad, survives = SDF_VARIANTS[variant]
    if layout == "file":
        target = tmp_path / "mixed.sdf"
        target.write_bytes(_with_bad_record(bad))
        expected = 3 if survives else 2
    else:
        target = tmp_path / "folder"
        target.mkdir()
        (target / "a_good.sdf").write_bytes(b"".join(BLOCKS[3:6]))
        (target / "b_bad.sdf").write_bytes(_with_bad_record(bad))
        (target / "c_good.sdf").write_bytes(b"".join(BLOCKS[6:8]))
        expected = 5 + (3 if survives else 2)
    pairs, skipped = chem.read_molecules(target)
    assert len(pairs) == expected
    if survives:
        assert not skipped
    else:
        (s,) = skipped
        assert s.source.endswith("mixed.sdf" if layout == "file" else "b_bad.sdf") and s.index == 1
        assert "\n" not in s.reason and "Stacktrace" not in s.reason and len(s.reason) < 200
    assert "Stacktrace" not in capfd.readouterr().err


# -- geometry ------------------------------------------------------------------------------------
def _broken(kind: str):
    """Record 1 of the sample with one atom far away (``huge``) or on top of another."""
    from harness.core.data import load_dataset

    ds = load_dataset("sdf", path=QM9_SAMPLE)
    good, bad = ds[0], ds[1]
    pos = bad.pos.copy()
    pos[-1] = [5e4, 0.0, 0.0] if kind == "huge" else pos[0]
    bad.pos = pos
    bad.name = kind
    return good, bad


@pytest.mark.parametrize("where", ["dataset", "scoring"])
@pytest.mark.parametrize("kind", ["huge", "coincident"])
def test_impossible_geometry_is_skipped_in_data_and_excluded_in_scoring(tmp_path, kind, where):
    from harness.core.data import load_dataset
    from harness.evaluate import evaluate_source

    good, bad = _broken(kind)
    path = chem.write_sdf([chem.record_to_mol(good), chem.record_to_mol(bad)], tmp_path / "m.sdf")
    reason = "limit 1000" if kind == "huge" else "coincident"
    if where == "dataset":
        ds = load_dataset("sdf", path=path)
        assert len(ds) == 1 and ds[0].name == good.name
        (skip,) = ds.info["skipped"]
        assert skip["record"] == 1 and reason in skip["reason"]
    else:
        result = evaluate_source(str(path), suite="rdkit/v1", reference=None, progress=False)
        # excluded from every family (issue 27), counted in the scored fraction
        assert result["metrics"]["input.scored_fraction"] == 0.5
        assert result["metrics"]["rdkit.validity"] == 1.0
        assert any(reason in s["reason"] for s in result["metadata"]["skipped"])
        (flag,) = result["metadata"]["source"]["degenerate_geometry"]
        assert flag["index"] == 1 and reason in flag["reason"]


@pytest.mark.parametrize("kind", ["huge", "coincident"])
def test_bond_perception_refuses_impossible_geometry_instead_of_crashing(kind):
    """RDKit's DetermineBonds segfaults on coincident atoms: checked in a child process."""
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'tests'); from test_hardening_inputs import _broken; "
            "from harness.core.chem import perceive_bonds, RecordError\n"
            f"good, bad = _broken({kind!r})\n"
            "try:\n    perceive_bonds(bad.numbers, bad.pos)\n    print('accepted')\n"
            "except RecordError as err:\n    print('refused:', err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1], timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.startswith("refused: bond perception refused")


# -- xyz resync -----------------------------------------------------------------------------------
def _frame(n, title, atoms):
    return f"{n}\n{title}\n" + "".join(atoms)


_ATOMS = ["C 0.0 0.0 0.0\n", "O 1.2 0.0 0.0\n", "H -0.6 0.9 0.0\n", "H -0.6 -0.9 0.0\n"]
XYZ_CASES = {  # name -> (text, kept titles, skipped count)
    "count-too-big": (_frame(4, "a", _ATOMS) + _frame(9, "b", _ATOMS) + _frame(4, "c", _ATOMS),
                      ["a", "c"], 1),
    "count-too-small": (_frame(4, "a", _ATOMS) + _frame(2, "b", _ATOMS) + _frame(4, "c", _ATOMS),
                        ["a", "c"], 1),
    "garbage-count-line": (_frame(4, "a", _ATOMS) + _frame("x4", "b", _ATOMS)
                           + _frame(4, "c", _ATOMS), ["a", "c"], 1),
    "truncated-last-frame": (_frame(4, "a", _ATOMS) + _frame(4, "b", _ATOMS[:2]), ["a"], 1),
    "zero-count": (_frame(4, "a", _ATOMS) + "0\nempty\n" + _frame(4, "c", _ATOMS), ["a", "c"], 1),
    "integer-titles": (_frame(4, "7", _ATOMS) + _frame(4, "8", _ATOMS), ["7", "8"], 0),
    "blank-line-separators": (_frame(4, "a", _ATOMS) + "\n\n" + _frame(4, "b", _ATOMS) + "\n",
                              ["a", "b"], 0),
    "leading-text": ("hello\nworld\n" + _frame(4, "a", _ATOMS), ["a"], 1),
}


@pytest.mark.parametrize("case", sorted(XYZ_CASES))
def test_xyz_wrong_count_costs_exactly_one_frame(tmp_path, case):
    text, kept, n_skipped = XYZ_CASES[case]
    path = tmp_path / "t.xyz"
    path.write_text(text)
    records, skipped = chem.read_xyz(path, perceive=False)
    assert [r.name for r in records] == kept
    assert len(skipped) == n_skipped
    assert all("\n" not in s.reason for s in skipped)


# -- cli: one-line errors, exit 2 ----------------------------------------------------------------
def _cli_inputs(tmp_path: Path) -> dict[str, Path]:
    files = {"empty": tmp_path / "empty.sdf", "text": tmp_path / "text.sdf",
             "bad": tmp_path / "bad.sdf", "good": tmp_path / "good.sdf"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("just some text\nnot a molecule\n")
    files["bad"].write_bytes(SDF_VARIANTS["element-Xx"][0] + SDF_VARIANTS["0xff-in-atom-line"][0])
    files["good"].write_bytes(BLOCKS[0])
    (tmp_path / "outdir").mkdir()
    return files


CLI_CASES = {  # name -> (argv with {tmp} placeholders, expected text in the error line)
    "eval-empty-file": (["eval", "{tmp}/empty.sdf"], "no molecule to score"),
    "eval-text-file": (["eval", "{tmp}/text.sdf"], "no molecule to score"),
    "eval-all-bad-file": (["eval", "{tmp}/bad.sdf"], "no molecule to score"),
    "eval-missing-path": (["eval", "{tmp}/nosuch"], "does not exist"),
    "eval-missing-sdf": (["eval", "{tmp}/nosuch.sdf"], "does not exist"),
    "eval-out-directory": (["eval", "{tmp}/good.sdf", "--out", "{tmp}/outdir"], "is a directory"),
    "eval-limit-negative": (["eval", "{tmp}/good.sdf", "--limit", "-1"], "--limit must be a positive"),
    "eval-limit-zero": (["eval", "{tmp}/good.sdf", "--limit", "0"], "--limit must be a positive"),
    "data-qm9-negative-subset": (["data", "qm9", "--subset", "-5"], "--subset must be a positive"),
    "data-sdf-without-path": (["data", "sdf"], "needs --path"),
    "sample-n-zero": (["sample", "{tmp}", "--n", "0"], "--n must be a positive"),
    "sample-steps-zero": (["sample", "{tmp}", "--steps", "0"], "--steps must be a positive"),
    "check-space-unknown-name": (["check-space", "nosuch"], "unknown space 'nosuch'"),
    "check-space-sdf-file": (["check-space", "{tmp}/good.sdf"], "is not a Python file"),
    "check-space-missing-py": (["check-space", "{tmp}/nosuch.py"], "does not exist"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, case):
    _cli_inputs(tmp_path)
    argv, expected = CLI_CASES[case]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "eval":
        argv += ["--reference", "none", "--suite", "edm/v1", "--quiet"]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and expected in err[0] and err[0].startswith(f"l3dg {argv[0]}: error: ")
    assert "Traceback" not in err[0]
    if case == "eval-out-directory":
        with pytest.raises(ValueError, match="is a directory"):
            main(argv + ["--debug"])                     # --debug shows the real exception
