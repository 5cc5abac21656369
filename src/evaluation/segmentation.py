"""Semantic segmentation scores as mmsegmentation's ``IoUMetric`` computes them.

Per class, over the whole evaluation set (never averaged per image): the
pixel areas of intersection, union, prediction and label, counted on the
pixels whose label is not the ignore value. Then

    IoU_c = intersection_c / union_c      Acc_c = intersection_c / label_c
    mIoU = nanmean(IoU)   mAcc = nanmean(Acc)   aAcc = sum(intersection) / sum(label)

A class absent from both the labels and the predictions has IoU 0/0 = NaN
and is left out of mIoU (as mmsegmentation's nanmean does); a class only
predicted has IoU 0; a class absent from the labels has Acc NaN. The metrics are
fractions (the project's convention: top1 is one too); the per-class table
is in percent, as mmsegmentation prints it (its mIoU 34.08 = 0.3408 here).
"""
import math

import numpy as np

METRIC_KEYS = ("mIoU", "mAcc", "aAcc")
# Rows of SegmentationScore.areas.
INTERSECTION, UNION, PREDICTION, LABEL = range(4)


def area_counts(prediction, label, num_classes, ignore_index):
    """(4, num_classes) int64 pixel areas of one image: intersection, union,
    prediction, label, over the pixels whose label is not ignore_index.
    prediction, label: integer arrays of one shape."""
    prediction, label = np.asarray(prediction), np.asarray(label)
    if prediction.shape != label.shape:
        raise ValueError(f"prediction {prediction.shape} and label {label.shape} differ in size")
    keep = label != ignore_index
    prediction, label = prediction[keep].astype(np.int64), label[keep].astype(np.int64)
    if label.size and (label.min() < 0 or label.max() >= num_classes):
        raise ValueError(f"label values must be in [0, {num_classes - 1}] or the ignore value "
                         f"{ignore_index}; found {label.min()}..{label.max()}")
    intersection = np.bincount(label[prediction == label], minlength=num_classes)
    predicted = np.bincount(prediction[(prediction >= 0) & (prediction < num_classes)],
                            minlength=num_classes)
    labelled = np.bincount(label, minlength=num_classes)
    return np.stack([intersection, predicted + labelled - intersection, predicted, labelled])


class SegmentationScore:
    """Accumulates area_counts over a set; ``scores()`` gives the metrics."""

    def __init__(self, num_classes, ignore_index):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.areas = np.zeros((4, num_classes), np.int64)
        self.num_images = 0

    def update(self, prediction, label):
        self.areas += area_counts(prediction, label, self.num_classes, self.ignore_index)
        self.num_images += 1

    def reduce(self, reduce_sum):
        """Sum the areas (and image counts) over ranks; reduce_sum adds numpy arrays."""
        if reduce_sum is None:
            return
        total = reduce_sum(np.concatenate([self.areas.ravel(), [self.num_images]]).astype(
            np.float64))
        self.areas = np.rint(total[:-1]).astype(np.int64).reshape(self.areas.shape)
        self.num_images = int(round(total[-1]))

    def per_class(self):
        """(IoU, Acc) arrays of fractions, NaN where undefined (0 / 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = self.areas[INTERSECTION] / self.areas[UNION]
            acc = self.areas[INTERSECTION] / self.areas[LABEL]
        return iou, acc

    def scores(self):
        """dict(mIoU, mAcc, aAcc) as fractions (NaN when nothing was labelled)."""
        iou, acc = self.per_class()
        labelled = self.areas[LABEL].sum()
        return dict(mIoU=_nanmean(iou), mAcc=_nanmean(acc),
                    aAcc=self.areas[INTERSECTION].sum() / labelled if labelled else float("nan"))

    def table(self, class_names):
        """Per-class IoU / Acc in percent as text lines (mmsegmentation's table)."""
        iou, acc = (100 * values for values in self.per_class())
        width = max([5] + [len(name) for name in class_names])
        lines = [f"{'Class':<{width}}  {'IoU':>6}  {'Acc':>6}"]
        lines += [f"{name:<{width}}  {_fmt(i):>6}  {_fmt(a):>6}"
                  for name, i, a in zip(class_names, iou, acc)]
        return lines


def _nanmean(values):
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _fmt(value):
    return "nan" if math.isnan(value) else f"{value:.2f}"


def json_metrics(scores):
    """The metrics for JSON: fractions rounded to 4 decimals (mmsegmentation's
    2 decimals of a percentage), NaN as None."""
    return {k: None if math.isnan(scores[k]) else round(float(scores[k]), 4) for k in METRIC_KEYS}
