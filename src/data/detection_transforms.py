"""Detection transforms of mmdetection's YOLOv3 recipe, on NumPy arrays.

An image is float32 HWC RGB on the 0-255 scale; its annotations one (B, 6)
float array of rows (x1, y1, x2, y2, class index, crowd flag) in its pixels,
so that boxes, classes and crowd flags stay in step through crops. ``rng`` is
a numpy Generator.

Train (recipe order): PhotoMetricDistortion, Expand (mean fill, ratio 1-2,
p 0.5), MinIoURandomCrop (min IoUs 0.4-0.9, min crop 0.3), resize keeping the
ratio (a random long side in [min, max] for multi-scale), horizontal flip
(p 0.5), normalise, pad. Test: resize keeping the ratio, normalise, pad.

One difference from mmdetection: the pad is to the fixed ``pad_size`` square
(the largest training scale), not to each batch's multiple of 32, so the
graph has one input shape (one compile) and the exported model one size.
"""
import cv2
import numpy as np

from src.dataset import IMAGENET_MEAN, IMAGENET_STD

MIN_IOUS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def photometric_distortion(img, rng, brightness_delta=32, contrast_range=(0.5, 1.5),
                           saturation_range=(0.5, 1.5), hue_delta=18):
    """mmdetection's PhotoMetricDistortion: each step with probability 0.5;
    brightness, contrast (before or after the HSV steps, at random),
    saturation, hue. No clipping, as there."""
    img = img.astype(np.float32)
    if rng.random() < 0.5:
        img = img + rng.uniform(-brightness_delta, brightness_delta)
    contrast_first = rng.random() < 0.5
    if contrast_first and rng.random() < 0.5:
        img = img * rng.uniform(*contrast_range)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    if rng.random() < 0.5:
        hsv[..., 1] *= rng.uniform(*saturation_range)
    if rng.random() < 0.5:
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue_delta, hue_delta)) % 360
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first and rng.random() < 0.5:
        img = img * rng.uniform(*contrast_range)
    return img


def expand(img, anns, rng, ratio_range=(1.0, 2.0), prob=0.5):
    """Place the image at a random spot of a canvas ``ratio`` times larger,
    filled with the mean colour (0 after normalising)."""
    if rng.random() >= prob:
        return img, anns
    h, w, c = img.shape
    ratio = rng.uniform(*ratio_range)
    canvas = np.empty((int(h * ratio), int(w * ratio), c), np.float32)
    canvas[...] = np.asarray(IMAGENET_MEAN, np.float32)
    left, top = int(rng.uniform(0, w * ratio - w)), int(rng.uniform(0, h * ratio - h))
    canvas[top:top + h, left:left + w] = img
    anns = anns.copy()
    anns[:, [0, 2]] += left
    anns[:, [1, 3]] += top
    return canvas, anns


def _patch_iou(patch, boxes):
    lt = np.maximum(patch[:2], boxes[:, :2])
    rb = np.minimum(patch[2:], boxes[:, 2:4])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = (boxes[:, 2:4] - boxes[:, :2]).prod(1)
    return inter / ((patch[2:] - patch[:2]).prod() + area - inter)


def min_iou_random_crop(img, anns, rng, min_ious=MIN_IOUS, min_crop_size=0.3, max_trials=50):
    """mmdetection's MinIoURandomCrop: pick a mode (no crop, or a minimum IoU
    every box must have with the crop, or none); try crops of 0.3-1 of each
    side with aspect 0.5-2; keep the boxes whose centre is inside, clipped."""
    h, w = img.shape[:2]
    modes = (1, *min_ious, 0)
    while True:
        mode = modes[rng.integers(len(modes))]
        if mode == 1:
            return img, anns
        for _ in range(max_trials):
            new_w = rng.uniform(min_crop_size * w, w)
            new_h = rng.uniform(min_crop_size * h, h)
            if not 0.5 <= new_h / new_w <= 2:
                continue
            left, top = rng.uniform(0, w - new_w), rng.uniform(0, h - new_h)
            patch = np.array([int(left), int(top), int(left + new_w), int(top + new_h)],
                             np.float64)
            if patch[2] == patch[0] or patch[3] == patch[1]:
                continue
            if len(anns):
                if _patch_iou(patch, anns[:, :4]).min() < mode:
                    continue
                centre = (anns[:, :2] + anns[:, 2:4]) / 2
                inside = ((centre > patch[:2]) & (centre < patch[2:])).all(1)
                if not inside.any():
                    continue
                anns = anns[inside].copy()
                anns[:, :4] = np.clip(anns[:, :4], np.tile(patch[:2], 2), np.tile(patch[2:], 2))
                anns[:, :4] -= np.tile(patch[:2], 2)
            x1, y1, x2, y2 = patch.astype(int)
            return img[y1:y2, x1:x2], anns


def resize_keep_ratio(img, anns, size):
    """Scale so the longer side is ``size`` (mmcv's rescale to a square scale,
    rounding sizes to the nearest pixel, bilinear); returns the image, the
    annotations and (w_scale, h_scale), the factors boxes were multiplied by."""
    h, w = img.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))
    img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    factors = np.array([new_w / w, new_h / h], np.float32)
    anns = anns.copy()
    anns[:, [0, 2]] *= factors[0]
    anns[:, [1, 3]] *= factors[1]
    return img, anns, factors


def hflip(img, anns):
    w = img.shape[1]
    anns = anns.copy()
    anns[:, [0, 2]] = w - anns[:, [2, 0]]
    return img[:, ::-1], anns


def normalize_pad(img, pad_size):
    """ImageNet mean/std, then zero padding on the right and bottom to a
    pad_size x pad_size square; CHW float32."""
    h, w = img.shape[:2]
    out = np.zeros((3, pad_size, pad_size), np.float32)
    normalized = (img - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD,
                                                                            np.float32)
    out[:, :h, :w] = normalized.transpose(2, 0, 1)
    return out


def train_transform(img, anns, rng, scale_range, augment=True, flip_prob=0.5):
    """The recipe's training transform -> (CHW float32 pad_size square, the
    annotations in its pixels, boxes under 1 pixel dropped). scale_range:
    (min, max) long side; pad_size is max. augment=False keeps only resize,
    flip and pad (for small data or a quick check)."""
    img = img.astype(np.float32)
    if augment:
        img = photometric_distortion(img, rng)
        img, anns = expand(img, anns, rng)
        img, anns = min_iou_random_crop(img, anns, rng)
    size = int(rng.integers(scale_range[0], scale_range[1] + 1))
    img, anns, _ = resize_keep_ratio(img, anns, size)
    if rng.random() < flip_prob:
        img, anns = hflip(img, anns)
    sides = anns[:, 2:4] - anns[:, :2]
    anns = anns[(sides >= 1).all(1)]
    return normalize_pad(img, scale_range[1]), anns


def test_transform(img, size):
    """Resize keeping the ratio, normalise, pad -> (CHW, (w_scale, h_scale))."""
    img, _, factors = resize_keep_ratio(img.astype(np.float32), np.zeros((0, 6), np.float32),
                                        size)
    return normalize_pad(img, size), factors
