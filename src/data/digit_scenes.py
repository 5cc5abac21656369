"""A small real segmentation set from data that ships with the packages:
scikit-learn's handwritten digits pasted onto crops of scikit-image's
photographs, written in ADE20K's layout (src/data/ade20k.py):

    ROOT/images/{training,validation}/NNNNN.png
    ROOT/annotations/{training,validation}/NNNNN.png   0 background, 1..10 digits 0..9, 255
    ROOT/dataset.json                                   classes, ignore_index 255

Each digit (8x8 ink levels, upscaled) is blended onto the photo in a random
ink colour; its stroke pixels (ink >= half) are labelled with its class, the
faint anti-aliased rim is the ignore value, the photo is "background".
Validation uses other digits (the stratified split of src/digits.py) and
other photographs than training, so the score is on unseen strokes and
scenes. Seeded: the same files on every machine.
"""
import json
import os

import numpy as np
from PIL import Image

from src.data.ade20k import DATASET_FILE, TRAIN_SPLIT, VAL_SPLIT
from src.digits import split_indices

CLASSES = ["background"] + [str(d) for d in range(10)]
IGNORE_INDEX = 255
STROKE_INK, RIM_INK = 0.5, 0.15  # ink fractions: labelled stroke / ignored rim
TRAIN_PHOTOS = ("astronaut", "rocket", "immunohistochemistry", "hubble_deep_field", "brick",
                "grass", "gravel", "camera", "moon", "retina")
VAL_PHOTOS = ("coffee", "chelsea", "coins", "clock", "colorwheel")
PALETTE = [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
           [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60],
           [250, 190, 212]]


def load_photos(names):
    """scikit-image's photographs as RGB uint8 arrays."""
    import skimage.data
    photos = []
    for name in names:
        photo = np.asarray(getattr(skimage.data, name)())
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=2)
        photos.append(photo[..., :3].astype(np.uint8))
    return photos


def paste_digit(image, label, pixels, digit, size, top, left, colour):
    """Blend one digit (8x8 ink 0..16) of size x size at (top, left); label its strokes."""
    ink = np.asarray(Image.fromarray((pixels * 255 / 16).astype(np.uint8)).resize(
        (size, size), Image.BICUBIC), np.float32) / 255
    window = (slice(top, top + size), slice(left, left + size))
    alpha = ink[..., None]
    image[window] = (image[window] * (1 - alpha) + np.float32(colour) * alpha).astype(np.uint8)
    region = label[window]
    region[ink >= RIM_INK] = IGNORE_INDEX
    region[ink >= STROKE_INK] = digit + 1


def make_scene(photo, digit_images, digit_labels, rng, image_size, digit_size, max_digits):
    """One (image, label) pair: a photo crop with 1..max_digits digits that do not overlap."""
    top = rng.integers(0, photo.shape[0] - image_size + 1)
    left = rng.integers(0, photo.shape[1] - image_size + 1)
    image = photo[top:top + image_size, left:left + image_size].copy()
    label = np.zeros((image_size, image_size), np.uint8)
    taken = np.zeros_like(label, bool)
    for _ in range(rng.integers(1, max_digits + 1)):
        size = int(rng.integers(digit_size[0], digit_size[1] + 1))
        y, x = rng.integers(0, image_size - size + 1, 2)
        if taken[y:y + size, x:x + size].any():
            continue
        taken[y:y + size, x:x + size] = True
        # A colour far from the photo's mean there, so the digit stays visible.
        mean = image[y:y + size, x:x + size].reshape(-1, 3).mean(0)
        colour = np.where(mean > 127, rng.integers(0, 60, 3), rng.integers(196, 256, 3))
        index = rng.integers(len(digit_labels))
        paste_digit(image, label, digit_images[index], int(digit_labels[index]), size, y, x,
                    colour)
    return image, label


def write_digit_scenes(root, num_train=600, num_val=150, image_size=128, digit_size=(36, 64),
                       max_digits=3, seed=0):
    """Write the set (an existing file is rewritten); returns {split: images}."""
    from sklearn.datasets import load_digits
    if image_size < digit_size[1]:
        raise ValueError(f"image_size {image_size} is smaller than the largest digit "
                         f"{digit_size[1]}")
    digits = load_digits()
    train_idx, val_idx = split_indices(digits.target, 0.2, seed)
    rng = np.random.default_rng(seed)
    counts = {}
    for split, count, indices, photo_names in (
            (TRAIN_SPLIT, num_train, train_idx, TRAIN_PHOTOS),
            (VAL_SPLIT, num_val, val_idx, VAL_PHOTOS)):
        photos = load_photos(photo_names)
        for folder in ("images", "annotations"):
            os.makedirs(os.path.join(root, folder, split), exist_ok=True)
        for i in range(count):
            image, label = make_scene(photos[i % len(photos)], digits.images[indices],
                                      digits.target[indices], rng, image_size, digit_size,
                                      max_digits)
            Image.fromarray(image).save(os.path.join(root, "images", split, f"{i:05d}.png"))
            Image.fromarray(label).save(os.path.join(root, "annotations", split, f"{i:05d}.png"))
        counts[split] = count
    with open(os.path.join(root, DATASET_FILE), "w", encoding="utf-8") as f:
        json.dump(dict(classes=CLASSES, ignore_index=IGNORE_INDEX, reduce_zero_label=False,
                       palette=PALETTE), f, indent=1)
    return counts
