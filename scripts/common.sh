# Shared helpers of the training and evaluation launchers (sourced, not run):
# argument checks and usage errors, absolute paths, the Python to use, the run
# folder, the command-line flags passed on to train.py / eval.py, and the
# report that names the log to read when a run fails.
#
# The sourcing script defines usage() (the text printed by -h and on wrong
# arguments) before calling any of these.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT_NAME="$(basename "$0")"
# MindSpore's C++ log: errors only (GLOG_v=2 adds its warnings, 1 its info).
export GLOG_v="${GLOG_v:-3}"
# Progress reaches the per-rank logs as it happens, not when a buffer fills.
export PYTHONUNBUFFERED=1

# die MESSAGE: a problem with the input or the machine; exit 1.
die() {
    echo "$SCRIPT_NAME: error: $*" >&2
    exit 1
}

# usage_error MESSAGE: wrong arguments; the message, the usage line, exit 2.
usage_error() {
    echo "$SCRIPT_NAME: error: $*" >&2
    usage | head -n 1 >&2
    echo "(bash scripts/$SCRIPT_NAME -h for the full help)" >&2
    exit 2
}

# show_help_if_asked ARGS...: -h / --help among the launcher's own arguments
# (those before the first --flag meant for the Python script) prints the usage.
show_help_if_asked() {
    local arg
    for arg in "$@"; do
        case "$arg" in
            -h|--help) usage; exit 0 ;;
            --*) return 0 ;;
        esac
    done
}

# count_positional ARGS...: how many arguments come before the first --flag.
count_positional() {
    local count=0 arg
    for arg in "$@"; do
        [[ "$arg" == --* ]] && break
        count=$((count + 1))
    done
    echo "$count"
}

# absolute PATH: PATH made absolute against the caller's directory (symbolic
# links kept), so it means the same wherever the job runs.
absolute() {
    realpath -ms -- "$1"
}

# require_dir NAME PATH HINT / require_file NAME PATH HINT: a clear error when
# PATH is missing, of the wrong kind or unreadable.
require_dir() {
    [[ -e "$2" ]] || usage_error "$1 not found: $2 ($3)"
    [[ -d "$2" ]] || usage_error "$1 is not a folder: $2 ($3)"
    [[ -r "$2" && -x "$2" ]] || usage_error "$1 is not readable: $2 (check its permissions)"
}
require_file() {
    [[ -e "$2" ]] || usage_error "$1 not found: $2 ($3)"
    [[ -f "$2" ]] || usage_error "$1 is not a file: $2 ($3)"
    [[ -r "$2" ]] || usage_error "$1 is not readable: $2 (check its permissions)"
}

# require_number NAME MIN [MAX]: the variable NAME holds a whole number in
# [MIN, MAX]; rewritten in plain decimal (so "08" is 8, not bad octal).
require_number() {
    local -n number="$1"
    local min="$2" max="${3:-}" ok=1
    [[ "$number" =~ ^[0-9]+$ ]] || ok=0
    ((ok)) && ((10#$number < min)) && ok=0
    ((ok)) && [[ -n "$max" ]] && ((10#$number > max)) && ok=0
    local range=">= $min"
    [[ -n "$max" ]] && range="from $min to $max"
    ((ok)) || usage_error "$1 must be a whole number $range, got '$number'"
    number=$((10#$number))
}

# normalize_device_target NAME: the variable NAME set to Ascend, GPU or CPU in
# MindSpore's spelling (any letter case accepted).
normalize_device_target() {
    local -n target="$1"
    case "${target,,}" in
        ascend) target=Ascend ;;
        gpu) target=GPU ;;
        cpu) target=CPU ;;
        *) usage_error "$1 must be Ascend, GPU or CPU, got '$target'" ;;
    esac
}

# check_script_flags OWN_FLAGS -- ARGS...: the arguments passed on to the Python
# script are --key value pairs (or --key=value); keys the launcher sets itself
# from its positional arguments (OWN_FLAGS, space separated) are refused, so a
# run never has two different values for them.
check_script_flags() {
    local own="$1" arg key
    shift 2
    [[ $# -eq 0 || "$1" == --* ]] || usage_error "unexpected argument '$1'"
    for arg in "$@"; do
        [[ "$arg" == --* ]] || continue
        key="${arg#--}"
        key="${key%%=*}"
        [[ -n "$key" ]] || usage_error "'$arg' is not a --key value flag"
        if [[ " $own " == *" $key "* ]]; then
            usage_error "--$key is set from the positional arguments; give it there, not as a flag"
        fi
    done
}

# pick_python: sets PYTHON to an absolute interpreter path: $PYTHON if set,
# else the repository's .venv, else python3 on PATH; checks MindSpore is there.
pick_python() {
    local choice="${PYTHON:-}"
    if [[ -z "$choice" ]]; then
        if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
            choice="$REPO_ROOT/.venv/bin/python"
        else
            choice=python3
        fi
    fi
    PYTHON="$(command -v "$choice")" ||
        die "no Python interpreter '$choice'; create the environment with 'bash scripts/setup.sh'"
    "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('mindspore') is None)" ||
        die "MindSpore is not installed for $PYTHON; run 'bash scripts/setup.sh' (creates $REPO_ROOT/.venv) or set PYTHON"
}

# make_run_folder KIND: sets RUN_DIR (default runs/KIND-YYYYmmdd-HHMMSS under the
# repository; $RUN_DIR to choose) and creates it; refuses a folder with files in it.
make_run_folder() {
    if [[ -n "${RUN_DIR:-}" ]]; then
        RUN_DIR="$(absolute "$RUN_DIR")"
        if [[ -d "$RUN_DIR" && -n "$(ls -A "$RUN_DIR")" ]]; then
            die "RUN_DIR $RUN_DIR is not empty; choose a new folder (or leave RUN_DIR unset)"
        fi
    else
        local base
        base="$REPO_ROOT/runs/$1-$(date +%Y%m%d-%H%M%S)"
        RUN_DIR="$base"
        local n=2
        while [[ -e "$RUN_DIR" ]]; do
            RUN_DIR="$base-$n"
            n=$((n + 1))
        done
    fi
    mkdir -p "$RUN_DIR" || die "cannot create the run folder $RUN_DIR"
    echo "$SCRIPT_NAME: run folder $RUN_DIR"
}

# without_exit_noise: drop MindSpore 2.7.2's harmless "Cell.__del__"
# tracebacks printed at interpreter exit (4 lines each), keep everything else.
without_exit_noise() {
    awk '/^Exception ignored in: <function Cell.__del__/ { skip = 4 } skip > 0 { skip--; next } { print }'
}

ERROR_LINE="^[A-Za-z_.]+: error:|^[A-Za-z_.]*(Error|Exception)(:|$)|^KeyboardInterrupt|CRITICAL"

# first_error LOG: the first line of LOG that reports a Python error (exit
# noise left out), or nothing. (No grep -m/-q: with pipefail an early exit of
# grep would fail the pipe.)
first_error() {
    without_exit_noise < "$1" | grep -E "$ERROR_LINE" | awk 'NR == 1'
}

# report_failure WHAT LOG...: names the log to read (the first that shows an
# error, else the first given) with its last lines, on stderr.
report_failure() {
    local what="$1" log culprit="" error=""
    shift
    for log in "$@"; do
        [[ -f "$log" ]] && error=$(first_error "$log")
        if [[ -n "$error" ]]; then
            culprit="$log"
            break
        fi
    done
    [[ -n "$culprit" ]] || culprit="$1"
    {
        echo "$SCRIPT_NAME: FAILED: $what"
        [[ -n "$error" ]] && echo "$SCRIPT_NAME: first error: $error"
        echo "$SCRIPT_NAME: read $culprit; its last lines:"
        if [[ -f "$culprit" ]]; then
            without_exit_noise < "$culprit" | tail -n 20 | sed 's/^/    /'
        else
            echo "    (no log was written)"
        fi
        echo "$SCRIPT_NAME: all logs of this run: $RUN_DIR"
    } >&2
}

# run_logged LOG WHAT CMD...: runs CMD, its output shown and appended to LOG
# (tee -i: Ctrl+C reaches CMD, which may save and stop, and tee stays to write
# those last lines); then says how it ended, naming the log. The launcher's
# own lines go to stderr, so standard output is CMD's alone. Returns CMD's
# exit status.
run_logged() {
    local log="$1" what="$2" start=$SECONDS status
    shift 2
    echo "$SCRIPT_NAME: $*" | tee -a "$log" >&2
    "$@" 2>&1 | tee -i -a "$log"
    status=${PIPESTATUS[0]}
    if ((status == 0)); then
        echo "$SCRIPT_NAME: done in $((SECONDS - start)) s; log $log" >&2
    else
        report_failure "$what exited with status $status after $((SECONDS - start)) s" "$log"
    fi
    return "$status"
}
