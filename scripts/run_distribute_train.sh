#!/usr/bin/env bash
# Data-parallel training: train.py on DEVICE_NUM devices through MindSpore's
# msrun (HCCL on Ascend, NCCL on GPU, MindSpore's collective library on CPU),
# or the classic rank-table launch on Ascend when RANK_TABLE_FILE is set.
set -u -o pipefail

usage() {
    cat <<'EOF'
usage: bash scripts/run_distribute_train.sh DATA_PATH CONFIG_PATH [DEVICE_NUM] [DEVICE_TARGET] [--key value ...]

Data-parallel training of GhostNetV2 (train.py) on several devices.

  DATA_PATH      training data: DATA_PATH/<class>/<image files> for a classifier, the
                 data set root (COCO, ADE20K layout) for a detector / segmenter; the
                 recipe's task key says which
  CONFIG_PATH    yaml recipe, e.g. config/ghostnetv2_100_imagenet.yaml
  DEVICE_NUM     training processes (devices) on this machine, default 8
  DEVICE_TARGET  Ascend (default), GPU or CPU
  --key value    any recipe key, passed on to train.py (--epoch_size 1 --output_dir DIR ...)

One machine: msrun starts DEVICE_NUM workers and their scheduler on
127.0.0.1:MASTER_PORT. Several machines: run the same command on each, with
  MASTER_ADDR  address of the machine with NODE_RANK 0 (it runs the scheduler)
  MASTER_PORT  scheduler port, default 8118 (must be free on that machine)
  WORKER_NUM   workers on all machines together, default DEVICE_NUM
  NODE_RANK    this machine's index 0, 1, ...; its ranks are NODE_RANK*DEVICE_NUM onwards
Rank table (Ascend only): with RANK_TABLE_FILE=/path/hccl.json one process per
device of server NODE_RANK (default 0) of the table, with DEVICE_ID, RANK_ID,
RANK_SIZE and RANK_TABLE_FILE exported; DEVICE_NUM must match the table.
Other settings:
  CLUSTER_TIME_OUT  seconds the workers wait for each other to join, default 600
  FAILURE_GRACE     seconds msrun gets to stop the others after a worker fails, default 10
  RUN_DIR           folder for the logs, default runs/distribute-<date>-<time>
  PYTHON            interpreter, default .venv/bin/python, else python3

Logs: RUN_DIR/worker_<rank>.log, one per rank (rank 0 is also shown here), and
scheduler.log and msrun.log (msrun) or env_<rank>.log (rank table). Checkpoints, metrics.jsonl and the plot:
the recipe's output_dir (--output_dir), written by rank 0 only. The exit status
is non-zero when any rank fails; the log to read is named.
EOF
}

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

show_help_if_asked "$@"
positional=$(count_positional "$@")
((positional >= 2 && positional <= 4)) || usage_error "expected 2 to 4 arguments before the --flags, got $positional"
DATA_PATH="$(absolute "$1")"
CONFIG_PATH="$(absolute "$2")"
DEVICE_NUM=8
DEVICE_TARGET=Ascend
((positional >= 3)) && DEVICE_NUM="$3"
((positional >= 4)) && DEVICE_TARGET="$4"
shift "$positional"
TRAIN_FLAGS=("$@")

check_script_flags "data_path config_path device_target" -- "${TRAIN_FLAGS[@]}"
require_dir DATA_PATH "$DATA_PATH" "expected DATA_PATH/<class>/<image files>, or a data set root"
require_file CONFIG_PATH "$CONFIG_PATH" "a yaml recipe such as config/ghostnetv2_100_imagenet.yaml"
require_number DEVICE_NUM 1
normalize_device_target DEVICE_TARGET

USE_RANK_TABLE=0
if [[ -n "${RANK_TABLE_FILE:-}" ]]; then
    if [[ "$DEVICE_TARGET" == Ascend ]]; then
        USE_RANK_TABLE=1
        RANK_TABLE_FILE="$(absolute "$RANK_TABLE_FILE")"
        require_file RANK_TABLE_FILE "$RANK_TABLE_FILE" "an HCCL rank table (hccl_tools.py writes one)"
    else
        echo "$SCRIPT_NAME: RANK_TABLE_FILE is for Ascend only; launching $DEVICE_TARGET with msrun"
        unset RANK_TABLE_FILE
    fi
fi
[[ -z "${NODE_RANK:-}" ]] || require_number NODE_RANK 0

# msrun's cluster: this machine's workers among WORKER_NUM, the scheduler's address.
check_cluster_settings() {
    WORKER_NUM="${WORKER_NUM:-$DEVICE_NUM}"
    require_number WORKER_NUM 1
    ((WORKER_NUM >= DEVICE_NUM)) ||
        usage_error "WORKER_NUM ($WORKER_NUM, all machines) is smaller than DEVICE_NUM ($DEVICE_NUM, this machine)"
    if ((WORKER_NUM > DEVICE_NUM)); then
        [[ -n "${MASTER_ADDR:-}" ]] ||
            usage_error "several machines (WORKER_NUM $WORKER_NUM > DEVICE_NUM $DEVICE_NUM) need MASTER_ADDR, the address of the machine with NODE_RANK 0"
        [[ -n "${NODE_RANK:-}" ]] ||
            usage_error "several machines need NODE_RANK, this machine's index (0 on the MASTER_ADDR machine)"
    fi
    if [[ -n "${NODE_RANK:-}" ]]; then
        local needed=$(((NODE_RANK + 1) * DEVICE_NUM))
        ((needed <= WORKER_NUM)) ||
            usage_error "NODE_RANK $NODE_RANK with DEVICE_NUM $DEVICE_NUM per machine needs WORKER_NUM (all machines) >= $needed, got $WORKER_NUM"
    fi
    MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
    MASTER_PORT="${MASTER_PORT:-8118}"
    require_number MASTER_PORT 1024 65535
    CLUSTER_TIME_OUT="${CLUSTER_TIME_OUT:-600}"
    [[ "$CLUSTER_TIME_OUT" =~ ^-?[0-9]+$ ]] ||
        usage_error "CLUSTER_TIME_OUT must be a number of seconds (negative: no limit), got '$CLUSTER_TIME_OUT'"
    FAILURE_GRACE="${FAILURE_GRACE:-10}"
    require_number FAILURE_GRACE 0
}
((USE_RANK_TABLE)) || check_cluster_settings

pick_python
TRAIN_ARGS=("$REPO_ROOT/train.py" --data_path "$DATA_PATH" --config_path "$CONFIG_PATH"
            --device_target "$DEVICE_TARGET" "${TRAIN_FLAGS[@]}")
# The dataset reads this to share the CPU cores out among the local processes.
export LOCAL_WORKER_NUM="$DEVICE_NUM"

# ------------------------------------------------------------------ helpers

# stop_process_groups PID...: TERM to each process group, KILL after 5 s.
stop_process_groups() {
    local pid waited
    for pid in "$@"; do kill -TERM -- "-$pid" 2>/dev/null; done
    for waited in 1 2 3 4 5; do
        local alive=0
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || return 0
        sleep 1
    done
    for pid in "$@"; do kill -KILL -- "-$pid" 2>/dev/null; done
}

# worker_logs RANK...: sets LOGS to the ranks' log files.
worker_logs() {
    local rank
    LOGS=()
    for rank in "$@"; do LOGS+=("$RUN_DIR/worker_$rank.log"); done
}

# summarize_success LOG...: the ranks' parameter digests (train.py logs one at the end).
summarize_success() {
    local digests
    digests=$(grep -ho "param_digest=[0-9a-f]*" "$@" 2>/dev/null | sort -u)
    echo "$SCRIPT_NAME: done in $((SECONDS - START)) s; logs in $RUN_DIR"
    if [[ -n "$digests" ]]; then
        if [[ $(wc -l <<<"$digests") -eq 1 ]]; then
            echo "$SCRIPT_NAME: every rank ends with the same trainable weights ($digests)"
        else
            echo "$SCRIPT_NAME: warning: the ranks end with different trainable weights: $(tr '\n' ' ' <<<"$digests")" >&2
        fi
    fi
}

# ------------------------------------------------------------------ msrun

# msrun_failed: msrun has reported a worker that exited with an error, or its
# scheduler has died (a busy port, say) while the workers wait for it.
msrun_failed() {
    grep -q "exit with exception" "$RUN_DIR/msrun.log" 2>/dev/null ||
        grep -q "^Traceback (most recent call last)" "$RUN_DIR/scheduler.log" 2>/dev/null
}

# note_worker_ranks: adds msrun's new worker processes to RANK_OF_PID (their
# RANK_ID, from /proc), so that a failure msrun reports by pid names a rank.
declare -A RANK_OF_PID=()
note_worker_ranks() {
    local pid comm rank
    while read -r pid comm; do
        [[ "$comm" == tail || -n "${RANK_OF_PID[$pid]:-}" ]] && continue
        rank=$(tr '\0' '\n' 2>/dev/null < "/proc/$pid/environ" |
               awk -F= '$1 == "MS_ROLE" { role = $2 } $1 == "RANK_ID" { rank = $2 }
                        END { if (role == "MS_WORKER") print rank }')
        [[ -n "$rank" ]] && RANK_OF_PID[$pid]=$rank
    done < <(ps -o pid=,comm= --ppid "$MSRUN_PID" 2>/dev/null)
}

# describe_msrun_failure: sets FAILED_RANK (or "") and FAILURE from msrun's
# first "Worker process PID exit with exception. Error code: N".
describe_msrun_failure() {
    local line pid code
    FAILED_RANK=""
    FAILURE="a worker failed"
    line=$(grep -o "Worker process [0-9]* exit with exception. Error code: -\?[0-9]*" \
           "$RUN_DIR/msrun.log" 2>/dev/null | awk 'NR == 1')
    [[ -n "$line" ]] || return 0
    pid=$(awk '{ print $3 }' <<<"$line")
    code=${line##* }
    FAILED_RANK="${RANK_OF_PID[$pid]:-}"
    local who="a worker (pid $pid)"
    [[ -n "$FAILED_RANK" ]] && who="rank $FAILED_RANK (pid $pid)"
    FAILURE="$who exited with status $code"
    ((code < 0)) && FAILURE="$who was killed by signal $((-code))"
    ((code == -9)) && FAILURE="$FAILURE (SIGKILL: out of memory, or killed from outside)"
}

# stop_msrun: msrun stops its workers and scheduler on SIGINT; whatever is left
# after 10 s (msrun's process group, each worker's own group) is killed.
stop_msrun() {
    local child waited
    kill -INT "$MSRUN_PID" 2>/dev/null
    for waited in $(seq 10); do
        kill -0 "$MSRUN_PID" 2>/dev/null || return 0
        sleep 1
    done
    for child in $(ps -o pid= --ppid "$MSRUN_PID"); do
        kill -KILL -- "-$child" 2>/dev/null || kill -KILL "$child" 2>/dev/null
    done
    kill -KILL -- "-$MSRUN_PID" 2>/dev/null
}

# check_master_port: on the scheduler's machine the port must be free; a busy
# port would leave the workers waiting CLUSTER_TIME_OUT seconds for nothing.
check_master_port() {
    "$PYTHON" - "$MASTER_ADDR" "$MASTER_PORT" "$SCRIPT_NAME: error: " <<'EOF'
import errno, socket, sys
addr, port, error = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    ip = socket.gethostbyname(addr)
except OSError as err:
    sys.exit(f"{error}MASTER_ADDR {addr} does not resolve to an address ({err})")
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    sock.bind((ip, port))
except OSError as err:
    if err.errno == errno.EADDRINUSE:
        sys.exit(f"{error}MASTER_PORT {port} is in use on {addr} (another training run?); "
                 "choose a free one with MASTER_PORT=<port>")
    # EADDRNOTAVAIL: MASTER_ADDR is another machine, which runs the scheduler
finally:
    sock.close()
EOF
}

run_msrun() {
    local msrun_args=(--worker_num "$WORKER_NUM" --local_worker_num "$DEVICE_NUM"
                      --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT"
                      --log_dir "$RUN_DIR" --join True --cluster_time_out "$CLUSTER_TIME_OUT"
                      --tail_worker_log "$(( ${NODE_RANK:-0} * DEVICE_NUM ))")
    [[ -n "${NODE_RANK:-}" ]] && msrun_args+=(--node_rank "$NODE_RANK")
    echo "$SCRIPT_NAME: msrun: $DEVICE_NUM of $WORKER_NUM workers on $DEVICE_TARGET," \
         "scheduler $MASTER_ADDR:$MASTER_PORT; logs $RUN_DIR/worker_<rank>.log"
    # msrun starts its workers as 'python' or 'python3' found on PATH; in its
    # own session so that a stop reaches its scheduler too.
    : > "$RUN_DIR/msrun.log"
    PATH="$(dirname "$PYTHON"):$PATH" setsid "$PYTHON" -m mindspore.parallel.cluster.run \
        "${msrun_args[@]}" "$(basename "$PYTHON")" "${TRAIN_ARGS[@]}" > "$RUN_DIR/msrun.log" 2>&1 &
    MSRUN_PID=$!
    tail -n +1 -f --pid="$MSRUN_PID" "$RUN_DIR/msrun.log" &
    local tail_pid=$! failed_at="" status
    trap 'echo "$SCRIPT_NAME: interrupted; stopping the workers" >&2; stop_msrun; exit 130' INT TERM

    # msrun stops the other local workers when one fails, then waits for its
    # scheduler, which waits up to CLUSTER_TIME_OUT for workers that are gone:
    # give it FAILURE_GRACE seconds, then stop it.
    while kill -0 "$MSRUN_PID" 2>/dev/null; do
        note_worker_ranks
        if [[ -z "$failed_at" ]] && msrun_failed; then
            failed_at=$SECONDS
        fi
        if [[ -n "$failed_at" ]] && ((SECONDS - failed_at >= FAILURE_GRACE)); then
            echo "$SCRIPT_NAME: a worker failed and msrun has not ended within" \
                 "$FAILURE_GRACE s; stopping it" >&2
            stop_msrun
            break
        fi
        sleep 1
    done
    wait "$MSRUN_PID"
    status=$?
    wait "$tail_pid" 2>/dev/null
    trap - INT TERM

    local first_rank=$(( ${NODE_RANK:-0} * DEVICE_NUM ))
    # shellcheck disable=SC2046
    worker_logs $(seq "$first_rank" $((first_rank + DEVICE_NUM - 1)))
    if [[ $status -eq 0 && -z "$failed_at" ]]; then
        summarize_success "${LOGS[@]}"
        return 0
    fi
    describe_msrun_failure
    [[ -z "$failed_at" && -z "$FAILED_RANK" ]] && FAILURE="msrun exited with status $status"
    local failed_log=()
    [[ -n "$FAILED_RANK" ]] && failed_log=("$RUN_DIR/worker_$FAILED_RANK.log")
    # The failed rank's log first: a killed worker leaves no error message.
    report_failure "$FAILURE after $((SECONDS - START)) s" \
        "${failed_log[@]}" "${LOGS[@]}" "$RUN_DIR/scheduler.log" "$RUN_DIR/msrun.log"
    return 1
}

# ------------------------------------------------------------------ rank table

# rank_table_devices: "RANK_SIZE" then "DEVICE_ID RANK_ID" per device of this
# server (NODE_RANK in the table's server_list).
rank_table_devices() {
    "$PYTHON" - "$RANK_TABLE_FILE" "${NODE_RANK:-0}" "$SCRIPT_NAME: error: " <<'EOF'
import json, sys
path, server, error = sys.argv[1], int(sys.argv[2]), sys.argv[3]
layout = ('expected {"server_list": [{"device": [{"device_id": "0", "rank_id": "0", ...}, ...]}, ...]}')
try:
    with open(path, encoding="utf-8") as f:
        servers = json.load(f)["server_list"]
    if server >= len(servers):
        sys.exit(f"{error}RANK_TABLE_FILE {path} lists {len(servers)} server(s); "
                 f"NODE_RANK {server} is not one of them")
    devices = [(int(d["device_id"]), int(d["rank_id"])) for d in servers[server]["device"]]
    rank_size = sum(len(s["device"]) for s in servers)
except (OSError, ValueError, KeyError, TypeError) as err:
    sys.exit(f"{error}RANK_TABLE_FILE {path} is not a readable HCCL rank table "
             f"({type(err).__name__}: {err}); {layout}")
print(rank_size)
for device_id, rank_id in devices:
    print(device_id, rank_id)
EOF
}

# read_rank_table: sets RANK_SIZE_ALL and DEVICES ("DEVICE_ID RANK_ID" lines)
# from the table; DEVICE_NUM must match this server's devices.
read_rank_table() {
    local table count
    table=$(rank_table_devices) || exit 2
    RANK_SIZE_ALL=$(head -n 1 <<<"$table")
    DEVICES=$(tail -n +2 <<<"$table")
    count=$(grep -c . <<<"$DEVICES")
    ((count == DEVICE_NUM)) || usage_error "RANK_TABLE_FILE lists $count device(s) for server ${NODE_RANK:-0}, but DEVICE_NUM is $DEVICE_NUM"
}

run_rank_table() {
    local rank_size="$RANK_SIZE_ALL" devices="$DEVICES"
    echo "$SCRIPT_NAME: rank table $RANK_TABLE_FILE: $DEVICE_NUM of $rank_size ranks on this server;" \
         "logs $RUN_DIR/worker_<rank>.log, environments env_<rank>.log"

    local pids=() ranks=() device_id rank_id
    while read -r device_id rank_id; do
        # Every rank runs in the caller's folder, as under msrun, so relative
        # paths in the recipe mean what they mean for 'python train.py'
        # (MindSpore 2.x keeps its per-process files apart in rank_<id>/).
        (
            export DEVICE_ID="$device_id" RANK_ID="$rank_id" RANK_SIZE="$rank_size"
            export RANK_TABLE_FILE MINDSPORE_HCCL_CONFIG_PATH="$RANK_TABLE_FILE"
            env > "$RUN_DIR/env_$rank_id.log"
            exec setsid "$PYTHON" "${TRAIN_ARGS[@]}"
        ) > "$RUN_DIR/worker_$rank_id.log" 2>&1 &
        pids+=("$!")
        ranks+=("$rank_id")
    done <<<"$devices"
    tail -n +1 -f "$RUN_DIR/worker_${ranks[0]}.log" &
    local tail_pid=$!
    trap 'echo "$SCRIPT_NAME: interrupted; stopping the ranks" >&2; stop_process_groups "${pids[@]}"; kill "$tail_pid"; exit 130' INT TERM

    # Wait for every rank; the first failure stops the others.
    local running=("${!pids[@]}") failed_rank="" status=0 i
    while ((${#running[@]})) && [[ -z "$failed_rank" ]]; do
        sleep 1
        local still=()
        for i in "${running[@]}"; do
            if kill -0 "${pids[$i]}" 2>/dev/null; then
                still+=("$i")
                continue
            fi
            wait "${pids[$i]}"
            status=$?
            if ((status != 0)); then
                failed_rank="${ranks[$i]}"
                break
            fi
        done
        running=("${still[@]}")
    done
    if [[ -n "$failed_rank" ]]; then
        local others=() j
        for j in "${!pids[@]}"; do
            kill -0 "${pids[$j]}" 2>/dev/null && others+=("${pids[$j]}")
        done
        ((${#others[@]})) && stop_process_groups "${others[@]}"
    fi
    sleep 1
    kill "$tail_pid" 2>/dev/null
    wait "$tail_pid" 2>/dev/null
    trap - INT TERM
    if [[ -z "$failed_rank" ]]; then
        worker_logs "${ranks[@]}"
        summarize_success "${LOGS[@]}"
        return 0
    fi
    report_failure "rank $failed_rank exited with status $status after $((SECONDS - START)) s; the other ranks were stopped" \
        "$RUN_DIR/worker_$failed_rank.log"
    return 1
}

# ------------------------------------------------------------------ main

if ((USE_RANK_TABLE)); then
    read_rank_table
else
    check_master_port || exit 1
fi
START=$SECONDS
make_run_folder distribute
if ((USE_RANK_TABLE)); then
    run_rank_table
else
    run_msrun
fi
