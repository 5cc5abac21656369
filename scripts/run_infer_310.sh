#!/usr/bin/env bash
# Ascend 310 inference: preprocess -> build ascend310_infer -> run -> postprocess.
#
#   bash scripts/run_infer_310.sh MINDIR_PATH DATA_PATH [DEVICE_ID] [--FLAG VALUE ...]
#
# MINDIR_PATH: exported with export.py --batch_size 1 (square input; its
#              MINDIR.json gives the task, preprocessing and class names).
# DATA_PATH:   the data as eval.py takes it (a classifier: class folders; a
#              detector: a COCO root, its val2017 split unless a flag says).
# DEVICE_ID:   Ascend device, default 0.
# --FLAG VALUE: passed to preprocess.py, e.g. --val_split val.
# Output goes to $INFER_OUTPUT_DIR (default ./infer_310): preprocess_Result/,
# result_Files/ (<input>_<i>.bin per output i), time_Result/, predictions.json,
# preprocess.log, infer.log, acc.log; acc.log's last line is a JSON object
# of the task's metrics (a classifier: top1, top5, loss, num_images; a
# detector: AP, AP50, AP75, APs, APm, APl, val_images).
# Needs an Ascend 310 with CANN and MindSpore's Ascend package (C++ API).
set -euo pipefail

usage() {
    sed -n '4,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    usage
    exit 0
fi
DEVICE_ID=0
if [[ $# -ge 3 && "$3" != --* ]]; then
    DEVICE_ID="$3"
    PREPROCESS_FLAGS=("${@:4}")
else
    PREPROCESS_FLAGS=("${@:3}")
fi
if [[ $# -lt 2 || ( ${#PREPROCESS_FLAGS[@]} -gt 0 && "${PREPROCESS_FLAGS[0]}" != --* ) ]]; then
    usage >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/infer_common.sh"
MINDIR_PATH="$(absolute_file "$1" "MINDIR_PATH")"
DATA_PATH="$(absolute_dir "$2" "DATA_PATH")"
[[ "$DEVICE_ID" =~ ^[0-9]+$ ]] || fail "DEVICE_ID must be a non-negative integer, got '$DEVICE_ID'"
OUTPUT_DIR="${INFER_OUTPUT_DIR:-./infer_310}"
mkdir -p "$OUTPUT_DIR"
OUTPUT_DIR="$(cd "$OUTPUT_DIR" && pwd)"

# CANN's environment (library and operator paths), when not set up already.
ASCEND_HOME="${ASCEND_HOME:-/usr/local/Ascend}"
for env_script in "$ASCEND_HOME/ascend-toolkit/set_env.sh" "$ASCEND_HOME/nnae/set_env.sh"; do
    if [[ -z "${ASCEND_OPP_PATH:-}" && -f "$env_script" ]]; then
        # shellcheck disable=SC1090
        source "$env_script"
    fi
done
[[ -n "${ASCEND_OPP_PATH:-}" ]] || echo "warning: no CANN environment found under $ASCEND_HOME" \
    "(set ASCEND_HOME or source CANN's set_env.sh); the build or the run may fail" >&2

preprocess "$DATA_PATH" "$OUTPUT_DIR" "$MINDIR_PATH" ${PREPROCESS_FLAGS[@]+"${PREPROCESS_FLAGS[@]}"}

echo "build: ascend310_infer (log: $OUTPUT_DIR/build.log)"
PYTHON="$PYTHON" bash "$ROOT/ascend310_infer/build.sh" > "$OUTPUT_DIR/build.log" 2>&1 \
    || fail "building ascend310_infer failed" "$OUTPUT_DIR/build.log"

echo "inference: $MINDIR_PATH on Ascend device $DEVICE_ID (log: $OUTPUT_DIR/infer.log)"
rm -rf "$OUTPUT_DIR/result_Files"
(cd "$OUTPUT_DIR" && "$ROOT/ascend310_infer/out/main" --mindir_path="$MINDIR_PATH" \
    --dataset_path="$OUTPUT_DIR/preprocess_Result/images" --device_id="$DEVICE_ID" \
    --result_path="$OUTPUT_DIR/result_Files") > "$OUTPUT_DIR/infer.log" 2>&1 \
    || fail "inference failed" "$OUTPUT_DIR/infer.log"
grep "inference cost" "$OUTPUT_DIR/infer.log" || true

postprocess "$OUTPUT_DIR"
