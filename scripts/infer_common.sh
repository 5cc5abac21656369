# Shared steps of run_infer_310.sh and run_infer_cpu.sh (sourced, not run).
# Expects ROOT (the repository root) to be set.

# Interpreter choice, path checks, GLOG_v and the exit-noise filter are the
# launchers' (scripts/common.sh).
source "$ROOT/scripts/common.sh"
pick_python

# fail MESSAGE [LOG]: print the message (and the end of the log) and exit 1.
fail() {
    echo "error: $1" >&2
    if [[ -n "${2:-}" && -f "$2" ]]; then
        echo "--- last lines of $2:" >&2
        without_exit_noise < "$2" | tail -n 15 >&2
    fi
    exit 1
}

# absolute_file PATH NAME / absolute_dir PATH NAME: the absolute path, or a clear error.
absolute_file() {
    require_file "$2" "$1" "a file exported by export.py"
    absolute "$1"
}
absolute_dir() {
    require_dir "$2" "$1" "an image folder with one sub-folder per class"
    absolute "$1"
}

# mindir_image_size MINDIR: S of its B x 3 x S x S input.
mindir_image_size() {
    local size
    size="$(cd "$ROOT" && "$PYTHON" src/mindir_infer.py --mindir_path "$1" --print_image_size 2>&1 \
            | without_exit_noise)"
    [[ "$size" =~ ^[0-9]+$ ]] || fail "cannot read the input shape of $1: $size"
    echo "$size"
}

# preprocess DATA_PATH OUTPUT_DIR IMAGE_SIZE: images -> OUTPUT_DIR/preprocess_Result.
preprocess() {
    echo "preprocess: $1 -> $2/preprocess_Result at ${3}x${3} (log: $2/preprocess.log)"
    if ! (cd "$ROOT" && "$PYTHON" preprocess.py --data_path "$1" \
            --output_path "$2/preprocess_Result" --image_size "$3") > "$2/preprocess.log" 2>&1; then
        fail "preprocessing failed" "$2/preprocess.log"
    fi
    tail -n 1 "$2/preprocess.log"
}

# postprocess OUTPUT_DIR: score OUTPUT_DIR/result_Files into OUTPUT_DIR/acc.log.
postprocess() {
    echo "postprocess: $1/result_Files (log: $1/acc.log)"
    if ! (cd "$ROOT" && "$PYTHON" postprocess.py --result_path "$1/result_Files" \
            --label_file "$1/preprocess_Result/labels.json") > "$1/acc.log" 2>&1; then
        fail "postprocessing failed" "$1/acc.log"
    fi
    without_exit_noise < "$1/acc.log" | tail -n 2
}
