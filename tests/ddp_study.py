"""A tiny study under Lightning DDP on the CPU, for tests/test_ddp.py.

    python tests/ddp_study.py AUDIT_DIR STOP_AFTER key=value ...

Runs ``Study.run(stop_after=STOP_AFTER)`` of the ``tiny`` preset with the overrides, as
every rank of the run (Lightning's launcher re-runs this file for rank 1), recording each
rank's file writes in AUDIT_DIR (tests/write_audit.py). Exits 0 when rank 0 stopped at
STOP_AFTER as asked.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(audit: Path, stop_after: str, overrides: list[str]) -> int:
    import write_audit

    write_audit.install(audit)
    import torch

    torch.set_num_threads(1)
    from harness.study.runner import Study, StudyInterrupted

    try:
        Study.from_source("tiny", overrides).run(stop_after=stop_after or None)
    except StudyInterrupted:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve(), sys.argv[2], sys.argv[3:]))
