"""Train GhostNetV2: a classifier on an ImageNet-style folder (one sub-folder
per class), or the recipe's other task (its ``task`` key: src/tasks).

    python train.py --config_path config/ghostnetv2_100_digits.yaml \\
        --data_path data/digits/train --val_data_path data/digits/val --device_target CPU

Every key of the yaml recipe is also a ``--key value`` flag (train.py's
common keys and those of the recipe's task; any other key is an error). Under msrun (or a
rank-table launch with RANK_SIZE > 1) it trains data-parallel: gradients
averaged over the ranks, each rank reading its own shard, rank 0 writing the
checkpoints, metrics and plot.

Resuming: ``--resume FILE`` or ``--resume auto`` (the newest checkpoint in
output_dir) restores weights, optimizer state, EMA, the epoch and the position
in the learning-rate schedule and in the data. Fine-tuning: ``--pretrained FILE`` (.ckpt,
.pth, .safetensors); another num_classes drops the classifier. best.ckpt
keeps the epoch with the best value of the task's PRIMARY_METRIC.
"""
import argparse
import logging
import math
import os
import signal
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from src import checkpoint as ckpt  # noqa: E402
from src.dataset import DatasetError  # noqa: E402
from src.distributed import (all_reduce_sum, init_distributed, launched_distributed,  # noqa: E402
                             param_digest)
from src.metrics_log import MetricsLog, best_value, plot_metrics  # noqa: E402
from src.model_utils.config import (DEFAULT_CONFIG, config_to_yaml, get_config,  # noqa: E402
                                    load_yaml)
from src.tasks import DEFAULT_TASK, get_task, task_name  # noqa: E402
from src.train_utils import (ConfigError, check_train_config, copy_weights,  # noqa: E402
                             create_optimizer, describe_lr_schedule, effective_amp_level,
                             lr_schedule, set_device, set_global_step, set_seed, setup_logging)
from src.weights import WeightsError, write_text_atomic  # noqa: E402

_logger = logging.getLogger("train")

# Keys of every task a recipe may leave out (the yaml wins where it has them);
# the task's DEFAULTS (src/tasks) add its own keys.
COMMON_DEFAULTS = dict(
    task=DEFAULT_TASK, model="ghostnetv2_100", num_classes=1000, pretrained="",
    data_path="", val_data_path="", image_size=224, num_workers=0,
    batch_size=128, epoch_size=100, optimizer="momentum", lr=0.1, momentum=0.9,
    rmsprop_decay=0.9, eps=0.001, weight_decay=1e-5, weight_decay_filter="norm_and_bias",
    lr_scheduler="cosine_decay", decay_epochs=2.4, decay_rate=0.973,
    min_lr=1e-5, warmup_epochs=0, warmup_lr=1e-6, lr_noise=[], lr_noise_pct=0.67,
    lr_noise_std=1.0, lr_noise_seed=42, ema=False, ema_decay=0.9999, ema_warmup=False,
    amp_level="O0", cpu_amp=False, loss_scale_type="fixed", loss_scale=1.0, device_target="CPU",
    output_dir="./outputs/run",
    save_every=1, keep_checkpoint_max=10, val_interval=1, resume="", seed=1, log_interval=20)
# With dynamic loss scaling an overflowing step is skipped (weights unchanged);
# this many non-finite losses in a row still stop the run.
MAX_NONFINITE_WITH_LOSS_SCALE = 20
# Data epochs a resumed run's pipeline may run (MindSpore's reset needs a
# finite number; the loop counts its own epochs and stops first).
RESUMED_DATA_EPOCHS = 2 ** 31 - 1


class StopNow(KeyboardInterrupt):
    """A second SIGINT / SIGTERM: the run stops where it is, without saving."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """SIGINT / SIGTERM ask the loop to save and stop after the current step
    (at an epoch's last step: once the epoch has ended and been saved);
    a second signal stops at once (StopNow)."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def install(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, _frame):
        # Once a graph has run, MindSpore delivers Ctrl+C (SIGINT) as SIGTERM.
        if self.signum is not None:
            raise StopNow(signum)
        self.signum = signum
        _logger.warning("%s received: saving a checkpoint after the current step, then "
                        "stopping (send it again to stop at once)", signal.Signals(signum).name)


def train_defaults(task):
    """Every key a recipe of ``task`` (a src.tasks module) may hold, with its default."""
    return dict(COMMON_DEFAULTS, **task.DEFAULTS, task=task.NAME)


# The keys of a classification recipe.
TRAIN_DEFAULTS = train_defaults(get_task(DEFAULT_TASK))


def recipe_task(argv):
    """The task a command line asks for: --task, else its recipe's ``task`` key."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config_path", default=DEFAULT_CONFIG)
    pre.add_argument("--task")
    known, _ = pre.parse_known_args(argv)
    if known.task:
        return known.task
    try:
        recipe = load_yaml(os.path.abspath(os.path.expanduser(known.config_path)))
    except (FileNotFoundError, ValueError):
        return DEFAULT_TASK  # get_config reports the unreadable recipe
    return task_name(recipe)


def parse_config(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    task = get_task(task_name({"task": recipe_task(argv)}))
    config = get_config("Train GhostNetV2 (every recipe key is a --key flag)", argv,
                        extra_defaults=train_defaults(task), strict=True)
    check_train_config(config)
    task.check_config(config)
    config.output_dir = os.path.abspath(os.path.expanduser(config.output_dir))
    return config


def endless_batches(iterator):
    """Batches of a num_epochs=-1 iterator forever, one data epoch after another
    (the loop counts epochs itself, so a skipped unreadable image never changes
    the steps per epoch)."""
    while True:
        count = 0
        for batch in iterator:
            count += 1
            yield batch
        if count == 0:
            raise DatasetError("the training data yielded no batch (are all images unreadable?)")


def epoch_batches(iterator):
    """One pass of a num_epochs=-1 iterator: each batch's columns as numpy arrays."""
    for columns in iterator:
        yield tuple(column.asnumpy() for column in columns)


def nan_if_none(value):
    return float("nan") if value is None else value


def format_seconds(seconds):
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def resolve_resume(config):
    """The checkpoint to resume from (None: fresh run); refuses to start a
    fresh run over an existing run's checkpoints."""
    existing = ckpt.find_existing_run(config.output_dir)
    if config.resume == "auto":
        path = ckpt.latest_checkpoint(config.output_dir)
        if path is None:
            _logger.info("--resume auto: no checkpoint in %s, starting a fresh run",
                         config.output_dir)
        return path
    if config.resume:
        return os.path.abspath(os.path.expanduser(config.resume))
    if existing:
        raise ConfigError(
            f"{config.output_dir} already holds a training run ({', '.join(existing[:4])}"
            f"{' ...' if len(existing) > 4 else ''}); a fresh run would overwrite its checkpoints. "
            "Continue it with --resume auto, or pass another --output_dir")
    return None


def build_network(config):
    """The recipe's network, with --pretrained weights loaded when given."""
    return get_task(config.task).build_network(config)


class Trainer:
    """One training run: the loop, validation, checkpoints, metrics; the task
    (src/tasks) supplies data, network, train step, validation and model info."""

    def __init__(self, config, rank_id, rank_size):
        self.config = config
        self.task = get_task(config.task)
        self.rank_id, self.rank_size = rank_id, rank_size
        self.is_main = rank_id == 0
        self.stop = StopRequest()
        self.checkpoints = ckpt.CheckpointManager(config.output_dir, config.model,
                                                  config.keep_checkpoint_max, self.is_main)
        self.metrics = MetricsLog(os.path.join(config.output_dir, "metrics.jsonl"), self.is_main)
        self.last_saved = None

    # ---------------------------------------------------------- set-up
    def setup(self, resume_path):
        config = self.config
        self.checkpoints.remove_partial_writes()
        task = self.task
        self.train_data, data_info = task.create_train_data(config, self.rank_id, self.rank_size)
        # what eval.py, infer.py and export.py need, in every checkpoint
        self.checkpoints.info = task.make_info(config, data_info)
        self.val_data = task.create_val_data(config, self.rank_id, self.rank_size, data_info)
        self.steps_per_epoch = self.train_data.num_files // config.batch_size
        # a task may bring its own schedule (detection: warmup over iterations, steps)
        self.lrs = getattr(task, "lr_schedule", lr_schedule)(config, self.steps_per_epoch)
        self.lr_description = getattr(task, "describe_lr_schedule", describe_lr_schedule)(config)
        self.net = build_network(config)
        optimizer = create_optimizer(self.net, config, self.lrs)
        self.train_step = task.create_train_step(self.net, config, optimizer)
        self.optimizer = optimizer
        self.start_epoch, self.start_step = 0, 0
        if resume_path:
            self.resume(resume_path)
        self.records = self.metrics.truncate_after(self.start_epoch)
        self.best = best_value(self.records, task.PRIMARY_METRIC)
        if self.val_data is not None:
            self.eval_net = task.create_eval_network(config)
            self.val_iterator = self.val_data.create_tuple_iterator(num_epochs=-1)

    def resume(self, path):
        epoch, global_step, step_in_epoch = ckpt.restore_training_state(self.train_step, path)
        if epoch >= self.config.epoch_size:
            raise ConfigError(f"{path} has already trained {epoch} epochs (--epoch_size "
                              f"{self.config.epoch_size}); raise --epoch_size to train on")
        saved_steps = (global_step - step_in_epoch) // epoch if epoch else self.steps_per_epoch
        if step_in_epoch and saved_steps != self.steps_per_epoch:
            # another batch size or device count: the same share of the epoch in this run's steps
            converted = step_in_epoch * self.steps_per_epoch // saved_steps
            _logger.warning("%s stopped at step %d of %d of epoch %d; with %d steps per epoch now, "
                            "epoch %d continues at step %d", path, step_in_epoch, saved_steps,
                            epoch + 1, self.steps_per_epoch, epoch + 1, converted)
            step_in_epoch = converted
        if not 0 <= step_in_epoch < self.steps_per_epoch:
            _logger.warning("%s stopped at step %d of an epoch, but an epoch now has %d steps: "
                            "restarting epoch %d", path, step_in_epoch, self.steps_per_epoch,
                            epoch + 1)
            step_in_epoch = 0
        expected_step = epoch * self.steps_per_epoch + step_in_epoch
        if global_step != expected_step:
            # another batch size or device count: keep the schedule in step with the epochs
            _logger.warning("%s: optimizer step %d does not match epoch %d step %d of this run "
                            "(%d steps per epoch); the lr schedule continues at step %d", path,
                            global_step, epoch, step_in_epoch, self.steps_per_epoch, expected_step)
            set_global_step(self.optimizer, expected_step)
        self.start_epoch, self.start_step = epoch, step_in_epoch
        _logger.info("resumed from %s: %d epochs done, continuing at epoch %d step %d with lr %.6g",
                     path, epoch, epoch + 1, step_in_epoch, self.lrs[expected_step])

    # ---------------------------------------------------------- loop
    def run(self):
        config = self.config
        global_batch = config.batch_size * self.rank_size
        _logger.info("training %s: %d epochs x %d steps, batch %d x %d devices, lr %g (global "
                     "batch %d), %s, schedule: %s, EMA %s, amp %s", config.model,
                     config.epoch_size, self.steps_per_epoch, config.batch_size, self.rank_size,
                     config.lr, global_batch, config.optimizer, self.lr_description,
                     config.ema_decay if config.ema else "off", effective_amp_level(config))
        # The pipeline starts (and MindSpore sets its signal handlers) before ours.
        batches = endless_batches(self.train_iterator())
        self.stop.install()
        try:
            return self.loop(batches)
        finally:
            self.stop.uninstall()

    def train_iterator(self):
        """The training batches from this run's position on. A resumed run
        moves the sampler there with MindSpore's pipeline reset (fast recovery:
        no image of the skipped steps is read), so it gets the batches an
        uninterrupted run would, in the same order; only random augmentations
        draw anew (and with another batch size or device count the shards and
        batches differ anyway)."""
        done = self.start_epoch * self.steps_per_epoch + self.start_step
        if done == 0:
            return self.train_data.create_tuple_iterator(num_epochs=-1)
        self.train_data.dataset_size = self.steps_per_epoch  # known: spares a counting pass
        self.train_data.set_init_step(done)
        # a reset needs a finite epoch count; unreadable images may shorten data epochs
        return self.train_data.create_tuple_iterator(num_epochs=RESUMED_DATA_EPOCHS)

    def loop(self, batches):
        config = self.config
        self.global_step = self.start_epoch * self.steps_per_epoch + self.start_step
        self.first_step = self.global_step + 1  # compiles the graph: kept out of speed and ETA
        self.timed_steps, self.timed_seconds = 0, 0.0
        run_start = time.time()
        _logger.info("compiling the training graph (the first step takes a while)")
        for epoch in range(self.start_epoch, config.epoch_size):
            epoch_start = time.time()
            first = self.start_step if epoch == self.start_epoch else 0
            self.log_epoch_start(epoch, first)
            losses, code = self.train_epoch(epoch, first, batches)
            if code is not None:
                return code
            self.end_epoch(epoch + 1, losses, time.time() - epoch_start)
            if self.stop.signum is not None:
                return self.stop_signal(epoch + 1, 0)
        self.finish(time.time() - run_start)
        return 0

    def train_epoch(self, epoch, first, batches):
        """Steps first..steps_per_epoch-1 of epoch; returns (losses, exit code
        when the run must stop now, else None)."""
        config = self.config
        global_batch = config.batch_size * self.rank_size
        losses, nonfinite = [], 0
        window_start, window_images = time.time(), 0
        for step in range(first, self.steps_per_epoch):
            columns = next(batches)
            step_start = time.time()
            loss = float(self.train_step(*columns).asnumpy())
            self.global_step += 1
            if self.global_step == self.first_step:
                _logger.info("first step (graph compilation) took %.1f s", time.time() - step_start)
                window_start = time.time()
            else:
                self.timed_steps += 1
                self.timed_seconds += time.time() - step_start
                window_images += global_batch
            if not math.isfinite(loss):
                nonfinite += 1
                if self.nonfinite_is_fatal(nonfinite):
                    return losses, self.stop_nonfinite(loss, epoch, step)
            else:
                nonfinite = 0
                losses.append(loss)
            if window_images and ((step + 1) % config.log_interval == 0
                                  or step + 1 == self.steps_per_epoch):
                self.log_progress(epoch, step, loss, window_images / (time.time() - window_start))
                window_start, window_images = time.time(), 0
            if self.stop.signum is not None and step + 1 < self.steps_per_epoch:
                return losses, self.stop_signal(epoch, step + 1)
        return losses, None

    def log_epoch_start(self, epoch, first):
        step = epoch * self.steps_per_epoch + first
        _logger.info("epoch %d/%d starts: lr %.6g", epoch + 1, self.config.epoch_size,
                     self.lrs[step])

    def log_progress(self, epoch, step, loss, images_per_s):
        config = self.config
        per_step = self.timed_seconds / max(self.timed_steps, 1)
        remaining = config.epoch_size * self.steps_per_epoch - self.global_step
        _logger.info("epoch %d/%d step %d/%d loss %.4f lr %.6g %.1f img/s ETA %s", epoch + 1,
                     config.epoch_size, step + 1, self.steps_per_epoch, loss,
                     self.lrs[self.global_step - 1], images_per_s,
                     format_seconds(per_step * remaining))

    def nonfinite_is_fatal(self, count):
        scaled = self.config.device_target != "CPU" and self.config.loss_scale_type == "dynamic"
        return count > (MAX_NONFINITE_WITH_LOSS_SCALE if scaled else 0)

    def validate(self):
        copy_weights(self.train_step, self.eval_net, prefer_ema=self.config.ema)
        reduce = all_reduce_sum if self.rank_size > 1 else None
        return self.task.validate(self.eval_net, self.val_data, epoch_batches(self.val_iterator),
                                  self.config, reduce)

    def end_epoch(self, epoch, losses, seconds):
        config, global_step = self.config, self.global_step
        record = dict(epoch=epoch, global_step=global_step,
                      train_loss=float(np.mean(losses)) if losses else None,
                      lr=self.lrs[global_step - 1], epoch_time=round(seconds, 2),
                      images_per_s=round(len(losses) * config.batch_size * self.rank_size /
                                         max(seconds, 1e-9), 2))
        final = epoch == config.epoch_size
        validate = self.val_data is not None and (
            final or (config.val_interval and epoch % config.val_interval == 0))
        if validate:
            result = self.validate()
            summary = result.pop("summary")
            record.update(result)
            _logger.info("epoch %d/%d: train loss %.4f, %s%s, %.1f s", epoch, config.epoch_size,
                         nan_if_none(record["train_loss"]), summary,
                         " (EMA weights)" if config.ema else "", seconds)
        else:
            _logger.info("epoch %d/%d: train loss %.4f, %.1f s", epoch, config.epoch_size,
                         nan_if_none(record["train_loss"]), seconds)
        primary = self.task.PRIMARY_METRIC
        is_best = validate and (self.best is None or record[primary] > self.best)
        if is_best:
            self.best = record[primary]
        written = self.checkpoints.save_epoch_end(
            self.train_step, epoch, numbered=final or epoch % config.save_every == 0, best=is_best)
        self.last_saved = written[0]
        if self.is_main:
            _logger.info("saved %s", ", ".join(os.path.basename(p) for p in written))
        self.metrics.append(record)
        self.records.append(record)

    def finish(self, seconds):
        config = self.config
        digest = param_digest(self.net)
        if self.is_main:
            png = plot_metrics(self.records, os.path.join(config.output_dir, "metrics.png"),
                               title=f"{config.model} on {config.data_path}",
                               metric_keys=self.task.METRIC_KEYS)
            _logger.info("curves: %s; metrics: %s", png, self.metrics.path)
            if self.best is not None:
                _logger.info("done in %s: best val %s %.4f (best.ckpt); checkpoints in %s",
                             format_seconds(seconds), self.task.PRIMARY_METRIC, self.best,
                             config.output_dir)
            else:
                _logger.info("done in %s (no validation); checkpoints in %s",
                             format_seconds(seconds), config.output_dir)
        _logger.info("rank %d of %d: param_digest=%s", self.rank_id, self.rank_size, digest)

    def stop_signal(self, epoch, step_in_epoch):
        """Save (mid-epoch: interrupted.ckpt; at an epoch end last.ckpt is already
        written) and return the exit status 128 + signal number."""
        name = signal.Signals(self.stop.signum).name
        if step_in_epoch == 0:
            path, where = self.checkpoints.path(ckpt.LAST), f"after epoch {epoch}"
        else:
            path = self.checkpoints.save(self.train_step, epoch, ckpt.INTERRUPTED, step_in_epoch)
            where = f"at step {step_in_epoch} of epoch {epoch + 1}"
        if self.is_main:
            _logger.warning("stopped by %s %s; saved %s. Continue with --resume auto "
                            "--output_dir %s", name, where, path, self.config.output_dir)
        return 128 + self.stop.signum

    def stop_nonfinite(self, loss, epoch, step):
        kept = self.last_saved or ckpt.latest_checkpoint(self.config.output_dir)
        _logger.error("the loss became %s at epoch %d step %d: training diverged and stops here "
                      "without saving. Last good checkpoint: %s. Lower --lr (or warm up longer "
                      "with --warmup_epochs) and resume with --resume FILE", loss, epoch + 1,
                      step + 1, kept or "none yet")
        return 3


def write_run_config(config):
    """output_dir/config.yaml: the resolved recipe (eval.py picks it up)."""
    write_text_atomic(os.path.join(config.output_dir, "config.yaml"), config_to_yaml(config))


def main(argv=None):
    try:
        config = parse_config(argv)
    except ConfigError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    rank_id, rank_size = 0, 1
    try:
        set_device(config.device_target)
        if launched_distributed():
            rank_id, rank_size = init_distributed(config.device_target)
            if os.environ.get("MS_ROLE") == "MS_SCHED":
                return 0  # msrun's scheduler process: it only coordinates the workers
        resume_path = resolve_resume(config)
        log_file = os.path.join(config.output_dir, "train.log") if rank_id == 0 else None
        setup_logging(log_file, rank_id, rank_size)
        _logger.info("config: %s", config.config_path)
        set_seed(config.seed)
        trainer = Trainer(config, rank_id, rank_size)
        trainer.setup(resume_path)
        if rank_id == 0:
            write_run_config(config)
        return trainer.run()
    except (ConfigError, DatasetError, WeightsError, ckpt.CheckpointError) as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 1
    except StopNow as stop:
        saved = ckpt.latest_checkpoint(config.output_dir) if rank_id == 0 else None
        _logger.warning("stopped at once by a second %s: nothing saved since %s", stop,
                        saved or "the start (no checkpoint yet)")
        return 128 + stop.signum


if __name__ == "__main__":
    sys.exit(main())
