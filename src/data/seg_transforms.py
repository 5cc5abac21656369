"""Segmentation transforms on (HWC uint8 RGB image, (H, W) int32 label)
numpy pairs, following mmsegmentation's ADE20K pipeline:

train: RandomResize(scale, ratio_range, keep_ratio) -> RandomCrop(crop,
cat_max_ratio) -> RandomFlip(0.5) -> PhotoMetricDistortion -> normalise ->
pad to the crop (image 0 after normalising, label ignore);
test: Resize(scale, keep_ratio) of the image only (the label stays at the
original size, where the prediction is scored).

Images resize bilinearly and labels by nearest neighbour (cv2, as mmcv).
"""
import os

import cv2
import numpy as np

from src.dataset import IMAGENET_MEAN, IMAGENET_STD
from src.models.losses.segmentation_loss import IGNORE_LABEL

CROP_TRIES = 10  # mmsegmentation's RandomCrop: tries for a crop under cat_max_ratio


def keep_ratio_size(height, width, scale):
    """(h, w) of mmcv's rescale: as large as fits in scale = (long, short)
    edges, the aspect ratio kept."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_image(image, size):
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def resize_label(label, size):
    return cv2.resize(label.astype(np.int32).astype(np.float32), (size[1], size[0]),
                      interpolation=cv2.INTER_NEAREST).astype(np.int32)


def random_resize(image, label, scale, ratio_range, rng):
    ratio = rng.uniform(*ratio_range)
    size = keep_ratio_size(*image.shape[:2], (scale[0] * ratio, scale[1] * ratio))
    return resize_image(image, size), resize_label(label, size)


def random_crop(image, label, crop_size, cat_max_ratio, rng):
    """A crop of at most crop_size; up to CROP_TRIES draws for one whose most
    frequent labelled class covers less than cat_max_ratio of its labelled
    pixels (mmsegmentation's rule; 1.0 turns it off)."""
    crop_h, crop_w = min(crop_size[0], image.shape[0]), min(crop_size[1], image.shape[1])

    def draw():
        top = rng.integers(0, image.shape[0] - crop_h + 1)
        left = rng.integers(0, image.shape[1] - crop_w + 1)
        return top, left

    top, left = draw()
    if cat_max_ratio < 1.0:
        for _ in range(CROP_TRIES):
            window = label[top:top + crop_h, left:left + crop_w]
            _, counts = np.unique(window[window != IGNORE_LABEL], return_counts=True)
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            top, left = draw()
    return (image[top:top + crop_h, left:left + crop_w],
            label[top:top + crop_h, left:left + crop_w])


def photometric_distortion(image, rng, brightness=32, contrast=(0.5, 1.5),
                           saturation=(0.5, 1.5), hue=18):
    """mmsegmentation's PhotoMetricDistortion: each with probability 0.5,
    brightness shift, contrast (before or after the HSV steps, at random),
    saturation scale, hue shift (OpenCV's 0-180 hue)."""
    image = image.astype(np.float32)
    if rng.random() < 0.5:
        image = image + rng.uniform(-brightness, brightness)
    contrast_first = rng.random() < 0.5

    def adjust_contrast(img):
        return img * rng.uniform(*contrast) if rng.random() < 0.5 else img

    if contrast_first:
        image = adjust_contrast(image)
    saturate, shift_hue = rng.random() < 0.5, rng.random() < 0.5
    if saturate or shift_hue:
        hsv = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV)
        hsv = hsv.astype(np.float32)
        if saturate:
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*saturation), 0, 255)
        if shift_hue:
            hsv[..., 0] = (hsv[..., 0] + rng.integers(-hue, hue)) % 180
        image = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if not contrast_first:
        image = adjust_contrast(image)
    return np.clip(image, 0, 255)


def normalize(image):
    """HWC RGB 0-255 -> CHW float32, ImageNet mean / std (mmsegmentation's)."""
    image = (np.asarray(image, np.float32) - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)
    return np.ascontiguousarray(image.transpose(2, 0, 1))


def pad_to(image_chw, label, size):
    """Pad bottom / right to size: image with 0 (after normalising), label ignored."""
    pad_h, pad_w = size[0] - image_chw.shape[1], size[1] - image_chw.shape[2]
    if pad_h == 0 and pad_w == 0:
        return image_chw, label
    image_chw = np.pad(image_chw, ((0, 0), (0, pad_h), (0, pad_w)))
    label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_LABEL)
    return image_chw, label


class TrainTransform:
    """The training pipeline on one pair: -> (CHW float32 image, (crop) int32 label)."""

    def __init__(self, scale, ratio_range, crop_size, cat_max_ratio, hflip=0.5, photometric=True,
                 seed=None):
        self.scale, self.ratio_range = tuple(scale), tuple(ratio_range)
        self.crop_size, self.cat_max_ratio = tuple(crop_size), cat_max_ratio
        self.hflip, self.photometric = hflip, photometric
        self.seed, self._rng, self._pid = seed, None, None

    @property
    def rng(self):
        """A generator per process: forked data workers must not draw the same crops."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._rng = np.random.default_rng(None if self.seed is None else
                                              [self.seed, self._pid])
        return self._rng

    def __call__(self, image, label):
        rng = self.rng
        image, label = random_resize(image, label, self.scale, self.ratio_range, rng)
        image, label = random_crop(image, label, self.crop_size, self.cat_max_ratio, rng)
        if rng.random() < self.hflip:
            image, label = image[:, ::-1], label[:, ::-1]
        if self.photometric:
            image = photometric_distortion(image, rng)
        image, label = pad_to(normalize(image), np.ascontiguousarray(label, np.int32),
                              self.crop_size)
        return image, label


def eval_image(image, scale, keep_ratio=True):
    """The test transform, normalised (CHW): resized keeping the ratio to fit
    scale (mmsegmentation's Resize(keep_ratio=True)); keep_ratio=False:
    resized to scale = (height, width) exactly (an exported network's fixed input)."""
    size = keep_ratio_size(*image.shape[:2], scale) if keep_ratio else tuple(scale)
    return normalize(resize_image(image, size))
