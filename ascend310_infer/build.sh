#!/usr/bin/env bash
# Builds ascend310_infer/out/main against the installed MindSpore (Ascend package).
# MINDSPORE_PATH (site-packages/mindspore) and PYTHON may be set to override the lookup.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python3}"
if [[ -z "${MINDSPORE_PATH:-}" ]]; then
    MINDSPORE_PATH="$("$PYTHON" -m pip show mindspore 2>/dev/null | awk '/^Location:/ {print $2 "/mindspore"}' || true)"
fi
if [[ -z "$MINDSPORE_PATH" || ! -d "$MINDSPORE_PATH" ]]; then
    echo "error: MindSpore is not installed for $PYTHON; install MindSpore's Ascend package or set MINDSPORE_PATH" >&2
    exit 1
fi

rm -rf out
mkdir out
cd out
cmake .. -DMINDSPORE_PATH="$MINDSPORE_PATH"
make -j"$(nproc 2>/dev/null || echo 2)"
echo "built $(pwd)/main"
