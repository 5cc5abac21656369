"""Classification: GhostNetV2 with its classifier on an ImageNet-style folder
(one sub-folder per class), scored by top-1 / top-5. The interface is
described in src/tasks/__init__.py."""
import logging
import os
import sys

import numpy as np

from ..dataset import (BadImageError, DatasetError, _normalize_ops, check_trained_classes,
                       create_eval_dataset, create_train_dataset, find_classes, load_rgb,
                       resize_center_crop, scan_image_folder)
from ..evaluation.classification import evaluate as score, top_classes
from ..fuse import fuse_bn
from ..ghostnetv2 import create_model
from ..model_info import (choose_preprocessing, for_export, from_train_config, print_messages,
                          read_labels_file, recorded_class_names)
from ..train_utils import ConfigError, augment_args, check_image_size, check_positive
# The train step (cross-entropy with label smoothing) and validation network:
# src/train_utils.py's, as they are.
from ..train_utils import create_eval_network, create_train_step  # noqa: F401
from ..weights import WeightsError, classifier_classes, infer_model, load_params, read_weights
from . import ExportSettings, InferError

NAME = "classification"
DEFAULTS = dict(
    num_classes=1000, dropout=0.2, crop_pct=0.875, scale=[0.08, 1.0], ratio=[0.75, 1.333],
    hflip=0.5, vflip=0.0, color_jitter=0.4, auto_augment="", interpolation="bicubic",
    re_prob=0.0, re_value="random", label_smoothing=0.1)
PRIMARY_METRIC = "top1"
METRIC_KEYS = ("top1", "top5")
EVAL_DEFAULTS = dict(crop_pct=0.875)
OUTPUT_NAMES = ["logits"]
TOP_K = 5
# eval.py's progress lines while scoring: about this many per run.
PROGRESS_LINES = 10

# The commands' loggers: train.py's and eval.py's log settings cover these lines.
_train_log = logging.getLogger("train")
_eval_log = logging.getLogger("eval")


# ------------------------------------------------------------------ train.py

def check_config(config):
    if not config.data_path:
        raise ConfigError("no training data: pass --data_path DIR (DIR/<class>/<images>)")
    check_positive(config, "label_smoothing", "dropout", "re_prob", "color_jitter",
                   allow_zero=True)
    if not 0 <= config.label_smoothing < 1:
        raise ConfigError(f"--label_smoothing must be in [0, 1), got {config.label_smoothing}")
    if not 0 < config.crop_pct <= 1:
        raise ConfigError(f"--crop_pct must be in (0, 1], got {config.crop_pct}")


def create_train_data(config, rank_id, rank_size):
    """(dataset of (images, labels), the class names of the training folder)."""
    dataset, class_names = create_train_dataset(
        config.data_path, config.image_size, config.batch_size, config.num_workers or None,
        rank_id, rank_size, augment=augment_args(config))
    _train_log.info("train data: %s (%d classes, %d images on this rank, %d decoding workers)",
                    config.data_path, len(class_names), dataset.num_files, dataset.num_workers)
    if len(class_names) > config.num_classes:
        raise ConfigError(f"{config.data_path} has {len(class_names)} classes but "
                          f"--num_classes is {config.num_classes}; pass --num_classes "
                          f"{len(class_names)}")
    if len(class_names) < config.num_classes:
        # a fine-tune that forgot --num_classes keeps the file's 1000 outputs
        _train_log.warning("%s has %d classes but --num_classes is %d: the classifier keeps %d "
                           "outputs; pass --num_classes %d to fit it to the data",
                           config.data_path, len(class_names), config.num_classes,
                           config.num_classes, len(class_names))
    return dataset, class_names


def create_val_data(config, rank_id, rank_size, class_names):
    if not config.val_data_path:
        return None
    dataset, _ = create_eval_dataset(
        config.val_data_path, config.image_size, config.batch_size, config.num_workers or None,
        rank_id, rank_size, config.crop_pct, class_names=class_names)
    _train_log.info("val data: %s (%d images on this rank)", config.val_data_path,
                    dataset.num_files)
    return dataset


def build_network(config):
    """The recipe's network, with --pretrained weights loaded when given."""
    net = create_model(config.model, num_classes=config.num_classes, dropout=config.dropout)
    check_image_size(net, config.image_size)
    if config.pretrained:
        path = os.path.abspath(os.path.expanduser(config.pretrained))
        if not os.path.isfile(path):
            raise ConfigError(f"--pretrained: weights file not found: {path}. Pass the file to "
                              "start from (the official ck_ghostnetv2_10.pth.tar, timm's "
                              "model.safetensors or a .ckpt), or --pretrained '' to train from "
                              "scratch")
        params, fmt = read_weights(path)  # read once: the classifier's size decides, then loaded
        file_classes = classifier_classes(params)
        drop = file_classes != config.num_classes
        summary = load_params(net, params, f"{path} ({fmt})", drop_classifier=drop)
        _train_log.info("pretrained: %s", summary)
        if drop:
            _train_log.info("pretrained: the file's classifier has %d classes, this run %d: "
                            "classifier dropped and trained from scratch", file_classes,
                            config.num_classes)
    return net


def validate(eval_net, val_data, batches, config, reduce_sum):
    result = score(eval_net, batches, config.batch_size, reduce_sum=reduce_sum)
    summary = (f"val loss {result['loss']:.4f}, top-1 {result['top1']:.4f}, top-5 "
               f"{result['top5']:.4f} ({result['num_images']} images)")
    return dict(val_loss=result["loss"], top1=result["top1"], top5=result["top5"],
                val_images=result["num_images"], summary=summary)


def make_info(config, class_names):
    return from_train_config(config, class_names)


# ------------------------------------------------------------------ eval.py

def evaluate(config, info, where):
    """Top-1 / top-5 / loss of config.checkpoint_path on the folder config.data_path."""
    config.image_size, config.crop_pct, messages = choose_preprocessing(
        info, where, config.image_size if config.size_given else None,
        config.crop_pct if config.crop_given else None)
    for level, text in messages:
        getattr(_eval_log, level)(text)
    net, model, num_classes = eval_network(config)
    samples, class_names = scan_image_folder(config.data_path)
    check_trained_classes(config.data_path, class_names, recorded_class_names(info, num_classes))
    if len(class_names) > num_classes:
        raise DatasetError(f"{config.data_path} has {len(class_names)} class folders but the "
                           f"weights have {num_classes} classes: evaluate on the data the model "
                           "was trained for")
    if len(class_names) != num_classes:
        _eval_log.warning("%s has %d class folders, the model %d classes: labels are the sorted "
                          "folder indices, so the folders must be the model's first classes",
                          config.data_path, len(class_names), num_classes)
    batch_size = min(config.batch_size, len(samples))
    if batch_size < config.batch_size:
        _eval_log.info("batch_size %d is larger than the %d images: using %d", config.batch_size,
                       len(samples), batch_size)
    dataset, _ = create_eval_dataset(config.data_path, config.image_size, batch_size,
                                     config.num_workers or None, crop_pct=config.crop_pct)
    _eval_log.info("data: %s (%d files, %d classes), image size %d, crop_pct %g, batch %d",
                   config.data_path, dataset.num_files, len(class_names), config.image_size,
                   config.crop_pct, batch_size)
    batches = dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
    result = score(net, batches, batch_size, progress=progress_logger(dataset.num_files))
    if result["num_images"] == 0:
        raise DatasetError(f"no image of {config.data_path} could be read")
    result.update(skipped=dataset.bad_images.count, model=model, num_classes=num_classes,
                  image_size=config.image_size, crop_pct=config.crop_pct,
                  checkpoint=os.path.abspath(config.checkpoint_path),
                  data_path=os.path.abspath(config.data_path))
    print(f"top-1: {result['top1']:.4f}  top-5: {result['top5']:.4f}  loss: {result['loss']:.4f}  "
          f"images: {result['num_images']}  skipped unreadable: {result['skipped']}  "
          f"images/s: {result['images_per_s']:.1f}", flush=True)
    return result


def progress_logger(total):
    """progress(done) for src.evaluation: logs about PROGRESS_LINES lines per run."""
    every = max(1, total // PROGRESS_LINES)
    state = {"next": every}

    def progress(done):
        if done >= state["next"]:
            _eval_log.info("scored %d / %d images", done, total)
            state["next"] = done + every
    return progress


def eval_network(config):
    """The network the weights describe, with them loaded; returns (net, model, classes)."""
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
    _eval_log.info("model %s (%s), %d classes; %s", model, source, num_classes, summary)
    return net, model, num_classes


# ------------------------------------------------------------------ export.py / infer.py

def load_network(path, info=None, model=None, num_classes=None, fuse=False):
    """The model of the weights, loaded, in inference mode; returns (net, model, summary).

    fuse: fold BatchNorm into the convolutions (src/fuse.py): faster inference,
    logits equal up to float32 rounding."""
    params, fmt = read_weights(path)  # read once: the model is told from them
    model = model or infer_model(params)[0]
    num_classes = classifier_classes(params) if num_classes is None else num_classes
    net = create_model(model, num_classes=num_classes)
    summary = load_params(net, params, f"{path} ({fmt})")
    net.set_train(False)
    if fuse:
        net = fuse_bn(net)
        summary += "; BatchNorm folded into the convolutions"
    return net, model, summary


def export_settings(args, net, model, info, where):
    """Input size: flags, else the weights' record; the file's record keeps the crop."""
    size, crop, messages = choose_preprocessing(
        info, where, args.image_height or args.image_width, args.crop_pct,
        flags=("--image_height/--image_width", "--crop_pct"))
    print_messages(messages)
    height, width = args.image_height or size, args.image_width or size
    exported = {"file_format": args.file_format,
                "batch_size": None if args.file_format == "ONNX" else args.batch_size,
                "weights": os.path.abspath(args.checkpoint_path)}
    file_info = for_export(info, args.checkpoint_path, model, net.num_classes, height, width,
                           crop, exported)
    return ExportSettings(height, width, file_info, OUTPUT_NAMES, f"{net.num_classes} classes")


def crop_fraction(text):
    """--crop_pct's type: a number in (0, 1]."""
    import argparse
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"--crop_pct must be in (0, 1], got {value:g}")
    return value


def add_infer_arguments(parser):
    parser.add_argument("--crop_pct", type=crop_fraction, default=None,
                        help="eval crop: shorter side to image_size / crop_pct (default: the "
                             "recorded one, else 0.875)")
    parser.add_argument("--labels", default=None,
                        help="class names: JSON list, preprocess.py's labels.json, or one per line")
    parser.add_argument("--class_dir", default=None,
                        help="training folder whose sub-folder names are the class names")


def eval_image(path, image_size, crop_pct=0.875):
    """One image file through eval.py's transform: src.dataset's PIL decode, resize
    and center crop, then its normalize / HWC->CHW ops. Returns float32 CHW."""
    image = np.asarray(resize_center_crop(load_rgb(path), image_size, crop_pct))
    for op in _normalize_ops():
        image = op(image)
    return image


def read_class_names(labels=None, class_dir=None):
    """Class names from a labels file or a training folder; None if neither is given."""
    if class_dir:
        return find_classes(class_dir)
    return read_labels_file(labels) if labels else None


def output_classes(runner):
    """The classifier's outputs: the network's, else the exported file's logits shape."""
    return runner.net.num_classes if runner.net is not None else runner.output_shapes[0][1]


def predict(runner, paths, args):
    """Top-5 classes and probabilities per image, printed; [{image, top5}] returned."""
    class_names = read_class_names(args.labels, args.class_dir)
    image_size, crop_pct, messages = choose_preprocessing(
        runner.info, runner.info_source, args.image_size or runner.fixed_size, args.crop_pct,
        flags=("--image_size", "--crop_pct", "--labels FILE (or --class_dir DIR)"))
    if runner.fixed_size is None and image_size < runner.min_input_size:
        raise InferError(f"--image_size {image_size} is below the network's minimum "
                         f"{runner.min_input_size}")
    print_messages(messages)
    num_classes = output_classes(runner)
    if class_names is None and runner.info is not None:
        class_names = recorded_class_names(runner.info, num_classes)
        if class_names is None:
            print_messages([("warning", f"no class names recorded in {runner.info_source}: "
                                        "classes are numbered; pass --labels FILE or --class_dir "
                                        "DIR")])
    names = class_names or [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise InferError(f"{len(names)} class names for a model with {num_classes} "
                         f"classes: pass the labels or training folder the model was trained on")
    predictions = []
    for start in range(0, len(paths), runner.batch_size):
        batch, chunk = [], []
        for path in paths[start:start + runner.batch_size]:
            try:
                batch.append(eval_image(path, image_size, crop_pct))
                chunk.append(path)
            except BadImageError as err:
                print(f"warning: skipping unreadable image {err}", file=sys.stderr)
        if not batch:
            continue
        logits = runner.run(np.stack(batch))[0]
        for path, top in zip(chunk, top_classes(logits, names, TOP_K)):
            predictions.append({"image": path, "top5": top})
    for prediction in predictions:
        print(prediction["image"])
        for rank, (name, prob) in enumerate(prediction["top5"], 1):
            print(f"  {rank}. {name:<30s} {prob:.4f}")
    print(f"classified {len(predictions)} of {len(paths)} images")
    return predictions
