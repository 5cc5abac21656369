"""The official PyTorch GhostNet / GhostNetV2 module tree, for making release-like files.

Why a model of our own and not timm's: the official release files
(ck_ghostnetv2_10/13/16.pth.tar) were saved after thop's ``profile``, which
registers float64 ``total_ops`` / ``total_params`` buffers on every module and
removes them again only from the modules it has a counting rule for (Conv2d,
BatchNorm2d, ReLU, Linear, pooling, nn.Sequential, ...). What stays depends on
the module tree: the root, each bottleneck, each ghost module, each SE block,
the last ConvBnAct and every ``gate_fn = nn.Sigmoid()`` (upstream issue #175
quotes "total_ops", "blocks.0.0.total_ops", "blocks.0.0.ghost1.total_ops",
"blocks.0.0.ghost1.gate_fn.total_ops", "blocks.0.0.ghost2.gate_fn.total_ops",
...). timm's model has the same parameter names but another set of
parameter-free modules (no gate_fn in its plain ghost modules, nn.Identity
activations, a Hardsigmoid module, SelectAdaptivePool2d, nn.Flatten), so thop
over timm leaves other keys (for example ``blocks.0.0.ghost2.primary_conv.2``
and ``global_pool``) and misses the ``gate_fn`` ones.

This module rebuilds the official tree (module names and module types, the
GhostNet paper's configuration), loads a timm model's state_dict into it
(strict: the parameter names are the same) and computes the same logits
(tests/test_convert.py checks both), so that thop's own ``profile`` leaves
exactly the buffers the published files carry.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

# (kernel, expansion, output channels, SE ratio, stride) per bottleneck, per stage.
STAGES = [
    [(3, 16, 16, 0, 1)], [(3, 48, 24, 0, 2)], [(3, 72, 24, 0, 1)],
    [(5, 72, 40, 0.25, 2)], [(5, 120, 40, 0.25, 1)], [(3, 240, 80, 0, 2)],
    [(3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1), (3, 480, 112, 0.25, 1),
     (3, 672, 112, 0.25, 1)],
    [(5, 672, 160, 0.25, 2)],
    [(5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1)],
]


def divisible(value, divisor=4):
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn(in_chs, out_chs, kernel, stride=1, groups=1, relu=False):
    """Conv (no bias) + BN + ReLU, or + an empty nn.Sequential as the official code has."""
    padding = tuple(k // 2 for k in kernel) if isinstance(kernel, tuple) else kernel // 2
    return [nn.Conv2d(in_chs, out_chs, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True) if relu else nn.Sequential()]


class SqueezeExcite(nn.Module):
    def __init__(self, chs, ratio):
        super().__init__()
        reduced = divisible(chs * ratio)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_reduce = nn.Conv2d(chs, reduced, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, chs, 1, bias=True)

    def forward(self, x):
        scale = self.conv_expand(self.act1(self.conv_reduce(self.avg_pool(x))))
        return x * F.relu6(scale + 3.0) / 6.0  # hard sigmoid, a function (not a module)


class GhostModule(nn.Module):
    """V1's ghost module; ``version=2`` adds the gate_fn module every V2 ghost
    module has and, with ``attention``, the DFC branch (short_conv)."""

    def __init__(self, in_chs, out_chs, relu, version, attention=False):
        super().__init__()
        self.out_chs = out_chs
        self.attention = attention
        if version == 2:
            self.gate_fn = nn.Sigmoid()
        init = math.ceil(out_chs / 2)
        self.primary_conv = nn.Sequential(*conv_bn(in_chs, init, 1, relu=relu))
        self.cheap_operation = nn.Sequential(*conv_bn(init, init, 3, groups=init, relu=relu))
        if attention:
            self.short_conv = nn.Sequential(  # conv + BN, three times (no activation)
                *conv_bn(in_chs, out_chs, 1)[:2],
                *conv_bn(out_chs, out_chs, (1, 5), groups=out_chs)[:2],
                *conv_bn(out_chs, out_chs, (5, 1), groups=out_chs)[:2])

    def forward(self, x):
        primary = self.primary_conv(x)
        out = torch.cat([primary, self.cheap_operation(primary)], dim=1)[:, :self.out_chs]
        if not self.attention:
            return out
        gate = self.gate_fn(self.short_conv(F.avg_pool2d(x, kernel_size=2, stride=2)))
        return out * F.interpolate(gate, size=out.shape[-2:], mode="nearest")


class GhostBottleneck(nn.Module):
    def __init__(self, in_chs, mid_chs, out_chs, kernel, stride, se_ratio, version, layer_id):
        super().__init__()
        self.stride = stride
        self.ghost1 = GhostModule(in_chs, mid_chs, True, version,
                                  attention=version == 2 and layer_id > 1)
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, kernel, stride, (kernel - 1) // 2,
                                     groups=mid_chs, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        self.se = SqueezeExcite(mid_chs, se_ratio) if se_ratio else None
        self.ghost2 = GhostModule(mid_chs, out_chs, False, version)
        if in_chs == out_chs and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                *conv_bn(in_chs, in_chs, kernel, stride, groups=in_chs)[:2],
                *conv_bn(in_chs, out_chs, 1)[:2])

    def forward(self, x):
        out = self.ghost1(x)
        if self.stride > 1:
            out = self.bn_dw(self.conv_dw(out))
        if self.se is not None:
            out = self.se(out)
        return self.ghost2(out) + self.shortcut(x)


class ConvBnAct(nn.Module):
    def __init__(self, in_chs, out_chs):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act1(self.bn1(self.conv(x)))


class OfficialGhostNet(nn.Module):
    def __init__(self, width=1.0, num_classes=1000, version=2):
        super().__init__()
        chs = divisible(16 * width)
        self.conv_stem = nn.Conv2d(3, chs, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(chs)
        self.act1 = nn.ReLU(inplace=True)
        stages, layer_id = [], 0
        for stage in STAGES:
            layers = []
            for kernel, expansion, out, se_ratio, stride in stage:
                out_chs = divisible(out * width)
                layers.append(GhostBottleneck(chs, divisible(expansion * width), out_chs, kernel,
                                              stride, se_ratio, version, layer_id))
                chs, layer_id = out_chs, layer_id + 1
            stages.append(nn.Sequential(*layers))
        head_in = divisible(STAGES[-1][-1][1] * width)
        stages.append(nn.Sequential(ConvBnAct(chs, head_in)))
        self.blocks = nn.Sequential(*stages)
        self.global_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.conv_head = nn.Conv2d(head_in, 1280, 1, 1, 0, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.blocks(self.act1(self.bn1(self.conv_stem(x))))
        x = self.act2(self.conv_head(self.global_pool(x)))
        return self.classifier(x.flatten(1))


def from_timm(model):
    """The official tree holding a timm ghostnetv2_* / ghostnet_100's weights, in eval mode."""
    state_dict = model.state_dict()
    stem = state_dict["conv_stem.weight"].shape[0]
    width = next(w for w in (1.0, 1.3, 1.6) if divisible(16 * w) == stem)
    version = 2 if any(".short_conv." in k for k in state_dict) else 1
    official = OfficialGhostNet(width, state_dict["classifier.weight"].shape[0], version)
    official.load_state_dict(state_dict, strict=True)
    return official.eval()


def profiled_state_dict(model, size=64):
    """What the authors saved: the official tree's state_dict after thop's
    profile (thop's float64 buffers included)."""
    import thop
    official = from_timm(model)
    thop.profile(official, inputs=(torch.zeros(1, 3, size, size),), verbose=False)
    return official.state_dict()
