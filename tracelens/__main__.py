"""``python -m tracelens`` runs the CLI."""

import sys

from tracelens.cli import main

sys.exit(main())
