"""Why a segmentation run does not learn: three checks on a recipe's data.

    python scripts/segmentation_checks.py overfit --steps 100 -- --config_path R.yaml \
        --data_path ROOT --pretrained W.ckpt
    python scripts/segmentation_checks.py probe --data_path ROOT [--pretrained W.ckpt]
    python scripts/segmentation_checks.py ceiling --data_path ROOT

overfit: the recipe's train step (train.py's network, loss, optimizer at a
  constant lr) on ONE fixed training batch; prints the loss every 10 steps and
  the per-class IoU of that batch in inference mode. A sound pipeline drives
  the loss near 0 and the IoUs near 100% in ~100 steps; if not, the train
  step, the loss or the labels are wrong.
probe: a logistic regression on the backbone's feature maps (output stride
  8, each map's pixel at the label's stride-8 centres) of training images,
  scored on validation images: foreground vs background and all classes.
  Shows how much the backbone's weights (a file, or none: random) already
  separate the classes before any fine-tuning.
ceiling: the validation labels averaged down to 1/4 ... 1/32 and resized
  back bilinearly: the mIoU a perfect network at that output stride could
  reach (the stroke-size vs stride limit).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.data.ade20k import (TRAIN_SPLIT, VAL_SPLIT, read_dataset_info, read_pair,  # noqa: E402
                             scan_split)
from src.evaluation.segmentation import SegmentationScore  # noqa: E402
from src.models.losses.segmentation_loss import IGNORE_LABEL  # noqa: E402


def per_class_iou(predicted, labels):
    """{class: IoU} over the labelled pixels of one batch, classes present in the labels."""
    valid = labels != IGNORE_LABEL
    return {int(c): float(((predicted == c) & (labels == c)).sum()
                          / (((predicted == c) | (labels == c)) & valid).sum())
            for c in np.unique(labels[valid])}


def overfit(steps, train_argv):
    import mindspore as ms
    import train
    from src.tasks import segmentation
    from src.train_utils import create_optimizer, set_device, set_seed
    config = train.parse_config(train_argv)
    set_device(config.device_target)
    set_seed(config.seed)
    data, _ = segmentation.create_train_data(config, 0, 1)
    images, labels = next(data.create_tuple_iterator(output_numpy=True, num_epochs=1))
    net = train.build_network(config)
    step = segmentation.create_train_step(net, config,
                                          create_optimizer(net, config, [config.lr] * steps))
    batch = (ms.Tensor(images), ms.Tensor(labels))
    start = time.time()
    for i in range(steps):
        loss = float(step(*batch).asnumpy())
        if i % 10 == 0 or i == steps - 1:
            print(f"step {i + 1}/{steps}: loss {loss:.4f} ({time.time() - start:.0f} s)",
                  flush=True)
    net.set_train(False)
    predicted = net(batch[0]).asnumpy().argmax(1)
    for c, iou in per_class_iou(predicted, labels).items():
        print(f"class {c}: IoU {100 * iou:.1f}% on the fixed batch")


def stride8_features(backbone, root, info, split, count):
    """Per feature map (stride 4, 8, 16 stages and the last map, all at output
    stride 8 or finer), (pixels, channels) rows; and the labels at those pixels."""
    import mindspore as ms
    from src.data.seg_transforms import eval_image
    maps, labels = {}, []
    for image_path, label_path in scan_split(root, split)[:count]:
        image, label = read_pair(image_path, label_path, info)
        x = ms.Tensor(eval_image(image, label.shape, keep_ratio=False)[None])
        for index, feature in zip((2, 3, 4), backbone.forward_pyramid(x, (2, 3, 4))):
            feature = feature.asnumpy()[0]
            stride = label.shape[0] // feature.shape[1]
            centre = label[stride // 2::stride, stride // 2::stride]
            maps.setdefault(index, []).append(feature.reshape(len(feature), -1).T)
            if index == 4:
                labels.append(centre.ravel())
    return {k: np.concatenate(v) for k, v in maps.items()}, np.concatenate(labels)


def probe(root, weights, count):
    import mindspore as ms
    from sklearn.linear_model import LogisticRegression
    from src.models.segmentors.deeplabv3 import segmentation_backbone
    from src.pretrained import load_backbone_weights
    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    ms.set_seed(0)  # the random initialisation, when no weights are given
    backbone = segmentation_backbone("ghostnetv2_100", output_stride=8)
    if weights:
        print(load_backbone_weights(backbone, weights, "ghostnetv2_100"))
    backbone.set_train(False)
    info = read_dataset_info(root)
    train_maps, train_labels = stride8_features(backbone, root, info, TRAIN_SPLIT, count)
    val_maps, val_labels = stride8_features(backbone, root, info, VAL_SPLIT, count // 2)
    train_kept, val_kept = train_labels != IGNORE_LABEL, val_labels != IGNORE_LABEL
    for index in (2, 3, 4):
        x, x_val = train_maps[index][train_kept], val_maps[index][val_kept]
        mean, std = x.mean(0), x.std(0) + 1e-6
        for task, target in (("foreground/background", lambda y: (y > 0).astype(int)),
                             ("all classes", lambda y: y)):
            y, y_val = target(train_labels[train_kept]), target(val_labels[val_kept])
            model = LogisticRegression(max_iter=300, C=0.1, class_weight="balanced")
            model.fit((x - mean) / std, y)
            predicted = model.predict((x_val - mean) / std)
            ious = per_class_iou(predicted, y_val)
            print(f"feature map {index} ({x.shape[1]} channels), {task}: validation mIoU "
                  f"{100 * np.mean(list(ious.values())):.1f}%")


def ceiling(root):
    import cv2
    info = read_dataset_info(root)
    num_classes = len(info["classes"])
    pairs = scan_split(root, VAL_SPLIT)
    for stride in (4, 8, 16, 32):
        score = SegmentationScore(num_classes, IGNORE_LABEL)
        for image_path, label_path in pairs:
            _, label = read_pair(image_path, label_path, info)
            height, width = label.shape
            one_hot = np.stack([label == c for c in range(num_classes)], -1).astype(np.float32)
            coarse = cv2.resize(one_hot, (max(1, width // stride), max(1, height // stride)),
                                interpolation=cv2.INTER_AREA)
            score.update(cv2.resize(coarse, (width, height),
                                    interpolation=cv2.INTER_LINEAR).argmax(-1), label)
        scores = score.scores()
        print(f"output stride {stride}: mIoU {100 * scores['mIoU']:.1f}%, aAcc "
              f"{100 * scores['aAcc']:.1f}% at best")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("check", choices=["overfit", "probe", "ceiling"])
    parser.add_argument("--steps", type=int, default=100, help="overfit: train steps")
    parser.add_argument("--data_path", help="probe, ceiling: the data set's ROOT")
    parser.add_argument("--pretrained", default="",
                        help="probe: backbone weights (default: random initialisation)")
    parser.add_argument("--images", type=int, default=120,
                        help="probe: training images (half as many validation images)")
    argv = list(sys.argv[1:] if argv is None else argv)
    # overfit: train.py's flags (recipe, data, weights) follow "--"
    train_argv = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:len(argv) - len(train_argv) - int("--" in argv)])
    if args.check == "overfit" and not train_argv:
        parser.error("overfit needs train.py's flags after --, e.g. -- --config_path R.yaml")
    if args.check != "overfit" and not args.data_path:
        parser.error(f"{args.check} needs --data_path ROOT")
    from src.dataset import DatasetError
    from src.train_utils import ConfigError
    from src.weights import WeightsError
    try:
        if args.check == "overfit":
            overfit(args.steps, train_argv)
        elif args.check == "probe":
            probe(args.data_path, args.pretrained, args.images)
        else:
            ceiling(args.data_path)
    except (ConfigError, DatasetError, WeightsError) as err:
        parser.error(str(err))


if __name__ == "__main__":
    main()
