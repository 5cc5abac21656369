"""Training checkpoints: network weights, optimizer state, EMA weights
('ema.<name>'), the completed epochs ('epoch_num') and the optimizer's step
('global_step', which is also the position in the learning-rate schedule).

Files in output_dir, all written atomically (``src.weights.atomic_write``):
- ``last.ckpt``: after every epoch;
- ``<model>-epoch<NNNN>.ckpt``: every ``save_every`` epochs, the newest
  ``keep_checkpoint_max`` kept;
- ``best.ckpt``: the epoch with the best validation top-1;
- ``interrupted.ckpt``: written when SIGINT / SIGTERM stops a run mid-epoch.

Every file also loads as plain weights (``src.weights.load_weights``: the
training state is stripped, EMA weights preferred), for eval.py and export,
and carries the run's model info (``src.model_info``: class names, input
size, crop), from which eval.py, infer.py and export.py take their defaults.
"""
import glob
import logging
import os
import re
import shutil

import numpy as np

from .model_info import checkpoint_entry
from .weights import MODEL_INFO_KEY, atomic_write, partial_files, save_checkpoint

_logger = logging.getLogger(__name__)

EPOCH_KEY = "epoch_num"
STEP_KEY = "global_step"
STEP_IN_EPOCH_KEY = "step_num"  # > 0 only in interrupted.ckpt (saved mid-epoch)
# Hyper-parameters the optimizer keeps as Parameters come from the recipe, not
# the file (so a run may be resumed with a longer epoch_size); they are not saved.
NOT_SAVED = ("learning_rate", "momentum")
LAST, BEST, INTERRUPTED = "last.ckpt", "best.ckpt", "interrupted.ckpt"
_NUMBERED = re.compile(r"-epoch(\d+)\.ckpt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot resume this run; the message says why and what to do."""


def training_state(train_step, epoch, step_in_epoch=0, info=None):
    """{name: Tensor} of everything a resumed run needs, and the model info
    (src.model_info) when given."""
    import mindspore as ms
    state = {p.name: p for p in train_step.get_parameters() if p.name not in NOT_SAVED}
    state[EPOCH_KEY] = ms.Tensor(np.array(epoch, np.int32))
    state[STEP_IN_EPOCH_KEY] = ms.Tensor(np.array(step_in_epoch, np.int32))
    if info is not None:
        state.update({k: ms.Tensor(v) for k, v in checkpoint_entry(info).items()})
    return state


def read_checkpoint(path, names=None):
    """{name: numpy array} of a .ckpt file (only ``names`` when given)."""
    import mindspore as ms
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    choice = (lambda name: name in names) if names is not None else None
    try:
        params = ms.load_checkpoint(path, choice_func=choice)
    except Exception as err:  # MindSpore raises ValueError / RuntimeError for bad files
        raise CheckpointError(f"{path}: not a readable MindSpore checkpoint (truncated or another "
                              f"format? {str(err).splitlines()[0] if str(err) else ''})") from None
    return {k: v.asnumpy() for k, v in params.items()}


def checkpoint_position(path, params=None):
    """(completed epochs, global step) recorded in a training checkpoint."""
    if params is None:
        params = read_checkpoint(path, names={EPOCH_KEY, STEP_KEY})
    if EPOCH_KEY not in params or STEP_KEY not in params:
        raise CheckpointError(
            f"{path} holds weights but no training state (epoch, optimizer step), so a run "
            "cannot continue from it; fine-tune from it with --pretrained FILE instead")
    return int(params[EPOCH_KEY]), int(np.asarray(params[STEP_KEY]).reshape(-1)[0])


def restore_training_state(train_step, path):
    """Load a training checkpoint into the TrainStep.

    Returns (completed epochs, global step, steps done in the next epoch).
    EMA weights missing from the file
    (a run that had EMA off) start from the loaded weights.
    """
    import mindspore as ms
    saved = read_checkpoint(path)
    epoch, global_step = checkpoint_position(path, saved)
    expected = {p.name: p for p in train_step.get_parameters() if p.name not in NOT_SAVED}
    mismatched = [f"{k}: file {saved[k].shape} vs run {tuple(p.shape)}" for k, p in expected.items()
                  if k in saved and tuple(saved[k].shape) != tuple(p.shape)]
    missing = sorted(k for k in expected if k not in saved and not k.startswith("ema."))
    if mismatched or missing:
        problems = "; ".join((mismatched + [f"missing {k}" for k in missing])[:10])
        raise CheckpointError(
            f"{path} does not fit this run ({len(mismatched)} shapes differ, {len(missing)} "
            f"entries missing: {problems}). Resume with the recipe it was trained with (model, "
            "num_classes, optimizer), or fine-tune from it with --pretrained FILE")
    to_load = {k: ms.Parameter(ms.Tensor(saved[k]), name=k) for k in expected if k in saved}
    for param in train_step.get_parameters():  # kept as they are (quiets MindSpore's warning)
        if param.name in NOT_SAVED:
            to_load[param.name] = ms.Parameter(param.value(), name=param.name)
    ms.load_param_into_net(train_step, to_load, strict_load=True)
    fresh_ema = [k for k in expected if k.startswith("ema.") and k not in saved]
    for name in fresh_ema:
        expected[name].set_data(ms.Tensor(saved[name[len("ema."):]]))
    if fresh_ema:
        _logger.info("%s has no EMA weights: EMA starts from the loaded weights", path)
    position_keys = (EPOCH_KEY, STEP_IN_EPOCH_KEY, MODEL_INFO_KEY)
    ignored = sorted(k for k in saved if k not in expected and k not in position_keys)
    if ignored:
        _logger.info("not used from %s: %s%s", path, ", ".join(ignored[:5]),
                     " ..." if len(ignored) > 5 else "")
    return epoch, global_step, int(saved.get(STEP_IN_EPOCH_KEY, 0))


def find_existing_run(output_dir):
    """The checkpoints a previous run left in output_dir (empty when none)."""
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(output_dir, "*.ckpt")))


def latest_checkpoint(output_dir):
    """The checkpoint in output_dir with the highest global step (None if none).
    Unreadable files are skipped with a warning."""
    best_path, best_step = None, -1
    # last.ckpt and interrupted.ckpt first: on a tie they win over their numbered copies
    paths = sorted(glob.glob(os.path.join(output_dir, "*.ckpt")),
                   key=lambda p: (os.path.basename(p) not in (LAST, INTERRUPTED), p))
    for path in paths:
        if os.path.basename(path) == BEST:
            continue  # a copy of an earlier numbered/last checkpoint
        try:
            _, step = checkpoint_position(path)
        except CheckpointError as err:
            _logger.warning("ignoring %s for --resume auto: %s", path, err)
            continue
        if step > best_step:
            best_path, best_step = path, step
    return best_path


def newest_run_checkpoint(search_dir="outputs"):
    """best.ckpt of the newest run folder under search_dir (the folder whose
    latest checkpoint is newest), else that folder's newest .ckpt; None if none."""
    # glob skips hidden names: atomic_write's unfinished .partial- files are never suggested
    paths = glob.glob(os.path.join(search_dir, "**", "*.ckpt"), recursive=True)
    if not paths:
        return None
    newest = max(paths, key=os.path.getmtime)
    best = os.path.join(os.path.dirname(newest), BEST)
    return best if os.path.isfile(best) else newest


def suggest_checkpoint(command, search_dir="outputs"):
    """What to tell a user who gave no --checkpoint_path: the newest
    checkpoint under search_dir and the exact command (``command``, a list of
    the words typed) that uses it, or how to get a checkpoint."""
    import shlex
    path = newest_run_checkpoint(search_dir)
    if path is None:
        return (f"pass --checkpoint_path FILE (.ckpt, .pth, .pth.tar or .safetensors); there is "
                f"no checkpoint under {os.path.abspath(search_dir)}. Train one (python train.py "
                "--config_path config/ghostnetv2_100_digits.yaml writes "
                "outputs/ghostnetv2_100_digits/best.ckpt) "
                "or convert the published weights (python convert_weights.py --src "
                "ck_ghostnetv2_10.pth.tar --dst ghostnetv2_100.ckpt)")
    return (f"pass --checkpoint_path FILE; the newest checkpoint under {search_dir}/ is {path}:\n"
            f"  {shlex.join([*command, '--checkpoint_path', path])}")


class CheckpointManager:
    """Writes the checkpoints of one run (a no-op on ranks other than 0).

    info: the run's model info (src.model_info.from_train_config), written
    into every checkpoint once set."""

    def __init__(self, output_dir, model_name, keep_max, enabled=True, info=None):
        self.output_dir = output_dir
        self.model_name = model_name
        self.keep_max = keep_max
        self.enabled = enabled
        self.info = info

    def path(self, name):
        return os.path.join(self.output_dir, name)

    def numbered_name(self, epoch):
        return f"{self.model_name}-epoch{epoch:04d}.ckpt"

    def save(self, train_step, epoch, name, step_in_epoch=0):
        """Write the full training state as output_dir/name; returns the path."""
        path = self.path(name)
        if self.enabled:
            save_checkpoint(training_state(train_step, epoch, step_in_epoch, self.info), path)
        return path

    def copy(self, source_name, name):
        source, path = self.path(source_name), self.path(name)
        if self.enabled:
            atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))
        return path

    def save_epoch_end(self, train_step, epoch, numbered, best):
        """last.ckpt every epoch; a numbered copy and best.ckpt when asked.
        Returns the list of paths written."""
        written = [self.save(train_step, epoch, LAST)]
        if numbered:
            written.append(self.copy(LAST, self.numbered_name(epoch)))
            self.prune()
        if best:
            written.append(self.copy(LAST, BEST))
        stale = self.path(INTERRUPTED)
        if self.enabled and os.path.exists(stale):
            os.remove(stale)  # last.ckpt is newer now
        return written

    def remove_partial_writes(self):
        """Delete the hidden partial files of writes a killed run never finished."""
        if not self.enabled:
            return
        for path in partial_files(self.output_dir):
            os.remove(path)
            _logger.warning("removed %s: a write that a killed run never finished (the complete "
                            "files beside it are intact)", path)

    def prune(self):
        """Keep the newest keep_max numbered checkpoints."""
        if not self.enabled:
            return
        numbered = []
        for path in glob.glob(self.path(f"{self.model_name}-epoch*.ckpt")):
            match = _NUMBERED.search(path)
            if match:
                numbered.append((int(match.group(1)), path))
        for _, path in sorted(numbered)[:-self.keep_max]:
            os.remove(path)
            _logger.info("removed %s (keep_checkpoint_max %d)", path, self.keep_max)
