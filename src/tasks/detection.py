"""Detection: GhostNetV2-YOLOv3 on COCO-layout data (the paper's COCO
experiment, with mmdetection's yolov3_mobilenetv2_320_300e_coco recipe).

What the commands do for a detector:
- train.py: a COCO root (``--data_path ROOT``: annotations/instances_<split>.json
  and <split>/), the recipe's augmentation and YOLOv3 targets assigned in the
  data pipeline, the YOLOv3 loss, SGD with gradient clipping, linear warmup
  over iterations then steps; validation is COCO box AP (the best AP keeps
  best.ckpt);
- eval.py: pycocotools' table and the AP line, ``--predictions_file`` in
  COCO results format (original pixels, the file's category ids);
- export.py: the network with the box decoding (input N x 3 x S x S, ImageNet
  normalised, padded bottom/right; output N x anchors x (4 + 1 + classes):
  x1, y1, x2, y2 in input pixels, objectness, class scores); the NMS runs
  after it in NumPy (``select_detections``), the same for every runner;
- infer.py: boxes, class names and scores drawn into PNGs, and a JSON file.
"""
import logging
import os
import sys
import time

import numpy as np

from src.dataset import DatasetError
from src.models.heads.yolov3_head import STRIDES, TEST_DEFAULTS
from src.train_utils import ConfigError

NAME = "detection"
PRIMARY_METRIC = "AP"
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# The commands' loggers: train.py's and eval.py's log settings cover these lines.
_train_log = logging.getLogger("train")
_eval_log = logging.getLogger("eval")

# Recipe keys of this task (train.py adds its common ones; each is a --flag).
DEFAULTS = dict(
    # data: a COCO root; another annotation file / image folder is a flag away
    train_split="train2017", val_split="val2017", train_ann_file="", val_ann_file="",
    train_image_dir="", val_image_dir="", filter_empty_gt=True,
    # model
    neck_channels=[96, 96, 96], anchors=[],  # [] = mmdetection's anchors for image_size
    # augmentation: photometric distortion, expand, min-IoU crop (all or none),
    # resize keeping the ratio to a long side in multiscale (or image_size), flip
    detection_augment=True, multiscale=[], flip_prob=0.5,
    # assignment and loss (mmdetection's YOLOv3)
    pos_iou_thr=0.5, neg_iou_thr=0.5, cls_weight=1.0, conf_weight=1.0, xy_weight=2.0,
    wh_weight=2.0,
    # schedule: linear warmup over iterations, lr x gamma at lr_steps epochs;
    # repeat_times: passes over the data per epoch (mmdetection's RepeatDataset)
    warmup_iters=4000, warmup_ratio=1e-4, lr_steps=[24, 28], lr_gamma=0.1, repeat_times=10,
    clip_grad=35.0,  # global gradient norm (0 = off)
    # test
    **TEST_DEFAULTS)


# ------------------------------------------------------------------ config

def anchors_of(config_or_info):
    """The anchors (per level, coarsest first, (w, h) pairs) of a recipe or a
    model info: the recorded ones, else mmdetection's for the image size."""
    from src.models.detectors.yolov3 import default_anchors
    anchors = _get(config_or_info, "anchors")
    if anchors:
        return tuple(tuple(tuple(float(v) for v in pair) for pair in level) for level in anchors)
    return default_anchors(input_size(config_or_info))


def _is_info(config_or_info):
    """A model info record (a plain dict naming its architecture), not a recipe."""
    return isinstance(config_or_info, dict) and "architecture" in config_or_info


def input_size(config_or_info):
    if _is_info(config_or_info):
        return int(config_or_info["input_size"][1])
    return int(config_or_info.image_size)


def _get(config_or_info, key, default=None):
    if _is_info(config_or_info):
        return config_or_info.get(key, default)
    return getattr(config_or_info, key, default)


def scale_range(config):
    """(min, max) long side of the training resize; the pad size is max."""
    if config.multiscale:
        low, high = (int(v) for v in config.multiscale)
        return low, high
    return config.image_size, config.image_size


def check_config(config):
    if not config.data_path:
        raise ConfigError("no training data: pass --data_path ROOT, a COCO root holding "
                          "annotations/instances_<split>.json and <split>/")
    low, high = scale_range(config)
    for flag, value in (("--image_size", config.image_size), ("--multiscale", high)):
        if value % 32:
            raise ConfigError(f"{flag} {value}: a detector input must be a multiple of 32 (the "
                              "neck upsamples stride 32 -> 16 -> 8)")
    if not 64 <= low <= high:
        raise ConfigError(f"--multiscale {config.multiscale}: need 64 <= min <= max")
    anchors = anchors_of(config)
    if len(anchors) != len(STRIDES) or len({len(level) for level in anchors}) != 1:
        raise ConfigError(f"--anchors: {len(STRIDES)} levels (strides 32, 16, 8) of equally many "
                          f"[w, h] pairs, got {config.anchors}")
    if len(config.neck_channels) != len(STRIDES):
        raise ConfigError(f"--neck_channels: one per level (3), got {config.neck_channels}")
    if config.repeat_times < 1:
        raise ConfigError(f"--repeat_times must be >= 1, got {config.repeat_times}")
    if not 0 < config.neg_iou_thr <= config.pos_iou_thr < 1:
        raise ConfigError("need 0 < --neg_iou_thr <= --pos_iou_thr < 1")


# ------------------------------------------------------------------ data

def _coco_paths(root, config, which):
    from src.data.coco import split_paths
    return split_paths(root, getattr(config, f"{which}_split"),
                       getattr(config, f"{which}_ann_file"), getattr(config, f"{which}_image_dir"))


def create_train_data(config, rank_id=0, rank_size=1):
    """(batches of image, box_targets, labels; data_info)."""
    from src.data.coco import load_coco, require_boxes
    from src.data.detection import create_train_dataset
    coco = require_boxes(load_coco(*_coco_paths(config.data_path, config, "train")),
                         "nothing to train on; name the annotated split (--train_split / "
                         "--train_ann_file)")
    if len(coco.category_ids) != config.num_classes:
        raise ConfigError(f"{coco.ann_file} has {len(coco.category_ids)} categories but "
                          f"--num_classes is {config.num_classes}; pass --num_classes "
                          f"{len(coco.category_ids)}")
    dataset = create_train_dataset(
        coco, config.batch_size, anchors_of(config), STRIDES, scale_range(config),
        augment=config.detection_augment, filter_empty_gt=config.filter_empty_gt,
        num_workers=config.num_workers or None, rank_id=rank_id, rank_size=rank_size,
        seed=config.seed, repeat_times=config.repeat_times, flip_prob=config.flip_prob,
        pos_iou_thr=config.pos_iou_thr, neg_iou_thr=config.neg_iou_thr)
    _train_log.info("train data: %s (%d images, %d on this rank, x%d per epoch, %d categories, "
                    "%d decoding workers)", coco.ann_file, len(coco.images),
                    dataset.num_files // config.repeat_times, config.repeat_times,
                    len(coco.category_ids), dataset.num_workers)
    data_info = dict(category_ids=coco.category_ids, class_names=coco.class_names,
                     source=os.path.abspath(coco.ann_file))
    return dataset, data_info


def load_scored_coco(ann_file, image_dir, category_ids):
    """The annotations AP is computed against: the network's category ids, and
    boxes (an empty annotation list would give pycocotools' undefined AP, -1)."""
    from src.data.coco import load_coco, require_boxes
    return require_boxes(load_coco(ann_file, image_dir, category_ids=category_ids),
                         "COCO AP is undefined without ground truth; evaluate on an annotated "
                         "split (--val_split / --val_ann_file)")


def create_val_data(config, rank_id, rank_size, data_info):
    """Evaluation batches of (image, image_id, factors) of the val split of
    --val_data_path (default: --data_path); None when the root has no
    annotation file for it and none is named."""
    root = config.val_data_path or config.data_path
    try:
        paths = _coco_paths(root, config, "val")
    except DatasetError:
        if config.val_ann_file or config.val_data_path:
            raise
        _train_log.info("no validation: %s has no annotations/instances_%s.json", root,
                        config.val_split)
        return None
    coco = load_scored_coco(*paths, data_info["category_ids"])
    dataset = _eval_dataset(coco, config.batch_size, config.image_size, config.num_workers,
                            rank_id, rank_size)
    _train_log.info("val data: %s (%d images, %d on this rank)", coco.ann_file,
                    len(coco.images), dataset.num_files)
    return dataset


def _eval_dataset(coco, batch_size, image_size, num_workers, rank_id=0, rank_size=1):
    from src.data.detection import create_eval_dataset
    dataset = create_eval_dataset(coco, batch_size, image_size, num_workers or None, rank_id,
                                  rank_size)
    dataset.coco = coco
    return dataset


# ------------------------------------------------------------------ networks

def build_network(config):
    """The detector; --pretrained FILE (a classification checkpoint of this
    port, the official release file, timm's safetensors), --pretrained true
    (src/pretrained.py's search) or a detection checkpoint of this port."""
    from src.models.detectors.yolov3 import yolov3_ghostnetv2
    net = yolov3_ghostnetv2(config.model, config.num_classes, tuple(config.neck_channels))
    if config.pretrained:
        _train_log.info("pretrained: %s", load_pretrained(net, config.pretrained, config.model))
    return net


def load_pretrained(net, pretrained, model):
    """Load backbone (or whole-detector) weights into ``net``; returns the
    summary line. A classifier's head (conv_head, classifier) is dropped."""
    import mindspore as ms
    from src.models.detectors.yolov3 import BACKBONE_PREFIX
    from src.weights import WeightsError, compare_to_network, read_weights
    if str(pretrained).lower() == "true":
        from src.pretrained import find_pretrained
        path = find_pretrained(model)
    else:
        path = os.path.abspath(os.path.expanduser(str(pretrained)))
        if not os.path.isfile(path):
            raise ConfigError(f"--pretrained: weights file not found: {path}. Pass a "
                              "classification checkpoint, the official .pth.tar, timm's "
                              "model.safetensors or a detection checkpoint (or true, or '')")
    params, fmt = read_weights(path)
    source = f"{path} ({fmt})"
    if any(k.startswith(BACKBONE_PREFIX) for k in params):  # a detector of this port
        compare_to_network(net, params, source=f"detector weights in {source}")
        ms.load_param_into_net(net, _parameters(params), strict_load=True)
        return f"whole detector: {len(params)} tensors from {source}"
    dropped = sorted(k for k in params if k.startswith(("classifier.", "conv_head.")))
    backbone = {BACKBONE_PREFIX + k: v for k, v in params.items() if k not in dropped}
    try:
        compare_to_network(net.backbone, backbone, source=f"backbone weights in {source}")
    except WeightsError as err:
        raise WeightsError(f"{err}\n  (--model must be the backbone the file was trained as)") \
            from None
    ms.load_param_into_net(net.backbone, _parameters(backbone), strict_load=True)
    return (f"backbone: {len(backbone)} tensors from {source}; dropped the classification "
            f"head ({', '.join(dropped) or 'none in the file'}); neck and head initialised")


def _parameters(params):
    import mindspore as ms
    return {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in params.items()}


def create_train_step(net, config, optimizer):
    """mindcv's TrainStep over the detector + YOLOv3 loss (EMA, loss scale,
    global-norm gradient clipping at clip_grad)."""
    from src.models.heads.yolov3_head import FlattenPredictions
    from src.models.losses.yolov3_loss import YOLOV3Loss, YOLOV3WithLoss
    from src.train_utils import set_precision, wrap_train_step
    set_precision(net, config)
    loss = YOLOV3Loss(config.num_classes, config.cls_weight, config.conf_weight,
                      config.xy_weight, config.wh_weight)
    flatten = FlattenPredictions(len(anchors_of(config)[0]), 5 + config.num_classes)
    return wrap_train_step(YOLOV3WithLoss(net, flatten, loss), config, optimizer,
                           clip_grad=config.clip_grad > 0, clip_value=config.clip_grad or 1.0)


def lr_schedule(config, steps_per_epoch):
    """mmdetection's: linear warmup over warmup_iters iterations from
    warmup_ratio * lr, lr x lr_gamma after each epoch in lr_steps."""
    lrs = []
    for step in range(config.epoch_size * steps_per_epoch):
        lr = config.lr * config.lr_gamma ** sum(step >= e * steps_per_epoch
                                                for e in config.lr_steps)
        if step < config.warmup_iters:
            lr *= 1 - (1 - step / config.warmup_iters) * (1 - config.warmup_ratio)
        lrs.append(float(lr))
    return lrs


def describe_lr_schedule(config):
    """lr_schedule's, for train.py's start line (the recipe's lr_scheduler and
    warmup_epochs keys are not used by a detector)."""
    steps = ", ".join(str(e) for e in config.lr_steps) or "none"
    return (f"linear warmup over {config.warmup_iters} iterations from "
            f"{config.warmup_ratio:g} x lr, then x{config.lr_gamma:g} after epochs {steps}")


def create_eval_network(config_or_info):
    """The detector with its box decoding for the recipe's / info's input
    size (what validation, eval.py and export.py run)."""
    from src.models.detectors.yolov3 import YOLOV3Predictor, yolov3_ghostnetv2
    size = input_size(config_or_info)
    if _is_info(config_or_info):
        model, num_classes = config_or_info["architecture"], config_or_info["num_classes"]
        neck = config_or_info["neck_channels"]
    else:
        model, num_classes = config_or_info.model, config_or_info.num_classes
        neck = config_or_info.neck_channels
    detector = yolov3_ghostnetv2(model, num_classes, tuple(neck))
    return YOLOV3Predictor(detector, anchors_of(config_or_info), size, size)


def test_settings(config_or_info):
    """The post-processing thresholds (mmdetection's test_cfg) of a recipe or info."""
    return {k: _get(config_or_info, k, v) for k, v in TEST_DEFAULTS.items()}


# ------------------------------------------------------------------ evaluation

def predict_batches(eval_net, batches, batch_size, settings, coco, progress=None):
    """{image_id: (K, 6) detections in original pixels} over (image, image_id,
    factors) numpy batches; batches are padded to batch_size (one graph)."""
    import mindspore as ms
    from src.evaluation.classification import pad_batch
    eval_net.set_train(False)
    images_by_id = {im.image_id: im for im in coco.images}
    detections, done = {}, 0
    for images, image_ids, factors in batches:
        count = len(image_ids)
        decoded = eval_net(ms.Tensor(pad_batch(images, batch_size))).asnumpy()[:count]
        for rows, image_id, factor in zip(decoded, image_ids, factors):
            detections[int(image_id)] = detections_of(rows, factor, images_by_id[int(image_id)],
                                                      settings)
        done += count
        if progress:
            progress(done)
    return detections


def score(detections, coco, settings, reduce_sum=None, print_table=False):
    """COCO box AP of {image_id: detections} (this rank's) over the images
    every rank read: (metrics dict, COCO results list)."""
    from src.evaluation.coco import evaluate, gather_results
    image_ids = [im.image_id for im in coco.images]
    position = {image_id: i for i, image_id in enumerate(image_ids)}
    read = np.zeros(len(image_ids))
    read[[position[i] for i in detections]] = 1
    if reduce_sum is not None:
        read = reduce_sum(read)
    results = gather_results({position[i]: d for i, d in detections.items()}, len(image_ids),
                             settings["max_per_img"], coco.category_ids, image_ids, reduce_sum)
    scored = [i for i, done in zip(image_ids, read) if done > 0]
    if not scored:
        raise DatasetError(f"no image of {coco.image_dir} could be read")
    metrics, _ = evaluate(coco.ann_file, results, scored, print_table)
    metrics.update(val_images=len(scored), skipped=len(image_ids) - len(scored))
    return metrics, results


def validate(eval_net, val_data, batches, config, reduce_sum=None):
    """COCO box AP of the network on val_data (METRIC_KEYS, val_images,
    skipped, summary)."""
    settings = test_settings(config)
    detections = predict_batches(eval_net, batches, config.batch_size, settings, val_data.coco)
    metrics, _ = score(detections, val_data.coco, settings, reduce_sum)
    skipped = f", {metrics['skipped']} unreadable skipped" if metrics["skipped"] else ""
    metrics["summary"] = (f"AP {metrics['AP']:.4f}, AP50 {metrics['AP50']:.4f}, AP75 "
                          f"{metrics['AP75']:.4f} ({metrics['val_images']} images{skipped})")
    return metrics


def make_info(config, data_info):
    """What eval.py / export.py / infer.py need: the network, the input size,
    anchors, strides, classes and their dataset ids, test thresholds."""
    from src.model_info import new_info
    return new_info(NAME, config.model, config.num_classes,
                    (config.image_size, config.image_size),
                    source=f"train.py on {data_info['source']}",
                    class_names=list(data_info["class_names"]),
                    category_ids=list(data_info["category_ids"]),
                    anchors=[[list(pair) for pair in level] for level in anchors_of(config)],
                    strides=list(STRIDES), neck_channels=list(config.neck_channels),
                    resize="keep ratio, long side to input size, pad bottom/right with 0",
                    **test_settings(config))


# ------------------------------------------------------------------ eval.py

EVAL_DEFAULTS = dict(val_split="val2017", val_ann_file="", val_image_dir="",
                     predictions_file="")


def _require_detector_info(info, where, path):
    if info is None or info.get("task") != NAME:
        raise ConfigError(f"{path}: no detector model info ({where or 'none recorded'}); "
                          "detection weights must be a checkpoint written by train.py with a "
                          "detection recipe (or its export)")


def evaluate(config, info, where):
    """COCO box AP of config.checkpoint_path on the val split of the COCO root
    config.data_path: pycocotools' table on stdout, the metrics returned,
    --predictions_file written in COCO results format."""
    from src.evaluation.coco import write_results
    from src.tasks.classification import progress_logger
    _require_detector_info(info, where, config.checkpoint_path)
    # the class count and network are the checkpoint's (eval.py's recipe
    # defaults are a classifier's): only an explicit --model is checked
    net, model, summary = load_network(config.checkpoint_path, info,
                                       config.model if config.model_given else None, None,
                                       config.fuse_bn)
    _eval_log.info("%s; %s, %d classes, input %d", summary, model, info["num_classes"],
                   input_size(info))
    if config.size_given and config.image_size != input_size(info):
        _eval_log.warning("--image_size %d ignored: the detector runs at its training input "
                          "size %d (its anchors and decoding are built for it)",
                          config.image_size, input_size(info))
    coco = load_scored_coco(*_coco_paths(config.data_path, config, "val"), info["category_ids"])
    dataset = _eval_dataset(coco, config.batch_size, input_size(info), config.num_workers)
    _eval_log.info("data: %s (%d images, %d categories), batch %d", coco.ann_file,
                   len(coco.images), len(coco.category_ids), config.batch_size)
    settings = test_settings(info)
    batches = dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)
    detections = predict_batches(net, batches, config.batch_size, settings, coco,
                                 progress_logger(dataset.num_files))
    metrics, results = score(detections, coco, settings, print_table=True)
    if config.predictions_file:
        write_results(config.predictions_file, results)
        _eval_log.info("%d detections written to %s (COCO results format)", len(results),
                       config.predictions_file)
    metrics.update(model=model, detections=len(results),
                   checkpoint=os.path.abspath(config.checkpoint_path),
                   annotations=os.path.abspath(coco.ann_file))
    return metrics


# ------------------------------------------------------------------ export.py

OUTPUT_NAMES = ["detections"]


def load_network(path, info=None, model=None, num_classes=None, fuse=False):
    """The detector with its box decoding (what eval, export and infer run),
    the checkpoint loaded; returns (net, model, summary)."""
    import mindspore as ms
    from src.fuse import fuse_bn
    from src.weights import compare_to_network, read_weights
    _require_detector_info(info, None, path)
    if model and model != info["architecture"]:
        raise ConfigError(f"--model {model}: {path} holds a {info['architecture']} detector")
    if num_classes and num_classes != info["num_classes"]:
        raise ConfigError(f"--num_classes {num_classes} contradicts {path}, a detector of "
                          f"{info['num_classes']} classes; drop the flag")
    net = create_eval_network(info)
    params, fmt = read_weights(path)
    compare_to_network(net, params, source=f"weights in {path} ({fmt})")
    ms.load_param_into_net(net, _parameters(params), strict_load=True)
    net.set_train(False)
    summary = f"loaded {len(params)} tensors from {path} ({fmt})"
    if fuse:
        net = fuse_bn(net)
        summary += "; BatchNorm folded into the convolutions (backbone, neck, head)"
    return net, info["architecture"], summary


def export_settings(args, net, model, info, where):
    """The detector is exported at its training input size: the anchors of
    the decoding are laid out for it."""
    from src.tasks import ExportSettings
    size = input_size(info)
    for flag, value in (("--image_height", args.image_height), ("--image_width",
                                                                args.image_width)):
        if value and value != size:
            raise ConfigError(f"{flag} {value}: a detector is exported at its input size "
                              f"{size} (its decoding is built for it); drop the flag")
    exported = {"file_format": args.file_format,
                "batch_size": None if args.file_format == "ONNX" else args.batch_size,
                "weights": os.path.abspath(args.checkpoint_path),
                "output": "N x anchors x (x1, y1, x2, y2, objectness, class scores), input "
                          "pixels; NMS not included (src/models/heads/yolov3_head.py "
                          "select_detections)"}
    file_info = dict(info, export=exported)
    return ExportSettings(size, size, file_info, OUTPUT_NAMES,
                          f"YOLOv3 detector, {info['num_classes']} classes, boxes decoded")


# ------------------------------------------------------------------ inference

def prepare_image(path, info):
    """(CHW float32 input, (w_scale, h_scale), PIL image) of an image file,
    as evaluation prepares it (resize keeping the ratio, pad)."""
    from src.data.detection_transforms import test_transform
    from src.dataset import load_rgb
    image = load_rgb(path)
    tensor, factors = test_transform(np.asarray(image, np.uint8), input_size(info))
    return tensor, factors, image


def detections_of(decoded, factors, image, settings):
    """One image's decoded rows -> (K, 6) detections in its own pixels
    (image: anything with width and height)."""
    from src.models.heads.yolov3_head import select_detections, to_original_pixels
    dets = select_detections(decoded, **settings)
    return to_original_pixels(dets, factors, image.width, image.height)


def detection_records(dets, info):
    """JSON-ready detections: box [x1, y1, x2, y2], score, class name, category id."""
    names, ids = info["class_names"], info["category_ids"]
    return [{"bbox": [round(float(v), 2) for v in d[:4]], "score": round(float(d[4]), 4),
             "class_name": names[int(d[5])], "category_id": int(ids[int(d[5])])} for d in dets]


def palette_colour(index):
    """A distinct, saturated colour per class index (golden-angle hues)."""
    import colorsys
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image, dets, class_names):
    """A copy of the PIL image with each box, its class name and score."""
    from PIL import ImageDraw
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 200))
    for x1, y1, x2, y2, score, cls in dets:
        colour = palette_colour(int(cls))
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        label = f"{class_names[int(cls)]} {score:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), label)
        top_y = max(0, y1 - (bottom - top) - 2)
        draw.rectangle([x1, top_y, x1 + right - left + 2, top_y + bottom - top + 2], fill=colour)
        draw.text((x1 + 1, top_y), label, fill=(0, 0, 0))
    return canvas


def add_infer_arguments(parser):
    parser.add_argument("--output_dir", default="predictions",
                        help="folder for the pictures with the boxes drawn (one PNG per image)")
    parser.add_argument("--score_thr", type=float, default=0.3,
                        help="draw and list detections scoring at least this (eval.py scores "
                             "everything above the recorded score_thr)")


def predict(runner, paths, args):
    """Detections per image: printed, drawn into --output_dir, returned as
    [{image, picture, detections: [{bbox, score, class_name, category_id}]}]."""
    from src.dataset import BadImageError
    from src.tasks import InferError
    info = runner.info
    if info is None or info.get("task") != NAME:
        raise InferError(f"{runner.info_source}: no detector model info")
    if runner.fixed_size not in (None, input_size(info)):
        raise InferError(f"the exported file takes {runner.fixed_size}x{runner.fixed_size} "
                         f"but its model info says {input_size(info)}")
    settings = dict(test_settings(info), score_thr=max(args.score_thr, info["score_thr"]))
    os.makedirs(args.output_dir, exist_ok=True)
    predictions = []
    for start in range(0, len(paths), runner.batch_size):
        prepared = []
        for path in paths[start:start + runner.batch_size]:
            try:
                prepared.append((path, *prepare_image(path, info)))
            except BadImageError as err:
                print(f"warning: skipping unreadable image {err}", file=sys.stderr)
        if not prepared:
            continue
        decoded = runner.run(np.stack([p[1] for p in prepared]))[0]
        for (path, _, factors, image), rows in zip(prepared, decoded):
            dets = detections_of(rows, factors, image, settings)
            picture = os.path.join(args.output_dir,
                                   os.path.splitext(os.path.basename(path))[0] + ".png")
            draw_detections(image, dets, info["class_names"]).save(picture)
            predictions.append({"image": path, "picture": picture,
                                "detections": detection_records(dets, info)})
    for prediction in predictions:
        print(f"{prediction['image']}: {len(prediction['detections'])} detections -> "
              f"{prediction['picture']}")
        for det in prediction["detections"]:
            print(f"  {det['class_name']:<20s} {det['score']:.3f}  "
                  f"[{', '.join(f'{v:.1f}' for v in det['bbox'])}]")
    print(f"detected in {len(predictions)} of {len(paths)} images; pictures in {args.output_dir}")
    return predictions


# ------------------------------------------------------------------ preprocess.py / postprocess.py
#
# ModelZoo's detectors (yolov3_darknet53, yolov5) carry each image's id and
# resize factors from preprocess.py to postprocess.py beside the inputs; here
# they are entries of preprocess.py's record (labels.json), per input:
# "image_ids" {input: COCO image id} and "factors" {input: [w_scale, h_scale]}
# (eval.py's letterbox: resize keeping the ratio, pad bottom/right). The
# result files hold the exported graph's decoded rows; postprocess.py runs
# eval.py's NMS and scoring on them (detections_of, score), so the AP is
# eval.py's.

PREPROCESS_PROGRESS_EVERY = 500


def add_preprocess_arguments(parser):
    parser.add_argument("--val_split", default=EVAL_DEFAULTS["val_split"],
                        help="the split of the COCO root --data_path: "
                             "annotations/instances_<split>.json and <split>/")
    parser.add_argument("--val_ann_file", default="",
                        help="another annotation file (relative: under --data_path)")
    parser.add_argument("--val_image_dir", default="",
                        help="another image folder (relative: under --data_path)")


def num_predictions(info):
    """Rows of the decoded output per image: anchors per cell x cells, all levels."""
    size, per_cell = input_size(info), len(anchors_of(info)[0])
    return sum(per_cell * (size // stride) ** 2 for stride in info.get("strides", STRIDES))


def preprocess(args, info, where):
    """eval.py's inputs of the val split of the COCO root args.data_path, at the
    MINDIR's input size; the record names each input's image id and factors."""
    from src import edge
    from src.mindir_infer import MindirError, square_image_size
    _require_detector_info(info, where, args.mindir_path)
    size = input_size(info)
    if square_image_size(args.mindir_path) != size:
        raise MindirError(f"{args.mindir_path} takes {square_image_size(args.mindir_path)}-pixel "
                          f"inputs but its model info ({where}) says {size}: export it again")
    if args.image_size not in (None, size):
        raise ConfigError(f"--image_size {args.image_size}: a detector's inputs are its input "
                          f"size {size} (its anchors and decoding are built for it); drop the flag")
    coco = load_scored_coco(*_coco_paths(args.data_path, args, "val"), info["category_ids"])
    dataset = _eval_dataset(coco, 1, size, args.num_workers)
    print(f"data: {coco.ann_file} ({len(coco.images)} images, {len(coco.category_ids)} "
          f"categories), input {size}x{size}", flush=True)
    images_dir = edge.clear_images_dir(args.output_path)
    paths = {im.image_id: im.path for im in coco.images}
    image_ids, factors, start = {}, {}, time.time()
    for image, image_id, factor in dataset.create_tuple_iterator(output_numpy=True,
                                                                 num_epochs=1):
        name = edge.image_file_name(len(image_ids))
        image.tofile(os.path.join(images_dir, name))
        image_ids[name], factors[name] = int(image_id[0]), [float(v) for v in factor[0]]
        if len(image_ids) % PREPROCESS_PROGRESS_EVERY == 0:
            print(f"  {len(image_ids)}/{dataset.num_files} images "
                  f"({len(image_ids) / (time.time() - start):.0f}/s)", flush=True)
    if not image_ids:
        raise DatasetError(f"no image of {coco.image_dir} could be read (see the warnings above)")
    root = os.path.abspath(args.data_path)
    sources = {name: paths[image_id] for name, image_id in image_ids.items()}
    record = {
        "task": NAME,
        "sources": {name: os.path.relpath(path, root) for name, path in sources.items()},
        "original_sizes": {name: edge.original_size(path) for name, path in sources.items()},
        "image_ids": image_ids,
        "factors": factors,
        "annotations": os.path.abspath(coco.ann_file),
        "image_dir": os.path.abspath(coco.image_dir),
        "image_size": size,
        "num_classes": int(info["num_classes"]),
        "num_predictions": num_predictions(info),
        "category_ids": list(info["category_ids"]),
        "class_names": list(info["class_names"]),
        "test_settings": test_settings(info),
        "skipped": [os.path.relpath(p, root) for p in dataset.bad_images.paths],
    }
    edge.write_record(args.output_path, record)
    skipped = f", {len(record['skipped'])} unreadable skipped" if record["skipped"] else ""
    return (f"wrote {len(image_ids)} inputs (1x3x{size}x{size} float32, resized keeping the "
            f"ratio and padded{skipped}) to {images_dir} and {edge.RECORD_FILE}")


def add_postprocess_arguments(parser):
    parser.add_argument("--predictions_file", default=None,
                        help="also write the detections in COCO results format (original "
                             "pixels, the annotation file's category ids)")
    parser.add_argument("--ann_file", default=None,
                        help="the annotation file to score against (default: the one "
                             "preprocess.py read, recorded in the label file)")


_RECORD_KEYS = ("image_ids", "factors", "annotations", "num_classes", "num_predictions",
                "category_ids", "test_settings")


def decoded_results(record, args, inputs):
    """(N, num_predictions, 5 + classes) decoded rows of the result files."""
    from src import edge
    rows = edge.read_results(args.result_path, inputs)
    width = 5 + int(record["num_classes"])
    expected = int(record["num_predictions"]) * width
    if rows.shape[1] != expected:
        raise edge.ResultsError(
            f"results in {args.result_path} hold {rows.shape[1]} values per input, a "
            f"detector of {record['num_classes']} classes at {record['image_size']} gives "
            f"{record['num_predictions']} x {width} = {expected}: results of another model?")
    return rows.reshape(len(inputs), -1, width)


def postprocess(record, args):
    """COCO box AP of the result files, as eval.py computes it (same NMS, same
    mapping to original pixels, pycocotools on the annotation file)."""
    from src import edge
    from src.evaluation.coco import write_results
    missing = [key for key in _RECORD_KEYS if key not in record]
    if missing or not record["image_ids"]:
        raise edge.ResultsError(f"{args.label_file} lacks {', '.join(missing) or 'inputs'}: "
                                "not written by preprocess.py for a detector?")
    ann_file = args.ann_file or record["annotations"]
    coco = load_scored_coco(ann_file, record.get("image_dir", ""), record["category_ids"])
    images_by_id = {im.image_id: im for im in coco.images}
    inputs = sorted(record["image_ids"])
    unknown = [record["image_ids"][n] for n in inputs if record["image_ids"][n] not in images_by_id]
    if unknown:
        raise edge.ResultsError(f"{ann_file} has no image ids {unknown[:5]} of {args.label_file}: "
                                "score against the annotation file preprocess.py read")
    decoded = decoded_results(record, args, inputs)
    settings = record["test_settings"]
    detections = {}
    for name, rows in zip(inputs, decoded):
        image_id = record["image_ids"][name]
        factors = np.asarray(record["factors"][name], np.float32)  # eval.py's dtype
        detections[image_id] = detections_of(rows, factors, images_by_id[image_id], settings)
    metrics, results = score(detections, coco, settings, print_table=True)
    if args.predictions_file:
        write_results(args.predictions_file, results)
    print(f"{metrics['val_images']} images: AP {metrics['AP']:.4f}, AP50 {metrics['AP50']:.4f}, "
          f"AP75 {metrics['AP75']:.4f}, {len(results)} detections")
    metrics.update(detections=len(results), annotations=os.path.abspath(ann_file))
    return metrics
