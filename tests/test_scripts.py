"""Argument handling of the launchers (run_distribute_train.sh,
run_standalone_train.sh, run_eval.sh): help, usage errors with exit status 2,
paths checked (and named absolutely) before anything starts; then, on one
short digits run (the digits_run fixture: make_digits.py, run_standalone_train.sh,
quickstart.sh on the finished run, run_eval.sh), what each script did."""
import json
import os
import re
import socket
import subprocess

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISTRIBUTE = "run_distribute_train.sh"
STANDALONE = "run_standalone_train.sh"
EVAL = "run_eval.sh"
RECIPE = os.path.join(ROOT, "config", "ghostnetv2_100_digits.yaml")
# Settings of a user's shell that would change what the scripts check.
LAUNCH_SETTINGS = ("RANK_TABLE_FILE", "WORKER_NUM", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT",
                   "RUN_DIR", "DEVICE_ID", "FAILURE_GRACE", "CLUSTER_TIME_OUT")


def launcher_env(**settings):
    """This process's environment without the user's launch settings, plus settings."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_SETTINGS}
    env.update(settings)
    return env


def run(script, *args, cwd=None, **env):
    return subprocess.run(["bash", os.path.join(ROOT, "scripts", script), *args], cwd=cwd or ROOT,
                          env=launcher_env(**env), text=True, capture_output=True, timeout=60)


def assert_usage_error(result, *phrases):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "error:" in result.stderr and "usage: bash scripts/" in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    return tmp_path / "train"


@pytest.mark.parametrize("script,synopsis", [
    (DISTRIBUTE, "DATA_PATH CONFIG_PATH [DEVICE_NUM] [DEVICE_TARGET] [--key value ...]"),
    (STANDALONE, "DATA_PATH CONFIG_PATH [DEVICE_TARGET] [--key value ...]"),
    (EVAL, "DATA_PATH PLATFORM CHECKPOINT_PATH [CONFIG_PATH] [--key value ...]"),
])
def test_help_and_missing_arguments(script, synopsis):
    for flag in ("-h", "--help"):
        result = run(script, flag)
        assert result.returncode == 0 and synopsis in result.stdout, result
    assert_usage_error(run(script), synopsis)


def test_distribute_documents_the_cluster_settings():
    text = run(DISTRIBUTE, "-h").stdout
    for setting in ("MASTER_ADDR", "MASTER_PORT", "WORKER_NUM", "NODE_RANK", "RANK_TABLE_FILE",
                    "worker_<rank>.log"):
        assert setting in text


def test_relative_paths_are_checked_and_named_absolutely(tmp_path):
    result = run(DISTRIBUTE, "missing/train", RECIPE, "2", "CPU", cwd=tmp_path)
    assert_usage_error(result, f"DATA_PATH not found: {tmp_path}/missing/train")
    result = run(STANDALONE, str(tmp_path), "nope.yaml", "CPU", cwd=tmp_path)
    assert_usage_error(result, f"CONFIG_PATH not found: {tmp_path}/nope.yaml")
    result = run(EVAL, str(tmp_path), "CPU", "w.ckpt", cwd=tmp_path)
    assert_usage_error(result, f"CHECKPOINT_PATH not found: {tmp_path}/w.ckpt")


def test_paths_of_the_wrong_kind(tmp_path, data_dir):
    assert_usage_error(run(DISTRIBUTE, RECIPE, RECIPE), "DATA_PATH is not a folder")
    assert_usage_error(run(STANDALONE, str(data_dir), str(data_dir)), "CONFIG_PATH is not a file")
    assert_usage_error(run(EVAL, str(data_dir), "CPU", str(data_dir)), "CHECKPOINT_PATH is not a file")
    (tmp_path / "w.ckpt").write_bytes(b"x")
    assert_usage_error(run(EVAL, str(data_dir), "CPU", str(tmp_path / "w.ckpt"), str(tmp_path / "c.yaml")),
                       "CONFIG_PATH not found")


@pytest.mark.parametrize("args,phrase", [
    (["0"], "DEVICE_NUM must be a whole number >= 1, got '0'"),
    (["two"], "DEVICE_NUM must be a whole number >= 1, got 'two'"),
    (["2", "TPU"], "DEVICE_TARGET must be Ascend, GPU or CPU, got 'TPU'"),
    (["2", "CPU", "extra"], "expected 2 to 4 arguments before the --flags, got 5"),
    (["2", "CPU", "--data_path", "x"], "--data_path is set from the positional arguments"),
    (["2", "CPU", "--device_target=GPU"], "--device_target is set from the positional arguments"),
])
def test_distribute_argument_errors(data_dir, args, phrase):
    assert_usage_error(run(DISTRIBUTE, str(data_dir), RECIPE, *args), phrase)


@pytest.mark.parametrize("env,phrase", [
    (dict(WORKER_NUM="4"), "need MASTER_ADDR"),
    (dict(WORKER_NUM="4", MASTER_ADDR="10.0.0.1"), "need NODE_RANK"),
    (dict(WORKER_NUM="1"), "WORKER_NUM (1, all machines) is smaller than DEVICE_NUM (2"),
    (dict(WORKER_NUM="4", MASTER_ADDR="10.0.0.1", NODE_RANK="2"), "needs WORKER_NUM (all machines) >= 6"),
    (dict(MASTER_PORT="80"), "MASTER_PORT must be a whole number from 1024 to 65535"),
    (dict(FAILURE_GRACE="soon"), "FAILURE_GRACE must be a whole number"),
])
def test_distribute_cluster_setting_errors(data_dir, env, phrase):
    assert_usage_error(run(DISTRIBUTE, str(data_dir), RECIPE, "2", "CPU", **env), phrase)


def test_distribute_rank_table_must_match_device_num(tmp_path, data_dir):
    table = {"server_list": [{"device": [{"device_id": "0", "rank_id": "0"}]}]}
    (tmp_path / "hccl.json").write_text(json.dumps(table))
    result = run(DISTRIBUTE, str(data_dir), RECIPE, "2", "Ascend", RANK_TABLE_FILE=str(tmp_path / "hccl.json"))
    assert_usage_error(result, "lists 1 device(s) for server 0, but DEVICE_NUM is 2")
    (tmp_path / "bad.json").write_text("{not json")
    result = run(DISTRIBUTE, str(data_dir), RECIPE, "2", "Ascend", RANK_TABLE_FILE=str(tmp_path / "bad.json"))
    assert result.returncode == 2 and "is not a readable HCCL rank table" in result.stderr, result.stderr
    result = run(DISTRIBUTE, str(data_dir), RECIPE, "2", "Ascend", RANK_TABLE_FILE=str(tmp_path / "none.json"))
    assert_usage_error(result, "RANK_TABLE_FILE not found")


def test_distribute_refuses_a_busy_master_port(tmp_path, data_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(DISTRIBUTE, str(data_dir), RECIPE, "2", "CPU", MASTER_PORT=str(port),
                     RUN_DIR=str(tmp_path / "run"))
    assert result.returncode == 1 and f"MASTER_PORT {port} is in use" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()  # checked before anything starts


def test_run_dir_must_be_new(tmp_path, data_dir):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "worker_0.log").write_text("an earlier run")
    result = run(STANDALONE, str(data_dir), RECIPE, "CPU", RUN_DIR=str(tmp_path / "run"))
    assert result.returncode == 1 and "is not empty" in result.stderr, result.stderr


def test_standalone_and_eval_argument_errors(tmp_path, data_dir):
    assert_usage_error(run(STANDALONE, str(data_dir), RECIPE, "tpu"), "DEVICE_TARGET must be Ascend, GPU or CPU")
    assert_usage_error(run(STANDALONE, str(data_dir), RECIPE, "CPU", "x"), "expected 2 or 3 arguments")
    assert_usage_error(run(STANDALONE, str(data_dir), RECIPE, "--config_path", RECIPE),
                       "--config_path is set from the positional arguments")
    assert_usage_error(run(STANDALONE, str(data_dir), RECIPE, DEVICE_ID="-1"), "DEVICE_ID must be a whole number")
    (tmp_path / "w.ckpt").write_bytes(b"x")
    ckpt = str(tmp_path / "w.ckpt")
    assert_usage_error(run(EVAL, str(data_dir), "NPU", ckpt), "PLATFORM must be Ascend, GPU or CPU, got 'NPU'")
    assert_usage_error(run(EVAL, str(data_dir), "CPU"), "expected 3 or 4 arguments")
    assert_usage_error(run(EVAL, str(data_dir), "CPU", ckpt, "--checkpoint_path", ckpt),
                       "--checkpoint_path is set from the positional arguments")


# ------------------------------------------------------------------ successful runs

def run_long(command, env, timeout=900):
    result = subprocess.run(command, cwd=ROOT, env=launcher_env(GLOG_v="3", **env), text=True,
                            capture_output=True, timeout=timeout)
    assert result.returncode == 0, (command, result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """scripts/make_digits.py, then one short training run of the digits recipe
    through run_standalone_train.sh (1 epoch, validation, --pretrained from a
    .safetensors file and a --num_classes above the data's 10 classes), then
    quickstart.sh on that finished run and run_eval.sh on its best.ckpt.
    One training run (one graph compile) serves every test below."""
    from src.ghostnetv2 import create_model
    from src.weights import save_safetensors
    root = tmp_path_factory.mktemp("digits_run")
    data, out = root / "digits", root / "run"
    python = os.path.join(ROOT, ".venv", "bin", "python")
    made = run_long([python, "scripts/make_digits.py", "--output", str(data)], {})
    first_file = sorted((data / "train").rglob("*.png"))[0]
    mtime = first_file.stat().st_mtime_ns
    remade = run_long([python, "scripts/make_digits.py", "--output", str(data)], {})
    start = create_model("ghostnetv2_100", num_classes=12)
    save_safetensors({p.name: p.asnumpy() for p in start.get_parameters()},
                     str(root / "start.safetensors"))
    flags = ["--epoch_size", "1", "--num_classes", "12",
             "--pretrained", str(root / "start.safetensors")]
    train = run_long(["bash", "scripts/run_standalone_train.sh", str(data / "train"), RECIPE, "CPU",
                      "--val_data_path", str(data / "val"), "--output_dir", str(out), *flags],
                     dict(RUN_DIR=str(root / "train_logs")))
    quickstart = run_long(["bash", "scripts/quickstart.sh", *flags],
                          dict(OUTPUT_DIR=str(out), DATA_DIR=str(data), SKIP_SETUP="1"))
    evaluation = run_long(["bash", "scripts/run_eval.sh", str(data / "val"), "CPU",
                           str(out / "best.ckpt")], dict(RUN_DIR=str(root / "eval_logs")))
    return dict(root=root, data=data, out=out, made=made, remade=remade, train=train,
                quickstart=quickstart, evaluation=evaluation, mtime=(mtime, first_file))


def test_make_digits_writes_the_labelled_split(digits_run):
    """scikit-learn's 1,797 digits, stratified 1,438 / 359, each file in its
    label's folder and showing that digit; a second run rewrites nothing."""
    from sklearn.datasets import load_digits
    from src.digits import digit_image
    data = digits_run["data"]
    assert "train 1438 images, val 359 images" in digits_run["made"]
    counts = {split: {label: len(os.listdir(data / split / str(label))) for label in range(10)}
              for split in ("train", "val")}
    assert sum(counts["train"].values()) == 1438 and sum(counts["val"].values()) == 359
    assert all(32 <= n <= 37 for n in counts["val"].values()), counts  # ~20% of each class
    digits = load_digits()
    for split in ("train", "val"):
        for label in range(10):
            name = sorted(os.listdir(data / split / str(label)))[0]
            index = int(name.split(".")[0])
            assert digits.target[index] == label, (split, name)
            image = np.asarray(Image.open(data / split / str(label) / name))
            assert image.shape == (64, 64, 3)
            assert np.array_equal(image, np.asarray(digit_image(digits.images[index], 64)))
    mtime, first_file = digits_run["mtime"]
    assert first_file.stat().st_mtime_ns == mtime  # the second run left the files alone


def test_standalone_training_run(digits_run):
    """run_standalone_train.sh: train.py ran to the end with the script's
    flags, logged to RUN_DIR, warned about the unused classes and started
    from the .safetensors file."""
    out, log = digits_run["out"], digits_run["train"]
    assert (digits_run["root"] / "train_logs" / "train.log").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1] and records[0]["val_images"] == 359
    assert (out / "best.ckpt").is_file() and (out / "last.ckpt").is_file()
    assert re.search(r"WARNING \S+ has 10 classes but --num_classes is 12: the classifier "
                     r"keeps 12 outputs", log), log[-3000:]
    start = digits_run["root"] / "start.safetensors"
    assert re.search(rf"pretrained: loaded \d+ tensors from {re.escape(str(start))} "
                     r"\(safetensors\)", log), log[-3000:]


def test_quickstart_reuses_a_finished_run(digits_run):
    """quickstart.sh on the finished run: training skipped; its eval.py,
    MINDIR export and prediction ran; eval.py's top-1 on best.ckpt equals the
    run's own validation (one image of 359 allowed for a near tie)."""
    text, out = digits_run["quickstart"], digits_run["out"]
    assert "already holds a finished run: training skipped" in text
    assert "=== quickstart done" in text
    val_top1 = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["top1"]
    assert json.loads((out / "eval.json").read_text())["top1"] == pytest.approx(val_top1,
                                                                                abs=1.5 / 359)
    assert (out / "ghostnetv2_100_digits.mindir").is_file()
    image = sorted(os.listdir(digits_run["data"] / "val" / "3"))[0]
    assert image in text.split("6/6 one prediction")[1]


def test_run_eval_on_the_trained_checkpoint(digits_run):
    result = json.loads([line for line in digits_run["evaluation"].splitlines()
                         if line.startswith("{")][-1])  # eval.py's JSON line
    val_top1 = json.loads((digits_run["out"] / "metrics.jsonl").read_text().splitlines()[-1])["top1"]
    assert result["num_images"] == 359 and result["num_classes"] == 12
    assert result["top1"] == pytest.approx(val_top1, abs=1.5 / 359)
    assert (digits_run["root"] / "eval_logs" / "eval.log").is_file()


def test_quickstart_trains_a_fresh_run(tmp_path, digits_run):
    """A fresh OUTPUT_DIR: quickstart runs train.py with the digits recipe, the
    data and the extra flags (a flag train.py refuses shows it got them,
    without the cost of a second training run)."""
    result = subprocess.run(["bash", "scripts/quickstart.sh", "--epoch_size", "0"], cwd=ROOT,
                            env=launcher_env(OUTPUT_DIR=str(tmp_path / "fresh"), SKIP_SETUP="1",
                                             DATA_DIR=str(digits_run["data"]), GLOG_v="3"),
                            text=True, capture_output=True, timeout=300)
    assert result.returncode != 0
    assert "3/6 training" in result.stdout and "--epoch_size must be" in result.stderr, result
