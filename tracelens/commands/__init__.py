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


# -- option checks: typer callbacks that raise tracelens.errors.UsageError (exit 2, one line naming the option) ----
def check_cpu_hz(value):
    """--cpu-hz: a finite TSC frequency above 0 Hz (0 divided by zero, nan and inf failed inside the decoder)."""
    import math

    from tracelens.errors import UsageError

    if value is not None and (not math.isfinite(value) or value <= 0 or value > 1e12):
        raise UsageError(f"--cpu-hz must be a TSC frequency in Hz between 1 and 1e12, not {value}")
    return value


def _at_least(name: str, low: int, high: int | None = None):
    def check(value):
        from tracelens.errors import UsageError

        if value is None:
            return value
        if value < low or (high is not None and value > high):
            more = f" and at most {high}" if high is not None else ""
            raise UsageError(f"{name} must be at least {low}{more}, not {value}")
        return value

    return check


check_limit = _at_least("--limit", 0)
check_batch_mb = _at_least("--batch-mb", 1, 1 << 16)
check_threads = _at_least("--threads", 1, 4096)


def trace_mask_option(text):
    """--trace-mask: the xentrace -e mask the captures were recorded with (None when not given)."""
    if text is None:
        return None
    from tracelens.analysis.coverage import parse_mask
    from tracelens.errors import UsageError

    try:
        return parse_mask(text)
    except ValueError as e:
        raise UsageError(f"--trace-mask: {e}") from None
