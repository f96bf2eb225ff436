"""CLI command groups. Each module exposes ``register(app)`` and imports heavy libraries only inside commands."""


def config_args(**options) -> list[str]:
    """``name=value`` arguments of an ``AnalysisConfig(...)`` for ``--show-code``: options that are None, empty or
    at their default (tolerance "strict") are left out, so the printed code stays minimal."""
    out = []
    for name, value in options.items():
        if value is None or value == () or value == [] or (name == "tolerance" and value == "strict"):
            continue
        out.append(f"{name}={tuple(value) if isinstance(value, list) else value!r}")
    return out
