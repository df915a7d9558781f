"""A PNG of a study's ``report.html`` taken in headless Chromium (the picture the README
shows: ``docs/report-screenshot.png``)::

    python -m harness.report.screenshot runs/qm9-quick docs/report-screenshot.png

Chromium runs offline (every host name resolves to nothing, no background networking) with
a fresh profile in a temporary folder; the page's own 3D viewer is drawn before the shot.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.core.io import atomic_path

__all__ = ["screenshot"]

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def screenshot(run_dir: str | Path, out: str | Path, width: int = 1280, height: int = 1600) -> Path:
    """Write ``out`` (PNG) from ``run_dir/report.html``; a clear error when the page or a
    browser is missing."""
    page = Path(run_dir) / "report.html"
    if not page.is_file():
        raise FileNotFoundError(f"{page} does not exist; run `l3dg report {run_dir}` first")
    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        raise FileNotFoundError("no headless Chromium on PATH (Debian: apt-get install chromium)")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        tmp = Path(profile) / "shot.png"
        args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", f"--user-data-dir={profile}/p",
                "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=3000",
                f"--window-size={width},{height}", f"--screenshot={tmp}", page.resolve().as_uri()]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not tmp.exists():
            raise RuntimeError(f"Chromium could not take the screenshot of {page}: "
                               f"{proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
        with atomic_path(out, ".png") as dst:     # written whole, then moved into place
            shutil.copyfile(tmp, dst)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m harness.report.screenshot RUN_DIR OUT.png")
    print(screenshot(sys.argv[1], sys.argv[2]))
