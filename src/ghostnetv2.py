"""GhostNetV2 (Tang et al., NeurIPS 2022) in MindSpore.

Operation for operation the official PyTorch model (and timm's
``ghostnetv2_*``), with the same parameter names, so that converting a
PyTorch state_dict is a rename of the BatchNorm fields and nothing else:

    PyTorch                                  MindSpore
    blocks.3.0.ghost1.short_conv.1.weight -> blocks.3.0.ghost1.short_conv.1.gamma
    ...bias / running_mean / running_var  -> beta / moving_mean / moving_variance

With ``use_dfc=False`` the network is GhostNet (V1), timm's ``ghostnet_*``.

Two choices differ in form, not in result, from a straight port, because
MindSpore on the CPU executes them much faster:
- the ghost module's ``concat(...)[:, :oup]`` slice is only emitted when the
  concat really has more than ``oup`` channels (never at the paper's widths:
  make_divisible keeps every channel count a multiple of 4);
- the DFC gate's nearest upsample and multiply is one cell (GateMultiply):
  without the CPU kernels two gathers with the legacy ``floor(i * in / out)``
  indices PyTorch uses (``i // 2`` for exactly 2x), bit-identical to
  ``interpolate(mode='nearest')``; in ONNX exports ResizeNearestNeighbor.

Depthwise, 1x1 and stem convolutions, the DFC gate, its 2x2 pooling, the
global means, the SE multiply and BatchNorm are cells of src/cpu_kernels.py:
on the CPU they run custom kernels computing the same (float32 rounding
aside), several times faster than MindSpore's CPU operators; elsewhere, in
exports, or with ``use_cpu_kernels(net, False)``, MindSpore's operators.
After ``fuse_bn`` a ghost module, its DFC branch and an SE block each run as
one kernel (their ``fuse_kernels``).
"""
import math

from mindspore import dtype as mstype
from mindspore import nn, ops

from src.cpu_kernels import (MAX_KERNEL_TAPS, AvgPool2x2, BatchNorm2d, ChannelScale,
                             DenseConv2d, DepthwiseConv2d, DfcGate, GateMultiply,
                             GhostBottleneckKernel, GhostModuleKernel, Linear, PointwiseConv2d,
                             SmallConv2d, SpatialMean, SqueezeExciteKernel)
from src.teardown import quiet_cell_teardown

quiet_cell_teardown()  # no "Exception ignored in: Cell.__del__" flood at exit

__all__ = [
    "GhostNetV2",
    "FeaturePyramid",
    "make_divisible",
    "create_model",
    "list_models",
    "ghostnetv2_100",
    "ghostnetv2_130",
    "ghostnetv2_160",
    "ghostnetv2_1x",
    "ghostnet_100",
]

# One row per bottleneck: kernel, expansion (mid) channels, out channels,
# SE ratio, stride. One inner list per stage, as in the official model: the
# state_dict index is blocks.<stage>.<row>.
STAGES = (
    ((3, 16, 16, 0.0, 1),),
    ((3, 48, 24, 0.0, 2),),
    ((3, 72, 24, 0.0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0.0, 2),),
    ((3, 200, 80, 0.0, 1), (3, 184, 80, 0.0, 1), (3, 184, 80, 0.0, 1),
     (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0.0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0.0, 1),
     (5, 960, 160, 0.25, 1)),
)
# The official model gives the first two bottlenecks no DFC attention.
FIRST_DFC_BLOCK = 2
HEAD_CHANNELS = 1280
DEFAULT_DROPOUT = 0.2  # the paper's classifier dropout
# The feature maps for detection / segmentation necks (mindcv's features_only):
# the stem's output at stride 2, then the last stage at each of the strides 4,
# 8, 16 and 32 (index 9 is the final 1x1 conv stage).
FEATURE_STAGES = (2, 4, 6, 9)
# The classifier's 32, and the dilated backbones of segmentation.
OUTPUT_STRIDES = (8, 16, 32)


def make_divisible(value, divisor=4, min_value=None, round_limit=0.9):
    """Round to the nearest multiple of divisor, never more than 10% down.

    The official rounding (also timm's); rounding up instead, as the
    ModelZoo port does, gives other channel counts at widths 1.3 and 1.6.
    """
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


def conv2d(in_channels, out_channels, kernel_size, stride=1, groups=1, has_bias=False,
           dilation=1):
    """A convolution padded like PyTorch's ``padding=dilation * (k // 2)``.

    Stride 1 uses pad_mode='same' (identical for odd kernels, and the only
    form MindSpore's ONNX exporter gets right for 1x5 / 5x1 kernels); stride 2
    uses explicit symmetric padding, since 'same' would pad bottom/right only.
    Dilated convolutions (segmentation backbones, ``output_stride`` < 32;
    always stride 1) pad explicitly too.
    Depthwise convolutions are DepthwiseConv2d, 1x1 convolutions
    PointwiseConv2d, dense ones with few taps (the stem) SmallConv2d and
    other dense ones (the detection and segmentation heads) DenseConv2d:
    nn.Conv2d (same parameters) that run the fast CPU kernels of
    src/cpu_kernels.py where they can.
    """
    if dilation > 1:
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        pad_mode = "pad"
        padding = (dilation * (kh // 2),) * 2 + (dilation * (kw // 2),) * 2
    elif stride == 1:
        pad_mode, padding = "same", 0
    else:
        pad_mode, padding = "pad", kernel_size // 2
    if kernel_size == 1 and stride == 1 and groups == 1:  # no padding: any dilation
        return PointwiseConv2d(in_channels, out_channels, has_bias=has_bias)
    if groups == in_channels == out_channels and groups > 1:
        return DepthwiseConv2d(in_channels, kernel_size, stride, pad_mode=pad_mode,
                               padding=padding, has_bias=has_bias, dilation=dilation)
    taps = in_channels * (kernel_size ** 2 if isinstance(kernel_size, int) else math.prod(kernel_size))
    if groups == 1 and dilation == 1 and taps <= MAX_KERNEL_TAPS:
        return SmallConv2d(in_channels, out_channels, kernel_size, stride, pad_mode=pad_mode,
                           padding=padding, has_bias=has_bias)
    if groups == 1:
        return DenseConv2d(in_channels, out_channels, kernel_size, stride, pad_mode=pad_mode,
                           padding=padding, dilation=dilation, has_bias=has_bias)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad_mode=pad_mode,
                     padding=padding, dilation=dilation, group=groups, has_bias=has_bias)


def conv_bn(in_channels, out_channels, kernel_size, stride=1, groups=1, relu=False, dilation=1):
    """conv -> BN (-> ReLU) as a SequentialCell indexed like PyTorch's (0: conv,
    1: BN). The ReLU is part of the BatchNorm cell (one pass with the CPU
    kernels, training and evaluation alike); it has no parameters, so the
    parameter names are PyTorch's."""
    return nn.SequentialCell([conv2d(in_channels, out_channels, kernel_size, stride, groups,
                                     dilation=dilation),
                              BatchNorm2d(out_channels, relu=relu)])


def dfc_attention(in_channels, out_channels, kernel_size=5):
    """Decoupled fully-connected attention: the long-range gate of GhostNetV2.

    Applied to a 2x down-sampled input: 1x1 conv, then a horizontal (1xK) and
    a vertical (Kx1) depthwise conv, each followed by BN, no activation. The
    "fully-connected" layers are these depthwise convs (cheap to deploy).
    """
    return nn.SequentialCell([
        conv2d(in_channels, out_channels, 1), BatchNorm2d(out_channels),
        conv2d(out_channels, out_channels, (1, kernel_size), groups=out_channels),
        BatchNorm2d(out_channels),
        conv2d(out_channels, out_channels, (kernel_size, 1), groups=out_channels),
        BatchNorm2d(out_channels),
    ])


class GhostModule(nn.Cell):
    """Half the output from a 1x1 conv, the other half from a cheap 3x3
    depthwise conv on it; optionally gated by DFC attention (GhostNetV2).
    Called with a residual, adds it to the output (the bottleneck's shortcut).

    ``dilation`` d > 1 (a dilated segmentation backbone, see GhostNetV2's
    ``output_stride``): the input map is d times denser than the classifier's
    map at this block. The cheap 3x3 conv is dilated by d, and the DFC gate
    average-pools 2d x 2d cells instead of 2x2, so that its 1x5 / 5x1 convs
    run, undilated, on a map of the classifier's resolution and see the image
    area they were trained on; the gate is then upsampled (nearest) by 2d.
    """

    def __init__(self, in_channels, out_channels, relu=True, dfc_kernel_size=0,
                 takes_residual=False, dilation=1):
        super().__init__()
        self.dilation = dilation
        self.out_channels = out_channels
        self.relu = relu
        self.takes_residual = takes_residual
        self.fused = None  # set by fuse_kernels() once BatchNorm is folded
        self.dfc_gate = None  # the same
        init_channels = math.ceil(out_channels / 2)
        self.primary_conv = conv_bn(in_channels, init_channels, 1, relu=relu)
        self.cheap_operation = conv_bn(init_channels, init_channels, 3, groups=init_channels,
                                       relu=relu, dilation=dilation)
        self.needs_slice = 2 * init_channels != out_channels
        self.use_dfc = dfc_kernel_size > 0
        if self.use_dfc:
            self.short_conv = dfc_attention(in_channels, out_channels, dfc_kernel_size)
            # The classifier's 2x2 pool on the CPU kernel; a dilated backbone's
            # 2d x 2d pool (d times denser map, same image area) on MindSpore's.
            self.pool = AvgPool2x2() if dilation == 1 else nn.AvgPool2d(2 * dilation, 2 * dilation)
            self.gate_multiply = GateMultiply()

    def fuse_kernels(self):
        """After fuse_bn: compute the module (primary and cheap convs, biases,
        ReLU, concat, DFC gate, residual) in one CPU kernel
        (cpu_kernels.GhostModuleKernel), and the DFC gate's logits in another
        (cpu_kernels.DfcGate). Same parameters."""
        primary, cheap = self.primary_conv[0], self.cheap_operation[0]
        if self.needs_slice or self.dilation > 1 or not (primary.has_bias and cheap.has_bias):
            return
        if self.takes_residual and (self.relu or self.use_dfc):
            return
        self.fused = GhostModuleKernel(cheap.in_channels, cheap.kernel_size, self.relu,
                                       self.use_dfc, residual=self.takes_residual)
        if self.use_dfc:
            convs = (self.short_conv[0], self.short_conv[2], self.short_conv[4])
            if all(conv.has_bias and conv.use_kernel for conv in convs) and self.pool.use_kernel:
                self.dfc_gate = DfcGate()

    def gate_logits(self, x):
        """The DFC branch: pool, 1x1 conv, 1xK and Kx1 depthwise convs."""
        if self.dfc_gate is not None and self.dfc_gate.use_kernel and x.dtype == mstype.float32:
            project, horizontal, vertical = self.short_conv[0], self.short_conv[2], self.short_conv[4]
            return self.dfc_gate(x, project.weight, project.bias, horizontal.weight,
                                 horizontal.bias, vertical.weight, vertical.bias)
        return self.short_conv(self.pool(x))

    def construct(self, x, residual=None):
        if self.fused is not None and self.fused.use_kernel:
            primary, cheap = self.primary_conv[0], self.cheap_operation[0]
            extra = self.gate_logits(x) if self.use_dfc else residual
            return self.fused(x, primary.weight, primary.bias, cheap.weight, cheap.bias, extra)
        x1 = self.primary_conv(x)
        out = ops.cat((x1, self.cheap_operation(x1)), 1)
        if self.needs_slice:
            out = out[:, :self.out_channels]
        if self.use_dfc:
            gate = ops.sigmoid(self.gate_logits(x))
            out = self.gate_multiply(out, gate)
        if residual is not None:
            out = out + residual
        return out


class SqueezeExcite(nn.Cell):
    """SE with a hard-sigmoid gate, reduced width rounded to a multiple of 4."""

    def __init__(self, channels, ratio=0.25):
        super().__init__()
        reduced = make_divisible(channels * ratio, 4)
        self.conv_reduce = PointwiseConv2d(channels, reduced, has_bias=True, activation="relu")
        # Hard sigmoid relu6(x + 3) / 6 (in the kernel; written out without it:
        # MindSpore 2.7.2's ONNX exporter cannot export nn.HSigmoid).
        self.conv_expand = PointwiseConv2d(reduced, channels, has_bias=True,
                                           activation="hard_sigmoid")
        self.spatial_mean = SpatialMean()
        self.channel_scale = ChannelScale()
        self.fused = None  # set by fuse_kernels()

    def fuse_kernels(self):
        """After fuse_bn (inference): the whole block in one CPU kernel
        (cpu_kernels.SqueezeExciteKernel)."""
        if self.conv_reduce.use_kernel and self.conv_expand.use_kernel:
            self.fused = SqueezeExciteKernel()

    def construct(self, x):
        if (self.fused is not None and self.fused.use_kernel and not self.training
                and x.dtype == mstype.float32):
            return self.fused(x, self.conv_reduce.weight, self.conv_reduce.bias,
                              self.conv_expand.weight, self.conv_expand.bias)
        scale = self.spatial_mean(x)
        return self.channel_scale(x, self.conv_expand(self.conv_reduce(scale)))


class GhostBottleneck(nn.Cell):
    """ghost1 (ReLU, DFC) -> [depthwise stride-2 conv + BN] -> [SE] -> ghost2
    (linear) -> + shortcut.

    ``dilation`` = (d_in, d_out): the dilation of the spatial convs before the
    block's stride (ghost1, the strided depthwise conv, the shortcut's) and
    after it (ghost2). A stride-2 block of a dilated backbone has stride 1 and
    d_out = 2 d_in: its strided convs keep their parameters, run at stride 1
    (dilated by d_in), and every later conv is dilated by d_out, so each conv
    samples the image at the spacing it was trained at (the "a trous" rule).
    """

    def __init__(self, in_channels, mid_channels, out_channels, kernel_size=3, stride=1,
                 se_ratio=0.0, dfc_kernel_size=0, drop_path=0.0, dilation=(1, 1)):
        super().__init__()
        dilation_in, dilation_out = dilation
        self.ghost1 = GhostModule(in_channels, mid_channels, relu=True,
                                  dfc_kernel_size=dfc_kernel_size, dilation=dilation_in)
        strided = stride > 1 or dilation_out > dilation_in  # a stride, or its dilated stand-in
        self.has_dw = strided
        if self.has_dw:
            self.conv_dw = conv2d(mid_channels, mid_channels, kernel_size, stride,
                                  groups=mid_channels, dilation=dilation_in)
            self.bn_dw = BatchNorm2d(mid_channels)
        self.has_se = se_ratio > 0
        if self.has_se:
            self.se = SqueezeExcite(mid_channels, se_ratio)
        # Stochastic depth drops the residual branch (ghost2's output) before
        # the shortcut is added, so ghost2 cannot add it itself (nor its fused
        # kernel); without it the shortcut goes into ghost2 as before.
        self.drop_path = _drop_path_cell(drop_path) if drop_path > 0 else None
        self.ghost2 = GhostModule(mid_channels, out_channels, relu=False,
                                  takes_residual=self.drop_path is None, dilation=dilation_out)
        self.fused = None  # set by fuse_kernels()
        self.identity_shortcut = in_channels == out_channels and not strided
        if not self.identity_shortcut:
            self.shortcut = nn.SequentialCell([
                conv2d(in_channels, in_channels, kernel_size, stride, groups=in_channels,
                       dilation=dilation_in),
                BatchNorm2d(in_channels),
                conv2d(in_channels, out_channels, 1),
                BatchNorm2d(out_channels),
            ])

    def fuse_kernels(self):
        """After fuse_bn and the parts' own fuse_kernels (fuse_bn runs those
        first): the whole block in one CPU kernel (cpu_kernels.GhostBottleneckKernel)
        where every part runs on its own kernel. Same parameters."""
        parts = [self.ghost1.fused, self.ghost2.fused] + list(self._convs())
        if self.ghost1.use_dfc:
            parts.append(self.ghost1.dfc_gate)
        if self.has_se:
            parts.append(self.se.fused)
        if self.drop_path is not None or any(part is None or not part.use_kernel for part in parts):
            return
        # The kernel runs these convs with a bias and nothing after it.
        if not all(conv.has_bias and not getattr(conv, "relu", False)
                   and getattr(conv, "activation", None) is None for conv in self._convs()):
            return
        self.fused = GhostBottleneckKernel(self.ghost1.use_dfc, self.has_dw, self.has_se,
                                           not self.identity_shortcut)

    def _convs(self):
        """The block's convs outside its ghost and SE modules."""
        convs = (self.conv_dw,) if self.has_dw else ()
        if not self.identity_shortcut:
            convs += (self.shortcut[0], self.shortcut[2])
        return convs

    def _fused_weights(self):
        """The parameters GhostBottleneckKernel takes, in its order."""
        def weight_and_bias(*convs):
            return sum(((conv.weight, conv.bias) for conv in convs), ())
        ghost1, ghost2 = self.ghost1, self.ghost2
        weights = ()
        if ghost1.use_dfc:
            weights += weight_and_bias(ghost1.short_conv[0], ghost1.short_conv[2],
                                       ghost1.short_conv[4])
        weights += weight_and_bias(ghost1.primary_conv[0], ghost1.cheap_operation[0])
        if self.has_dw:
            weights += weight_and_bias(self.conv_dw)
        if self.has_se:
            weights += weight_and_bias(self.se.conv_reduce, self.se.conv_expand)
        if not self.identity_shortcut:
            weights += weight_and_bias(self.shortcut[0], self.shortcut[2])
        return weights + weight_and_bias(ghost2.primary_conv[0], ghost2.cheap_operation[0])

    def construct(self, x):
        if (self.fused is not None and self.fused.use_kernel and not self.training
                and x.dtype == mstype.float32):
            return self.fused(x, *self._fused_weights())
        out = self.ghost1(x)
        if self.has_dw:
            out = self.bn_dw(self.conv_dw(out))
        if self.has_se:
            out = self.se(out)
        shortcut = x if self.identity_shortcut else self.shortcut(x)
        if self.drop_path is None:
            return self.ghost2(out, shortcut)
        return self.drop_path(self.ghost2(out)) + shortcut


def _drop_path_cell(rate):
    """mindcv's DropPath: per sample, the whole branch zeroed with probability
    ``rate`` in training and the kept ones scaled by 1 / (1 - rate); identity
    in evaluation."""
    try:
        from mindcv.models.layers import DropPath
    except ImportError:
        raise ImportError("drop_path_rate > 0 uses mindcv's DropPath: pip install mindcv==0.3.0 "
                          "(requirements.txt)") from None
    return DropPath(rate)


class ConvBnAct(nn.Cell):
    """The final 1x1 conv stage (official names: conv, bn1)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = conv2d(in_channels, out_channels, 1)
        self.bn1 = BatchNorm2d(out_channels, relu=True)  # BN + ReLU

    def construct(self, x):
        return self.bn1(self.conv(x))


class GhostNetV2(nn.Cell):
    """GhostNetV2 image classifier.

    Args:
        width: channel multiplier (1.0, 1.3, 1.6 in the paper; any > 0 works).
        num_classes: classifier outputs; 0 drops the classifier (returns the
            1280-d pre-logits).
        dropout: dropout rate before the classifier (0.2 in the paper; the
            official model's name for it).
        in_channels: input image channels.
        use_dfc: DFC attention on (GhostNetV2) or off (GhostNet V1).
        dfc_kernel_size: K of the 1xK / Kx1 DFC convolutions (5 in the paper).
        drop_rate: mindcv's and timm's name for ``dropout`` (pass either).
        drop_path_rate: stochastic depth on the bottlenecks' residual branch,
            rising linearly with the block index i of the 16 bottlenecks:
            ``drop_path_rate * i / 16`` (timm's EfficientNet / MobileNetV3
            rule; the first bottleneck never drops). 0 (default) = off.
        output_stride: 32 (default, the classifier), 16 or 8: a dilated
            backbone for segmentation (DeepLab's, mmsegmentation's
            MobileNetV2-D8): each stride-2 stage that would bring the map
            below 1/output_stride runs at stride 1 and dilates its later convs
            instead (8: the stages at strides 16 and 32 dilated by 2 and 4).
            The parameters (names and shapes) are the classifier's, so its
            weights load unchanged; see GhostBottleneck / GhostModule for the
            per-conv rule and the DFC gate.

    For detection and segmentation necks, mindcv's convention: ``feature_info``
    lists the feature maps (``chs``, ``reduction``, ``name``) at strides 2, 4,
    8, 16, 32 (the stem, then the last layer at each resolution);
    ``forward_pyramid`` returns them, FeaturePyramid wraps the network so that
    calling it does (what ``features_only=True`` builds).
    """

    # mindcv's FeatureExtractWrapper: look into the SequentialCell 'blocks'
    # for the feature_info names ('blocks.2', ...).
    flatten_sequential = True

    def __init__(self, width=1.0, num_classes=1000, dropout=None, in_channels=3, use_dfc=True,
                 dfc_kernel_size=5, drop_rate=None, drop_path_rate=0.0, output_stride=32):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
        if use_dfc and (dfc_kernel_size < 1 or dfc_kernel_size % 2 == 0):
            raise ValueError(f"dfc_kernel_size must be a positive odd number, got {dfc_kernel_size}")
        dropout = _classifier_dropout(dropout, drop_rate)
        _check_rate("drop_path_rate", drop_path_rate)
        self.width = width
        self.num_classes = num_classes
        self.use_dfc = use_dfc
        self.output_stride = output_stride
        # With DFC, the stride-32 map must still be 2x2 for the 2x2 pool; the
        # documented minimum is 64 (the official model's smallest tested size).
        self.min_input_size = 64 if use_dfc else 32

        stem_channels = make_divisible(16 * width)
        self.conv_stem = conv2d(in_channels, stem_channels, 3, stride=2)
        self.bn1 = BatchNorm2d(stem_channels, relu=True)  # BN + ReLU
        reduction = 2
        self.feature_info = [dict(chs=stem_channels, reduction=reduction, name="bn1")]

        num_blocks = sum(len(stage) for stage in STAGES)
        stages, channels, block_index, dilation = [], stem_channels, 0, 1
        for stage in STAGES:
            layers = []
            for kernel, mid, out, se_ratio, stride in stage:
                dfc = dfc_kernel_size if use_dfc and block_index >= FIRST_DFC_BLOCK else 0
                out_channels = make_divisible(out * width)
                next_dilation = dilation
                if reduction * stride > output_stride:  # dilate instead of striding
                    stride, next_dilation = 1, dilation * stride
                layers.append(GhostBottleneck(channels, make_divisible(mid * width), out_channels,
                                              kernel, stride, se_ratio, dfc,
                                              drop_path_rate * block_index / num_blocks,
                                              dilation=(dilation, next_dilation)))
                channels, dilation = out_channels, next_dilation
                reduction *= stride
                block_index += 1
            self._add_feature_info(len(stages), channels, reduction)
            stages.append(nn.SequentialCell(layers))
        self.num_features = make_divisible(STAGES[-1][-1][1] * width)
        self._add_feature_info(len(stages), self.num_features, reduction)
        stages.append(nn.SequentialCell([ConvBnAct(channels, self.num_features)]))
        self.blocks = nn.SequentialCell(stages)

        self.global_pool = SpatialMean()
        self.conv_head = PointwiseConv2d(self.num_features, HEAD_CHANNELS, has_bias=True,
                                         activation="relu")
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else None
        self.classifier = Linear(HEAD_CHANNELS, num_classes) if num_classes > 0 else None

    def _add_feature_info(self, stage_index, channels, reduction):
        if stage_index in FEATURE_STAGES:
            self.feature_info.append(dict(chs=channels, reduction=reduction,
                                          name=f"blocks.{stage_index}"))

    def check_input(self, x):
        height, width = x.shape[2], x.shape[3]
        if height < self.min_input_size or width < self.min_input_size:
            raise ValueError(f"GhostNetV2 needs inputs of at least {self.min_input_size}x"
                             f"{self.min_input_size} (the 2x2 DFC pool needs a 2x2 map at "
                             f"stride 32); got {height}x{width}. Resize the images up.")

    def stem(self, x):
        self.check_input(x)
        return self.bn1(self.conv_stem(x))

    def forward_features(self, x):
        """The stride-32 feature map before global pooling (num_features channels)."""
        return self.blocks(self.stem(x))

    def forward_pyramid(self, x, out_indices=(0, 1, 2, 3, 4)):
        """The feature maps of feature_info at ``out_indices`` (0: stride 2,
        1: stride 4, ..., 4: stride 32), as a tuple in that order."""
        x = self.stem(x)
        features = (x,) if 0 in out_indices else ()
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in FEATURE_STAGES and FEATURE_STAGES.index(i) + 1 in out_indices:
                features += (x,)
        return features

    def forward_head(self, x):
        x = self.global_pool(x)
        x = self.conv_head(x)
        x = ops.flatten(x)
        if self.dropout is not None:
            x = self.dropout(x)
        if self.classifier is not None:
            x = self.classifier(x)
        return x

    def construct(self, x):
        return self.forward_head(self.forward_features(x))


def _check_rate(name, rate):
    if not 0 <= rate < 1:
        raise ValueError(f"{name} must be in [0, 1), got {rate}")


def _classifier_dropout(dropout, drop_rate):
    """The classifier dropout, named as the official model does (dropout) or as
    mindcv and timm do (drop_rate); 0.2 (the paper's) when neither is given."""
    if dropout is not None and drop_rate is not None and dropout != drop_rate:
        raise ValueError(f"dropout={dropout} and drop_rate={drop_rate} both set the classifier "
                         "dropout; pass only one of them")
    rate = next((r for r in (dropout, drop_rate) if r is not None), DEFAULT_DROPOUT)
    _check_rate("drop_rate (dropout)", rate)
    return rate


class FeaturePyramid(nn.Cell):
    """A GhostNetV2 whose call returns feature maps (what ``features_only=True``
    builds): those of ``net.feature_info`` at ``out_indices`` (default all
    five, strides 2 to 32, as mindcv's), as a tuple.

    ``out_channels`` (mindcv's name) and ``feature_info`` describe the returned
    maps. The parameters keep the network's names (no prefix), so checkpoints
    of the classifier load into it, and fuse_bn works on it.
    """

    def __init__(self, net, out_indices=(0, 1, 2, 3, 4)):
        super().__init__(auto_prefix=False)
        out_indices = tuple(out_indices)
        known = range(len(net.feature_info))
        if not out_indices or any(i not in known for i in out_indices) \
                or list(out_indices) != sorted(set(out_indices)):
            raise ValueError(f"out_indices must be increasing indices of feature_info (0-"
                             f"{len(known) - 1}: strides "
                             f"{', '.join(str(f['reduction']) for f in net.feature_info)}), "
                             f"got {list(out_indices)}")
        self.net = net
        self.out_indices = out_indices
        self.feature_info = [net.feature_info[i] for i in out_indices]

    @property
    def out_channels(self):
        return [info["chs"] for info in self.feature_info]

    def construct(self, x):
        return self.net.forward_pyramid(x, self.out_indices)


# ---------------------------------------------------------------- factories

def _build(name, pretrained, features_only=False, out_indices=(0, 1, 2, 3, 4), **kwargs):
    """The factories' common path: the network, its weights, and (mindcv's
    ``features_only=True``) the FeaturePyramid returning the maps at
    ``out_indices`` instead of logits. Weights load before the wrapping."""
    net = GhostNetV2(**kwargs)
    if pretrained:  # weights the user already has (src/pretrained.py); nothing is downloaded
        from src.pretrained import load_pretrained  # src.pretrained imports this module
        load_pretrained(net, name)
    return FeaturePyramid(net, out_indices) if features_only else net


def ghostnetv2_100(pretrained=False, **kwargs):
    """GhostNetV2 1.0x: 6.16M parameters, 167M MACs, 75.3% ImageNet top-1 (paper)."""
    return _build("ghostnetv2_100", pretrained, width=1.0, **kwargs)


def ghostnetv2_130(pretrained=False, **kwargs):
    """GhostNetV2 1.3x: 8.96M parameters, 269M MACs, 76.9% ImageNet top-1 (paper)."""
    return _build("ghostnetv2_130", pretrained, width=1.3, **kwargs)


def ghostnetv2_160(pretrained=False, **kwargs):
    """GhostNetV2 1.6x: 12.39M parameters, 399M MACs, 77.8% ImageNet top-1 (paper)."""
    return _build("ghostnetv2_160", pretrained, width=1.6, **kwargs)


def ghostnetv2_1x(pretrained=False, **kwargs):
    """The ModelZoo name of GhostNetV2 1.0x."""
    return _build("ghostnetv2_1x", pretrained, width=1.0, **kwargs)


def ghostnet_100(pretrained=False, **kwargs):
    """GhostNet (V1) 1.0x: GhostNetV2 without DFC attention (timm's ghostnet_100)."""
    kwargs.setdefault("use_dfc", False)
    return _build("ghostnet_100", pretrained, width=1.0, **kwargs)


_MODELS = {fn.__name__: fn for fn in
           (ghostnetv2_100, ghostnetv2_130, ghostnetv2_160, ghostnetv2_1x, ghostnet_100)}
# Width of each named model, for inferring the model from a checkpoint.
MODEL_WIDTHS = {"ghostnetv2_100": 1.0, "ghostnetv2_130": 1.3, "ghostnetv2_160": 1.6,
                "ghostnetv2_1x": 1.0, "ghostnet_100": 1.0}


def list_models():
    return sorted(_MODELS)


def create_model(name, **kwargs):
    """Build a model by name, e.g. create_model('ghostnetv2_130', num_classes=10)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    return _MODELS[name](**kwargs)


def _register_with_mindcv():
    """Make mindcv.create_model('ghostnetv2_100') build this port.

    mindcv ships its own GhostNet V1 ('ghostnet_100'); that name is left to it.
    """
    try:
        from mindcv.models.registry import register_model, is_model
    except ImportError:  # mindcv is optional for the model itself
        return
    for name in ("ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160", "ghostnetv2_1x"):
        if not is_model(name):
            register_model(_MODELS[name])


_register_with_mindcv()
