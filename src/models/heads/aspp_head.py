"""DeepLabV3's ASPP head (Chen et al. 2017, "Rethinking Atrous Convolution"),
laid out as mmsegmentation's ``ASPPHead``: an image-pooling branch and one
branch per dilation (1: a 1x1 conv; others: 3x3 convs of that dilation), each
conv + BN + ReLU to ``channels``; their concatenation through a 3x3 conv +
BN + ReLU; dropout; a 1x1 conv to the class logits.
"""
from mindspore import nn, ops

from src.cpu_kernels import SpatialMean
from src.ghostnetv2 import conv2d, conv_bn

DEFAULT_DILATIONS = (1, 12, 24, 36)


class ASPPHead(nn.Cell):
    """Logits at the input feature map's resolution.

    Args:
        in_channels: channels of the backbone map it reads.
        num_classes: logits per pixel.
        channels: width of every branch and of the fused map (512 in the
            mmsegmentation DeepLabV3 recipes).
        dilations: one branch each; 1 is a 1x1 conv.
        dropout: before the classifying 1x1 conv (0.1, mmsegmentation's).
    """

    def __init__(self, in_channels, num_classes, channels=512, dilations=DEFAULT_DILATIONS,
                 dropout=0.1):
        super().__init__()
        if not dilations or any(d < 1 for d in dilations):
            raise ValueError(f"ASPP dilations must be >= 1, got {list(dilations)}")
        self.image_pool = SpatialMean()
        self.image_pool_conv = conv_bn(in_channels, channels, 1, relu=True)
        self.aspp_branches = nn.CellList([
            conv_bn(in_channels, channels, 1, relu=True) if d == 1
            else conv_bn(in_channels, channels, 3, relu=True, dilation=d)
            for d in dilations])
        self.bottleneck = conv_bn((len(dilations) + 1) * channels, channels, 3, relu=True)
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        self.conv_seg = conv2d(channels, num_classes, 1, has_bias=True)

    def construct(self, x):
        pooled = self.image_pool_conv(self.image_pool(x))
        # A bilinear resize of a 1x1 map is this broadcast.
        branches = (ops.broadcast_to(pooled, (-1, -1, x.shape[2], x.shape[3])),)
        for branch in self.aspp_branches:
            branches += (branch(x),)
        out = self.bottleneck(ops.cat(branches, 1))
        if self.dropout is not None:
            out = self.dropout(out)
        return self.conv_seg(out)
