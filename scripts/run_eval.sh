#!/usr/bin/env bash
# Evaluation: eval.py with its output shown and kept in a log.
set -u -o pipefail

usage() {
    cat <<'EOF'
usage: bash scripts/run_eval.sh DATA_PATH PLATFORM CHECKPOINT_PATH [CONFIG_PATH] [--key value ...]

Top-1 / top-5 accuracy and loss of GhostNetV2 weights (eval.py); a detector's COCO AP
or a segmenter's mIoU when the checkpoint is one.

  DATA_PATH        validation data: DATA_PATH/<class>/<image files> for a classifier,
                   the data set root for a detector / segmenter (the checkpoint's
                   model info names its task)
  PLATFORM         Ascend, GPU or CPU
  CHECKPOINT_PATH  .ckpt (train.py's included), .pth, .pth.tar or .safetensors weights
  CONFIG_PATH      yaml recipe; default: the default recipe, with the image size
                   and crop recorded in the checkpoint (older runs: the config.yaml
                   train.py wrote beside it)
  --key value      any recipe key, passed on to eval.py (--batch_size 32 ...)

Settings: DEVICE_ID (Ascend/GPU device, default 0), RUN_DIR (folder for the
log, default runs/eval-<date>-<time>), PYTHON (interpreter, default
.venv/bin/python, else python3).
Log: RUN_DIR/eval.log. The last line of standard output is eval.py's JSON
result (top1, top5 as fractions, loss, num_images). The exit status is eval.py's.
EOF
}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

show_help_if_asked "$@"
positional=$(count_positional "$@")
((positional >= 3 && positional <= 4)) || usage_error "expected 3 or 4 arguments before the --flags, got $positional"
DATA_PATH="$(absolute "$1")"
PLATFORM="$2"
CHECKPOINT_PATH="$(absolute "$3")"
CONFIG_PATH=""
((positional >= 4)) && CONFIG_PATH="$(absolute "$4")"
shift "$positional"

check_script_flags "data_path device_target checkpoint_path config_path" -- "$@"
require_dir DATA_PATH "$DATA_PATH" "expected DATA_PATH/<class>/<image files>, or a data set root"
normalize_device_target PLATFORM
require_file CHECKPOINT_PATH "$CHECKPOINT_PATH" "a .ckpt, .pth, .pth.tar or .safetensors file"
EVAL_ARGS=("$REPO_ROOT/eval.py" --data_path "$DATA_PATH" --device_target "$PLATFORM"
           --checkpoint_path "$CHECKPOINT_PATH")
if [[ -n "$CONFIG_PATH" ]]; then
    require_file CONFIG_PATH "$CONFIG_PATH" "a yaml recipe such as config/ghostnetv2_100_imagenet.yaml"
    EVAL_ARGS+=(--config_path "$CONFIG_PATH")
fi
EVAL_ARGS+=("$@")
export DEVICE_ID="${DEVICE_ID:-0}"
require_number DEVICE_ID 0

pick_python
make_run_folder eval >&2
# Standard output ends with eval.py's JSON line (launcher messages: stderr).
run_logged "$RUN_DIR/eval.log" eval.py "$PYTHON" "${EVAL_ARGS[@]}"
