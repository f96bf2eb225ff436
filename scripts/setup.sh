#!/usr/bin/env bash
# Install tracelens and everything its tests need, on a fresh Debian machine or an existing one.
# Idempotent: already-installed pieces are skipped quickly.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# System packages: LZO headers for python-lzo (kdump pages), zstd, and the reference tools the differential
# tests and benchmarks compare against (tests skip with a reason when one is missing).
need=()
command -v zstd >/dev/null 2>&1 || need+=(zstd)
[ -e /usr/include/lzo/lzo1x.h ] || need+=(liblzo2-dev)
command -v makedumpfile >/dev/null 2>&1 || need+=(makedumpfile)
command -v vmcore-dmesg >/dev/null 2>&1 || need+=(kexec-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # headless: tests look at the rendered HTML report
# libkdumpfile's Python bindings: a differential reference for the dump readers, used through /usr/bin/python3
/usr/bin/python3 -c "import kdumpfile" >/dev/null 2>&1 || need+=(python3-libkdumpfile)
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
        || echo "setup: warning: could not install ${need[*]}; the tests that need them will skip" >&2
fi

extras="test"
[ -e /usr/include/lzo/lzo1x.h ] && extras="test,lzo"
"$PY" -m pip install -q --disable-pip-version-check -e ".[${extras}]" 2>&1 | grep -v "Running pip as the 'root' user" || true
"$PY" -c "import tracelens.parsers.xentrace" 

# numba compiles tracelens' kernels once per machine (about a minute here) and caches them; do it now, kernel by
# kernel on stderr, so that the first analysis of a large capture does not (small ones never wait: they run the
# kernels' Python code while the cache is cold). Skip with TRACELENS_SKIP_WARM=1.
if [ -z "${TRACELENS_SKIP_WARM:-}" ]; then
    export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tracelens/numba}
    sample=sample-traces/persistent-grants.xentrace
    warm=$(mktemp -d)
    TRACELENS_JIT=compile "$PY" -m tracelens analyze "$sample" --format json -o "$warm/a.json" >&2
    TRACELENS_JIT=compile "$PY" -m tracelens info "$sample" >/dev/null
    TRACELENS_JIT=compile "$PY" -m tracelens decode "$sample" -o "$warm/d.parquet" >/dev/null
    rm -rf "$warm"
fi
