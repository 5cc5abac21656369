"""Evaluate GhostNetV2 weights on an ImageNet-style folder (one sub-folder per class).

    python eval.py --device_target CPU --data_path data/digits/val \\
        --checkpoint_path outputs/ghostnetv2_100_digits/best.ckpt

FILE may be a MindSpore .ckpt (train.py's checkpoints included: their EMA
weights when present) or PyTorch .pth / .pth.tar / .safetensors weights
(converted in memory). The model and num_classes come from the weights unless
--model is given. The image size and crop come from the model info recorded in
the checkpoint (src/model_info.py; for checkpoints of older runs, the
config.yaml train.py wrote beside them), unless given as --image_size /
--crop_pct or in an explicit --config_path; a value that contradicts the
record is logged. With nothing recorded: 224, crop 0.875, and a warning. When
the classes are recorded, the class folders must be the training classes.

Prints top-1, top-5, loss, the number of images and images/s; the last line
of standard output is one JSON object (top1 and top5 as fractions).
"""
import argparse
import json
import logging
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from src.checkpoint import suggest_checkpoint  # noqa: E402
from src.dataset import (DatasetError, check_trained_classes, create_eval_dataset,  # noqa: E402
                         scan_image_folder)
from src.evaluation.classification import evaluate  # noqa: E402
from src.fuse import fuse_bn  # noqa: E402
from src.ghostnetv2 import create_model  # noqa: E402
from src.model_info import choose_preprocessing, read_info, recorded_class_names  # noqa: E402
from src.model_utils.config import get_config  # noqa: E402
from src.train_utils import ConfigError, check_image_size, set_device, setup_logging  # noqa: E402
from src.weights import WeightsError, infer_model, load_params, read_weights  # noqa: E402

_logger = logging.getLogger("eval")

EVAL_DEFAULTS = dict(model="", num_classes=0, image_size=224, crop_pct=0.875, batch_size=64,
                     num_workers=0, device_target="CPU", data_path="", checkpoint_path="",
                     fuse_bn=False)
# Progress lines while scoring: about this many per run.
PROGRESS_LINES = 10


def explicit_flags(argv):
    """The flags given on the command line (None for those not given)."""
    pre = argparse.ArgumentParser(add_help=False)
    for flag in ("--config_path", "--checkpoint_path", "--model", "--image_size", "--crop_pct"):
        pre.add_argument(flag)
    known, _ = pre.parse_known_args(argv)
    return known


def parse_config(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    config = get_config("Evaluate GhostNetV2 weights (every recipe key is a --key flag)", argv,
                        extra_defaults=EVAL_DEFAULTS)
    if not config.data_path:
        raise ConfigError("pass --data_path DIR (DIR/<class>/<images>)")
    if not config.checkpoint_path:
        raise ConfigError(suggest_checkpoint(["python", "eval.py", *argv]))
    if config.batch_size <= 0:
        raise ConfigError(f"--batch_size must be > 0, got {config.batch_size}")
    if not 0 < config.crop_pct <= 1:
        raise ConfigError(f"--crop_pct must be in (0, 1], got {config.crop_pct}")
    given = explicit_flags(argv)
    config.model_given = given.model is not None
    # an explicit recipe states the preprocessing as much as the flags do
    config.size_given = given.image_size is not None or given.config_path is not None
    config.crop_given = given.crop_pct is not None or given.config_path is not None
    return config


def set_preprocessing(config):
    """Set config.image_size / crop_pct from the weights' record unless given;
    returns the record (or None)."""
    info, where = read_info(os.path.abspath(os.path.expanduser(config.checkpoint_path)))
    config.image_size, config.crop_pct, messages = choose_preprocessing(
        info, where, config.image_size if config.size_given else None,
        config.crop_pct if config.crop_given else None)
    for level, text in messages:
        getattr(_logger, level)(text)
    return info


def build_network(config):
    """The network the weights describe, with them loaded; returns (net, summary)."""
    path = os.path.abspath(os.path.expanduser(config.checkpoint_path))
    params, fmt = read_weights(path)  # read once: the model is told from them, then loaded
    inferred, num_classes = infer_model(params)
    model = config.model if config.model_given else inferred
    if num_classes == 0:
        raise WeightsError(f"{path} has no classifier ('classifier.weight'): it cannot be "
                           "evaluated as a classifier")
    net = create_model(model, num_classes=num_classes)
    check_image_size(net, config.image_size)
    summary = load_params(net, params, f"{path} ({fmt})")
    if config.fuse_bn:
        net = fuse_bn(net)
        summary += "; BatchNorm folded into the convolutions (--fuse_bn)"
    source = "--model" if config.model_given else "inferred from the weights"
    _logger.info("model %s (%s), %d classes; %s", model, source, num_classes, summary)
    return net, model, num_classes


def run(config):
    info = set_preprocessing(config)
    net, model, num_classes = build_network(config)
    samples, class_names = scan_image_folder(config.data_path)
    check_trained_classes(config.data_path, class_names, recorded_class_names(info, num_classes))
    if len(class_names) > num_classes:
        raise DatasetError(f"{config.data_path} has {len(class_names)} class folders but the "
                           f"weights have {num_classes} classes: evaluate on the data the model "
                           "was trained for")
    if len(class_names) != num_classes:
        _logger.warning("%s has %d class folders, the model %d classes: labels are the sorted "
                        "folder indices, so the folders must be the model's first classes",
                        config.data_path, len(class_names), num_classes)
    batch_size = min(config.batch_size, len(samples))
    if batch_size < config.batch_size:
        _logger.info("batch_size %d is larger than the %d images: using %d", config.batch_size,
                     len(samples), batch_size)
    dataset, _ = create_eval_dataset(config.data_path, config.image_size, batch_size,
                                     config.num_workers or None, crop_pct=config.crop_pct)
    _logger.info("data: %s (%d files, %d classes), image size %d, crop_pct %g, batch %d",
                 config.data_path, dataset.num_files, len(class_names), config.image_size,
                 config.crop_pct, batch_size)
    every = max(1, dataset.num_files // PROGRESS_LINES)
    state = {"next": every}

    def progress(done):
        if done >= state["next"]:
            _logger.info("scored %d / %d images", done, dataset.num_files)
            state["next"] = done + every

    batches = dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
    result = evaluate(net, batches, batch_size, progress=progress)
    result.update(skipped=dataset.bad_images.count, model=model, num_classes=num_classes,
                  image_size=config.image_size, crop_pct=config.crop_pct,
                  checkpoint=os.path.abspath(config.checkpoint_path),
                  data_path=os.path.abspath(config.data_path))
    return result


def report(result):
    print(f"top-1: {result['top1']:.4f}  top-5: {result['top5']:.4f}  loss: {result['loss']:.4f}  "
          f"images: {result['num_images']}  skipped unreadable: {result['skipped']}  "
          f"images/s: {result['images_per_s']:.1f}")
    sys.stdout.flush()
    print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in result.items()}))
    sys.stdout.flush()


def main(argv=None):
    try:
        config = parse_config(argv)
    except ConfigError as err:
        print(f"eval.py: error: {err}", file=sys.stderr)
        return 2
    setup_logging()
    try:
        set_device(config.device_target)
        result = run(config)
    except (ConfigError, DatasetError, WeightsError) as err:
        print(f"eval.py: error: {err}", file=sys.stderr)
        return 1
    if result["num_images"] == 0:
        print(f"eval.py: error: no image of {config.data_path} could be read", file=sys.stderr)
        return 1
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
