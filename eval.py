"""Evaluate GhostNetV2 weights: a classifier on an ImageNet-style folder (one
sub-folder per class), or a detector / segmenter on its data set.

    python eval.py --device_target CPU --data_path data/digits/val \\
        --checkpoint_path outputs/ghostnetv2_100_digits/best.ckpt

The task comes from the model info recorded with the weights (src/model_info.py;
none recorded: classification); src/tasks/<task>.py does the scoring.

Classification: FILE may be a MindSpore .ckpt (train.py's checkpoints included:
their EMA weights when present) or PyTorch .pth / .pth.tar / .safetensors
weights (converted in memory). The model and num_classes come from the weights
unless --model is given. The image size and crop come from the model info
recorded in the checkpoint (for checkpoints of older runs, the config.yaml
train.py wrote beside them), unless given as --image_size / --crop_pct or in
an explicit --config_path; a value that contradicts the record is logged.
With nothing recorded: 224, crop 0.875, and a warning. When the classes are
recorded, the class folders must be the training classes. Prints top-1,
top-5, loss, the number of images and images/s.

The last line of standard output is one JSON object of the task's metrics
(top1 and top5 as fractions; AP ...; mIoU ...).
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from src.checkpoint import suggest_checkpoint  # noqa: E402
from src.dataset import DatasetError  # noqa: E402
from src.model_info import read_info  # noqa: E402
from src.model_utils.config import DEFAULT_CONFIG, get_config, load_yaml  # noqa: E402
from src.tasks import get_task, task_name  # noqa: E402
from src.train_utils import ConfigError, set_device, setup_logging  # noqa: E402
from src.weights import WeightsError  # noqa: E402

# eval.py's keys for every task; the task's EVAL_DEFAULTS add its own.
EVAL_DEFAULTS = dict(model="", num_classes=0, image_size=224, batch_size=64,
                     num_workers=0, device_target="CPU", data_path="", checkpoint_path="",
                     fuse_bn=False)


def explicit_flags(argv):
    """The flags given on the command line (None for those not given)."""
    pre = argparse.ArgumentParser(add_help=False)
    for flag in ("--config_path", "--checkpoint_path", "--model", "--image_size", "--crop_pct"):
        pre.add_argument(flag)
    known, _ = pre.parse_known_args(argv)
    return known


def weights_info(argv):
    """(model info, where it was read) of the weights the command line names:
    --checkpoint_path, else the recipe's checkpoint_path; (None, None) when
    there are none yet (parse_config says what is missing)."""
    given = explicit_flags(argv)
    path = given.checkpoint_path
    if path is None:
        try:
            path = load_yaml(os.path.abspath(os.path.expanduser(
                given.config_path or DEFAULT_CONFIG))).get("checkpoint_path")
        except (FileNotFoundError, ValueError):
            path = None  # get_config reports the unreadable recipe
    path = os.path.abspath(os.path.expanduser(path)) if path else None
    if not path or not os.path.isfile(path):
        return None, None
    return read_info(path)


def parse_config(argv=None, task=None):
    """eval.py's keys and those of ``task`` (a src.tasks module; default classification)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    task = task or get_task(task_name(None))
    config = get_config("Evaluate GhostNetV2 weights (every recipe key is a --key flag)", argv,
                        extra_defaults=dict(EVAL_DEFAULTS, **task.EVAL_DEFAULTS))
    if not config.data_path:
        raise ConfigError("pass --data_path DIR (DIR/<class>/<images>)")
    if not config.checkpoint_path:
        raise ConfigError(suggest_checkpoint(["python", "eval.py", *argv]))
    if config.batch_size <= 0:
        raise ConfigError(f"--batch_size must be > 0, got {config.batch_size}")
    if "crop_pct" in config and not 0 < config.crop_pct <= 1:
        raise ConfigError(f"--crop_pct must be in (0, 1], got {config.crop_pct}")
    given = explicit_flags(argv)
    config.model_given = given.model is not None
    # an explicit recipe states the preprocessing as much as the flags do
    config.size_given = given.image_size is not None or given.config_path is not None
    config.crop_given = given.crop_pct is not None or given.config_path is not None
    return config


def report(result):
    """The last line of standard output: the result as one JSON object."""
    print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in result.items()}))
    sys.stdout.flush()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        info, where = weights_info(argv)
        task = get_task(task_name(info))
        config = parse_config(argv, task)
    except ConfigError as err:
        print(f"eval.py: error: {err}", file=sys.stderr)
        return 2
    except WeightsError as err:
        print(f"eval.py: error: {err}", file=sys.stderr)
        return 1
    setup_logging()
    try:
        set_device(config.device_target)
        result = task.evaluate(config, info, where)
    except (ConfigError, DatasetError, WeightsError) as err:
        print(f"eval.py: error: {err}", file=sys.stderr)
        return 1
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
