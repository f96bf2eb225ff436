#!/usr/bin/env bash
# Set up (scripts/setup.sh: the project's .venv), then run the main job on a shipped sample capture: analyse a guest
# whose backend kept its grants mapped across a soft-reset kexec. A capture given as argument replaces the sample.
# Set-up reports on stderr; stdout is the analysis.
set -euo pipefail
capture=${1:-}
case "$capture" in
    "" | /*) ;;
    *) capture="$PWD/$capture" ;;  # relative to where the user is, not to the checkout
esac
cd "$(dirname "$0")/.."
# numba compiles kernels once per machine; keep its cache out of the source tree (which may be read-only)
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tracelens/numba}
bash scripts/setup.sh
exec .venv/bin/tracelens analyze "${capture:-sample-traces/persistent-grants.xentrace}"
