"""train.py end to end on a tiny generated data set (3 classes of 64x64
images), in-process through main(argv): loss goes down, checkpoints appear,
SIGTERM saves, --resume auto continues at the right epoch with the right lr
and restores exactly what was saved; plus the cheap failure paths."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import mindcv
import mindspore as ms
import numpy as np
import pytest
import yaml
from PIL import Image

import train
from src import checkpoint as ckpt
from src.ghostnetv2 import create_model
from src.train_utils import (DEVICE_TARGETS, available_device_targets, lr_schedule,
                             parameters_by_name)
from src.weights import read_weights, save_checkpoint
from reference import official_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS_PER_EPOCH = 3  # 24 training images, batch 8
EPOCHS = 3
RECIPE = dict(model="ghostnetv2_100", num_classes=3, dropout=0.0, image_size=64, crop_pct=1.0,
              num_workers=1, scale=[0.8, 1.0], ratio=[0.9, 1.1], hflip=0.0, color_jitter=0.0,
              auto_augment="", re_prob=0.0, batch_size=8, epoch_size=EPOCHS, optimizer="momentum",
              lr=0.05, momentum=0.9, weight_decay=5e-5, label_smoothing=0.1,
              lr_scheduler="cosine_decay", warmup_epochs=1, warmup_lr=0.01, min_lr=0.001,
              ema=True, ema_decay=0.99, amp_level="O2", device_target="CPU", save_every=1,
              keep_checkpoint_max=2, val_interval=1, seed=3, log_interval=1, resume="",
              pretrained="", data_path="", val_data_path="", output_dir="")


def make_images(root, per_class, seed):
    """Class c: noise with a bright channel c (easy to learn in a few steps)."""
    rng = np.random.RandomState(seed)
    for label in range(3):
        folder = os.path.join(root, f"class{label}")
        os.makedirs(folder)
        for i in range(per_class):
            pixels = rng.randint(0, 80, (64, 64, 3)).astype(np.uint8)
            pixels[..., label] += 150
            Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    make_images(str(root / "train"), 8, seed=0)
    make_images(str(root / "val"), 3, seed=1)
    recipe = dict(RECIPE, data_path=str(root / "train"), val_data_path=str(root / "val"),
                  output_dir=str(root / "run"))
    (root / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    return root


def argv(tiny, *extra):
    return ["--config_path", str(tiny / "tiny.yaml"), *extra]


def records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def send_sigterm_after_first_epoch(run_dir):
    """SIGTERM this process once epoch 1 is recorded (as a scheduler would)."""
    path = os.path.join(run_dir, "metrics.jsonl")

    def watch():
        deadline = time.time() + 600
        while time.time() < deadline:
            if os.path.exists(path) and os.path.getsize(path) > 0:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_train_interrupt_resume_finish(tiny, capsys):
    run_dir = str(tiny / "run")
    # --- run 1: stopped by SIGTERM during (or right after) epoch 2
    watcher = send_sigterm_after_first_epoch(run_dir)
    assert train.main(argv(tiny)) == 128 + signal.SIGTERM
    watcher.join(1)
    out = capsys.readouterr().out
    assert "stopped by SIGTERM" in out
    assert "schedule: cosine_decay to 0.001, 1 warmup epochs from 0.01," in out
    latest = ckpt.latest_checkpoint(run_dir)
    epoch, global_step = ckpt.checkpoint_position(latest)
    saved = ckpt.read_checkpoint(latest)
    step_in_epoch = int(saved["step_num"])
    assert global_step == epoch * STEPS_PER_EPOCH + step_in_epoch
    assert epoch >= 1 and global_step < EPOCHS * STEPS_PER_EPOCH
    assert any(k.startswith("ema.") for k in saved) and any(k.startswith("moments.") for k in saved)

    # --- a resumed run's state is exactly the saved one, at the right schedule position
    config = train.parse_config(argv(tiny, "--resume", "auto"))
    trainer = train.Trainer(config, 0, 1)
    trainer.setup(train.resolve_resume(config))
    assert (trainer.start_epoch, trainer.start_step) == (epoch, step_in_epoch)
    restored = parameters_by_name(trainer.train_step)
    for name, value in saved.items():
        if name in restored:
            np.testing.assert_array_equal(restored[name].asnumpy(), value, err_msg=name)
    assert int(trainer.optimizer.global_step.asnumpy().reshape(-1)[0]) == global_step
    del trainer

    # --- the EMA weights are what validation scored and what loads as weights
    ema_weights, _ = read_weights(latest)
    np.testing.assert_array_equal(ema_weights["conv_stem.weight"], saved["ema.conv_stem.weight"])
    # ... and mindcv's loader reads the same file (its train.py / validate.py:
    # create_model(checkpoint_path=..., ema=...)): the EMA or the raw weights
    assert not np.array_equal(saved["ema.classifier.weight"], saved["classifier.weight"])
    for ema in (True, False):
        net = mindcv.create_model("ghostnetv2_100", num_classes=3, checkpoint_path=latest, ema=ema)
        loaded = parameters_by_name(net)
        for name in ("classifier.weight", "blocks.8.3.ghost2.primary_conv.1.moving_mean"):
            np.testing.assert_array_equal(loaded[name].asnumpy(),
                                          saved[f"ema.{name}" if ema else name], err_msg=name)
    # a detection backbone (features_only) keeps the names: the same file loads into it
    backbone = mindcv.create_model("ghostnetv2_100", num_classes=3, features_only=True,
                                   checkpoint_path=latest, ema=True)
    name = "blocks.6.4.ghost1.primary_conv.0.weight"
    np.testing.assert_array_equal(parameters_by_name(backbone)[name].asnumpy(), saved[f"ema.{name}"])

    # --- a fresh run over it is refused; --resume auto finishes the same schedule.
    # (EMA and validation off from here: each costs a graph compilation, and
    # their restore was checked above.)
    assert train.main(argv(tiny)) == 1
    assert "already holds a training run" in capsys.readouterr().err
    assert train.main(argv(tiny, "--resume", "auto", "--ema", "false", "--val_data_path", "")) == 0
    out = capsys.readouterr().out
    assert f"continuing at epoch {epoch + 1} step {step_in_epoch}" in out
    history = records(run_dir)
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    lrs = lr_schedule(train.parse_config(argv(tiny)), STEPS_PER_EPOCH)
    for record in history:  # the lr schedule continued as if never stopped
        assert record["global_step"] == record["epoch"] * STEPS_PER_EPOCH
        assert record["lr"] == pytest.approx(lrs[record["global_step"] - 1])
    assert history[0]["val_images"] == 9 and 0 <= history[0]["top1"] <= 1
    assert history[-1]["train_loss"] < history[0]["train_loss"]

    files = set(os.listdir(run_dir))
    assert {"last.ckpt", "best.ckpt", "metrics.png", "config.yaml", "train.log"} <= files
    numbered = sorted(f for f in files if "-epoch" in f)
    assert numbered == ["ghostnetv2_100-epoch0002.ckpt", "ghostnetv2_100-epoch0003.ckpt"]
    assert "interrupted.ckpt" not in files
    assert ckpt.checkpoint_position(os.path.join(run_dir, "last.ckpt"))[0] == EPOCHS
    assert "param_digest=" in out



def test_sigkill_mid_epoch_then_resume_auto(tiny, tmp_path, capsys):
    """kill -9 (no handler runs, nothing is saved) in the middle of epoch 2;
    --resume auto restarts epoch 2 from last.ckpt and ends after the same
    number of epochs, the lr schedule where it would have been."""
    run_dir = tmp_path / "killed"
    steps = 12  # 24 images, batch 2: room to land the kill inside the epoch
    args = argv(tiny, "--output_dir", str(run_dir), "--batch_size", "2", "--ema", "false",
                "--val_data_path", "")
    env = dict(os.environ, GLOG_v="3")
    run = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = []
    try:
        for line in run.stdout:
            log.append(line)
            if f"epoch 2/{EPOCHS} step 2/{steps} " in line:
                run.send_signal(signal.SIGKILL)
                break
        assert run.wait(60) == -signal.SIGKILL, "".join(log[-20:])
    finally:
        if run.poll() is None:
            run.kill()
        run.stdout.close()

    assert ckpt.latest_checkpoint(str(run_dir)) == str(run_dir / "last.ckpt")
    assert ckpt.checkpoint_position(str(run_dir / "last.ckpt")) == (1, steps), \
        "the kill landed after epoch 2 ended: the test did not test a mid-epoch kill"
    assert not os.path.exists(run_dir / "interrupted.ckpt")
    assert [r["epoch"] for r in records(run_dir)] == [1]

    assert train.main([*args, "--resume", "auto"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {run_dir / 'last.ckpt'}: 1 epochs done, continuing at epoch 2 step 0" \
        in out
    history = records(run_dir)
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    lrs = lr_schedule(train.parse_config(args), steps)
    for record in history:
        assert record["global_step"] == record["epoch"] * steps
        assert record["lr"] == pytest.approx(lrs[record["global_step"] - 1])
    assert ckpt.checkpoint_position(str(run_dir / "last.ckpt")) == (EPOCHS, EPOCHS * steps)

def test_nonfinite_loss_stops_without_saving(tiny, tmp_path, capsys):
    config = train.parse_config(argv(tiny, "--output_dir", str(tmp_path / "nan"),
                                     "--val_data_path", ""))
    train.setup_logging()
    trainer = train.Trainer(config, 0, 1)
    trainer.setup(None)
    trainer.train_step = lambda images, labels: ms.Tensor(np.float32("nan"))
    assert trainer.run() == 3
    assert "the loss became nan at epoch 1 step 1" in capsys.readouterr().out
    assert not os.path.exists(tmp_path / "nan" / "last.ckpt")



def test_overflow_steps_skipped_only_with_dynamic_loss_scale(tiny, tmp_path):
    """With dynamic loss scaling (Ascend / GPU) MindSpore skips an overflowing
    step, so a non-finite loss stops the run only after many in a row; without
    it (the CPU) the first one stops the run."""
    config = train.parse_config(argv(tiny, "--output_dir", str(tmp_path), "--loss_scale_type",
                                     "dynamic", "--loss_scale", "1024"))
    trainer = train.Trainer(config, 0, 1)
    assert trainer.nonfinite_is_fatal(1)
    config.device_target = "Ascend"
    assert not trainer.nonfinite_is_fatal(train.MAX_NONFINITE_WITH_LOSS_SCALE)
    assert trainer.nonfinite_is_fatal(train.MAX_NONFINITE_WITH_LOSS_SCALE + 1)
    config.loss_scale_type = "fixed"
    assert trainer.nonfinite_is_fatal(1)

def ten_class_weights(path):
    """Random 10-class weights at path: a MindSpore .ckpt, or a file in the
    official release format (a timm model saved like ck_ghostnetv2_10.pth.tar).
    Returns the MindSpore-named parameters."""
    if path.endswith(".ckpt"):
        params = {p.name: p.asnumpy() for p in
                  create_model("ghostnetv2_100", num_classes=10).get_parameters()}
        save_checkpoint(params, path)
        return params
    import timm
    official_checkpoint(timm.create_model("ghostnetv2_100", num_classes=10), path)
    return read_weights(path)[0]


@pytest.mark.parametrize("file_name", ["ten.ckpt", "ck_ghostnetv2_10.pth.tar"])
def test_pretrained_with_other_classes_drops_classifier(tiny, tmp_path, caplog, file_name):
    """Fine-tuning's start (--pretrained FILE --num_classes 3), from the
    port's own checkpoint and from the official release format."""
    params = ten_class_weights(str(tmp_path / file_name))
    config = train.parse_config(argv(tiny, "--pretrained", str(tmp_path / file_name)))
    with caplog.at_level("INFO", logger="train"):
        net = train.build_network(config)
    assert "classifier dropped" in caplog.text and file_name in caplog.text
    loaded = parameters_by_name(net)
    for name in ("conv_stem.weight", "blocks.9.0.bn1.moving_variance"):
        np.testing.assert_array_equal(loaded[name].asnumpy(), params[name], err_msg=name)
    assert tuple(loaded["classifier.weight"].shape) == (3, 1280)


@pytest.mark.parametrize("extra, message", [
    (["--optimizer", "lbfgs"], "--optimizer 'lbfgs' is not supported"),
    (["--image_size", "32"], "under the model's minimum input size 64"),
    (["--device_target", "MISSING"], "not available in this MindSpore installation"),
    (["--warmup_epochs", "9"], "--warmup_epochs (9) must not exceed --epoch_size"),
    (["--data_path", "/nonexistent/data"], "data folder not found: /nonexistent/data"),
    (["--resume", "/nonexistent/x.ckpt"], "checkpoint not found"),
    (["--pretrained", "/nonexistent/ck.pth.tar"], "--pretrained: weights file not found"),
])
def test_misuse_is_a_clear_error(tiny, tmp_path, capsys, extra, message):
    missing = [d for d in DEVICE_TARGETS if d not in available_device_targets()]
    if "MISSING" in extra and not missing:
        pytest.skip("every device target is available here")
    extra = [missing[0] if item == "MISSING" else item for item in extra]
    code = train.main(argv(tiny, "--output_dir", str(tmp_path / "out"), *extra))
    assert code in (1, 2)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--no_such_key", "1"], "unrecognized arguments: --no_such_key"),
    (["--batch_size", "eight"], "expected an integer, got 'eight'"),
    (["--lr", "fast"], "expected a number, got 'fast'"),
])
def test_flag_errors(tiny, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv(tiny, *extra))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
