#!/usr/bin/env bash
# Set up this checkout: the system packages the tests compare against (as root on Debian), a project virtual
# environment in .venv holding tracelens (editable) and its test dependencies, then tracelens' numba kernels compiled
# for this machine. Everything goes into .venv, so it works where the system Python refuses pip (PEP 668,
# "externally-managed-environment"). Idempotent: a second run checks and skips. Each step says what it does on
# stderr; stdout stays empty.
#
#   PYTHON=python3.12 bash scripts/setup.sh   the Python that creates .venv (default: python3, else python3.1x; 3.11+)
#   TRACELENS_SKIP_WARM=1                     do not compile the kernels now (the first large capture will)
#   TRACELENS_APT_LOCK_WAIT=SECONDS           how long to wait for another apt or dpkg to finish (default 300)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

VENV=.venv
VPY=$VENV/bin/python

# -- the Python that creates .venv --------------------------------------------------------------------------------
new_enough() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }
PY=
for c in ${PYTHON:-python3 python3.13 python3.12 python3.11}; do
    if command -v "$c" >/dev/null 2>&1 && new_enough "$c"; then PY=$(command -v "$c"); break; fi
done
if [ -z "$PY" ]; then
    [ -n "${PYTHON:-}" ] && die "PYTHON=$PYTHON is not a Python 3.11 or newer"
    die "no Python 3.11 or newer found (tried python3, python3.13, python3.12, python3.11): install one (Debian 12: apt-get install python3 python3-venv) or name it with PYTHON=/path/to/python3"
fi
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# -- system packages ------------------------------------------------------------------------------------------------
# zstd, makedumpfile, vmcore-dmesg (kexec-tools) and libkdumpfile's Python bindings are the references of the
# differential tests (they skip with a reason without them); liblzo2-dev builds python-lzo (LZO-compressed dumps);
# pythonX.Y-venv gives Debian's Python its venv module.
need=()
venv_ok() { "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; }
if [ ! -x "$VPY" ] && ! venv_ok; then need+=("python$PYVER-venv"); fi
command -v zstd >/dev/null 2>&1 || need+=(zstd)
[ -e /usr/include/lzo/lzo1x.h ] || need+=(liblzo2-dev)
command -v makedumpfile >/dev/null 2>&1 || need+=(makedumpfile)
command -v vmcore-dmesg >/dev/null 2>&1 || need+=(kexec-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # headless: tests look at the rendered HTML report
# libkdumpfile's bindings are used through Debian's own /usr/bin/python3 (they are not on PyPI)
if [ -x /usr/bin/python3 ] && ! /usr/bin/python3 -c "import kdumpfile" >/dev/null 2>&1; then need+=(python3-libkdumpfile); fi

apt_get() {
    # apt-get "$@" with its output shown (indented); when another apt or dpkg holds the lock, wait for it up to
    # TRACELENS_APT_LOCK_WAIT seconds. Returns apt-get's exit code; its error lines are in $apt_errors.
    local wait=${TRACELENS_APT_LOCK_WAIT:-300} start=$SECONDS log rc
    log=$(mktemp)
    while :; do
        set +e
        apt-get -q -o DPkg::Lock::Timeout="$wait" "$@" 2>&1 | tee "$log" | sed -u 's/^/    /' >&2
        rc=${PIPESTATUS[0]}
        set -e
        # apt-get update takes the lists lock, which DPkg::Lock::Timeout does not cover: wait here too
        if [ "$rc" -ne 0 ] && grep -qE "Could not get lock|Unable to acquire|Unable to lock" "$log" \
            && [ $((SECONDS - start)) -lt "$wait" ]; then
            say "another apt or dpkg holds the package lock; waiting ($((SECONDS - start)) s of $wait)"
            sleep 5
            continue
        fi
        break
    done
    apt_errors=$(grep -E '^(E|Err):' "$log" | head -5 || true)
    rm -f "$log"
    return "$rc"
}

if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        say "installing Debian packages: ${need[*]}"
        say "apt-get update"
        apt_get update || say "warning: apt-get update failed (exit $?): ${apt_errors:-see above}; trying the install anyway"
        say "apt-get install ${need[*]}"
        if ! apt_get install -y --no-install-recommends "${need[@]}"; then
            say "warning: could not install ${need[*]}: ${apt_errors:-see the output of apt above}"
            say "warning: the tests that need them will skip; re-run when apt works"
        fi
    else
        say "not installing ${need[*]} (needs root and apt-get); the tests that need them skip with a reason"
        say "on Debian: sudo apt-get install ${need[*]}"
    fi
fi

# -- the project's virtual environment ----------------------------------------------------------------------------
if [ -x "$VPY" ] && new_enough "$VPY"; then
    say "using $VENV ($("$VPY" -V 2>&1))"
else
    if [ -e "$VENV" ]; then
        say "$VENV does not run a Python 3.11+ (moved, or its Python was removed): creating it again"
        rm -rf "$VENV"
    fi
    venv_ok || die "$PY cannot create a virtual environment (no venv/ensurepip module): on Debian, apt-get install python$PYVER-venv as root, or set PYTHON to another Python 3.11+"
    say "creating $VENV with $PY (Python $PYVER)"
    if ! "$PY" -m venv "$VENV" >&2; then
        rm -rf "$VENV"
        die "$PY -m venv $VENV failed (see above)"
    fi
fi

# tracelens and its test dependencies; pip runs again only when pyproject.toml changed or the import fails
pip_install() {
    # pip of .venv, its output shown on stderr without the lines that only say a configured package index has no
    # such project, or that a requirement is already there
    "$VPY" -m pip install --disable-pip-version-check "$@" 2>&1 \
        | sed -u -e "/^WARNING: Location '.*' is ignored: it is neither a file nor a directory\.$/d" \
                 -e '/^Requirement already satisfied: /d' >&2
}
stamp=$VENV/.tracelens-setup
want="$(cksum < pyproject.toml)"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && "$VPY" -c "import tracelens.parsers.xentrace" >/dev/null 2>&1; then
    say "tracelens and its test dependencies are installed in $VENV (pyproject.toml unchanged)"
else
    rm -f "$stamp"
    # python-lzo (the lzo extra: pages of LZO-compressed dumps) builds from source against liblzo2's headers
    extras=test
    if [ -e /usr/include/lzo/lzo1x.h ]; then
        extras=test,lzo
    else
        say "not installing python-lzo: liblzo2's headers are missing (Debian: apt-get install liblzo2-dev); LZO-compressed dumps will say so, and their tests skip"
    fi
    say "installing tracelens (editable) and its [$extras] extras into $VENV with pip"
    if ! pip_install -e ".[$extras]"; then
        [ "$extras" = test ] && die "pip could not install tracelens into $VENV (see pip's message above)"
        say "warning: that failed (python-lzo may not build here: see above); trying without the lzo extra"
        pip_install -e ".[test]" || die "pip could not install tracelens into $VENV (see pip's message above)"
        say "warning: python-lzo is not installed: LZO-compressed dumps will say so, and their tests skip"
    fi
    "$VPY" -c "import tracelens.parsers.xentrace" || die "tracelens does not import in $VENV (see above)"
    echo "$want" > "$stamp"
fi

# -- numba's kernels ------------------------------------------------------------------------------------------------
# numba compiles tracelens' kernels once per machine (about a minute here) and caches them; do it now, kernel by
# kernel on stderr, so that the first analysis of a large capture does not (small ones never wait: they run the
# kernels' Python code while the cache is cold).
if [ -z "${TRACELENS_SKIP_WARM:-}" ]; then
    export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tracelens/numba}
    say "compiling tracelens' numba kernels for this machine into $NUMBA_CACHE_DIR (about a minute the first time; TRACELENS_SKIP_WARM=1 skips)"
    sample=sample-traces/persistent-grants.xentrace
    warm=$(mktemp -d)
    TRACELENS_JIT=compile "$VPY" -m tracelens analyze "$sample" --format json -o "$warm/a.json" >&2
    TRACELENS_JIT=compile "$VPY" -m tracelens info "$sample" >/dev/null
    TRACELENS_JIT=compile "$VPY" -m tracelens decode "$sample" -o "$warm/d.parquet" >/dev/null
    TRACELENS_JIT=compile "$VPY" -m tracelens watch - < "$sample" >/dev/null
    rm -rf "$warm"
fi
say "ready: $VENV/bin/tracelens (or: source $VENV/bin/activate)"
