"""Segmentation data in ADE20K's layout, as published, and the same layout
with its own classes.

    ROOT/images/<split>/NAME.jpg (or .png, .jpeg, .bmp)
    ROOT/annotations/<split>/NAME.png      one label value per pixel
    ROOT/dataset.json                      optional, see below

``ROOT = ADEChallengeData2016`` as downloaded (splits ``training`` and
``validation``) needs nothing else: without dataset.json the ADE20K
conventions apply: 150 classes (ADE20K's names), label 0 = "other" is
ignored and k -> k - 1 (mmsegmentation's ``reduce_zero_label``), ignore 255.

Another data set puts a dataset.json at ROOT:

    {"classes": ["background", "cat", ...],   # label value i = classes[i]
     "ignore_index": 255,                     # pixels not scored (default 255)
     "reduce_zero_label": false,              # true: 0 ignored, k -> k - 1 (ADE20K's rule)
     "palette": [[0, 0, 0], ...]}             # optional overlay colours

Label PNGs are read as their stored values: greyscale ('L', 'I;16') as is,
palette ('P') PNGs as palette indices (not colours: a VOC-style PNG works),
RGB / RGBA PNGs are refused (colour-coded masks need converting to indices
first). Checked per file, with the file named in the error: the label's size
must equal its image's, and every value (after reduce_zero_label) must be a
class or the ignore value. An image without a label PNG stops the scan (the
error lists them); an image whose pixels are all ignored is allowed (it adds
nothing to the scores, and a training crop of it no loss).
"""
import json
import os

import numpy as np
from PIL import Image

from src.dataset import DatasetError, load_rgb
from src.models.losses.segmentation_loss import IGNORE_LABEL

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DATASET_FILE = "dataset.json"
TRAIN_SPLIT, VAL_SPLIT = "training", "validation"
ADE20K_IGNORE_INDEX = 255
# ADE20K's 150 classes in label order (1..150 in the PNGs, 0..149 after
# reduce_zero_label), the names mmsegmentation's ADE20KDataset uses.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag")


def default_palette(num_classes):
    """Distinct overlay colours (a fixed pseudo-random set, as mmsegmentation's)."""
    colours = np.random.default_rng(0).integers(0, 256, (num_classes, 3))
    return [[int(c) for c in colour] for colour in colours]


def read_dataset_info(root):
    """The data set's conventions: dict(classes, ignore_index, reduce_zero_label,
    palette), from ROOT/dataset.json or ADE20K's."""
    path = os.path.join(root, DATASET_FILE)
    if not os.path.isfile(path):
        return dict(classes=list(ADE20K_CLASSES), ignore_index=ADE20K_IGNORE_INDEX,
                    reduce_zero_label=True, palette=default_palette(len(ADE20K_CLASSES)))
    try:
        with open(path, encoding="utf-8") as f:
            described = json.load(f)
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: not a readable JSON file ({err})") from None
    classes = described.get("classes") if isinstance(described, dict) else None
    if not classes or not all(isinstance(name, str) for name in classes):
        raise DatasetError(f"{path}: needs \"classes\": a list of class names (label value i "
                           "is classes[i])")
    ignore_index = described.get("ignore_index", ADE20K_IGNORE_INDEX)
    if not isinstance(ignore_index, int) or 0 <= ignore_index < len(classes):
        raise DatasetError(f"{path}: ignore_index must be an integer outside the class values "
                           f"0..{len(classes) - 1}, got {ignore_index!r}")
    palette = described.get("palette") or default_palette(len(classes))
    if len(palette) != len(classes):
        raise DatasetError(f"{path}: palette has {len(palette)} colours for {len(classes)} "
                           "classes")
    return dict(classes=list(classes), ignore_index=ignore_index,
                reduce_zero_label=bool(described.get("reduce_zero_label", False)),
                palette=[[int(c) for c in colour] for colour in palette])


def scan_split(root, split):
    """Sorted [(image path, label path)] of ROOT/images/<split>; DatasetError
    when the folders are missing, empty, or an image has no label PNG."""
    image_dir = os.path.join(root, "images", split)
    label_dir = os.path.join(root, "annotations", split)
    for folder in (image_dir, label_dir):
        if not os.path.isdir(folder):
            raise DatasetError(f"{folder} not found: --data_path must name a folder with "
                               f"images/{split}/ and annotations/{split}/ (ADE20K's layout, "
                               "e.g. ADEChallengeData2016)")
    names = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise DatasetError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    pairs, missing = [], []
    for name in names:
        label = os.path.join(label_dir, os.path.splitext(name)[0] + ".png")
        if os.path.isfile(label):
            pairs.append((os.path.join(image_dir, name), label))
        else:
            missing.append(name)
    if missing:
        raise DatasetError(f"{len(missing)} images of {image_dir} have no label PNG in "
                           f"{label_dir} (e.g. {', '.join(missing[:5])}): add the masks or "
                           "remove those images")
    return pairs


def read_label(path, num_classes, ignore_index, reduce_zero_label):
    """A label PNG as an (H, W) int32 array of class indices 0..C-1, its ignored
    pixels IGNORE_LABEL (whatever value the data set stores for them);
    DatasetError naming the file for what cannot be right."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            values = np.asarray(img)
    except (OSError, ValueError, SyntaxError) as err:
        raise DatasetError(f"{path}: unreadable label PNG ({type(err).__name__}: {err})") from None
    if mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
        raise DatasetError(f"{path}: a {mode} label image; labels must hold one class index per "
                           "pixel (greyscale or palette PNG), convert colour-coded masks to "
                           "indices first")
    values = values.astype(np.int32)
    ignored = values == ignore_index
    if reduce_zero_label:  # ADE20K: 0 ("other") ignored, k -> k - 1
        ignored |= values == 0
        values = values - 1
    bad = ~ignored & ((values < 0) | (values >= num_classes))
    if bad.any():
        shown = sorted(np.unique(values[bad]).tolist())[:5]
        stored = [v + 1 for v in shown] if reduce_zero_label else shown
        raise DatasetError(f"{path}: label values {stored} are neither a class (0.."
                           f"{num_classes - 1 + int(reduce_zero_label)}"
                           f"{', 0 ignored' if reduce_zero_label else ''}) nor the ignore value "
                           f"{ignore_index}: fix the mask, or the classes / ignore_index of "
                           f"{DATASET_FILE}")
    values[ignored] = IGNORE_LABEL
    return values


def read_pair(image_path, label_path, info):
    """(HWC uint8 RGB image, (H, W) int32 label) with the size checked."""
    image = np.asarray(load_rgb(image_path), dtype=np.uint8)
    label = read_label(label_path, len(info["classes"]), info["ignore_index"],
                       info["reduce_zero_label"])
    if label.shape != image.shape[:2]:
        raise DatasetError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its "
                           f"image {image_path} is {image.shape[1]}x{image.shape[0]} (width x "
                           "height): masks must have their image's size")
    return image, label


def write_prediction_png(path, prediction, info):
    """Predicted class indices as a label PNG in the data set's own values
    (reduce_zero_label: k -> k + 1): 8-bit, or 16-bit past 255."""
    stored = np.asarray(prediction, np.int64) + int(bool(info["reduce_zero_label"]))
    dtype = np.uint8 if stored.max(initial=0) < 256 else np.uint16
    Image.fromarray(stored.astype(dtype)).save(path)


class TrainSource:
    """Random-access source for mindspore.dataset.GeneratorDataset: the pairs
    through the training transform (src/data/seg_transforms.TrainTransform)."""

    def __init__(self, pairs, info, transform):
        self.pairs, self.info, self.transform = pairs, info, transform

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        return self.transform(*read_pair(*self.pairs[index], self.info))


def create_train_dataset(root, info, transform, batch_size, num_workers=1, rank_id=0,
                         rank_size=1, split=TRAIN_SPLIT):
    """Shuffled batches of (image float32 NCHW, label int32 NHW), the last
    partial batch dropped; ``dataset.num_files`` = this rank's images."""
    import mindspore.dataset as ds
    pairs = scan_split(root, split)
    dataset = ds.GeneratorDataset(TrainSource(pairs, info, transform), ["image", "label"],
                                  shuffle=True, num_shards=rank_size if rank_size > 1 else None,
                                  shard_id=rank_id if rank_size > 1 else None,
                                  num_parallel_workers=num_workers,
                                  python_multiprocessing=num_workers > 1)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset.num_files = -(-len(pairs) // rank_size)  # this rank's share (shards are padded)
    return dataset


class EvalSource:
    """Random-access source of the evaluation split: (CHW float32 image after
    the test resize, int32 label at the original size, int32 index into
    ``pairs``)."""

    def __init__(self, pairs, info, scale):
        from src.data.seg_transforms import eval_image
        self.pairs, self.info, self.scale, self._eval_image = pairs, info, tuple(scale), eval_image

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        image, label = read_pair(*self.pairs[index], self.info)
        return self._eval_image(image, self.scale), label, np.int32(index)


def create_eval_dataset(root, info, scale, rank_id=0, rank_size=1, split=VAL_SPLIT):
    """The evaluation split in name order, every image once, batches of one
    (image sizes differ): (image float32 1x3xHxW, label int32 1xH0xW0, index
    int32 [1]). Rank r of n gets images r, r + n, ...; ``dataset.pairs``
    holds (image path, label path) by index, ``dataset.num_files`` their
    number on this rank."""
    import mindspore.dataset as ds
    pairs = scan_split(root, split)[rank_id::rank_size]
    dataset = ds.GeneratorDataset(EvalSource(pairs, info, scale), ["image", "label", "index"],
                                  shuffle=False)
    dataset = dataset.batch(1)
    dataset.pairs, dataset.num_files = pairs, len(pairs)
    return dataset
