#!/usr/bin/env bash
# Set up (scripts/setup.sh: the project's .venv, test dependencies, reference tools), then run the whole test suite
# with that environment's pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# numba compiles kernels once per machine; keep its cache out of the source tree when that is read-only
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tracelens/numba}
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
    echo "test.sh: pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit $rc
