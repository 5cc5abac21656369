"""scikit-learn's handwritten digits (UCI, 1,797 8x8 images, 10 classes) as an
ImageFolder: ``ROOT/{train,val}/<0..9>/<index>.png``, RGB, upscaled.

The data ships inside scikit-learn, so this real data set needs no download.
The split is stratified and seeded: the same files on every machine.
"""
import os

import numpy as np
from PIL import Image

SPLITS = ("train", "val")


def split_indices(labels, val_fraction=0.2, seed=0):
    """Stratified split: (train indices, val indices), each sorted."""
    rng = np.random.RandomState(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        num_val = int(round(len(members) * val_fraction))
        val.extend(members[:num_val])
        train.extend(members[num_val:])
    return sorted(train), sorted(val)


def digit_image(pixels, image_size):
    """8x8 array of 0..16 ink levels -> RGB PIL image of image_size (bicubic upscale)."""
    gray = np.clip(np.round(pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    img = Image.fromarray(gray, mode="L").resize((image_size, image_size), Image.BICUBIC)
    return img.convert("RGB")


def write_digits(root, image_size=64, val_fraction=0.2, seed=0, overwrite=False):
    """Write the ImageFolder; returns {split: number of images}.

    An existing complete folder is left as it is (unless overwrite).
    """
    from sklearn.datasets import load_digits
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 (the digits are 8x8), got {image_size}")
    digits = load_digits()
    train, val = split_indices(digits.target, val_fraction, seed)
    counts = {}
    for split, indices in zip(SPLITS, (train, val)):
        for index in indices:
            label = int(digits.target[index])
            path = os.path.join(root, split, str(label), f"{index:04d}.png")
            if overwrite or not os.path.isfile(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = path + ".tmp.png"
                digit_image(digits.images[index], image_size).save(tmp)
                os.replace(tmp, path)
        counts[split] = len(indices)
    return counts
