"""scripts/run_distribute_train.sh end to end on the CPU.

- Two msrun workers on loopback train GhostNetV2 data-parallel (MindSpore's
  collective library) on a tiny generated image folder: exit 0, rank 0 alone
  writes the checkpoints and metrics, both ranks end with the same weights
  (and the checkpoint holds them), the loss goes down.
- Every rank fails (a data folder without class folders): the script exits
  non-zero within a bounded time and names the log to read.
- The rank-table launch (Ascend) on this CPU-only machine: one process per
  device of the table with DEVICE_ID / RANK_ID / RANK_SIZE exported; each
  fails (no Ascend here) and the script says so.
"""
import glob
import json
import os
import re
import socket
import subprocess
import time

import numpy as np
import pytest
from PIL import Image

from test_scripts import launcher_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "run_distribute_train.sh")

# One step per epoch (each rank's whole 24-image shard in one batch), so every
# epoch's loss is measured on the same kind of batch and must fall.
TINY_RECIPE = """\
model: ghostnetv2_100
num_classes: 3
dropout: 0.0
image_size: 64
crop_pct: 1.0
num_workers: 1
scale: [1.0, 1.0]
ratio: [1.0, 1.0]
hflip: 0.0
color_jitter: 0.0
batch_size: 24
epoch_size: 3
optimizer: adamw
lr: 0.001
weight_decay: 0.0
warmup_epochs: 0
label_smoothing: 0.0
save_every: 3
log_interval: 1
val_data_path: ""
"""
EPOCHS = 3
COLORS = {"blue": (40, 40, 200), "green": (40, 200, 40), "red": (200, 40, 40)}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_color_folder(root, per_class=16, size=64, seed=0):
    """root/<colour>/<n>.png: noisy images of one colour per class."""
    rng = np.random.default_rng(seed)
    for name, rgb in COLORS.items():
        os.makedirs(os.path.join(root, name))
        for index in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 40, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(root, name, f"{index}.png"))
    return root


def run_script(args, cwd, timeout, **env):
    """The script's CompletedProcess and its wall time in seconds."""
    full_env = launcher_env(GLOG_v="3", MASTER_PORT=str(free_port()), **env)
    start = time.time()
    result = subprocess.run(["bash", SCRIPT, *args], cwd=cwd, env=full_env, text=True,
                            capture_output=True, timeout=timeout)
    return result, time.time() - start


def describe(result):
    return f"exit {result.returncode}\n--- stdout:\n{result.stdout[-4000:]}\n--- stderr:\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    """One 2-worker CPU job; relative paths, resolved by the script, from its folder."""
    work = tmp_path_factory.mktemp("distributed")
    write_color_folder(str(work / "data" / "train"))
    (work / "tiny.yaml").write_text(TINY_RECIPE)
    run_dir = work / "logs"
    result, seconds = run_script(["data/train", "tiny.yaml", "2", "CPU", "--output_dir", "out"],
                                 cwd=work, timeout=600, RUN_DIR=str(run_dir))
    print(f"2-worker job: {seconds:.1f} s")
    return dict(result=result, work=work, run_dir=run_dir, out=work / "out")


def test_two_cpu_workers_train_and_exit_0(two_worker_run):
    result = two_worker_run["result"]
    assert result.returncode == 0, describe(result)
    assert f"run folder {two_worker_run['run_dir']}" in result.stdout
    for rank in (0, 1):
        assert (two_worker_run["run_dir"] / f"worker_{rank}.log").is_file()


def rank_digests(run_dir):
    digests = {}
    for rank in (0, 1):
        text = (run_dir / f"worker_{rank}.log").read_text()
        found = re.findall(r"rank (\d+) of 2: param_digest=([0-9a-f]+)", text)
        assert len(found) == 1 and found[0][0] == str(rank), f"worker_{rank}.log: {found}"
        digests[rank] = found[0][1]
    return digests


def test_ranks_end_with_the_same_weights(two_worker_run):
    assert two_worker_run["result"].returncode == 0, describe(two_worker_run["result"])
    digests = rank_digests(two_worker_run["run_dir"])
    assert digests[0] == digests[1], digests


def test_rank0_alone_writes_one_checkpoint_set_holding_those_weights(two_worker_run):
    assert two_worker_run["result"].returncode == 0, describe(two_worker_run["result"])
    out = two_worker_run["out"]
    everywhere = sorted(glob.glob(str(two_worker_run["work"] / "**" / "*.ckpt"), recursive=True))
    assert everywhere == [str(out / f"ghostnetv2_100-epoch{EPOCHS:04d}.ckpt"), str(out / "last.ckpt")]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))  # one writer, no duplicates

    from src.distributed import param_digest
    from src.ghostnetv2 import create_model
    from src.weights import load_weights
    net = create_model("ghostnetv2_100", num_classes=3)
    load_weights(net, str(out / "last.ckpt"))
    assert param_digest(net) == rank_digests(two_worker_run["run_dir"])[0]


def test_loss_goes_down(two_worker_run):
    assert two_worker_run["result"].returncode == 0, describe(two_worker_run["result"])
    records = [json.loads(line) for line in (two_worker_run["out"] / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records]
    assert losses[-1] < 0.8 * losses[0], losses


def test_failing_ranks_end_the_job_and_name_the_log(tmp_path):
    (tmp_path / "no_classes").mkdir()  # passes the script's check, fails in train.py on every rank
    (tmp_path / "tiny.yaml").write_text(TINY_RECIPE)
    run_dir = tmp_path / "logs"
    result, seconds = run_script([str(tmp_path / "no_classes"), str(tmp_path / "tiny.yaml"), "2", "CPU",
                                  "--output_dir", str(tmp_path / "out")],
                                 cwd=tmp_path, timeout=300, RUN_DIR=str(run_dir), FAILURE_GRACE="3")
    assert result.returncode != 0, describe(result)
    assert seconds < 120, f"{seconds:.0f} s\n{describe(result)}"
    named = re.search(r"read (\S+worker_\d\.log)", result.stderr)
    assert named and os.path.isfile(named.group(1)), describe(result)
    assert "no class sub-folders" in result.stderr, describe(result)
    assert not glob.glob(str(tmp_path / "out" / "*.ckpt"))


def test_rank_table_launch_exports_the_rank_environment(tmp_path):
    """No Ascend here: each rank fails at set-up, after the launch itself has run."""
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "tiny.yaml").write_text(TINY_RECIPE)
    table = {"version": "1.0", "server_count": "1", "status": "completed", "server_list": [
        {"server_id": "10.0.0.1", "device": [
            {"device_id": "4", "device_ip": "192.1.1.4", "rank_id": "0"},
            {"device_id": "5", "device_ip": "192.1.1.5", "rank_id": "1"}]}]}
    (tmp_path / "hccl_2p.json").write_text(json.dumps(table))
    run_dir = tmp_path / "logs"
    result, seconds = run_script(["data", "tiny.yaml", "2", "Ascend"], cwd=tmp_path, timeout=300,
                                 RUN_DIR=str(run_dir), RANK_TABLE_FILE="hccl_2p.json")
    assert result.returncode != 0, describe(result)
    assert seconds < 120, f"{seconds:.0f} s\n{describe(result)}"
    assert re.search(r"read \S+worker_[01]\.log", result.stderr), describe(result)
    assert "Ascend is not available" in result.stderr, describe(result)
    for device_id, rank_id in ((4, 0), (5, 1)):
        env = dict(line.split("=", 1) for line in
                   (run_dir / f"env_{rank_id}.log").read_text().splitlines() if "=" in line)
        assert env["DEVICE_ID"] == str(device_id) and env["RANK_ID"] == str(rank_id)
        assert env["RANK_SIZE"] == "2"
        assert env["RANK_TABLE_FILE"] == str(tmp_path / "hccl_2p.json")
        assert (run_dir / f"worker_{rank_id}.log").is_file()
