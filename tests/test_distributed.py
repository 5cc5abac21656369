"""scripts/run_distribute_train.sh end to end on the CPU.

- Two msrun workers on loopback train GhostNetV2 data-parallel (MindSpore's
  collective library) on a tiny generated image folder: exit 0, rank 0 alone
  writes the checkpoints and metrics, both ranks end with the same weights
  (and the checkpoint holds them), the loss goes down; the last epoch is
  validated across the ranks (each its half, the sums all-reduced).
- Each rank's share of the data, built as train.py builds it for that rank:
  the same number of images, disjoint, together every image once per epoch.
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
from collections import Counter

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
TRAIN_PER_CLASS = 16
VAL_PER_CLASS = 3  # 9 validation images: 5 for rank 0, 4 for rank 1
COLORS = {"blue": (40, 40, 200), "green": (40, 200, 40), "red": (200, 40, 40)}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_color_folder(root, per_class=TRAIN_PER_CLASS, size=64, seed=0):
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
    write_color_folder(str(work / "data" / "val"), per_class=VAL_PER_CLASS, seed=1)
    (work / "tiny.yaml").write_text(TINY_RECIPE)
    run_dir = work / "logs"
    # validation once, at the end (val_interval 0): the all-reduced path, one compile
    result, seconds = run_script(["data/train", "tiny.yaml", "2", "CPU", "--output_dir", "out",
                                  "--val_data_path", str(work / "data" / "val"),
                                  "--val_interval", "0"],
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
    assert everywhere == [str(out / "best.ckpt"), str(out / f"ghostnetv2_100-epoch{EPOCHS:04d}.ckpt"),
                          str(out / "last.ckpt")]
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


def test_validation_runs_across_the_ranks(two_worker_run):
    """Each rank scores its own part of the validation folder (images r, r + 2,
    ...) and the sums are all-reduced: the record counts every image once."""
    assert two_worker_run["result"].returncode == 0, describe(two_worker_run["result"])
    total = VAL_PER_CLASS * len(COLORS)
    train_share = TRAIN_PER_CLASS * len(COLORS) // 2
    for rank, share in ((0, (total + 1) // 2), (1, total // 2)):
        text = (two_worker_run["run_dir"] / f"worker_{rank}.log").read_text()
        assert f"({share} images on this rank)" in text, f"worker_{rank}.log"
        # the launched job's training data was split too, not only the in-process check's
        assert f"{train_share} images on this rank" in text, f"worker_{rank}.log"
        assert "top-1" in text and f"({total} images)" in text, f"worker_{rank}.log"
    records = [json.loads(line) for line in (two_worker_run["out"] / "metrics.jsonl").read_text().splitlines()]
    validated = [r for r in records if "top1" in r]
    assert [r["epoch"] for r in validated] == [EPOCHS]  # once, at the end
    assert validated[0]["val_images"] == total
    correct = validated[0]["top1"] * total
    assert abs(correct - round(correct)) < 1e-6 and 0 < validated[0]["val_loss"] < 10


def pixels_key(image):
    """A batch image (normalised CHW float32) as the uint8 HWC pixels it came from."""
    from src.dataset import IMAGENET_MEAN, IMAGENET_STD
    hwc = image.transpose(1, 2, 0) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    return np.clip(np.rint(hwc), 0, 255).astype(np.uint8).tobytes()


def test_each_rank_reads_its_own_share(tmp_path):
    """The training and validation data of rank 0 and rank 1 of 2, made as
    train.py makes them (its recipe, seed and task), read one epoch at a
    time: each file identified by its pixels."""
    import train
    from src.tasks import get_task
    from src.train_utils import set_seed
    files = sorted(glob.glob(str(write_color_folder(str(tmp_path / "train"))) + "/*/*.png"))
    val_files = sorted(glob.glob(str(write_color_folder(str(tmp_path / "val"), per_class=VAL_PER_CLASS,
                                                        seed=1)) + "/*/*.png"))
    by_pixels = {np.asarray(Image.open(f).convert("RGB")).tobytes(): f for f in files + val_files}
    (tmp_path / "tiny.yaml").write_text(TINY_RECIPE)
    config = train.parse_config(["--config_path", str(tmp_path / "tiny.yaml"), "--data_path",
                                 str(tmp_path / "train"), "--val_data_path", str(tmp_path / "val"),
                                 "--output_dir", str(tmp_path / "out")])
    task = get_task(config.task)
    epochs = 2
    read = {}  # rank -> [files of epoch 1, files of epoch 2], val files
    for rank in (0, 1):
        set_seed(config.seed)
        data, class_names = task.create_train_data(config, rank, 2)
        steps = data.num_files // config.batch_size
        iterator = data.create_tuple_iterator(output_numpy=True, num_epochs=epochs)
        per_epoch = []
        for _ in range(epochs):
            batches = list(iterator)
            assert len(batches) == steps
            per_epoch.append([by_pixels[pixels_key(image)] for images, _ in batches
                              for image in images])
        val = task.create_val_data(config, rank, 2, class_names)
        val_read = [by_pixels[pixels_key(image)] for images, _ in
                    val.create_tuple_iterator(output_numpy=True, num_epochs=1) for image in images]
        read[rank] = per_epoch, val_read
    for epoch in range(epochs):
        shares = [read[rank][0][epoch] for rank in (0, 1)]
        assert [len(s) for s in shares] == [len(files) // 2] * 2
        assert not set(shares[0]) & set(shares[1]), f"epoch {epoch + 1}: ranks share files"
        assert Counter(shares[0] + shares[1]) == Counter(files)  # every file once
    assert read[0][0][0] != read[0][0][1]  # reshuffled every epoch
    assert read[0][1] == val_files[0::2] and read[1][1] == val_files[1::2]


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
