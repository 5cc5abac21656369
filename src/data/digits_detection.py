"""A small real detection set from what packages ship, as a COCO root:
scikit-learn's handwritten digits (1797 8x8 scans) pasted on crops of
scikit-image's sample photographs, written as ``ROOT/annotations/
instances_{train,val}.json`` + ``ROOT/{train,val}/*.png``.

Each image has 0-3 digits (about 5% have none), each digit scaled to a
random size and drawn as the classification quick start draws it (white
ink on the scan's black square, opaque; src/data/digit_drawing.py says
why) over the photo; its box is the extent of the ink. Drawn as ink
blended into the photo instead, a run of minutes learnt where the digits
are but hardly which they are (AP50 0.085). The digits of the val split are
scans no train image uses (the split of src/digits.py). Category ids are
deliberately not 0-9 or contiguous (primes), as COCO's are not.
"""
import json
import os

import numpy as np
from PIL import Image

from src.data.digit_drawing import draw_digits, load_photos, random_crop
from src.digits import split_indices

CATEGORY_IDS = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29)  # digit d has id CATEGORY_IDS[d]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
          "immunohistochemistry", "coins", "camera", "moon", "grass", "gravel", "brick",
          "retina", "horse", "cell")
INK_THRESHOLD = 0.25  # alpha above which a pixel counts as ink (the box)


def ink_box(ink, x, y):
    """[x, y, w, h] of a drawn digit's ink (paste_digit's, drawn at (x, y)),
    or None when too little ink is left."""
    ys, xs = np.nonzero(ink > INK_THRESHOLD)
    if not len(xs):
        return None
    return [float(x + xs.min()), float(y + ys.min()), float(xs.max() - xs.min() + 1),
            float(ys.max() - ys.min() + 1)]


def make_image(photos, scans, labels, size, rng, digit_sizes, max_digits=3):
    canvas = random_crop(photos[rng.integers(len(photos))], size, rng)
    count = 0 if rng.random() < 0.05 else int(rng.integers(1, max_digits + 1))
    anns = []
    for x, y, digit, ink in draw_digits(canvas, scans, labels, count, digit_sizes, rng):
        box = ink_box(ink, x, y)
        if box is not None:
            anns.append((box, digit))
    return np.clip(canvas, 0, 255).astype(np.uint8), anns


def write_split(root, split, photos, scans, labels, count, size, rng, digit_sizes):
    image_dir = os.path.join(root, split)
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        img, anns = make_image(photos, scans, labels, size, rng, digit_sizes)
        image_id = 1000 + i  # ids need not start at 0 or 1
        name = f"{image_id:06d}.png"
        Image.fromarray(img).save(os.path.join(image_dir, name))
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for box, digit in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": CATEGORY_IDS[digit], "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
    categories = [{"id": cid, "name": str(d), "supercategory": "digit"}
                  for d, cid in enumerate(CATEGORY_IDS)]
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", f"instances_{split}.json"), "w",
              encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return len(images), len(annotations)


def write_digit_detection(root, num_train=800, num_val=200, size=128, digit_sizes=(48, 64),
                          seed=0):
    """Write the set; returns {split: (images, boxes)}."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    train_idx, val_idx = split_indices(digits.target, 0.2, seed)
    photos = load_photos(PHOTOS)
    rng = np.random.default_rng(seed)
    counts = {}
    for split, idx, count in (("train", train_idx, num_train), ("val", val_idx, num_val)):
        counts[split] = write_split(root, split, photos, digits.images[idx], digits.target[idx],
                                    count, size, rng, digit_sizes)
    return counts
