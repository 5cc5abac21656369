"""A small real segmentation set from data that ships with the packages:
scikit-learn's handwritten digits pasted onto crops of scikit-image's
photographs, written in ADE20K's layout (src/data/ade20k.py):

    ROOT/images/{training,validation}/NNNNN.png
    ROOT/annotations/{training,validation}/NNNNN.png   0 background, 1..10 digits 0..9, 255
    ROOT/dataset.json                                   classes, ignore_index 255

Each digit is drawn as the classification quick start draws it (white ink
on the scan's black square, 48-64 px by default: the size its checkpoint
reads; src/data/digit_drawing.py, shared with the detection set, says why)
on a crop of the photo. The strokes (ink >= half) are labelled with their
digit, the faint anti-aliased rim is the ignore value, the black square
around the strokes and the photo are "background": the task is the strokes,
as ADE20K's is the objects, and the square is what tells a digit is there,
not which. (Drawn before as coloured ink blended into the photo, no run of
minutes got past "background everywhere": README, Semantic segmentation.)
Validation uses other digits (the stratified split of src/digits.py) and
other photographs than training, so the score is on unseen strokes and
scenes. Seeded: the same files on every machine.
"""
import json
import os

import numpy as np
from PIL import Image

from src.data.ade20k import DATASET_FILE, TRAIN_SPLIT, VAL_SPLIT
from src.data.digit_drawing import draw_digits, load_photos, random_crop
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


def make_scene(photo, scans, labels, rng, image_size, digit_size, max_digits):
    """One (image, label) pair: a crop of the photo with 1..max_digits digits
    drawn on it (their squares do not overlap), strokes labelled."""
    canvas = random_crop(photo, image_size, rng)
    label = np.zeros((image_size, image_size), np.uint8)
    count = int(rng.integers(1, max_digits + 1))
    for x, y, digit, ink in draw_digits(canvas, scans, labels, count, digit_size, rng):
        region = label[y:y + len(ink), x:x + len(ink)]
        region[ink >= RIM_INK] = IGNORE_INDEX
        region[ink >= STROKE_INK] = digit + 1
    return np.clip(canvas, 0, 255).astype(np.uint8), label


def write_digit_scenes(root, num_train=600, num_val=150, image_size=128, digit_size=(48, 64),
                       max_digits=2, seed=0):
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
