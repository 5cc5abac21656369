#!/usr/bin/env bash
# Edge-inference flow on the CPU with MindSpore's Python runtime: the same
# preprocessed inputs and result files as run_infer_310.sh, so the flow can be
# checked (and its top-1 / top-5 compared with eval.py's) without an Ascend 310.
#
#   bash scripts/run_infer_cpu.sh MINDIR_PATH DATA_PATH [--FLAG VALUE ...]
#
# MINDIR_PATH: exported with export.py (square input, any batch size).
# DATA_PATH:   the data as eval.py takes it (a classifier: class folders; a
#              detector: a COCO root, its val2017 split unless a flag says).
# --FLAG VALUE: passed to preprocess.py, e.g. --val_split val.
# Output goes to $INFER_OUTPUT_DIR (default ./infer_cpu): preprocess_Result/,
# result_Files/, predictions.json, preprocess.log, infer.log, acc.log; acc.log's
# last line is a JSON object of the task's metrics (a classifier: top1, top5,
# loss, num_images; a detector: AP, AP50, AP75, APs, APm, APl, val_images).
# Task, size, crop: the MINDIR's and its MINDIR.json's.
set -euo pipefail

usage() {
    sed -n '6,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    usage
    exit 0
fi
if [[ $# -lt 2 || ( $# -gt 2 && "$3" != --* ) ]]; then
    usage >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/infer_common.sh"
MINDIR_PATH="$(absolute_file "$1" "MINDIR_PATH")"
DATA_PATH="$(absolute_dir "$2" "DATA_PATH")"
OUTPUT_DIR="${INFER_OUTPUT_DIR:-./infer_cpu}"
mkdir -p "$OUTPUT_DIR"
OUTPUT_DIR="$(cd "$OUTPUT_DIR" && pwd)"

preprocess "$DATA_PATH" "$OUTPUT_DIR" "$MINDIR_PATH" "${@:3}"

echo "inference: $MINDIR_PATH on the CPU (log: $OUTPUT_DIR/infer.log)"
rm -rf "$OUTPUT_DIR/result_Files"
if ! (cd "$ROOT" && "$PYTHON" src/mindir_infer.py --mindir_path "$MINDIR_PATH" \
        --dataset_path "$OUTPUT_DIR/preprocess_Result/images" \
        --result_path "$OUTPUT_DIR/result_Files") > "$OUTPUT_DIR/infer.log" 2>&1; then
    fail "inference failed" "$OUTPUT_DIR/infer.log"
fi
tail -n 1 "$OUTPUT_DIR/infer.log"

postprocess "$OUTPUT_DIR"
