"""The FCN head (Long et al. 2015) as mmsegmentation's ``FCNHead``: conv +
BN + ReLU layers, dropout, a 1x1 conv to the class logits. DeepLabV3 uses it
as the auxiliary head on the stride-16 stage (training only, loss weight 0.4).
"""
from mindspore import nn

from src.ghostnetv2 import conv2d, conv_bn


class FCNHead(nn.Cell):
    """Logits at the input feature map's resolution.

    Args:
        in_channels: channels of the backbone map it reads.
        num_classes: logits per pixel.
        channels: width of the conv layers (256 in the DeepLabV3 recipes).
        num_convs: conv + BN + ReLU layers (1).
        kernel_size: their kernel (3).
        dropout: before the classifying 1x1 conv (0.1).
    """

    def __init__(self, in_channels, num_classes, channels=256, num_convs=1, kernel_size=3,
                 dropout=0.1):
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"FCNHead needs num_convs >= 1, got {num_convs}")
        self.convs = nn.SequentialCell([
            conv_bn(in_channels if i == 0 else channels, channels, kernel_size, relu=True)
            for i in range(num_convs)])
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        self.conv_seg = conv2d(channels, num_classes, 1, has_bias=True)

    def construct(self, x):
        out = self.convs(x)
        if self.dropout is not None:
            out = self.dropout(out)
        return self.conv_seg(out)
