"""``python -m tracelens`` runs the CLI (through the console entry point and its ``dmesg`` fast path)."""

from tracelens.console import leave, main

leave(main())
