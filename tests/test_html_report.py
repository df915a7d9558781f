"""report.html: self-contained (no URL, nothing fetched), tables with intervals where
present, a 3D gallery with correct atom counts; loaded in headless Chromium with no script
errors, every viewer drawn, and a screenshot taken."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.report.html import atom_label, gallery_molecules, results_table, write_html_report

from conftest import QM9_SAMPLE

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real tiny study (raw: bond-less clouds; flat: collapsed, unreadable samples)."""
    from harness.study.runner import Study

    root = tmp_path_factory.mktemp("html")
    study = Study.from_source("tiny", [f"output_dir={root}"])
    study.run()
    return study.root


@pytest.fixture(scope="module")
def page(run_dir):
    path = write_html_report(run_dir)
    return path, path.read_text()


def _molecules(text: str) -> dict:
    block = re.search(r'<script type="application/json" id="l3dg-molecules">(.*?)</script>', text, re.S)
    return json.loads(block.group(1).replace("<\\/", "</"))


def test_atom_label_counts_every_atom():
    assert atom_label([6, 1, 1, 1, 1]) == "5 atoms (4 H)"
    assert atom_label([8]) == "1 atom (0 H)"


def test_page_is_self_contained(page):
    path, text = page
    assert path.name == "report.html" and path.parent.joinpath("report.md").exists()
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', text), "page references a URL"
    assert "<link" not in text and "fetch(" not in text and "XMLHttpRequest" not in text
    assert "import(" not in text and "@import" not in text
    assert text.count("data:image/png;base64,") >= 2                # plots embedded
    assert "samples_raw.png" not in text                            # 2D grids replaced by 3D


def test_gallery_labels_and_coordinates_match_the_sdf(run_dir, page):
    from harness.core.chem import read_sdf

    _, text = page
    mols = _molecules(text)
    canvases = re.findall(r'<canvas data-mol="([^"]+)"', text)
    assert sorted(canvases) == sorted(mols) and canvases
    records, _ = read_sdf(run_dir / "raw" / "samples.sdf", perceive_missing_bonds=False)
    for k, (record, _) in enumerate(records):
        mol = mols[f"raw/{k}"]
        assert mol["z"] == record.numbers.tolist()
        assert len(mol["p"]) == 3 * record.n_atoms and mol["b"] == []
        n_h = int((record.numbers == 1).sum())
        assert f"#{k}</span> · {record.n_atoms} atoms ({n_h} H) · no bonds" in text
    assert "heavy atoms" not in text


def test_bonded_molecules_get_bonds_and_smiles():
    items, total = gallery_molecules(Path(QM9_SAMPLE), limit=3)
    assert total == 200 and len(items) == 3
    for item in items:
        assert len(item["bonds"]) > 0 and item["smiles"] and item["reason"] is None


def test_intervals_and_best_values_in_the_table():
    rows = {"reference": {"values": {"edm.validity": 0.99}},
            "a": {"values": {"edm.validity": 0.4, "edm.validity.ci": [0.3, 0.5]}},
            "b": {"values": {"edm.validity": 0.6}}}
    html = results_table(rows, [("edm.validity", "valid", True), ("edm.novelty", "novel", True)])
    assert '<span class="ci">[0.300, 0.500]</span>' in html
    assert "<td class=best" in html and html.count("class=best") == 1   # b, not the reference
    assert "novel" not in html                                         # empty column dropped


def _browser() -> str | None:
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def _chromium(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    browser = _browser()
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
            "--host-resolver-rules=MAP * ~NOTFOUND",     # any network access would fail
            "--virtual-time-budget=1500", "--window-size=1200,1500", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=90)


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium (apt-get install chromium)")
def test_page_runs_in_chromium_without_errors(page, tmp_path):
    path, text = page
    proc = _chromium(path.as_uri(), tmp_path, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    html_tag = re.search(r"<html[^>]*>", proc.stdout).group(0)
    assert "data-l3dg-errors" not in html_tag, html_tag
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln]
    assert not console, console
    drawn = int(re.search(r'data-l3dg-viewers="(\d+)"', html_tag).group(1))
    assert drawn == len(re.findall(r"<canvas data-mol=", text)) > 0
    shot = tmp_path / "report.png"
    proc = _chromium(path.as_uri(), tmp_path, f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 20_000, proc.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 1500)
        assert len(im.convert("RGB").getcolors(1 << 20) or []) > 500    # drawn, not blank


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium (apt-get install chromium)")
def test_the_error_hook_catches_a_broken_script(page, tmp_path):
    """The check above is not vacuous: a script error is seen on the page and the console."""
    _, text = page
    bad = tmp_path / "bad.html"
    bad.write_text(text.replace('"use strict";', '"use strict"; notDefinedAnywhere();', 1))
    proc = _chromium(bad.as_uri(), tmp_path, "--dump-dom")
    assert "notDefinedAnywhere is not defined" in re.search(r"<html[^>]*>", proc.stdout).group(0)
    assert any("Uncaught ReferenceError" in ln for ln in proc.stderr.splitlines())


def test_rows_with_errors_are_named(run_dir, tmp_path):
    import shutil as sh

    copy = tmp_path / "run"
    sh.copytree(run_dir, copy)
    rows = json.loads((copy / "results.json").read_text())
    rows["flat"] = {"values": {}, "seconds": {}, "error": "flat/metrics.json is unreadable"}
    (copy / "results.json").write_text(json.dumps(rows))
    text = write_html_report(copy).read_text()
    assert "<b>flat</b>: flat/metrics.json is unreadable" in text


def test_controls_table_when_the_study_scored_controls(run_dir, page):
    rows = json.loads((run_dir / "results.json").read_text())
    _, text = page
    if not any(isinstance(r.get("controls"), dict) for r in rows.values()):
        pytest.skip("this study version records no controls")
    assert "<h3>Controls</h3>" in text and "raw: samples" in text and "raw: prior" in text


def test_markdown_sections_become_escaped_html():
    """The report.md subset the page reuses: headings, paragraphs, pipe tables, inline
    strong / em / code; images dropped; everything else escaped."""
    from harness.report.markdown_html import markdown_html

    page = markdown_html(["## Conditional generation", "", "MAE of `x` <b>raw</b>; *note*.",
                          "", "| MAE | α |\n|---|---|\n| **invariant, MMFF-relaxed** | 3.2 [2.9, 3.5] ✓ |"
                          "\n| *EDM, published* | 2.76 |", "", "![plot](plots/a.png)"])
    assert page.startswith("<h2>Conditional generation</h2>")
    assert "<code>x</code> &lt;b&gt;raw&lt;/b&gt;; <em>note</em>." in page
    assert "<th>MAE</th><th>α</th>" in page and "---" not in page
    assert "<td><strong>invariant, MMFF-relaxed</strong></td><td>3.2 [2.9, 3.5] ✓</td>" in page
    assert "<td><em>EDM, published</em></td>" in page and "plot" not in page
    assert markdown_html([]) == ""
