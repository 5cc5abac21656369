"""YOLOv3's training targets and loss, as mmdetection's YOLOV3Head computes
them (GridAssigner, YOLOBBoxCoder.encode, loss_by_feat_single).

The assignment runs in NumPy in the data pipeline, one image at a time, and
gives every anchor of a fixed input size a fixed-size target row; the graph
then only computes the loss (static shapes, no gathers over box lists):

- ``box_targets`` (anchors, 4): tx, ty (the centre's offset in its cell, in
  (0, 1)), tw, th (log of box / anchor size); zeros where not positive;
- ``labels`` (anchors,) int32: the class index of a positive anchor,
  NEGATIVE (-1) for a negative one (objectness target 0), IGNORED (-2) for
  one that takes no loss.

Assignment (GridAssigner, pos_iou_thr = neg_iou_thr = 0.5, min_pos_iou 0):
1. an anchor whose best IoU with every non-crowd box is <= neg_iou_thr is
   negative, else ignored;
2. the anchors of the cell holding a box's centre (its *responsible* cell,
   ``floor(centre / stride)``, on every level) are positive for the box they
   overlap best when that IoU > pos_iou_thr;
3. each box also gets the anchor(s) of its responsible cells it overlaps
   best, whatever the IoU (ties: all of them; a later box takes an anchor
   two boxes want);
4. crowd boxes (``iscrowd: 1``) are never positives; an anchor overlapping
   one by more than neg_iou_thr is ignored instead of negative.

One difference from mmdetection, on purpose: mmdetection marks a cell
responsible when *any* box's centre is in it, so a box could be assigned to
an anchor in the cell of another box's centre; here a cell is responsible
only for the boxes whose centre it holds (YOLOv3's rule, and what the
assignment's name says). Crowd boxes: mmdetection drops them (its YOLOv3
ignores ``gt_bboxes_ignore``), which makes anchors on a crowd negatives.
"""
import numpy as np
from mindspore import nn, ops
import mindspore as ms

NEGATIVE = -1
IGNORED = -2
EPS = 1e-6  # YOLOBBoxCoder's clamp of the xy targets and of the size ratio


def box_iou(boxes_a, boxes_b):
    """IoU matrix (len(a), len(b)) of (x1, y1, x2, y2) boxes."""
    lt = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    rb = np.minimum(boxes_a[:, None, 2:4], boxes_b[None, :, 2:4])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (boxes_a[:, 2:4] - boxes_a[:, :2]).prod(-1)
    area_b = (boxes_b[:, 2:4] - boxes_b[:, :2]).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def responsible_cells(boxes, anchor_table, height, width):
    """(boxes, anchors) bool: the anchor's cell holds the box's centre."""
    stride = anchor_table[:, 4].astype(np.float64)
    anchor_centre = (anchor_table[:, :2] + anchor_table[:, 2:4]) / 2
    anchor_cell = np.floor(anchor_centre / stride[:, None])
    centre = (boxes[:, :2] + boxes[:, 2:4]) / 2
    limit = np.stack([np.ceil(width / stride), np.ceil(height / stride)], 1) - 1
    box_cell = np.clip(np.floor(centre[:, None, :] / stride[None, :, None]), 0, limit[None])
    return (box_cell == anchor_cell[None]).all(-1)


def encode(boxes, anchor_table):
    """YOLOBBoxCoder.encode: (tx, ty, tw, th) of boxes for their anchors."""
    stride = anchor_table[:, 4:5]
    anchor_centre = (anchor_table[:, :2] + anchor_table[:, 2:4]) / 2
    anchor_size = anchor_table[:, 2:4] - anchor_table[:, :2]
    centre = (boxes[:, :2] + boxes[:, 2:4]) / 2
    size = boxes[:, 2:4] - boxes[:, :2]
    xy = np.clip((centre - anchor_centre) / stride + 0.5, EPS, 1 - EPS)
    wh = np.log(np.maximum(size / anchor_size, EPS))
    return np.concatenate([xy, wh], 1)


def assign_targets(anchor_table, boxes, classes, crowd, height, width,
                   pos_iou_thr=0.5, neg_iou_thr=0.5):
    """Targets of one image. anchor_table: ``grid_anchors`` rows for the input
    size (height, width); boxes: (B, 4) x1, y1, x2, y2 in input pixels, of
    positive size; classes: (B,) class indices; crowd: (B,) bool. Returns
    (box_targets float32 (A, 4), labels int32 (A,)); see the module doc."""
    num_anchors = len(anchor_table)
    box_targets = np.zeros((num_anchors, 4), np.float32)
    labels = np.full(num_anchors, NEGATIVE, np.int32)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    crowd = np.asarray(crowd, bool).reshape(-1)
    anchors = anchor_table[:, :4].astype(np.float64)
    if crowd.any():
        crowd_iou = box_iou(boxes[crowd], anchors).max(0)
        labels[crowd_iou > neg_iou_thr] = IGNORED
    boxes, classes = boxes[~crowd], np.asarray(classes).reshape(-1)[~crowd]
    if not len(boxes):
        return box_targets, labels
    overlaps = box_iou(boxes, anchors)
    labels[overlaps.max(0) > neg_iou_thr] = IGNORED
    overlaps = np.where(responsible_cells(boxes, anchor_table, height, width), overlaps, -1.0)
    assigned = np.full(num_anchors, -1)
    best_box = overlaps.argmax(0)
    positive = overlaps.max(0) > pos_iou_thr
    assigned[positive] = best_box[positive]
    for i, row in enumerate(overlaps):
        if row.max() > 0:
            assigned[row == row.max()] = i
    positive = assigned >= 0
    labels[positive] = classes[assigned[positive]]
    box_targets[positive] = encode(boxes[assigned[positive]], anchor_table[positive])
    return box_targets, labels


def bce_with_logits(logits, targets):
    """Element-wise sigmoid cross-entropy, stable for large |logits|."""
    return ops.relu(logits) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


class YOLOV3Loss(nn.Cell):
    """mmdetection's YOLOv3 loss on the flattened predictions (N, A, 5 + C):
    class BCE (weight 1) and xy BCE (weight 2) and wh MSE (weight 2) on
    positives, objectness BCE (weight 1) on positives and negatives; every
    term summed over anchors and images (mmdetection's reduction 'sum', per
    device batch)."""

    def __init__(self, num_classes, cls_weight=1.0, conf_weight=1.0, xy_weight=2.0,
                 wh_weight=2.0):
        super().__init__()
        self.num_classes = num_classes
        self.weights = (cls_weight, conf_weight, xy_weight, wh_weight)

    def construct(self, pred, box_targets, labels):
        positive = ops.cast(labels >= 0, ms.float32)
        negative = ops.cast(labels == NEGATIVE, ms.float32)
        one_hot = ops.one_hot(ops.maximum(labels, 0), self.num_classes,
                              ops.ones((), ms.float32), ops.zeros((), ms.float32))
        pos = ops.expand_dims(positive, -1)
        cls_weight, conf_weight, xy_weight, wh_weight = self.weights
        loss_cls = (bce_with_logits(pred[:, :, 5:], one_hot) * pos).sum()
        loss_conf = (bce_with_logits(pred[:, :, 4], positive) * (positive + negative)).sum()
        loss_xy = (bce_with_logits(pred[:, :, 0:2], box_targets[:, :, 0:2]) * pos).sum()
        loss_wh = (ops.square(pred[:, :, 2:4] - box_targets[:, :, 2:4]) * pos).sum()
        return (cls_weight * loss_cls + conf_weight * loss_conf + xy_weight * loss_xy
                + wh_weight * loss_wh)


class YOLOV3WithLoss(nn.Cell):
    """The training network: detector(images) -> flattened predictions -> loss."""

    def __init__(self, detector, flatten, loss):
        super().__init__(auto_prefix=False)  # the detector's parameter names unchanged
        self.detector = detector
        self.flatten = flatten
        self.loss = loss

    def construct(self, images, box_targets, labels):
        return self.loss(self.flatten(self.detector(images)), box_targets, labels)
