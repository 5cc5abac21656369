#!/usr/bin/env bash
# Sets up .venv with the test packages (scripts/setup.sh --dev), then runs the
# whole pytest suite. Extra arguments go to pytest (e.g. -k parity -x).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh --dev
export GLOG_v="${GLOG_v:-3}"   # MindSpore: errors only
exec .venv/bin/python -m pytest tests "$@"
