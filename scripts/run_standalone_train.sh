#!/usr/bin/env bash
# Training on one device: train.py with its output shown and kept in a log.
set -u -o pipefail

usage() {
    cat <<'EOF'
usage: bash scripts/run_standalone_train.sh DATA_PATH CONFIG_PATH [DEVICE_TARGET] [--key value ...]

Training of GhostNetV2 (train.py) on one device.

  DATA_PATH      training data: DATA_PATH/<class>/<image files> for a classifier, the
                 data set root (COCO, ADE20K layout) for a detector / segmenter; the
                 recipe's task key says which
  CONFIG_PATH    yaml recipe, e.g. config/ghostnetv2_100_digits.yaml
  DEVICE_TARGET  Ascend, GPU or CPU; default: the recipe's device_target
  --key value    any recipe key, passed on to train.py (--epoch_size 1 --output_dir DIR ...)

Settings: DEVICE_ID (Ascend/GPU device, default 0), RUN_DIR (folder for the
log, default runs/standalone-<date>-<time>), PYTHON (interpreter, default
.venv/bin/python, else python3).
Log: RUN_DIR/train.log. Checkpoints, metrics.jsonl and the plot: the recipe's
output_dir (--output_dir). Ctrl+C saves a checkpoint and stops (--resume auto
continues). The exit status is train.py's.
EOF
}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

show_help_if_asked "$@"
positional=$(count_positional "$@")
((positional >= 2 && positional <= 3)) || usage_error "expected 2 or 3 arguments before the --flags, got $positional"
DATA_PATH="$(absolute "$1")"
CONFIG_PATH="$(absolute "$2")"
DEVICE_TARGET=""
((positional >= 3)) && DEVICE_TARGET="$3"
shift "$positional"

check_script_flags "data_path config_path device_target" -- "$@"
require_dir DATA_PATH "$DATA_PATH" "expected DATA_PATH/<class>/<image files>, or a data set root"
require_file CONFIG_PATH "$CONFIG_PATH" "a yaml recipe such as config/ghostnetv2_100_digits.yaml"
TRAIN_ARGS=("$REPO_ROOT/train.py" --data_path "$DATA_PATH" --config_path "$CONFIG_PATH")
if [[ -n "$DEVICE_TARGET" ]]; then
    normalize_device_target DEVICE_TARGET
    TRAIN_ARGS+=(--device_target "$DEVICE_TARGET")
fi
TRAIN_ARGS+=("$@")
export DEVICE_ID="${DEVICE_ID:-0}"
require_number DEVICE_ID 0

pick_python
make_run_folder standalone
run_logged "$RUN_DIR/train.log" train.py "$PYTHON" "${TRAIN_ARGS[@]}"
