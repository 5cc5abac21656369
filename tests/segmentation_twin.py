"""A PyTorch twin of the port's DeepLabV3-GhostNetV2, written independently
from the MindSpore code: timm's ghostnetv2 backbone dilated in place by the
same rule, and mmsegmentation-style ASPP / FCN heads in torch.

- ``dilate_timm(model, output_stride)``: timm's GhostNet with each stride-2
  bottleneck past output_stride turned to stride 1; convs before the old
  stride dilated by the incoming dilation, those after by twice it; the DFC
  gate pooled over 2d x 2d cells (d: the dilation of its input) and
  upsampled back with nearest.
- ``TwinDeepLabV3(name, num_classes, output_stride, channels, dilations,
  aux_channels)``: forward(x) -> logits at x's size (eval); ``forward_train``
  -> (main, aux) at the feature resolution.
- ``realistic_twin(...)``: a twin initialised like a trained network
  (tests/reference.py's recipe), in eval mode.
- ``segmentation_loss(main, aux, labels)``: the port's SegmentationLoss in torch.
- ``twin_state_for_port(twin)``: the twin's weights in the port's parameter
  names (MindSpore BN field names).
"""
import types

import torch
import torch.nn.functional as F
from torch import nn

from src.weights import torch_to_mindspore

AUX_STAGE, MAIN_STAGE = 6, 9  # timm block indices of the stride-16 stage and the last map


def _set_conv(conv, stride, dilation):
    kh, kw = conv.kernel_size
    conv.stride = (stride, stride)
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation * (kh // 2), dilation * (kw // 2))


def _dfc_forward(self, x):
    """timm's GhostModuleV2.forward with the gate pooled over self.pool cells."""
    res = self.short_conv(F.avg_pool2d(x, kernel_size=self.pool, stride=self.pool))
    x1 = self.primary_conv(x)
    x2 = self.cheap_operation(x1)
    out = torch.cat([x1, x2], dim=1)
    return out[:, :self.out_chs] * F.interpolate(self.gate_fn(res), size=out.shape[-2:],
                                                 mode="nearest")


def dilate_timm(model, output_stride):
    reduction, dilation = 2, 1
    for stage in model.blocks:
        for block in stage:
            if not hasattr(block, "ghost1"):
                continue  # the final 1x1 ConvBnAct
            stride = block.conv_dw.stride[0] if block.conv_dw is not None else 1
            d_in = dilation
            if reduction * stride > output_stride:
                stride, dilation = 1, dilation * stride
            d_out = dilation
            reduction *= stride
            if block.conv_dw is not None:
                _set_conv(block.conv_dw, stride, d_in)
            if len(block.shortcut):
                _set_conv(block.shortcut[0], stride, d_in)
            _set_conv(block.ghost1.cheap_operation[0], 1, d_in)
            _set_conv(block.ghost2.cheap_operation[0], 1, d_out)
            if hasattr(block.ghost1, "short_conv"):
                block.ghost1.pool = 2 * d_in
                block.ghost1.forward = types.MethodType(_dfc_forward, block.ghost1)
    return model


def conv_bn_relu(cin, cout, kernel, dilation=1):
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2),
                                   dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU())


class TwinASPP(nn.Module):
    def __init__(self, cin, num_classes, channels, dilations):
        super().__init__()
        self.image_pool_conv = conv_bn_relu(cin, channels, 1)
        self.aspp_branches = nn.ModuleList(
            [conv_bn_relu(cin, channels, 1 if d == 1 else 3, d) for d in dilations])
        self.bottleneck = conv_bn_relu((len(dilations) + 1) * channels, channels, 3)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        pooled = self.image_pool_conv(F.adaptive_avg_pool2d(x, 1))
        outs = [F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False)]
        outs += [branch(x) for branch in self.aspp_branches]
        return self.conv_seg(self.bottleneck(torch.cat(outs, 1)))


class TwinFCN(nn.Module):
    def __init__(self, cin, num_classes, channels):
        super().__init__()
        self.convs = nn.Sequential(conv_bn_relu(cin, channels, 3))
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        return self.conv_seg(self.convs(x))


class TwinDeepLabV3(nn.Module):
    def __init__(self, name, num_classes, output_stride=8, channels=32, dilations=(1, 2, 3),
                 aux_channels=16):
        super().__init__()
        import timm
        self.backbone = dilate_timm(timm.create_model(name, num_classes=0), output_stride)
        del self.backbone.conv_head, self.backbone.classifier
        blocks = self.backbone.blocks
        self.decode_head = TwinASPP(blocks[MAIN_STAGE][0].conv.out_channels, num_classes,
                                    channels, dilations)
        self.auxiliary_head = TwinFCN(blocks[AUX_STAGE][-1].ghost2.out_chs, num_classes,
                                      aux_channels)

    def features(self, x):
        x = self.backbone.act1(self.backbone.bn1(self.backbone.conv_stem(x)))
        for i, stage in enumerate(self.backbone.blocks):
            x = stage(x)
            if i == AUX_STAGE:
                aux = x
        return aux, x

    def forward_train(self, x):
        aux, main = self.features(x)
        return self.decode_head(main), self.auxiliary_head(aux)

    def forward(self, x):
        _, main = self.features(x)
        return F.interpolate(self.decode_head(main), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


def twin_state_for_port(twin):
    """{port parameter name: numpy array} of the twin's weights."""
    return torch_to_mindspore({k: v.numpy() for k, v in twin.state_dict().items()})


def realistic_twin(name, num_classes, output_stride, seed=0, calibration_size=(96, 128), **head):
    """A twin in eval mode that behaves like a trained network: tests/reference.py's
    init, BatchNorm statistics measured on photographs (at one small size),
    then perturbed. head: TwinDeepLabV3's channels / dilations / aux_channels."""
    from tests.reference import _init_like_trained, _perturb_batchnorm_statistics, photos
    torch.manual_seed(seed)
    twin = TwinDeepLabV3(name, num_classes, output_stride, **head)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        _init_like_trained(twin, generator)
        twin.train()(torch.from_numpy(photos(6, calibration_size)))
        _perturb_batchnorm_statistics(twin, generator)
    return twin.eval()


def segmentation_loss(main_logits, aux_logits, labels, aux_weight=0.4, ignore_index=-100):
    """The port's SegmentationLoss: cross entropy over labelled pixels of the
    logits resized to the labels (bilinear), plus aux_weight x the auxiliary's."""
    def pixel_loss(logits):
        logits = F.interpolate(logits, size=labels.shape[1:], mode="bilinear",
                               align_corners=False)
        return F.cross_entropy(logits, labels.long(), ignore_index=ignore_index)
    return pixel_loss(main_logits) + aux_weight * pixel_loss(aux_logits)
