"""Semantic segmentation: DeepLabV3 on GhostNetV2 (src/models/segmentors),
ADE20K's layout (src/data/ade20k.py), scored by mIoU / mAcc / aAcc as
mmsegmentation computes them (src/evaluation/segmentation.py). The
interface is described in src/tasks/__init__.py.

Iterations: mmsegmentation's recipes count iterations, train.py counts
epochs. ``iterations: N`` with ``iterations_per_epoch: K`` (K divides N)
makes an "epoch" K iterations drawn from the endless shuffled data, so the
run is exactly N iterations in N / K epochs (validation and checkpoints at
each epoch's end: mmsegmentation's ``val_interval``); the poly schedule
runs over the N iterations. ``iterations: 0``: an epoch is one pass over the
training images, ``epoch_size`` of them.

Evaluation runs image by image (the test resize keeps each image's aspect
ratio, so sizes differ) in MindSpore's PyNative mode, which needs no graph
compilation per size; the logits are resized to the original image and
scored there, as mmsegmentation's whole-image inference does.
"""
import logging
import os
import sys
import time
from contextlib import contextmanager

import numpy as np

from ..cpu_kernels import resize_bilinear
from ..data.ade20k import (TRAIN_SPLIT, VAL_SPLIT, create_eval_dataset, create_train_dataset,
                           read_dataset_info, write_prediction_png)
from ..data.seg_transforms import TrainTransform, eval_image
from ..dataset import (BadImageError, DatasetError, default_num_workers, load_rgb,
                       local_process_count)
from ..evaluation.segmentation import METRIC_KEYS, SegmentationScore, json_metrics
from ..models.losses.segmentation_loss import IGNORE_LABEL, SegmentationLoss, SegmentorWithLoss
from ..models.segmentors.deeplabv3 import DeepLabV3, segmentation_backbone
from ..model_info import new_info
from ..pretrained import load_backbone_params, load_backbone_weights
from ..train_utils import ConfigError, check_positive, set_precision, wrap_train_step
from ..weights import WeightsError, load_params, read_weights
from . import ExportSettings

NAME = "segmentation"
PRIMARY_METRIC = "mIoU"
# The segmentor's architecture keys: recorded in the model info, so eval,
# export and infer rebuild the network from a checkpoint alone.
ARCHITECTURE_KEYS = ("output_stride", "aspp_channels", "aspp_dilations", "aux_channels",
                     "head_dropout")
DEFAULTS = dict(
    # mmsegmentation's mobilenet-v2-d8_deeplabv3_4xb4-160k_ade20k-512x512
    num_classes=150, image_size=512, output_stride=8, aspp_channels=512,
    aspp_dilations=[1, 12, 24, 36], aux_channels=256, aux_weight=0.4, head_dropout=0.1,
    train_scale=[2048, 512], ratio_range=[0.5, 2.0], cat_max_ratio=0.75, hflip=0.5,
    photometric=True, test_scale=[2048, 512], train_split=TRAIN_SPLIT, val_split=VAL_SPLIT,
    iterations=0, iterations_per_epoch=0, batch_size=16, optimizer="momentum", lr=0.01,
    momentum=0.9, weight_decay=5e-4, weight_decay_filter="disable",
    lr_scheduler="polynomial_decay", decay_rate=0.9, min_lr=1e-4)  # decay_rate: the poly power
EVAL_DEFAULTS = dict(predictions_dir="", test_scale=[], num_workers=0)
OUTPUT_NAMES = ["logits"]
PROGRESS_LINES = 10
OVERLAY_ALPHA = 0.5  # mask opacity in infer.py's overlays

_train_log = logging.getLogger("train")
_eval_log = logging.getLogger("eval")


# ------------------------------------------------------------------ train.py

def check_pair(config, key):
    value = config[key]
    if not isinstance(value, (list, tuple)) or len(value) != 2 or min(value) <= 0:
        raise ConfigError(f"--{key} must be two positive numbers, got {value!r}")


def check_config(config):
    if not config.data_path:
        raise ConfigError("no training data: pass --data_path ROOT (ROOT/images/<split>, "
                          "ROOT/annotations/<split>: ADEChallengeData2016's layout)")
    if config.output_stride not in (8, 16, 32):
        raise ConfigError(f"--output_stride must be 8, 16 or 32, got {config.output_stride}")
    check_positive(config, "aspp_channels", "iterations", "iterations_per_epoch", "aux_channels",
                   "aux_weight", "head_dropout", "hflip", allow_zero=True)
    if config.aspp_channels < 1 or not config.aspp_dilations:
        raise ConfigError("--aspp_channels must be >= 1 and --aspp_dilations non-empty")
    for key in ("train_scale", "ratio_range", "test_scale"):
        check_pair(config, key)
    if not 0 < config.cat_max_ratio <= 1:
        raise ConfigError(f"--cat_max_ratio must be in (0, 1], got {config.cat_max_ratio}")
    if config.iterations:
        per_epoch = config.iterations_per_epoch
        if not per_epoch or config.iterations % per_epoch:
            raise ConfigError(f"--iterations {config.iterations} needs --iterations_per_epoch, a "
                              f"divisor of it (the validation / checkpoint interval), got "
                              f"{per_epoch}")
        config.epoch_size = config.iterations // per_epoch


def dataset_info(root):
    try:
        return read_dataset_info(root)
    except DatasetError as err:
        raise ConfigError(str(err)) from None


def create_train_data(config, rank_id, rank_size):
    """(batches of (images, labels), the data set's conventions)."""
    info = dataset_info(config.data_path)
    if len(info["classes"]) != config.num_classes:
        raise ConfigError(f"{config.data_path} has {len(info['classes'])} classes, --num_classes "
                          f"is {config.num_classes}: pass --num_classes {len(info['classes'])}")
    transform = TrainTransform(config.train_scale, config.ratio_range,
                               (config.image_size, config.image_size), config.cat_max_ratio,
                               config.hflip, config.photometric)
    workers = config.num_workers or default_num_workers(local_process_count(rank_size))
    dataset = create_train_dataset(config.data_path, info, transform, config.batch_size, workers,
                                   rank_id, rank_size, config.train_split)
    _train_log.info("train data: %s/images/%s (%d classes, %d images on this rank, ignore "
                    "value %d%s)",
                    config.data_path, config.train_split, len(info["classes"]), dataset.num_files,
                    info["ignore_index"],
                    ", reduce_zero_label" if info["reduce_zero_label"] else "")
    if config.iterations:
        # An "epoch" is iterations_per_epoch steps of the endless shuffled data.
        dataset.num_files = config.iterations_per_epoch * config.batch_size
        _train_log.info("%d iterations = %d epochs of %d iterations (validation and checkpoints "
                        "after each)", config.iterations, config.epoch_size,
                        config.iterations_per_epoch)
    return dataset, info


def validation_root(config):
    """val_data_path, else data_path when it has the validation split."""
    root = config.val_data_path or config.data_path
    if not config.val_data_path and not os.path.isdir(
            os.path.join(root, "images", config.val_split)):
        return None
    return root


def create_val_data(config, rank_id, rank_size, info):
    root = validation_root(config)
    if root is None:
        return None
    dataset = create_eval_dataset(root, info, config.test_scale, rank_id, rank_size,
                                  config.val_split)
    _train_log.info("val data: %s/images/%s (%d images on this rank), test scale %s", root,
                    config.val_split, dataset.num_files, list(config.test_scale))
    return dataset


def architecture(config_or_info):
    return {key: config_or_info[key] for key in ARCHITECTURE_KEYS}


def create_segmentor(model, num_classes, arch, backbone_weights=None):
    """DeepLabV3 of the recipe / record. backbone_weights: classification
    weights for the backbone, "True" (pretrained=True's search) or (params,
    source) as read; loaded before the backbone joins the segmentor, while its
    parameter names are the classifier's."""
    backbone = segmentation_backbone(model, arch["output_stride"])
    if backbone_weights in ("True", "true"):
        _train_log.info("pretrained: %s", load_backbone_weights(backbone, "True", model))
    elif backbone_weights:
        _train_log.info("pretrained: %s", load_backbone_params(backbone, *backbone_weights, model))
    return DeepLabV3(backbone, num_classes, arch["aspp_channels"], tuple(arch["aspp_dilations"]),
                     arch["aux_channels"], arch["head_dropout"])


def build_network(config):
    """DeepLabV3 with --pretrained loaded: classification weights (official,
    timm, this port's checkpoints; "True" = pretrained=True's search) into the
    backbone, or a segmentation checkpoint of the same layout into the whole."""
    backbone_weights, segmentor_weights = config.pretrained, None
    if backbone_weights and backbone_weights not in ("True", "true"):
        path = os.path.abspath(os.path.expanduser(backbone_weights))
        if not os.path.isfile(path):
            raise ConfigError(f"--pretrained: weights file not found: {path}. Pass "
                              "classification weights (official, timm, a .ckpt) for the "
                              "backbone, True to search for them, or a segmentation checkpoint")
        params, fmt = read_weights(path)  # read once: its keys tell what it holds
        backbone_weights = (params, f"{path} ({fmt})")
        if any(k.startswith("decode_head.") for k in params):
            backbone_weights, segmentor_weights = None, (params, f"{path} ({fmt})")
    net = create_segmentor(config.model, config.num_classes, architecture(config),
                           backbone_weights)
    if config.image_size < net.min_input_size:
        raise ConfigError(f"--image_size {config.image_size} is below the network's minimum "
                          f"{net.min_input_size}")
    if segmentor_weights is not None:
        _train_log.info("pretrained: the whole segmentor: %s", load_params(net, *segmentor_weights))
    return net


def create_train_step(net, config, optimizer):
    amp_level = set_precision(net, config)
    if amp_level not in ("O0", None):
        _train_log.info("amp %s on the segmentor", amp_level)
    with_loss = SegmentorWithLoss(net, SegmentationLoss(config.aux_weight))
    return wrap_train_step(with_loss, config, optimizer)


def create_eval_network(config):
    net = create_segmentor(config.model, config.num_classes, architecture(config))
    net.set_train(False)
    return net


@contextmanager
def pynative():
    """Run the block in PyNative mode (images of many sizes, no graph per size)."""
    import mindspore as ms
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=previous)


def classes_at(logits, size):
    """Class index per pixel at size = (H, W) of one image's logits (1, C, h, w):
    resized bilinearly to size, then argmax (mmsegmentation's order)."""
    import mindspore as ms
    from mindspore import ops
    logits = logits if isinstance(logits, ms.Tensor) else ms.Tensor(logits)
    return ops.argmax(resize_bilinear(logits, tuple(size)), 1).asnumpy()[0]


def predict_classes(net, image_chw, size):
    """classes_at of net's logits for one (test-resized) image."""
    import mindspore as ms
    return classes_at(net(ms.Tensor(image_chw[None] if image_chw.ndim == 3 else image_chw)),
                      size)


def score_set(net, batches, num_classes, total, on_prediction=None, reduce_sum=None):
    """SegmentationScore of net over batches of (image, label, index)."""
    score = SegmentationScore(num_classes, IGNORE_LABEL)
    every, start = max(1, total // PROGRESS_LINES), time.time()
    net.set_train(False)
    with pynative():
        for image, label, index in batches:
            label = np.asarray(label)[0]
            prediction = predict_classes(net, np.asarray(image), label.shape)
            score.update(prediction, label)
            if on_prediction is not None:
                on_prediction(int(np.asarray(index).ravel()[0]), prediction)
            if score.num_images % every == 0:
                _eval_log.info("scored %d / %d images (%.2f images/s)", score.num_images, total,
                               score.num_images / (time.time() - start))
    score.reduce(reduce_sum)
    return score


def validate(eval_net, val_data, batches, config, reduce_sum):
    score = score_set(eval_net, batches, config.num_classes, val_data.num_files,
                      reduce_sum=reduce_sum)
    scores = json_metrics(score.scores())
    summary = (f"mIoU {_pct(scores['mIoU'])}, mAcc {_pct(scores['mAcc'])}, aAcc "
               f"{_pct(scores['aAcc'])} ({score.num_images} images)")
    return dict(scores, val_images=score.num_images, summary=summary)


def _pct(value):
    return "nan" if value is None else f"{100 * value:.2f}%"


def make_info(config, info):
    """What eval / export / infer need: classes, the data set's label
    conventions, the test scale and the segmentor's architecture."""
    return new_info(NAME, config.model, config.num_classes, (config.image_size,) * 2,
                    source=os.path.abspath(config.data_path), class_names=info["classes"],
                    ignore_index=info["ignore_index"],
                    reduce_zero_label=info["reduce_zero_label"], palette=info["palette"],
                    test_scale=list(config.test_scale), **architecture(config))


# ------------------------------------------------------------------ eval.py

def record(info, where):
    """The segmentation model info, checked: weights without one cannot be
    evaluated (the architecture and label conventions are unknown)."""
    missing = [k for k in ("class_names", "ignore_index", "reduce_zero_label", "test_scale",
                           *ARCHITECTURE_KEYS) if k not in (info or {})]
    if missing:
        raise WeightsError(f"{where}: the segmentation model info lacks {', '.join(missing)}: "
                           "use a checkpoint written by train.py with a segmentation recipe")
    return info


def load_network(path, info=None, model=None, num_classes=None, fuse=False):
    """The segmentor of a checkpoint, loaded, in inference mode: called on
    B x 3 x H x W it returns the logits at H x W."""
    info = record(info, path)
    model = model or info["architecture"]
    params, fmt = read_weights(path)
    net = create_segmentor(model, int(info["num_classes"]), architecture(info))
    summary = load_params(net, params, f"{path} ({fmt})")
    net.set_train(False)
    if not fuse:
        return net, model, summary
    from ..fuse import fuse_bn
    summary += "; BatchNorm folded into the convolutions (backbone, heads)"
    return fuse_bn(net), model, summary


def check_data_classes(root, info):
    """The data set's conventions must be those the weights were trained with."""
    data = read_dataset_info(root)
    if data["classes"] != info["class_names"]:
        raise DatasetError(f"{root}: its {len(data['classes'])} classes are not the "
                           f"{len(info['class_names'])} the weights were trained for "
                           f"(first: {data['classes'][:3]} vs {info['class_names'][:3]})")
    if (data["ignore_index"], data["reduce_zero_label"]) != (info["ignore_index"],
                                                             info["reduce_zero_label"]):
        raise DatasetError(f"{root}: ignore value {data['ignore_index']} / reduce_zero_label "
                           f"{data['reduce_zero_label']} differ from the training data's "
                           f"({info['ignore_index']} / {info['reduce_zero_label']})")
    return data


def evaluate(config, info, where):
    """Per-class IoU table, mIoU / mAcc / aAcc of config.checkpoint_path on the
    validation split of config.data_path; --predictions_dir writes label PNGs."""
    path = os.path.abspath(os.path.expanduser(config.checkpoint_path))
    net, model, summary = load_network(path, record(info, where))
    _eval_log.info("segmentor %s: %s", model, summary)
    data = check_data_classes(config.data_path, info)
    split = config.get("val_split") or VAL_SPLIT
    scale = config.test_scale or info["test_scale"]
    dataset = create_eval_dataset(config.data_path, data, scale, split=split)
    _eval_log.info("data: %s/images/%s (%d images), test scale %s", config.data_path, split,
                   dataset.num_files, list(scale))
    on_prediction = None
    if config.predictions_dir:
        os.makedirs(config.predictions_dir, exist_ok=True)

        def on_prediction(index, prediction):
            name = os.path.splitext(os.path.basename(dataset.pairs[index][0]))[0] + ".png"
            write_prediction_png(os.path.join(config.predictions_dir, name), prediction, data)
    start = time.time()
    batches = dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
    score = score_set(net, batches, len(data["classes"]), dataset.num_files, on_prediction)
    if score.num_images == 0:
        raise DatasetError(f"no image of {config.data_path} was scored")
    print("\n".join(score.table(data["classes"])))
    scores = json_metrics(score.scores())
    print(f"mIoU: {_pct(scores['mIoU'])}  mAcc: {_pct(scores['mAcc'])}  aAcc: "
          f"{_pct(scores['aAcc'])}  images: {score.num_images}  images/s: "
          f"{score.num_images / (time.time() - start):.2f}", flush=True)
    if config.predictions_dir:
        print(f"predictions: {score.num_images} label PNGs in {config.predictions_dir} (the data "
              "set's own label values, original sizes)")
    return dict(scores, num_images=score.num_images, model=model, checkpoint=path,
                data_path=os.path.abspath(config.data_path), test_scale=list(scale))


# ------------------------------------------------------------------ export.py / infer.py

def export_settings(args, net, model, info, where):
    """Input: --image_height / --image_width, else the training crop. Output:
    the logits at the input size (argmax gives the mask). For ONNX the final
    bilinear resize is written as two MatMuls (DeepLabV3.export_form, set by
    export_network: MindSpore's ONNX exporter has no bilinear resize); same
    numbers."""
    info = record(info, where)
    size = int(info["input_size"][1])
    height, width = args.image_height or size, args.image_width or size
    if min(height, width) < net.min_input_size:
        raise WeightsError(f"input {height}x{width} is below the network's minimum "
                           f"{net.min_input_size}")
    file_info = dict(info, input_size=[3, height, width],
                     export={"file_format": args.file_format,
                             "batch_size": None if args.file_format == "ONNX" else
                             args.batch_size,
                             "weights": os.path.abspath(args.checkpoint_path)})
    return ExportSettings(height, width, file_info, OUTPUT_NAMES,
                          f"{info['num_classes']} classes, logits at the input size")


def add_infer_arguments(parser):
    parser.add_argument("--output_dir", default="outputs/segmentation",
                        help="where the overlays (NAME_overlay.png) and label PNGs (NAME.png) go")


def infer_input(image, runner, scale):
    """The image as the network takes it: the test resize (keeping the ratio)
    for a checkpoint; an exported file's fixed input (height, width) otherwise
    (the mask is resized back to the image's own size)."""
    if runner.fixed_shape is None:
        return eval_image(image, scale)
    return eval_image(image, runner.fixed_shape, keep_ratio=False)


def overlay(image, classes, palette, names):
    """The image blended with the class colours, a legend of the classes present below."""
    from PIL import Image, ImageDraw
    colours = np.asarray(palette, np.uint8)
    blended = (image * (1 - OVERLAY_ALPHA) + colours[classes] * OVERLAY_ALPHA).astype(np.uint8)
    present = [int(c) for c in np.unique(classes)]
    row = 14
    legend = Image.new("RGB", (image.shape[1], row * len(present) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    for i, c in enumerate(present):
        draw.rectangle([4, 2 + i * row, 14, 12 + i * row], fill=tuple(palette[c]))
        share = 100 * float((classes == c).mean())
        draw.text((20, 1 + i * row), f"{names[c]} ({share:.1f}%)", fill=(0, 0, 0))
    out = Image.new("RGB", (image.shape[1], image.shape[0] + legend.height))
    out.paste(Image.fromarray(blended), (0, 0))
    out.paste(legend, (0, image.shape[0]))
    return out


def predict(runner, paths, args):
    """Per image: NAME.png (labels in the data set's own values, original size)
    and NAME_overlay.png (the mask blended over the image, with a legend)."""
    info = record(runner.info, runner.info_source)
    names, palette = info["class_names"], info["palette"]
    os.makedirs(args.output_dir, exist_ok=True)
    predictions = []
    for path in paths:
        try:
            image = np.asarray(load_rgb(path))
        except BadImageError as err:
            print(f"warning: skipping unreadable image {err}", file=sys.stderr)
            continue
        with pynative():  # a checkpoint's network sees images of many sizes
            logits = runner.run(infer_input(image, runner, info["test_scale"])[None])[0]
            classes = classes_at(logits, image.shape[:2])
        stem = os.path.splitext(os.path.basename(path))[0]
        label_path = os.path.join(args.output_dir, stem + ".png")
        overlay_path = os.path.join(args.output_dir, stem + "_overlay.png")
        write_prediction_png(label_path, classes, info)
        overlay(image, classes, palette, names).save(overlay_path)
        shares = {names[c]: round(float((classes == c).mean()), 4) for c in np.unique(classes)}
        predictions.append({"image": path, "labels": label_path, "overlay": overlay_path,
                            "classes": shares})
        print(f"{path}: {', '.join(f'{k} {100 * v:.1f}%' for k, v in shares.items())}")
    print(f"segmented {len(predictions)} of {len(paths)} images -> {args.output_dir}")
    return predictions
