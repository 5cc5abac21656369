#!/usr/bin/env bash
# Sets up .venv with the test packages (scripts/setup.sh --dev), then runs the
# whole pytest suite. Extra arguments go to pytest (e.g. -k parity -x).
#
# TEST_WORKERS (default 2) test processes share the files (pytest-xdist,
# --dist loadfile: a file's tests and module fixtures stay in one process).
# Much of the suite is single-threaded graph compilation, so two processes
# on the 2-core machine take 13.5 minutes instead of 21.6. TEST_WORKERS=0
# runs everything in this one process.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh --dev
export GLOG_v="${GLOG_v:-3}"   # MindSpore: errors only
exec .venv/bin/python -m pytest tests -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
