"""The tracelens error hierarchy and the exit codes the CLI maps them to.

Every error a user can cause carries a one-line message; format errors name the file and the byte offset.
Exit codes (documented in docs/exit-codes.md):

==== =========================================================================
 0   success (gate: pass)
 1   gate: findings at or above the threshold
 2   usage or policy error
 3   input unreadable, corrupt, truncated, or an analysis that is inconclusive; also an allocation failure
     (MemoryError) while running a command: the readers bound what they allocate, so it comes from the input
 70  internal error (a bug in tracelens), caught at the CLI boundary
==== =========================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_INTERNAL = 70

#: the input file a reader opened last (tracelens.detect.open_input): named by run_guarded when memory runs out
current_input: str | None = None


class TracelensError(Exception):
    """Base of every error tracelens raises on purpose."""

    exit_code = EXIT_INTERNAL


class UsageError(TracelensError):
    """Bad arguments or options. ``params`` are the library parameters the message names (``xen_version``), the one
    to blame first (``param``); the command line shows each as its option instead (:func:`cli_message`)."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *params: str):
        self.params = tuple(p for p in params if p)
        self.param = self.params[0] if self.params else None
        super().__init__(message)


class PolicyError(TracelensError):
    """An invalid gate policy or baseline file (the message names the file and line)."""

    exit_code = EXIT_USAGE


class FormatError(TracelensError):
    """Input that is not what it claims to be, or is damaged. Names the file and the byte offset."""

    exit_code = EXIT_INPUT

    def __init__(self, path, offset: int | None, message: str):
        self.path = str(path)
        self.offset = offset
        self.reason = message
        where = f"{self.path}: at byte {offset}" if offset is not None else self.path
        super().__init__(f"{where}: {message}")


class IncompleteCaptureError(FormatError):
    """A xentrace capture that could not be read completely under the damage tolerance asked for: truncated, or
    damaged (``tolerance="truncate"`` keeps what comes before the damage, ``"skip"`` resynchronises after it)."""


#: library parameter -> command-line option, where the option is not the parameter's name with dashes
_OPTIONS = {"catalog_files": "--catalog", "boundaries": "--boundary", "json_out": "--json", "tsc_from": "--from",
            "tsc_to": "--to", "classes": "--class", "events": "--event", "doms": "--dom", "cpus": "--cpu",
            "batch_bytes": "--batch-mb", "output": "-o", "outdir": "-o", "paths": "PATH", "captures": "CAPTURE",
            "fmt": "--format", "style": "--format"}


def option_name(param: str) -> str:
    """The command-line option of library parameter ``param`` (``xen_version`` -> ``--xen-version``)."""
    return _OPTIONS.get(param) or "--" + param.replace("_", "-")


def cli_message(e: BaseException) -> str:
    """The message of ``e`` as the command line shows it: the library parameters a UsageError names become the
    options the user typed (``xen_version must ...`` -> ``--xen-version must ...``)."""
    import re

    text = str(e)
    for param in getattr(e, "params", ()):
        text = re.sub(rf"(?<![\w-]){re.escape(param)}(?![\w-])", option_name(param), text)
    return text


def run_guarded(fn) -> int:
    """Run ``fn()`` (a command) and map every failure to a one-line message on stderr and an exit code: the choke
    point of the command line (tracelens.cli.main and the console's fast paths). ``fn`` may return an exit code;
    anything else counts as 0."""
    import sys

    from tracelens.escape import terminal

    try:
        rc = fn()
    except TracelensError as e:
        print(f"tracelens: error: {terminal(cli_message(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("tracelens: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `tracelens events X | head`: not an error for the user
        try:
            sys.stdout = None  # type: ignore[assignment]
        except Exception:
            pass
        return 0
    except MemoryError:
        # an allocation sized by the input that the readers' bounds did not catch: the input is the problem (exit
        # 3), not tracelens's logic; the message says what to do when the input is genuine
        where = f"{terminal(current_input)}: " if current_input else ""
        print(f"tracelens: error: {where}out of memory while reading it (a damaged size field, or an input too "
              "large for this machine): input unreadable", file=sys.stderr)
        return EXIT_INPUT
    except Exception as e:  # genuine bugs
        print(f"tracelens: internal error: {type(e).__name__}: {terminal(e)} (please report this)", file=sys.stderr)
        return EXIT_INTERNAL
    return rc if isinstance(rc, int) else 0
