"""train.py end to end on tiny generated data sets (3 classes of 64x64
images), in-process through main(argv): one recipe run uninterrupted, stopped
by SIGINT mid-epoch and resumed with --resume FILE, killed by SIGKILL and
resumed with --resume auto; the resumed runs end with the uninterrupted run's
weights, restore every saved entry, and the optimizer's own step and lr are
where they should be; best.ckpt keeps the best epoch when a later one is
worse; a second signal stops at once; another batch size or device count
resumes at the same share of the epoch; plus the cheap failure paths."""
import json
import logging
import os
import signal
import subprocess
import sys

import mindcv
import mindspore as ms
import numpy as np
import pytest
import yaml
from PIL import Image

import train
from src import checkpoint as ckpt
from src.ghostnetv2 import create_model
from src.train_utils import DEVICE_TARGETS, available_device_targets, parameters_by_name
from src.weights import MODEL_INFO_KEY, read_weights, save_checkpoint
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


def make_images(root, per_class, seed, empty=()):
    """Class c: noise with a bright channel c (easy to learn in a few steps);
    the folders of the classes in ``empty`` are left empty."""
    rng = np.random.RandomState(seed)
    for label in range(3):
        folder = os.path.join(root, f"class{label}")
        os.makedirs(folder)
        for i in range(0 if label in empty else per_class):
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


# ---------------------------------------------------------------- interrupted vs uninterrupted
# One recipe, run three ways: uninterrupted; stopped by SIGINT mid-epoch and
# resumed from interrupted.ckpt (--resume FILE); killed by SIGKILL mid-epoch
# and resumed from last.ckpt (--resume auto). Augmentation that draws nothing
# (full-image crops), dropout 0 and the data order restored on resume make
# the three end with the same weights.
RESUME_STEPS = 6  # 24 training images, batch 4
RESUME_LR = 0.05
# The start (--pretrained): random weights with a zero classifier and a bias
# for class 2, so every image is class 2 until the classifier learns. Epoch 1
# has lr 0 (timm_step: warmup from 0), so its validation is 3 of 3 (the
# validation images are class 2); then the training images, of classes 0 and
# 1 only, teach it not to answer 2 (bias and weights of class 2 pushed down at
# every step): a later epoch scores worse (here 0 of 3 from epoch 2 on).
CLASS2_BIAS = 0.01


def expected_lr(global_step):
    """The recipe's lr at 0-based global_step, written out (not from train.py)."""
    return 0.0 if global_step < RESUME_STEPS else RESUME_LR


def expected_epoch_lrs():
    return [expected_lr(epoch * RESUME_STEPS) for epoch in range(EPOCHS)]


@pytest.fixture(scope="module")
def resumable(tmp_path_factory):
    root = tmp_path_factory.mktemp("resumable")
    make_images(str(root / "train"), 12, seed=2, empty=(2,))
    make_images(str(root / "val"), 3, seed=3, empty=(0, 1))
    params = {p.name: p.asnumpy() for p in
              create_model("ghostnetv2_100", num_classes=3).get_parameters()}
    params["classifier.weight"] = np.zeros_like(params["classifier.weight"])
    params["classifier.bias"] = np.array([0.0, 0.0, CLASS2_BIAS], np.float32)
    save_checkpoint(params, str(root / "start.ckpt"))
    recipe = dict(RECIPE, data_path=str(root / "train"), val_data_path="",
                  pretrained=str(root / "start.ckpt"), batch_size=4, scale=[1.0, 1.0],
                  ratio=[1.0, 1.0], lr_scheduler="timm_step", lr=RESUME_LR, warmup_epochs=1,
                  warmup_lr=0.0, decay_epochs=100, ema_decay=0.9, output_dir=str(root / "run"))
    (root / "resume.yaml").write_text(yaml.safe_dump(recipe))
    return root


def resume_argv(root, run_dir, *extra):
    return ["--config_path", str(root / "resume.yaml"), "--output_dir", str(run_dir), *extra]


@pytest.fixture(scope="module")
def uninterrupted(resumable):
    """The reference run: 3 epochs, EMA, validation every epoch."""
    run_dir = resumable / "uninterrupted"
    code = train.main(resume_argv(resumable, run_dir, "--val_data_path",
                                  str(resumable / "val"), "--keep_checkpoint_max", "3"))
    assert code == 0
    return run_dir


def assert_same_state(path, reference):
    """Every entry (weights, BatchNorm statistics, optimizer state, EMA
    weights and counter, position, model info) of two checkpoints equal, and
    the same names in both."""
    state, expected = ckpt.read_checkpoint(path), ckpt.read_checkpoint(reference)
    assert sorted(state) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(state[name], value, err_msg=f"{name} of {path}")


def test_best_ckpt_keeps_the_best_epoch_when_a_later_one_is_worse(uninterrupted):
    history = records(uninterrupted)
    top1 = [r["top1"] for r in history]
    assert [r["epoch"] for r in history] == [1, 2, 3] and all(r["val_images"] == 3 for r in history)
    assert top1[0] == 1.0 and min(top1[1:]) < 1.0, top1  # the premise: a later epoch is worse
    assert [r["lr"] for r in history] == pytest.approx(expected_epoch_lrs())
    best = str(uninterrupted / "best.ckpt")
    assert ckpt.checkpoint_position(best) == (1, RESUME_STEPS)
    # best.ckpt is epoch 1's checkpoint, EMA weights and all ...
    first = ckpt.read_checkpoint(str(uninterrupted / "ghostnetv2_100-epoch0001.ckpt"))
    saved = ckpt.read_checkpoint(best)
    assert sorted(saved) == sorted(first) and any(k.startswith("ema.") for k in saved)
    for name, value in first.items():
        np.testing.assert_array_equal(saved[name], value, err_msg=name)
    # ... the classifier validation scored (EMA weights): still the start's, all zero
    assert not saved["ema.classifier.weight"].any()
    last = ckpt.read_checkpoint(str(uninterrupted / "last.ckpt"))
    assert last["ema.classifier.weight"].any()
    assert "best val top1 1.0000 (best.ckpt)" in (uninterrupted / "train.log").read_text()


class SignalOnLog(logging.Handler):
    """Raises the signals in the training process itself when train.py logs
    a line containing ``text``: a signal at a known point of the loop."""

    def __init__(self, text, *signums):
        super().__init__()
        self.text, self.signums, self.fired = text, signums, False

    def emit(self, record):
        if not self.fired and self.text in record.getMessage():
            self.fired = True
            for signum in self.signums:
                signal.raise_signal(signum)


def run_with_signals(argv, text, *signums):
    handler = SignalOnLog(text, *signums)
    logging.getLogger("train").addHandler(handler)
    try:
        return train.main(argv), handler.fired
    finally:
        logging.getLogger("train").removeHandler(handler)


def test_sigint_mid_epoch_then_resume_file_equals_uninterrupted(resumable, uninterrupted, capsys):
    run_dir = resumable / "sigint"
    args = resume_argv(resumable, run_dir)
    # --- run 1: SIGINT (Ctrl+C) after step 1 of epoch 2. Once a graph has run,
    # MindSpore delivers SIGINT as SIGTERM: that is what train.py sees.
    code, fired = run_with_signals(args, f"epoch 2/{EPOCHS} step 1/{RESUME_STEPS} ", signal.SIGINT)
    out = capsys.readouterr().out
    assert fired and code == 128 + signal.SIGTERM, out[-3000:]
    # the start line names the schedule the run follows
    assert "schedule: timm_step (x0.973 every 100 epochs), 1 warmup epochs from 0," in out
    interrupted = str(run_dir / "interrupted.ckpt")
    assert f"stopped by SIGTERM at step 1 of epoch 2; saved {interrupted}" in out
    assert ckpt.latest_checkpoint(str(run_dir)) == interrupted  # what --resume auto takes
    saved = ckpt.read_checkpoint(interrupted)
    assert int(saved["step_num"]) == 1  # mid-epoch: one step into epoch 2
    assert ckpt.checkpoint_position(interrupted) == (1, RESUME_STEPS + 1)
    assert any(k.startswith("ema.") for k in saved) and any(k.startswith("moments.") for k in saved)

    # --- a resumed run's state is exactly the saved one, every entry of it
    config = train.parse_config([*args, "--resume", interrupted])
    trainer = train.Trainer(config, 0, 1)
    trainer.setup(train.resolve_resume(config))
    assert (trainer.start_epoch, trainer.start_step) == (1, 1)
    restored = {k: v.asnumpy() for k, v in parameters_by_name(trainer.train_step).items()
                if k not in ckpt.NOT_SAVED}
    position = (ckpt.EPOCH_KEY, ckpt.STEP_IN_EPOCH_KEY, MODEL_INFO_KEY)
    assert sorted(restored) == sorted(k for k in saved if k not in position)
    for name, value in restored.items():
        np.testing.assert_array_equal(value, saved[name], err_msg=name)
    # the optimizer's own step counter and the lr it applies next
    assert int(trainer.optimizer.global_step.asnumpy()[0]) == RESUME_STEPS + 1
    assert float(trainer.optimizer.get_lr().asnumpy()) == pytest.approx(
        expected_lr(RESUME_STEPS + 1))
    del trainer

    # --- another batch size, another device count: the same share of the epoch,
    # the optimizer's step (so the lr schedule) moved to match
    for batch_size, rank_size, steps in ((2, 1, 12), (1, 2, 12), (8, 1, 3)):
        config = train.parse_config([*args, "--resume", interrupted, "--batch_size",
                                     str(batch_size)])
        trainer = train.Trainer(config, 0, rank_size)
        trainer.setup(interrupted)
        step = steps // RESUME_STEPS
        assert (trainer.steps_per_epoch, trainer.start_epoch, trainer.start_step) == (
            steps, 1, step), (batch_size, rank_size)
        assert int(trainer.optimizer.global_step.asnumpy()[0]) == steps + step
        del trainer
    assert "epoch 2 continues at step 2" in capsys.readouterr().out

    # --- the EMA weights are what loads as weights, by this port and by mindcv
    ema_weights, _ = read_weights(interrupted)
    np.testing.assert_array_equal(ema_weights["conv_stem.weight"], saved["ema.conv_stem.weight"])
    assert not np.array_equal(saved["ema.classifier.weight"], saved["classifier.weight"])
    for ema in (True, False):
        net = mindcv.create_model("ghostnetv2_100", num_classes=3, checkpoint_path=interrupted,
                                  ema=ema)
        loaded = parameters_by_name(net)
        for name in ("blocks.0.0.ghost1.primary_conv.0.weight",
                     "blocks.8.3.ghost2.primary_conv.1.moving_mean"):
            np.testing.assert_array_equal(loaded[name].asnumpy(),
                                          saved[f"ema.{name}" if ema else name], err_msg=name)
    # a detection backbone (features_only) keeps the names: the same file loads into it
    backbone = mindcv.create_model("ghostnetv2_100", num_classes=3, features_only=True,
                                   checkpoint_path=interrupted, ema=True)
    name = "blocks.6.4.ghost1.primary_conv.0.weight"
    np.testing.assert_array_equal(parameters_by_name(backbone)[name].asnumpy(), saved[f"ema.{name}"])

    # --- a fresh run over it is refused
    assert train.main(args) == 1
    assert "already holds a training run" in capsys.readouterr().err

    # --- a second signal stops at once: before the first step, nothing saved
    before = open(interrupted, "rb").read()
    code, fired = run_with_signals([*args, "--resume", "auto"], "compiling the training graph",
                                   signal.SIGTERM, signal.SIGTERM)
    out = capsys.readouterr().out
    assert fired and code == 128 + signal.SIGTERM, out[-3000:]
    assert f"stopped at once by a second SIGTERM: nothing saved since {interrupted}" in out
    assert "first step" not in out and sorted(os.listdir(run_dir)) == sorted(
        ["interrupted.ckpt", "last.ckpt", "ghostnetv2_100-epoch0001.ckpt", "config.yaml",
         "metrics.jsonl", "train.log"])
    assert open(interrupted, "rb").read() == before

    # --- --resume FILE finishes the run: the state of the uninterrupted one
    assert train.main([*args, "--resume", interrupted]) == 0
    out = capsys.readouterr().out
    assert (f"resumed from {interrupted}: 1 epochs done, continuing at epoch 2 step 1 with lr "
            f"{RESUME_LR:g}") in out
    history = records(run_dir)
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    assert [r["global_step"] for r in history] == [RESUME_STEPS * e for e in (1, 2, 3)]
    assert [r["lr"] for r in history] == pytest.approx(expected_epoch_lrs())
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert_same_state(str(run_dir / "last.ckpt"), str(uninterrupted / "last.ckpt"))

    files = set(os.listdir(run_dir))
    assert {"last.ckpt", "metrics.png", "config.yaml", "train.log"} <= files
    assert "best.ckpt" not in files  # no validation, no best
    numbered = sorted(f for f in files if "-epoch" in f)
    assert numbered == ["ghostnetv2_100-epoch0002.ckpt", "ghostnetv2_100-epoch0003.ckpt"]
    assert "interrupted.ckpt" not in files
    assert "param_digest=" in out


def test_sigkill_mid_epoch_then_resume_auto_equals_uninterrupted(resumable, uninterrupted,
                                                                 capsys):
    """kill -9 (no handler runs, nothing is saved) in the middle of epoch 2;
    --resume auto restarts epoch 2 from last.ckpt and ends with the
    uninterrupted run's weights."""
    run_dir = resumable / "killed"
    args = resume_argv(resumable, run_dir)
    env = dict(os.environ, GLOG_v="3")
    run = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log, killed_at = [], f"epoch 2/{EPOCHS} step 1/{RESUME_STEPS} "
    try:
        for line in run.stdout:
            log.append(line)
            if killed_at in line:
                run.send_signal(signal.SIGKILL)
                break
        assert run.wait(60) == -signal.SIGKILL, "".join(log[-20:])
    finally:
        if run.poll() is None:
            run.kill()
        run.stdout.close()
    assert killed_at in log[-1]  # at least one step of epoch 2 was done ...
    last = str(run_dir / "last.ckpt")
    assert ckpt.latest_checkpoint(str(run_dir)) == last
    assert ckpt.checkpoint_position(last) == (1, RESUME_STEPS), \
        "the kill landed after epoch 2 ended: the test did not test a mid-epoch kill"
    assert not os.path.exists(run_dir / "interrupted.ckpt")  # ... and none is saved
    assert [r["epoch"] for r in records(run_dir)] == [1]

    assert train.main([*args, "--resume", "auto"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {last}: 1 epochs done, continuing at epoch 2 step 0" in out
    history = records(run_dir)
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    assert [r["lr"] for r in history] == pytest.approx(expected_epoch_lrs())
    assert ckpt.checkpoint_position(last) == (EPOCHS, EPOCHS * RESUME_STEPS)
    assert_same_state(last, str(uninterrupted / "last.ckpt"))


def test_signal_at_an_epochs_last_step_ends_the_epoch_first(tiny, tmp_path, capsys):
    """SIGTERM during the last step of epoch 1: the epoch ends as usual
    (last.ckpt, its metrics) and the run stops; no interrupted.ckpt with a
    position past the epoch's end. (The step itself is a stand-in: the loop
    is what is tested.)"""
    config = train.parse_config(argv(tiny, "--output_dir", str(tmp_path / "run"),
                                     "--val_data_path", "", "--ema", "false"))
    train.setup_logging()
    trainer = train.Trainer(config, 0, 1)
    trainer.setup(None)
    real_step, calls = trainer.train_step, []

    class Step:
        def get_parameters(self):
            return real_step.get_parameters()

        def __call__(self, *columns):
            calls.append(len(columns))
            if len(calls) == STEPS_PER_EPOCH:
                signal.raise_signal(signal.SIGTERM)
            return ms.Tensor(np.float32(1.0))

    trainer.train_step = Step()
    assert trainer.run() == 128 + signal.SIGTERM
    assert len(calls) == STEPS_PER_EPOCH
    assert "stopped by SIGTERM after epoch 1" in capsys.readouterr().out
    assert sorted(f for f in os.listdir(tmp_path / "run") if f.endswith(".ckpt")) == [
        "ghostnetv2_100-epoch0001.ckpt", "last.ckpt"]
    assert ckpt.checkpoint_position(str(tmp_path / "run" / "last.ckpt")) == (1, 0)
    assert [r["epoch"] for r in records(str(tmp_path / "run"))] == [1]


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
