"""Argument handling of the launchers (run_distribute_train.sh,
run_standalone_train.sh, run_eval.sh): help, usage errors with exit status 2,
paths checked (and named absolutely) before anything starts. None of these
starts MindSpore."""
import json
import os
import socket
import subprocess

import pytest

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
