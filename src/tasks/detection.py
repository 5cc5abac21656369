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
import math
import os

import numpy as np

from src.models.heads.yolov3_head import STRIDES, TEST_DEFAULTS
from src.train_utils import ConfigError

NAME = "detection"
PRIMARY_METRIC = "AP"
METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
_logger = logging.getLogger(__name__)

# Recipe keys of this task (train.py adds its common ones; each is a --flag).
DEFAULTS = dict(
    task=NAME,
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
    size = config.image_size
    low, high = scale_range(config)
    for name, value in (("image_size", size), ("multiscale max", high)):
        if value % 32:
            raise ConfigError(f"--{name.split()[0]} {value}: a detector input must be a multiple "
                              "of 32 (the neck upsamples stride 32 -> 16 -> 8)")
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

def _coco(config, which, category_ids=None):
    from src.data.coco import load_coco, split_paths
    split = getattr(config, f"{which}_split")
    data_path = config.data_path if which == "train" or not getattr(
        config, "val_data_path", "") else config.val_data_path
    ann_file, image_dir = split_paths(data_path, split, getattr(config, f"{which}_ann_file"),
                                      getattr(config, f"{which}_image_dir"))
    return load_coco(ann_file, image_dir, category_ids)


def create_train_data(config, rank_id=0, rank_size=1):
    """(batches of image, box_targets, labels; data_info)."""
    from src.data.detection import create_train_dataset
    coco = _coco(config, "train")
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
    _logger.info("train data: %s (%d images, %d on this rank, x%d per epoch, %d categories, "
                 "%d decoding workers)", coco.ann_file, len(coco.images),
                 dataset.num_files // config.repeat_times, config.repeat_times,
                 len(coco.category_ids), dataset.num_workers)
    data_info = dict(category_ids=coco.category_ids, class_names=coco.class_names,
                     source=os.path.abspath(coco.ann_file))
    return dataset, data_info


def create_val_data(config, rank_id=0, rank_size=1, data_info=None):
    """Evaluation batches of (image, image_id, factors); ``dataset.coco`` is
    the annotation set (its file is what COCOeval scores against)."""
    from src.data.detection import create_eval_dataset
    coco = _coco(config, "val", data_info and data_info["category_ids"])
    dataset = create_eval_dataset(coco, config.batch_size, config.image_size,
                                  config.num_workers or None, rank_id, rank_size)
    dataset.coco = coco
    dataset.rank_id, dataset.rank_size = rank_id, rank_size
    _logger.info("val data: %s (%d images, %d on this rank)", coco.ann_file, len(coco.images),
                 dataset.num_files)
    return dataset


# ------------------------------------------------------------------ networks

def build_network(config):
    """The detector; --pretrained FILE (a classification checkpoint of this
    port, the official release file, timm's safetensors), --pretrained true
    (src/pretrained.py's search) or a detection checkpoint of this port."""
    from src.models.detectors.yolov3 import yolov3_ghostnetv2
    net = yolov3_ghostnetv2(config.model, config.num_classes, tuple(config.neck_channels))
    if config.pretrained:
        _logger.info("pretrained: %s", load_pretrained(net, config.pretrained, config.model))
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
    from src.timm_recipe import create_train_step as timm_train_step
    from src.train_utils import loss_scale_sense, set_precision
    set_precision(net, config)
    loss = YOLOV3Loss(config.num_classes, config.cls_weight, config.conf_weight,
                      config.xy_weight, config.wh_weight)
    flatten = FlattenPredictions(len(anchors_of(config)[0]), 5 + config.num_classes)
    step = timm_train_step(YOLOV3WithLoss(net, flatten, loss), optimizer,
                           ema_warmup=config.ema_warmup, scale_sense=loss_scale_sense(config),
                           ema=config.ema, ema_decay=config.ema_decay,
                           clip_grad=config.clip_grad > 0, clip_value=config.clip_grad or 1.0)
    return step.set_train()


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
    return {k: _get(config_or_info, k, v) for k, v in TEST_DEFAULTS.items()}


# ------------------------------------------------------------------ evaluation

def predict_batches(eval_net, batches, batch_size, settings, images_by_id, progress=None):
    """{image_id: (K, 6) detections in original pixels} over (image, image_id,
    factors) batches; batches are padded to batch_size (one graph)."""
    import mindspore as ms
    from src.evaluation.classification import pad_batch
    from src.models.heads.yolov3_head import select_detections, to_original_pixels
    eval_net.set_train(False)
    detections, done = {}, 0
    for images, image_ids, factors in batches:
        count = len(image_ids)
        decoded = eval_net(ms.Tensor(pad_batch(images, batch_size))).asnumpy()[:count]
        for rows, image_id, factor in zip(decoded, image_ids, factors):
            image = images_by_id[int(image_id)]
            dets = select_detections(rows, **settings)
            detections[int(image_id)] = to_original_pixels(dets, factor, image.width,
                                                           image.height)
        done += count
        if progress:
            progress(done)
    return detections


def validate(eval_net, val_data, config, reduce_sum=None, progress=None, print_table=False):
    """COCO box AP of the network on val_data: dict of METRIC_KEYS, num_images,
    results (the COCO results list), summary (one line for the log)."""
    from src.evaluation.coco import evaluate, gather_results
    coco = val_data.coco
    settings = test_settings(config)
    images_by_id = {im.image_id: im for im in coco.images}
    batches = val_data.create_tuple_iterator(num_epochs=1, output_numpy=True)
    detections = predict_batches(eval_net, batches, config.batch_size, settings, images_by_id,
                                 progress)
    position = {im.image_id: i for i, im in enumerate(coco.images)}
    image_ids = [im.image_id for im in coco.images]
    evaluated = np.zeros(len(image_ids))
    for image_id in detections:
        evaluated[position[image_id]] = 1
    if reduce_sum is not None:
        evaluated = reduce_sum(evaluated)
    results = gather_results({position[i]: d for i, d in detections.items()}, len(image_ids),
                             settings["max_per_img"], coco.category_ids, image_ids, reduce_sum)
    scored = [i for i, done in zip(image_ids, evaluated) if done > 0]
    metrics, table = evaluate(coco.ann_file, results, scored, print_table)
    skipped = len(image_ids) - len(scored)
    summary = (f"AP {metrics['AP']:.4f}, AP50 {metrics['AP50']:.4f}, AP75 {metrics['AP75']:.4f} "
               f"({len(scored)} images{f', {skipped} unreadable skipped' if skipped else ''})")
    return dict(metrics, num_images=len(scored), results=results, table=table, summary=summary)


# ------------------------------------------------------------------ model info

def make_info(config, data_info):
    """What eval.py / export.py / infer.py need: the task, the network, the
    input size, anchors, strides, classes and their dataset ids, thresholds."""
    from src.model_info import make_info as base_info
    info = base_info(config.model, config.num_classes, config.image_size, 1.0,
                     data_info["class_names"], source=f"train.py on {data_info['source']}")
    info.update(task=NAME, interpolation="bilinear", resize="keep_ratio_pad",
                anchors=[[list(pair) for pair in level] for level in anchors_of(config)],
                strides=list(STRIDES), neck_channels=list(config.neck_channels),
                category_ids=list(data_info["category_ids"]), **test_settings(config))
    return info


# ------------------------------------------------------------------ inference

def prepare_image(path, info):
    """(CHW float32 input, (w_scale, h_scale), PIL image) of an image file,
    as evaluation prepares it (resize keeping the ratio, pad)."""
    from src.data.detection_transforms import test_transform
    from src.dataset import load_rgb
    image = load_rgb(path)
    tensor, factors = test_transform(np.asarray(image, np.uint8), input_size(info))
    return tensor, factors, image


def detections_of(decoded, factors, image, info):
    """One image's decoded rows -> (K, 6) detections in its own pixels."""
    from src.models.heads.yolov3_head import select_detections, to_original_pixels
    dets = select_detections(decoded, **test_settings(info))
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
