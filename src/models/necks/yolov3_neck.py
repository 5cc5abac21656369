"""YOLOv3's neck (mmdetection's ``YOLOV3Neck``): from the coarsest map down,
a five-convolution detection block, then a 1x1 conv + 2x nearest upsample
whose output is concatenated with the next finer backbone map."""
from mindspore import nn

from src.cpu_kernels import LEAKY_SLOPE, ActivatedConv, BatchNorm2d, UpsampleConcat
from src.ghostnetv2 import conv2d


class ConvBnLeaky(nn.Cell):
    """mmcv's ConvModule as YOLOv3 uses it: conv (no bias, padding k // 2),
    BatchNorm (eps 1e-5, PyTorch momentum 0.1), LeakyReLU 0.1. Parameter names
    are mmdetection's (conv, bn). The conv is a kernel-backed nn.Conv2d
    (PointwiseConv2d, DenseConv2d); once fuse_bn has folded the BatchNorm,
    the LeakyReLU runs inside its kernel too."""

    def __init__(self, in_channels, out_channels, kernel_size):
        super().__init__()
        self.conv = conv2d(in_channels, out_channels, kernel_size)
        self.bn = BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)

    def fuse_kernels(self):
        """After fuse_bn: the LeakyReLU into the (BN-folded) convolution."""
        if isinstance(self.conv, ActivatedConv) and self.conv.has_bias \
                and isinstance(self.act, nn.LeakyReLU):
            self.conv.fuse_activation("leaky_relu")
            self.act = nn.Identity()

    def construct(self, x):
        return self.act(self.bn(self.conv(x)))


class DetectionBlock(nn.Cell):
    """1x1 -> 3x3 (2x channels) -> 1x1 -> 3x3 (2x) -> 1x1, all ConvBnLeaky."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        double = out_channels * 2
        self.conv1 = ConvBnLeaky(in_channels, out_channels, 1)
        self.conv2 = ConvBnLeaky(out_channels, double, 3)
        self.conv3 = ConvBnLeaky(double, out_channels, 1)
        self.conv4 = ConvBnLeaky(out_channels, double, 3)
        self.conv5 = ConvBnLeaky(double, out_channels, 1)

    def construct(self, x):
        return self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))


class YOLOV3Neck(nn.Cell):
    """Args:
        in_channels: backbone channels from the coarsest map (stride 32) to the
            finest (stride 8), e.g. [960, 112, 40] for GhostNetV2 1.0x.
        out_channels: channels of each output, same order ([96, 96, 96] in the
            MobileNetV2 / GhostNetV2 recipe).

    Called with the backbone maps finest first (the FeaturePyramid order),
    returns the fused maps coarsest first (the head's order: strides 32, 16, 8).
    A finer map must be twice the size of the coarser one: inputs whose sides
    are multiples of 32 (the data pipeline pads to them).
    """

    def __init__(self, in_channels, out_channels):
        super().__init__()
        if len(in_channels) != len(out_channels):
            raise ValueError(f"in_channels {in_channels} and out_channels {out_channels} "
                             "must have one entry per level")
        self.num_levels = len(in_channels)
        self.detect1 = DetectionBlock(in_channels[0], out_channels[0])
        laterals, detects = [], []
        for i in range(1, self.num_levels):
            laterals.append(ConvBnLeaky(out_channels[i - 1], out_channels[i], 1))
            detects.append(DetectionBlock(in_channels[i] + out_channels[i], out_channels[i]))
        self.laterals = nn.CellList(laterals)
        self.detects = nn.CellList(detects)
        # Nearest 2x upsample (F.interpolate(scale_factor=2): output pixel i is
        # input pixel i // 2), then the concatenation with the finer map.
        self.upsample_concat = UpsampleConcat()

    def construct(self, features):
        out = self.detect1(features[-1])
        outs = (out,)
        for i in range(self.num_levels - 1):
            out = self.detects[i](self.upsample_concat(self.laterals[i](out), features[-2 - i]))
            outs += (out,)
        return outs
