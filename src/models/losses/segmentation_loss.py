"""Pixel-wise cross-entropy for segmentation: MindSpore's
``nn.CrossEntropyLoss`` with an ignore index (the mean over the labelled
pixels, PyTorch's ``F.cross_entropy`` and mmsegmentation's
``avg_non_ignore=True``; mmsegmentation's default divides by every pixel,
ignored ones included, which only rescales the loss by the labelled share).

Logits are resized to the labels first (bilinear, align_corners=False), as
mmsegmentation's decode heads do; the auxiliary head's loss is added with
its weight (0.4 in the DeepLabV3 recipes).
"""
from mindspore import nn

from src.cpu_kernels import resize_bilinear

# The label of ignored pixels inside the pipeline (src/data/ade20k.py maps each
# data set's own ignore value to it): MindSpore's and PyTorch's default
# ignore_index, outside every class range.
IGNORE_LABEL = -100


class SegmentationLoss(nn.Cell):
    """loss = CE(main) + aux_weight * CE(aux), over pixels whose label is not IGNORE_LABEL."""

    def __init__(self, aux_weight=0.4):
        super().__init__()
        self.cross_entropy = nn.CrossEntropyLoss(ignore_index=IGNORE_LABEL, reduction="mean")
        self.aux_weight = aux_weight

    def pixel_loss(self, logits, labels):
        return self.cross_entropy(resize_bilinear(logits, labels.shape[1:]), labels)

    def construct(self, main_logits, aux_logits, labels):
        loss = self.pixel_loss(main_logits, labels)
        if aux_logits is not None and self.aux_weight > 0:
            loss = loss + self.aux_weight * self.pixel_loss(aux_logits, labels)
        return loss


class SegmentorWithLoss(nn.Cell):
    """(images, labels) -> loss, for the train step: labels are int32 (N, H, W)."""

    def __init__(self, segmentor, loss):
        super().__init__(auto_prefix=False)  # parameter names stay the segmentor's
        self.segmentor = segmentor
        self.loss = loss

    def construct(self, images, labels):
        main_logits, aux_logits = self.segmentor.forward_train(images)
        return self.loss(main_logits, aux_logits, labels)
