"""CLI command groups. Each module exposes ``register(app)`` and imports heavy libraries only inside commands.

A command parses its arguments into the options objects of tracelens.options (taking what the options leave open
from ./tracelens.toml, tracelens.config), calls the library with them and renders; ``--show-code`` prints the same
call built from the same objects (tracelens.showcode). The options themselves are declared once in
tracelens.commands.declarations.
"""

from __future__ import annotations


def config():
    """The options of ./tracelens.toml (the defaults when there is none): what a command's options start from."""
    from tracelens.config import load_config

    return load_config()


def decode_options(base, **given):
    """``base`` (a DecodeOptions, usually the config's) with the options given on the command line on top (None or
    an empty list: not given)."""
    from dataclasses import replace

    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in given.items() if v is not None and v != []}
    return replace(base, **given) if given else base


def analysis_config(base, decode, **given):
    """``base`` (an AnalysisConfig, usually the config's) with ``decode`` and the options given on top."""
    from dataclasses import replace

    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in given.items() if v is not None and v != []}
    return replace(base, decode=decode, **given)


def check_at_least(value, name: str, low: int, high: int | None = None):
    """A command-line number that no library parameter checks (``--batch-mb``): UsageError outside [low, high]."""
    from tracelens.errors import UsageError

    if value is not None and (value < low or (high is not None and value > high)):
        more = f" and at most {high}" if high is not None else ""
        raise UsageError(f"{name} must be at least {low}{more}, not {value}")
    return value
