"""Inference-time BatchNorm folding for GhostNetV2.

    from src.fuse import fuse_bn
    net = fuse_bn(net)        # after the weights are loaded

Every BatchNorm that follows a convolution is folded into it: in eval mode
BN is the per-channel affine map ``y = (x - mean) * gamma / sqrt(var + eps)
+ beta``, so ``bn(conv(x, w))`` equals ``conv(x, w * s) + (beta - mean * s)``
with ``s = gamma / sqrt(var + eps)``. The convolution keeps its parameter
name, stride, padding and pad_mode (so MINDIR and ONNX export stay correct)
and gains a bias; the BatchNorm becomes an ``nn.Identity`` (same indices, so
``blocks.3.0.ghost1.short_conv.2.weight`` keeps its name). A BatchNorm
that applied ReLU (``cpu_kernels.BatchNorm2d(relu=True)``) leaves it to the
convolution's kernel, or to an ``nn.ReLU`` in its place. Then chains of
operators become one CPU kernel each (the cells' ``fuse_kernels``): a ghost
module's work after its primary 1x1 convolution, its DFC branch, an SE block,
then a whole bottleneck.
Logits are those of the unfused network up to float32 rounding.

Folding is for evaluation, export and inference only: a fused network has
no BatchNorm left to train.
"""
import numpy as np
from mindspore import Parameter, Tensor, nn

from src.cpu_kernels import KernelSwitch, forget_compiled_graphs

__all__ = ["fuse_bn", "is_fused", "count_batchnorms"]

# (conv, BN) attribute pairs that are applied one after the other in the
# construct() of a cell: the stem (GhostNetV2), the stride-2 depthwise conv
# (GhostBottleneck), the final 1x1 conv stage (ConvBnAct) and the YOLOv3
# neck's and head's conv + BN + LeakyReLU (ConvBnLeaky). Inside
# SequentialCells (the DeepLabV3 heads' conv_bn) every Conv2d directly
# followed by a BatchNorm2d is a pair.
ATTRIBUTE_PAIRS = (("conv_stem", "bn1"), ("conv_dw", "bn_dw"), ("conv", "bn1"), ("conv", "bn"))


def count_batchnorms(net):
    """Number of BatchNorm2d layers left in ``net``."""
    return sum(isinstance(cell, nn.BatchNorm2d) for _, cell in net.cells_and_names())


def is_fused(net):
    return getattr(net, "bn_fused", False)


def fuse_bn(net):
    """Fold every conv -> BatchNorm pair of ``net`` in place; return ``net`` in eval mode.

    Works on a GhostNetV2 (any width, V1 or V2) or any cell containing one
    (e.g. FeaturePyramid, the YOLOv3 detector with its neck and head, the
    DeepLabV3 segmentor with its heads). The call signature and outputs are unchanged.
    Calling it twice is harmless. Raises RuntimeError if some BatchNorm has
    no convolution to fold into (the network would otherwise silently change).
    """
    if is_fused(net):
        return net
    for _, cell in list(net.cells_and_names()):
        if isinstance(cell, nn.SequentialCell):
            _fuse_sequential(cell)
        else:
            _fuse_attribute_pairs(cell)
    left = [name for name, cell in net.cells_and_names() if isinstance(cell, nn.BatchNorm2d)]
    if left:
        raise RuntimeError(f"fuse_bn: {len(left)} BatchNorm layer(s) do not follow a convolution "
                           f"and cannot be folded: {', '.join(left[:5])}")
    # Chains of operators as one kernel each: a ghost module's bias, ReLU,
    # cheap conv, concat and gate; its DFC branch; an SE block; then a whole
    # bottleneck (inner cells first: it fuses where its parts did).
    for _, cell in reversed(list(net.cells_and_names())):
        if hasattr(cell, "fuse_kernels"):
            cell.fuse_kernels()
    # Cells changed in place keep their full hierarchical parameter names;
    # the added biases are named after their convolution ('<conv>.bias').
    for name, param in net.parameters_and_names():
        param.name = name
    net.bn_fused = True
    forget_compiled_graphs(net)
    net.set_train(False)
    return net


def _fuse_sequential(seq):
    cells = list(seq)
    for i in range(len(cells) - 1):
        if isinstance(cells[i], nn.Conv2d) and isinstance(cells[i + 1], nn.BatchNorm2d):
            seq[i + 1] = _fold(cells[i], cells[i + 1])


def _fuse_attribute_pairs(cell):
    for conv_name, bn_name in ATTRIBUTE_PAIRS:
        conv, bn = getattr(cell, conv_name, None), getattr(cell, bn_name, None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(cell, bn_name, _fold(conv, bn))


def _fold(conv, bn):
    """Fold bn into conv; return the cell that takes the BatchNorm's place:
    nn.Identity, or nn.ReLU for a BatchNorm that applied ReLU (cpu_kernels'
    BatchNorm2d(relu=True)) unless the conv can apply it (the depthwise and
    pointwise kernels' cells)."""
    fold_into_conv(conv, bn)
    if not getattr(bn, "relu", False):
        return nn.Identity()
    if hasattr(conv, "fuse_relu"):
        conv.fuse_relu()
        return nn.Identity()
    return nn.ReLU()


def fold_into_conv(conv, bn):
    """Make ``conv`` compute ``bn(conv(x))`` (BN in eval mode); ``bn`` is left unused."""
    if conv.data_format != "NCHW":
        raise ValueError(f"fuse_bn: only NCHW convolutions can be folded, got {conv.data_format}")
    # float64 so that the folded weights are the exact products rounded once.
    weight = conv.weight.asnumpy().astype(np.float64)
    gamma, beta, mean, var = (p.asnumpy().astype(np.float64) for p in
                              (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    if weight.shape[0] != gamma.shape[0]:
        raise ValueError(f"fuse_bn: conv {conv.weight.name} has {weight.shape[0]} output channels "
                         f"but the BatchNorm after it has {gamma.shape[0]}")
    scale = gamma / np.sqrt(var + bn.eps)
    bias = conv.bias.asnumpy().astype(np.float64) if conv.has_bias else 0.0
    dtype = conv.weight.dtype
    conv.weight.set_data(Tensor((weight * scale.reshape(-1, 1, 1, 1)).astype(np.float32), dtype))
    folded_bias = Tensor(((bias - mean) * scale + beta).astype(np.float32), dtype)
    if conv.has_bias:
        conv.bias.set_data(folded_bias)
    else:
        conv.bias = Parameter(folded_bias, name="bias")
        conv.has_bias = True
    if isinstance(conv, KernelSwitch):
        conv.refresh()  # the kernel variant with a bias
