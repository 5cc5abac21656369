#!/usr/bin/env bash
# The main job in one command, on the CPU: set-up, scikit-learn's digits as an
# ImageFolder, GhostNetV2 1.0x trained from scratch, evaluation, MINDIR export,
# one prediction with infer.py.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash scripts/quickstart.sh [--key value ...]

1. bash scripts/setup.sh             (runtime packages into .venv)
2. scripts/make_digits.py            -> data/digits/{train,val}/<0..9>/*.png
3. train.py with config/ghostnetv2_100_digits.yaml on the CPU
4. eval.py on data/digits/val with the best checkpoint
5. export.py -> MINDIR (when export.py is present)
6. infer.py on best.ckpt and one val image (the checkpoint carries the
   input size, crop and class names: no other flags)

About 15 minutes on a 2-core machine; >= 99% top-1 on the digits val split.
Extra --key value flags go to train.py (e.g. --epoch_size 5 for a smoke run).

Settings: OUTPUT_DIR (default outputs/quickstart-<date>-<time>; an existing
run there is continued, or reused when finished), DATA_DIR (default data/digits),
SKIP_SETUP=1 (use .venv as it is: step 1 installs nothing).
EOF
}
for arg in "$@"; do
    case "$arg" in -h|--help) usage; exit 0 ;; esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# settings relative to the caller's folder, defaults relative to the repository
DATA_DIR="$(realpath -m "${DATA_DIR:-$ROOT/data/digits}")"
OUTPUT_DIR="$(realpath -m "${OUTPUT_DIR:-$ROOT/outputs/quickstart-$(date +%Y%m%d-%H%M%S)}")"
cd "$ROOT"
CONFIG=config/ghostnetv2_100_digits.yaml
PYTHON="$ROOT/.venv/bin/python"
export GLOG_v="${GLOG_v:-3}"   # MindSpore: errors only
START=$SECONDS
step() { echo; echo "=== quickstart [$(( (SECONDS - START) / 60 ))m$(( (SECONDS - START) % 60 ))s] $*"; }

if [[ "${SKIP_SETUP:-0}" == 1 ]]; then
    step "1/6 set-up skipped (SKIP_SETUP=1): using $ROOT/.venv as it is"
else
    step "1/6 set-up (bash scripts/setup.sh)"
    bash scripts/setup.sh
fi

step "2/6 digits data -> $DATA_DIR"
"$PYTHON" scripts/make_digits.py --output "$DATA_DIR" --image_size 64

step "3/6 training -> $OUTPUT_DIR"
# --resume auto: a fresh run in a new folder, the continuation of an
# interrupted one; a finished run is reused.
if "$PYTHON" - "$OUTPUT_DIR" "$CONFIG" "$@" <<'PY'
import os, sys
from src.checkpoint import CheckpointError, checkpoint_position
from src.model_utils.config import get_config
last = os.path.join(sys.argv[1], "last.ckpt")
epochs = (get_config(argv=["--config_path", sys.argv[2]] + sys.argv[3:]).epoch_size
          if os.path.isfile(last) else None)
try:
    done = epochs is not None and checkpoint_position(last)[0] >= epochs
except CheckpointError:
    done = False
sys.exit(0 if done else 1)
PY
then
    echo "$OUTPUT_DIR already holds a finished run: training skipped"
else
    "$PYTHON" train.py --config_path "$CONFIG" --data_path "$DATA_DIR/train" \
        --val_data_path "$DATA_DIR/val" --device_target CPU --output_dir "$OUTPUT_DIR" \
        --resume auto "$@"
fi
TRAIN_END=$SECONDS

step "4/6 evaluation of $OUTPUT_DIR/best.ckpt on $DATA_DIR/val"
"$PYTHON" eval.py --device_target CPU --data_path "$DATA_DIR/val" \
    --checkpoint_path "$OUTPUT_DIR/best.ckpt" | tee "$OUTPUT_DIR/eval.log"
tail -n 1 "$OUTPUT_DIR/eval.log" > "$OUTPUT_DIR/eval.json"

MINDIR="(not exported: export.py is missing)"
if [[ -f export.py ]]; then
    step "5/6 MINDIR export"
    "$PYTHON" export.py --checkpoint_path "$OUTPUT_DIR/best.ckpt" --file_format MINDIR \
        --file_name "$OUTPUT_DIR/ghostnetv2_100_digits"
    MINDIR="$OUTPUT_DIR/ghostnetv2_100_digits.mindir"
fi

VAL_IMAGES=("$DATA_DIR"/val/3/*.png)   # sorted by the shell
IMAGE="${VAL_IMAGES[0]}"
INFER="python infer.py --checkpoint_path $OUTPUT_DIR/best.ckpt --image_path $IMAGE"
step "6/6 one prediction: $INFER"
"$PYTHON" infer.py --checkpoint_path "$OUTPUT_DIR/best.ckpt" --image_path "$IMAGE"

TOP1=$("$PYTHON" -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['top1']:.4f}\")" \
       "$OUTPUT_DIR/eval.json")
cat <<EOF

=== quickstart done in $(( (SECONDS - START) / 60 ))m$(( (SECONDS - START) % 60 ))s (training $(( (TRAIN_END - START) / 60 )) min incl. set-up and data)
data:         $DATA_DIR/{train,val}
checkpoints:  $OUTPUT_DIR/{best,last}.ckpt (+ numbered ones)
training log: $OUTPUT_DIR/train.log
metrics:      $OUTPUT_DIR/metrics.jsonl, curves: $OUTPUT_DIR/metrics.png
evaluation:   $OUTPUT_DIR/eval.json (val top-1 $TOP1)
MINDIR:       $MINDIR (its model info: $MINDIR.json)
predict:      $INFER
              (or --mindir_path $MINDIR; --image_path also takes a folder)
EOF
