"""Drawing scikit-learn's handwritten digits on crops of scikit-image's
photographs: what the digit detection set (src/data/digits_detection.py) and
the digit-scenes segmentation set (src/data/digit_scenes.py) share.

Each digit is drawn as the classification quick start draws it
(src/digits.py's ``digit_image``: white ink on the scan's black square,
opaque), not blended into the photo: blended, coloured ink on a textured
photo is barely legible, the quick start's checkpoint read such crops right
32-40% of the time (100% drawn as here), and neither the detector nor the
segmenter fine-tuned from it learnt which digit was where (README, Detection
and Semantic segmentation). The checkpoint knows digits of about 64 pixels
only (44 px: 23% right), hence sides of 48-64 by default in both sets.
"""
import numpy as np
from PIL import Image

from src.digits import digit_image

PLACE_TRIES = 20  # random places tried for a digit before it is left out
MARGIN = 2        # pixels kept free between two digits' squares


def load_photos(names):
    """scikit-image's sample photographs of these names, as RGB uint8 arrays."""
    import skimage.data
    photos = []
    for name in names:
        photo = np.asarray(getattr(skimage.data, name)())
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, -1)
        photos.append(photo[..., :3].astype(np.uint8))
    return photos


def random_crop(photo, size, rng):
    """A random square crop of 1-2.5x size, resized to size x size (float32)."""
    h, w = photo.shape[:2]
    side = int(min(h, w, rng.uniform(1.0, 2.5) * size))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = Image.fromarray(photo[top:top + side, left:left + side])
    return np.asarray(crop.resize((size, size), Image.BILINEAR), np.float32)


def paste_digit(canvas, pixels, x, y, side):
    """Draw an 8x8 digit scan (ink 0-16) scaled to side x side at (x, y) of
    the float canvas, as the classifier's training images; returns its ink
    (side x side, 0-1: 0 the black square, 1 the white strokes)."""
    tile = np.asarray(digit_image(pixels, side), np.float32)
    canvas[y:y + side, x:x + side] = tile
    return tile[..., 0] / 255


def _overlaps(square, squares, margin=MARGIN):
    x, y, w, h = square
    return any(x < bx + bw + margin and bx < x + w + margin and y < by + bh + margin
               and by < y + h + margin for bx, by, bw, bh in squares)


def draw_digits(canvas, scans, labels, count, digit_sizes, rng):
    """Draw up to count random scans at random places of the square canvas,
    sides digit_sizes[0]-digit_sizes[1], squares not overlapping (a digit
    without a free place in PLACE_TRIES tries is left out); returns
    [(x, y, digit, ink)] of the drawn ones (ink as paste_digit's)."""
    size = canvas.shape[0]
    placed, drawn = [], []
    for _ in range(count):
        for _attempt in range(PLACE_TRIES):
            side = int(rng.integers(digit_sizes[0], digit_sizes[1] + 1))
            x, y = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
            if not _overlaps((x, y, side, side), placed):
                break
        else:
            continue
        k = int(rng.integers(len(scans)))
        ink = paste_digit(canvas, scans[k], x, y, side)
        placed.append((x, y, side, side))
        drawn.append((x, y, int(labels[k]), ink))
    return drawn
