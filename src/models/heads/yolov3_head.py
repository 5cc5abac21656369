"""YOLOv3's head (mmdetection's ``YOLOV3Head``): per level a 3x3 ConvBnLeaky
bridge and a 1x1 prediction conv with, per anchor, (tx, ty, tw, th,
objectness, class logits...): channel ``anchor * (5 + num_classes) + attribute``.

Also the anchors (``YOLOAnchorGenerator``: each level's anchors centred on
every cell, centre ``(index + 0.5) * stride``) and the box decoding
(``YOLOBBoxCoder``), written with NumPy for the target assignment and with
MindSpore operators inside the exported graph.
"""
import math

import numpy as np
from mindspore import Tensor, nn, ops
from mindspore import dtype as mstype

from src.cpu_kernels import KernelSwitch, custom_op, enabled_by_default
from src.ghostnetv2 import conv2d
from src.models.necks.yolov3_neck import ConvBnLeaky

# mmdetection's YOLOv3 anchors (width, height) per level, coarsest level first.
ANCHORS_320 = (((220, 125), (128, 222), (264, 266)),
               ((35, 87), (102, 96), (60, 170)),
               ((10, 15), (24, 36), (72, 42)))
ANCHORS_416 = (((116, 90), (156, 198), (373, 326)),
               ((30, 61), (62, 45), (59, 119)),
               ((10, 13), (16, 30), (33, 23)))
STRIDES = (32, 16, 8)


def bias_init_with_prob(prior):
    """The logit whose sigmoid is ``prior`` (mmcv's bias_init_with_prob)."""
    return float(-math.log((1 - prior) / prior))


def grid_anchors(anchors, strides, height, width):
    """All anchors of an input of ``height`` x ``width`` as (N, 5) float32 rows
    (x1, y1, x2, y2, stride), ordered as the flattened predictions are: level
    (coarsest first), then row, column, anchor."""
    rows = []
    for level_anchors, stride in zip(anchors, strides):
        h, w = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        centres = (np.stack([xs, ys], -1).reshape(-1, 1, 2) + 0.5) * stride
        sizes = np.asarray(level_anchors, np.float64).reshape(1, -1, 2)
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], -1).reshape(-1, 4)
        rows.append(np.concatenate([boxes, np.full((len(boxes), 1), stride)], 1))
    return np.concatenate(rows).astype(np.float32)


class YOLOV3Head(nn.Cell):
    """Args: num_classes; in_channels / out_channels per level (coarsest first);
    num_anchors per level (3). Returns the raw prediction maps, one
    (N, num_anchors * (5 + num_classes), H, W) tensor per level."""

    def __init__(self, num_classes, in_channels, out_channels, num_anchors=3,
                 strides=STRIDES):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        self.num_attributes = 5 + num_classes
        self.convs_bridge = nn.CellList([ConvBnLeaky(i, o, 3)
                                         for i, o in zip(in_channels, out_channels)])
        self.convs_pred = nn.CellList([
            conv2d(o, num_anchors * self.num_attributes, 1, has_bias=True)
            for o in out_channels])
        self._init_weights(strides)

    def _init_weights(self, strides):
        """mmdetection's init: N(0, 0.01) prediction convs; objectness bias for
        a prior of 8 objects per 608-pixel image's map, class bias 0.01."""
        for conv, stride in zip(self.convs_pred, strides):
            conv.weight.set_data(Tensor(np.random.normal(0, 0.01, conv.weight.shape)
                                        .astype(np.float32)))
            bias = np.zeros((self.num_anchors, self.num_attributes), np.float32)
            bias[:, 4] = bias_init_with_prob(8 / (608 / stride) ** 2)
            bias[:, 5:] = bias_init_with_prob(0.01)
            conv.bias.set_data(Tensor(bias.reshape(-1)))

    def construct(self, features):
        outs = ()
        for i, bridge in enumerate(self.convs_bridge):
            outs += (self.convs_pred[i](bridge(features[i])),)
        return outs


class FlattenPredictions(nn.Cell):
    """(N, A*K, H, W) per level -> (N, sum H*W*A, K), rows in grid_anchors'
    order (mmdetection's permute(0, 2, 3, 1).reshape(N, -1, K))."""

    def __init__(self, num_anchors, num_attributes):
        super().__init__()
        self.num_anchors = num_anchors
        self.num_attributes = num_attributes

    def construct(self, maps):
        rows = ()
        for pred in maps:
            _, _, h, w = pred.shape
            # -1, not the batch size: an ONNX export keeps its batch axis free
            rows += (pred.transpose(0, 2, 3, 1).reshape(-1, h * w * self.num_anchors,
                                                        self.num_attributes),)
        return ops.cat(rows, 1)


class YOLOV3Decode(KernelSwitch, nn.Cell):
    """Raw prediction maps -> (N, num_anchors_total, 5 + num_classes):
    (x1, y1, x2, y2) in input pixels, sigmoid objectness, sigmoid class
    scores; rows ordered as ``grid_anchors``. YOLOBBoxCoder.decode: centre =
    anchor centre + (sigmoid(t_xy) - 0.5) * stride, size = anchor * exp(t_wh).

    The anchors of a fixed input size are constants of the graph (exported
    with it); ``height`` / ``width`` must be the size the network is called at.
    In inference on float32 one CPU kernel (kernels/yolo_decode.cc) instead of
    ~15 MindSpore operators; MindSpore's operators in an export (ONNX, AIR,
    portable MINDIR).
    """

    def __init__(self, anchors, strides, num_classes, height, width):
        super().__init__()
        self.flatten = FlattenPredictions(len(anchors[0]), 5 + num_classes)
        table = grid_anchors(anchors, strides, height, width)
        # Constants of the graph, not parameters: checkpoints do not carry them.
        self.centre = Tensor((table[:, :2] + table[:, 2:4]) / 2)
        self.size = Tensor(table[:, 2:4] - table[:, :2])
        self.stride = Tensor(table[:, 4:5])
        self.set_kernel(enabled_by_default())

    def make_kernels(self, library):
        attributes = self.flatten.num_attributes

        def out_shape(*shapes):
            return [shapes[0][0], shapes[-3][0], attributes]
        self.kernel = custom_op(library, "YoloDecode", out_shape)

    def construct(self, maps):
        if self.use_kernel and not self.training and maps[0].dtype == mstype.float32:
            return self.kernel(*maps, self.centre, self.size, self.stride)
        pred = self.flatten(maps)
        centre = self.centre + (ops.sigmoid(pred[:, :, 0:2]) - 0.5) * self.stride
        half = self.size * ops.exp(pred[:, :, 2:4]) * 0.5
        return ops.cat((centre - half, centre + half, ops.sigmoid(pred[:, :, 4:])), 2)


# ------------------------------------------------- post-processing (NumPy)

# mmdetection's YOLOv3 test settings.
TEST_DEFAULTS = dict(nms_pre=1000, conf_thr=0.005, score_thr=0.05, nms_iou=0.45, max_per_img=100)


def nms(boxes, scores, iou_thr):
    """Greedy NMS; indices kept, highest score first (ties: lower index)."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while len(order):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.clip(rb - lt, 0, None).prod(1)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_thr]
    return np.asarray(keep, np.int64)


def select_detections(decoded, nms_pre=1000, conf_thr=0.005, score_thr=0.05, nms_iou=0.45,
                      max_per_img=100):
    """mmdetection's YOLOv3 predict_by_feat + multiclass_nms on one image's
    decoded rows (A, 5 + C) -> (K, 6) float64 rows x1, y1, x2, y2, score,
    class index, in input pixels, best first. Score = class * objectness;
    anchors with objectness < conf_thr dropped, the nms_pre best by objectness
    kept, (anchor, class) pairs above score_thr, NMS per class, max_per_img."""
    decoded = np.asarray(decoded, np.float64)
    objectness = decoded[:, 4]
    rows = decoded[objectness >= conf_thr]
    if nms_pre > 0 and len(rows) > nms_pre:
        rows = rows[np.argsort(-rows[:, 4], kind="stable")[:nms_pre]]
    scores = rows[:, 5:] * rows[:, 4:5]
    anchor_idx, class_idx = np.nonzero(scores > score_thr)
    if not len(anchor_idx):
        return np.zeros((0, 6))
    boxes, scores = rows[anchor_idx, :4], scores[anchor_idx, class_idx]
    # One NMS over all classes: boxes of different classes never overlap once
    # each class is shifted by more than the largest coordinate (batched_nms).
    offset = class_idx[:, None] * (np.abs(boxes).max() + 1)
    keep = nms(boxes + offset, scores, nms_iou)[:max_per_img]
    return np.concatenate([boxes[keep], scores[keep, None], class_idx[keep, None]], 1)


def to_original_pixels(detections, factors, width, height):
    """Boxes of the resized input back to the original image (divided by the
    resize factors, clipped to the image), as mmdetection's rescale=True."""
    out = detections.copy()
    out[:, [0, 2]] = np.clip(out[:, [0, 2]] / factors[0], 0, width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]] / factors[1], 0, height)
    return out
