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
    require_dir "$2" "$1" "an image folder with one sub-folder per class, or a COCO root"
    absolute "$1"
}

# preprocess DATA_PATH OUTPUT_DIR MINDIR [FLAG...]: images -> OUTPUT_DIR/preprocess_Result,
# for the MINDIR's task, at its input size with the preprocessing recorded beside it
# (MINDIR.json, written by export.py); the FLAGs go to preprocess.py (e.g. --val_split val).
preprocess() {
    echo "preprocess: $1 -> $2/preprocess_Result for $3 (log: $2/preprocess.log)"
    if ! (cd "$ROOT" && "$PYTHON" preprocess.py --data_path "$1" \
            --output_path "$2/preprocess_Result" --mindir_path "$3" "${@:4}") \
            > "$2/preprocess.log" 2>&1; then
        fail "preprocessing failed" "$2/preprocess.log"
    fi
    without_exit_noise < "$2/preprocess.log" | grep -E '^(warning|model info|data:)' || true
    tail -n 1 "$2/preprocess.log"
}

# postprocess OUTPUT_DIR: score OUTPUT_DIR/result_Files into OUTPUT_DIR/acc.log (the task's
# metrics; every task's postprocess.py takes --predictions_file).
postprocess() {
    echo "postprocess: $1/result_Files (log: $1/acc.log)"
    if ! (cd "$ROOT" && "$PYTHON" postprocess.py --result_path "$1/result_Files" \
            --label_file "$1/preprocess_Result/labels.json" \
            --predictions_file "$1/predictions.json") > "$1/acc.log" 2>&1; then
        fail "postprocessing failed" "$1/acc.log"
    fi
    without_exit_noise < "$1/acc.log" | tail -n 2
}

