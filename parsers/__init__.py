"""Capture-format readers, one subpackage per format family.

Installed as ``tracelens.parsers`` (see pyproject.toml): ``xentrace`` for Xen trace buffers written by the
``xentrace`` daemon, ``vmcore`` for Linux crash dumps (ELF, kdump-compressed, flattened, Xen xc_core).
"""
