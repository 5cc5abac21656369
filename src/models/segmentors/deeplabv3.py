"""DeepLabV3 on a GhostNetV2 backbone (the paper's ADE20K experiment).

mmsegmentation's ``mobilenet-v2-d8_deeplabv3`` layout with GhostNetV2 in
MobileNetV2's place: the backbone at output stride 8 (``output_stride`` of
src/ghostnetv2.py: the stages at strides 16 and 32 dilated by 2 and 4), an
ASPP head on its last map (blocks.9, 960 channels at width 1.0) and, in
training only, an FCN head on the stride-16 stage's map (blocks.6, 112
channels; mmsegmentation's ``in_index=2`` of MobileNetV2). Output stride 32
(no dilation) is the cheap option for edge devices.

``construct`` returns logits resized (bilinear, half-pixel centres, as
mmsegmentation's ``align_corners=False``) to the input's height and width:
that is the evaluation and export graph. ``forward_train`` returns the main
and auxiliary logits at the feature resolution for the loss, which resizes
them to the labels (src/models/losses/segmentation_loss.py).
"""
from mindspore import nn, ops

from src.cpu_kernels import ResizeBilinear, bilinear_matrix
from src.ghostnetv2 import create_model
from src.models.heads.aspp_head import DEFAULT_DILATIONS, ASPPHead
from src.models.heads.fcn_head import FCNHead

# FeaturePyramid indices (src/ghostnetv2.py FEATURE_STAGES): 3 = the stage at
# stride 16 of the classifier (blocks.6), 4 = the last map (blocks.9).
AUX_FEATURE, MAIN_FEATURE = 3, 4


def resize_bilinear_matmul(x, size):
    """resize_bilinear as two matrix products (rows, then columns): MindSpore
    2.7's ONNX exporter cannot write its bilinear resize (ResizeBilinearV2),
    MatMul it can. Equal up to float32 rounding."""
    rows = bilinear_matrix(x.shape[2], size[0])
    cols = bilinear_matrix(x.shape[3], size[1])
    return ops.matmul(ops.matmul(rows, x), cols.T)


def segmentation_backbone(model, output_stride=8, **kwargs):
    """The GhostNetV2 a segmentor reads: the classifier's network at
    ``output_stride`` without its classification head (conv_head, classifier:
    weights files' entries for them are not loaded, src/pretrained.py
    load_backbone_weights). Its parameter names are the classifier's."""
    net = create_model(model, num_classes=0, output_stride=output_stride, **kwargs)
    del net.conv_head  # the classification head's 1x1 conv (1280): unused by dense heads
    return net


class DeepLabV3(nn.Cell):
    """DeepLabV3 segmentor.

    Args:
        backbone: a GhostNetV2 (``segmentation_backbone``); the segmentor
            reads its pyramid (``forward_pyramid``, what features_only=True
            returns) at AUX_FEATURE and MAIN_FEATURE. Held as the network
            itself, not a FeaturePyramid, so that its parameters are named
            ``backbone.<classifier name>``.
        num_classes: classes scored (ADE20K: 150).
        channels: ASPP width (512).
        dilations: ASPP dilations ((1, 12, 24, 36)).
        aux_channels: auxiliary FCN head width (256); 0 builds no auxiliary head.
        dropout: before each head's classifying conv (0.1).
    """

    def __init__(self, backbone, num_classes, channels=512, dilations=DEFAULT_DILATIONS,
                 aux_channels=256, dropout=0.1):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        aux_in, main_in = (backbone.feature_info[i]["chs"] for i in (AUX_FEATURE, MAIN_FEATURE))
        self.num_classes = num_classes
        self.backbone = backbone
        self.decode_head = ASPPHead(main_in, num_classes, channels, dilations, dropout)
        self.auxiliary_head = (FCNHead(aux_in, num_classes, aux_channels, dropout=dropout)
                               if aux_channels > 0 else None)
        # The final resize as matrix products in an ONNX export, whose
        # exporter lacks the bilinear resize (set by cpu_kernels.portable).
        self.export_form = False
        self.final_resize = ResizeBilinear()

    @property
    def min_input_size(self):
        return self.backbone.min_input_size

    def forward_train(self, x):
        """(main logits, auxiliary logits or None) at the feature resolution."""
        aux_features, features = self.backbone.forward_pyramid(x, (AUX_FEATURE, MAIN_FEATURE))
        main = self.decode_head(features)
        if self.auxiliary_head is None:
            return main, None
        return main, self.auxiliary_head(aux_features)

    def construct(self, x):
        _, features = self.backbone.forward_pyramid(x, (AUX_FEATURE, MAIN_FEATURE))
        logits = self.decode_head(features)
        if self.export_form:
            return resize_bilinear_matmul(logits, x.shape[2:])
        return self.final_resize(logits, x)
