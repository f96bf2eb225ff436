#!/usr/bin/env bash
# Set up, then run the main job on a shipped sample capture: analyse a guest whose backend kept its grants
# mapped across a soft-reset kexec. Any arguments replace the default capture.
set -euo pipefail
cd "$(dirname "$0")/.."
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tracelens/numba}
bash scripts/setup.sh >/dev/null
capture=${1:-sample-traces/persistent-grants.xentrace}
if tracelens analyze --help >/dev/null 2>&1; then
    exec tracelens analyze "$capture"
fi
tracelens info "$capture"
exec tracelens events "$capture" --class MEM --class SCHED --limit 40
