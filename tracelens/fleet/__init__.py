"""Fleets of captures: ``tracelens scan`` on Dask distributed (docs/fleet.md). The entry point is
:func:`tracelens.fleet.scan.scan` (also ``tracelens.scan``)."""
