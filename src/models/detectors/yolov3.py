"""GhostNetV2-YOLOv3: the features_only GhostNetV2 at strides 8/16/32
(``create_model(name, features_only=True, out_indices=[2, 3, 4])``), the
YOLOv3 neck and head of mmdetection's MobileNetV2 recipe (96 channels).

The stride-32 map is ``blocks.9`` (960 channels at 1.0x: the final 1x1
conv, what the port's feature_info names for stride 32) rather than
``blocks.8`` (160, the last bottleneck): it is the map the ImageNet weights
were trained to produce for the classifier, and the extra cost is one 1x1
conv on a 10x10 map at 320 (+15M MACs, about 7%) plus 960x96 weights in the
neck's first conv. (mmdetection's MobileNetV2 takes its last bottleneck,
320 channels, not its 1280 conv; timm's ghostnet feature_info names
blocks.3 / 5 / 7, the first block at each stride; the paper says nothing.)

Parameter names: ``backbone.<GhostNetV2 name>`` (a classification
checkpoint's names behind one prefix), ``neck.*``, ``bbox_head.*``
(mmdetection's).
"""
from mindspore import nn

from src.ghostnetv2 import create_model
from src.models.heads.yolov3_head import (ANCHORS_320, ANCHORS_416, STRIDES, YOLOV3Decode,
                                          YOLOV3Head)
from src.models.necks.yolov3_neck import YOLOV3Neck

# Feature indices of the features_only backbone at strides 8, 16, 32.
OUT_INDICES = (2, 3, 4)
NECK_CHANNELS = (96, 96, 96)
BACKBONE_PREFIX = "backbone."


class YOLOV3(nn.Cell):
    """backbone -> neck -> head; returns the raw prediction maps (strides 32,
    16, 8), each (N, 3 * (5 + num_classes), H / stride, W / stride)."""

    def __init__(self, backbone, num_classes, neck_channels=NECK_CHANNELS, num_anchors=3):
        super().__init__()
        self.backbone = backbone
        in_channels = list(reversed(backbone.out_channels))
        self.neck = YOLOV3Neck(in_channels, list(neck_channels))
        self.bbox_head = YOLOV3Head(num_classes, list(neck_channels), list(neck_channels),
                                    num_anchors)
        self.num_classes = num_classes
        # The FeaturePyramid keeps the classifier's names (no prefix of its
        # own), but a parent prefixes the whole path: backbone.net.<name>.
        # One prefix is what classification checkpoints need to map onto.
        for param in backbone.get_parameters():
            param.name = BACKBONE_PREFIX + param.name.split("backbone.net.", 1)[-1]

    def construct(self, x):
        return self.bbox_head(self.neck(self.backbone(x)))


class YOLOV3Predictor(nn.Cell):
    """The detector with the box decoding: what evaluation and export run.
    Returns (N, anchors, 5 + num_classes): x1, y1, x2, y2 (input pixels),
    objectness, class scores (both after the sigmoid)."""

    def __init__(self, detector, anchors, height, width, strides=STRIDES):
        super().__init__(auto_prefix=False)  # the detector's parameter names unchanged
        self.detector = detector
        self.decode = YOLOV3Decode(anchors, strides, detector.num_classes, height, width)

    def construct(self, x):
        return self.decode(self.detector(x))


def yolov3_ghostnetv2(model="ghostnetv2_100", num_classes=80, neck_channels=NECK_CHANNELS,
                      **backbone_kwargs):
    """A GhostNetV2-YOLOv3 of any GhostNetV2 model name and class count
    (backbone_kwargs go to src.ghostnetv2's factory). Backbone weights are
    loaded by the caller (src/tasks/detection.py)."""
    backbone = create_model(model, features_only=True, out_indices=OUT_INDICES,
                            num_classes=0, **backbone_kwargs)
    # The ImageNet head's 1x1 conv (960 -> 1280) feeds only the pooled
    # classifier: unused here, so not trained, saved or loaded.
    backbone.net.conv_head = None
    return YOLOV3(backbone, num_classes, neck_channels)


def default_anchors(image_size):
    """mmdetection's anchors for the input size: the 320 set below 416, else
    the 416 set (COCO's k-means anchors, for 416 and above)."""
    return ANCHORS_320 if image_size < 416 else ANCHORS_416
