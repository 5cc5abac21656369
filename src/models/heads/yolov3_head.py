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
            nn.Conv2d(o, num_anchors * self.num_attributes, 1, has_bias=True)
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
            n, _, h, w = pred.shape
            rows += (pred.transpose(0, 2, 3, 1).reshape(n, h * w * self.num_anchors,
                                                        self.num_attributes),)
        return ops.cat(rows, 1)


class YOLOV3Decode(nn.Cell):
    """Raw prediction maps -> (N, num_anchors_total, 5 + num_classes):
    (x1, y1, x2, y2) in input pixels, sigmoid objectness, sigmoid class
    scores; rows ordered as ``grid_anchors``. YOLOBBoxCoder.decode: centre =
    anchor centre + (sigmoid(t_xy) - 0.5) * stride, size = anchor * exp(t_wh).

    The anchors of a fixed input size are constants of the graph (exported
    with it); ``height`` / ``width`` must be the size the network is called at.
    """

    def __init__(self, anchors, strides, num_classes, height, width):
        super().__init__()
        self.flatten = FlattenPredictions(len(anchors[0]), 5 + num_classes)
        table = grid_anchors(anchors, strides, height, width)
        # Constants of the graph, not parameters: checkpoints do not carry them.
        self.centre = Tensor((table[:, :2] + table[:, 2:4]) / 2)
        self.size = Tensor(table[:, 2:4] - table[:, :2])
        self.stride = Tensor(table[:, 4:5])

    def construct(self, maps):
        pred = self.flatten(maps)
        centre = self.centre + (ops.sigmoid(pred[:, :, 0:2]) - 0.5) * self.stride
        half = self.size * ops.exp(pred[:, :, 2:4]) * 0.5
        return ops.cat((centre - half, centre + half, ops.sigmoid(pred[:, :, 4:])), 2)
