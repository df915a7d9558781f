"""``python -m harness.cli`` = ``l3dg``."""
import sys

from harness.cli import main

sys.exit(main())
