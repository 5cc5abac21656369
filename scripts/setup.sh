#!/usr/bin/env bash
# Creates .venv at the repository root with the runtime packages;
# --dev adds the test packages (PyTorch + timm reference, onnxruntime, ...).
# Idempotent: when the requirement files have not changed since the last
# successful run, it only checks the stamp and returns.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

usage() { echo "usage: bash scripts/setup.sh [--dev]"; }
DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg'"; usage; exit 2 ;;
  esac
done

REQ="$ROOT/requirements.txt"
[ "$DEV" = 1 ] && REQ="$ROOT/requirements-dev.txt"
STAMP="$VENV/.installed-$(basename "$REQ" .txt)"
HASH="$(cat "$ROOT/requirements.txt" "$REQ" | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ] && [ -x "$VENV/bin/python" ]; then
  echo "setup.sh: $VENV is up to date ($(basename "$REQ"))"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup.sh: creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
echo "setup.sh: installing $(basename "$REQ") into $VENV (the first --dev install takes a few minutes: torch is ~5 GB)"
# This machine's pip config names local package folders that may not exist;
# hide pip's warnings about them, keep everything else.
quiet_pip() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
quiet_pip install --quiet --upgrade pip
quiet_pip install --quiet -r "$REQ"
"$VENV/bin/python" -m pip check
echo "$HASH" > "$STAMP"
echo "setup.sh: done; activate with 'source .venv/bin/activate'"
