"""``python -m tracelens`` runs the CLI (through the console entry point and its ``dmesg`` fast path)."""

import sys

from tracelens.console import main

sys.exit(main())
