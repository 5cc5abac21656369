"""The PyTorch twin of GhostNetV2-YOLOv3: timm's GhostNetV2 features (the
maps after blocks.4, blocks.6 and blocks.9, what the port's features_only
backbone returns at out_indices 2, 3, 4) and mmdetection's YOLOV3Neck /
YOLOV3Head written in torch with the port's parameter names, for parity."""
import numpy as np

FEATURE_BLOCKS = (4, 6, 9)


def _torch_modules():
    import torch
    from torch import nn
    import torch.nn.functional as F

    class ConvBnLeaky(nn.Sequential):
        def __init__(self, cin, cout, k):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.act = nn.LeakyReLU(0.1)

    class DetectionBlock(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv1 = ConvBnLeaky(cin, cout, 1)
            self.conv2 = ConvBnLeaky(cout, cout * 2, 3)
            self.conv3 = ConvBnLeaky(cout * 2, cout, 1)
            self.conv4 = ConvBnLeaky(cout, cout * 2, 3)
            self.conv5 = ConvBnLeaky(cout * 2, cout, 1)

        def forward(self, x):
            return self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))

    class Neck(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.detect1 = DetectionBlock(in_channels[0], out_channels[0])
            self.laterals = nn.ModuleList(ConvBnLeaky(out_channels[i - 1], out_channels[i], 1)
                                          for i in range(1, len(in_channels)))
            self.detects = nn.ModuleList(DetectionBlock(in_channels[i] + out_channels[i],
                                                        out_channels[i])
                                         for i in range(1, len(in_channels)))

        def forward(self, feats):
            out = self.detect1(feats[-1])
            outs = [out]
            for i, (lateral, detect) in enumerate(zip(self.laterals, self.detects)):
                tmp = F.interpolate(lateral(out), scale_factor=2)
                out = detect(torch.cat((tmp, feats[-2 - i]), 1))
                outs.append(out)
            return outs

    class Head(nn.Module):
        def __init__(self, num_classes, channels, num_anchors=3):
            super().__init__()
            self.convs_bridge = nn.ModuleList(ConvBnLeaky(c, c, 3) for c in channels)
            self.convs_pred = nn.ModuleList(nn.Conv2d(c, num_anchors * (5 + num_classes), 1)
                                            for c in channels)

        def forward(self, feats):
            return [pred(bridge(x)) for x, bridge, pred in
                    zip(feats, self.convs_bridge, self.convs_pred)]

    class Backbone(nn.Module):
        """timm's GhostNetV2 run stage by stage, keeping the feature maps."""

        def __init__(self, timm_model):
            super().__init__()
            self.model = timm_model

        def forward(self, x):
            m = self.model
            x = m.act1(m.bn1(m.conv_stem(x)))
            feats = []
            for i, block in enumerate(m.blocks):
                x = block(x)
                if i in FEATURE_BLOCKS:
                    feats.append(x)
            return feats

    class YOLOV3(nn.Module):
        def __init__(self, timm_model, num_classes, neck_channels=(96, 96, 96)):
            super().__init__()
            self.backbone = Backbone(timm_model)
            channels = [timm_model.blocks[i][-1].ghost2.out_chs if i < 9 else
                        timm_model.blocks[9][0].conv.out_channels for i in FEATURE_BLOCKS]
            self.neck = Neck(list(reversed(channels)), list(neck_channels))
            self.bbox_head = Head(num_classes, list(neck_channels))

        def forward(self, x):
            return self.bbox_head(self.neck(self.backbone(x)))

    return YOLOV3


def twin(name, num_classes, seed=0):
    """A twin in eval mode: the backbone like a trained network (tests/
    reference.py), neck and head with randomised BatchNorm statistics."""
    import torch
    from tests.reference import realistic_timm_model
    model = _torch_modules()(realistic_timm_model(name, num_classes=0, seed=seed), num_classes)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in list(model.neck.modules()) + list(model.bbox_head.modules()):
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
                module.running_mean.uniform_(-0.3, 0.3, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                assert n == module.running_var.numel()
    return model.eval()


def port_state(model):
    """The twin's weights under the port's names (BatchNorm fields renamed,
    backbone.model. -> backbone., the ImageNet head left out)."""
    from src.weights import torch_to_mindspore
    state = {k.replace("backbone.model.", "backbone.", 1): v.detach().numpy()
             for k, v in model.state_dict().items()
             if not k.startswith(("backbone.model.conv_head", "backbone.model.classifier"))}
    return torch_to_mindspore(state)


def twin_outputs(model, images):
    import torch
    with torch.no_grad():
        return [o.numpy() for o in model(torch.from_numpy(np.ascontiguousarray(images)))]


def flatten_predictions(maps, num_anchors=3):
    """(N, A*K, H, W) per level -> (N, sum H*W*A, K), mmdetection's
    permute(0, 2, 3, 1).reshape(N, -1, K), coarsest level first."""
    import torch
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1] // num_anchors)
                      for m in maps], 1)


def decode(maps, anchor_table, num_anchors=3):
    """YOLOBBoxCoder.decode in torch, as the port's exported detector returns it:
    (N, anchors, 5 + C) = x1, y1, x2, y2 (input pixels), sigmoid objectness and
    class scores. anchor_table: grid_anchors' (anchors, 5) rows."""
    import torch
    pred = flatten_predictions(maps, num_anchors)
    table = torch.from_numpy(anchor_table)
    centre = (table[:, :2] + table[:, 2:4]) / 2 + (torch.sigmoid(pred[..., 0:2]) - 0.5) \
        * table[:, 4:5]
    half = (table[:, 2:4] - table[:, :2]) * torch.exp(pred[..., 2:4]) * 0.5
    return torch.cat((centre - half, centre + half, torch.sigmoid(pred[..., 4:])), 2)


def yolov3_loss(maps, box_targets, labels, num_anchors=3, weights=(1.0, 1.0, 2.0, 2.0)):
    """The port's YOLOV3Loss in torch (mmdetection's): class, xy BCE and wh MSE on
    positives, objectness BCE on positives and negatives, summed; weights =
    (cls, conf, xy, wh). labels: class index, -1 negative, -2 ignored."""
    import torch
    import torch.nn.functional as F
    pred = flatten_predictions(maps, num_anchors)
    positive = (labels >= 0).float()
    negative = (labels == -1).float()
    one_hot = F.one_hot(labels.clamp(min=0).long(), pred.shape[-1] - 5).float()
    pos = positive.unsqueeze(-1)

    def bce(logits, target):
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    loss_cls = (bce(pred[..., 5:], one_hot) * pos).sum()
    loss_conf = (bce(pred[..., 4], positive) * (positive + negative)).sum()
    loss_xy = (bce(pred[..., 0:2], box_targets[..., 0:2]) * pos).sum()
    loss_wh = (torch.square(pred[..., 2:4] - box_targets[..., 2:4]) * pos).sum()
    cls_w, conf_w, xy_w, wh_w = weights
    return cls_w * loss_cls + conf_w * loss_conf + xy_w * loss_xy + wh_w * loss_wh
