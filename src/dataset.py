"""ImageNet-style folders (``root/<class>/<image>``) as MindSpore datasets.

- Evaluation (``create_eval_dataset``): every image exactly once, in a fixed
  order (sorted class folders, sorted file names), no shuffle, no dropped
  remainder; timm's transform for the GhostNetV2 weights (shorter side to
  image_size / crop_pct with PIL bicubic, center crop, ImageNet mean/std), so
  the inputs are those timm scores the official weights on.
- Training (``create_train_dataset``): mindcv's ImageNet augmentation
  (random resized crop, flips, colour jitter or RandAugment, random erasing),
  each part switchable from the recipe; shuffled and sharded by rank.

Images are decoded with PIL in the dataset's worker processes, so grayscale,
palette, RGBA, CMYK and 16-bit files all arrive as 8-bit RGB. A file that
cannot be decoded (zero bytes, truncated, not an image) is dropped: it is named
once in a warning and counted in ``BadImages``, and the run goes on.
"""
import logging
import math
import os
import threading

import numpy as np
from PIL import Image

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff",
                  ".gif", ".jfif")
# ImageNet statistics on the 0-255 scale (what mindspore's Normalize expects).
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# Pillow modes holding more than 8 bits per sample (16-bit PNG/TIFF grayscale).
_WIDE_INT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# One decoding process per core is enough for 64x64 images and for ImageNet
# JPEGs alike; more only adds start-up time and memory.
MAX_AUTO_WORKERS = 8

_logger = logging.getLogger(__name__)
EXPECTED_LAYOUT = "expected DIR/<class_name>/<image files>, one sub-folder per class"


class DatasetError(ValueError):
    """A data folder that cannot be used; the message says why and what to do."""


class BadImageError(OSError):
    """An image file that cannot be decoded."""


# ------------------------------------------------------------------ folders

def find_classes(root):
    """Sorted class folder names of ``root`` (raises DatasetError with the expected layout)."""
    if not os.path.exists(root):
        raise DatasetError(f"data folder not found: {root} ({EXPECTED_LAYOUT})")
    if not os.path.isdir(root):
        raise DatasetError(f"data path is not a folder: {root} ({EXPECTED_LAYOUT})")
    classes = sorted(entry.name for entry in os.scandir(root)
                     if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DatasetError(f"no class sub-folders in {root} ({EXPECTED_LAYOUT})")
    return classes


def scan_image_folder(root, class_names=None):
    """[(path, label)] of every image file under root/<class>/ (recursively),
    sorted by class then path; and the class names.

    class_names: the training classes; the folder must have exactly these
    (checked before any work, so a mismatched validation folder fails fast).
    """
    found = find_classes(root)
    if class_names is not None and list(class_names) != found:
        missing = sorted(set(class_names) - set(found))
        extra = sorted(set(found) - set(class_names))
        raise DatasetError(
            f"the classes of {root} differ from the training classes ({len(found)} vs "
            f"{len(class_names)} folders; missing: {missing[:10]}, not in training: {extra[:10]}). "
            "Validation and training folders need the same class sub-folders.")
    samples = []
    for label, name in enumerate(found):
        for folder, dirs, files in os.walk(os.path.join(root, name), followlinks=True):
            dirs.sort()
            samples.extend((os.path.join(folder, f), label) for f in sorted(files)
                           if f.lower().endswith(IMG_EXTENSIONS) and not f.startswith("."))
    if not samples:
        raise DatasetError(f"no image files ({', '.join(IMG_EXTENSIONS)}) in the class folders "
                           f"of {root} ({EXPECTED_LAYOUT})")
    return samples, found


# ------------------------------------------------------------------ decoding

def check_trained_classes(data_path, class_names, trained_names):
    """The class folders must be the (first) classes the model was trained on,
    by name, when the weights record them (src/model_info.py): else labels,
    which are folder indices, would silently name other classes."""
    if trained_names and list(class_names) != list(trained_names)[:len(class_names)]:
        unknown = [n for n in class_names if n not in trained_names]
        raise DatasetError(f"the class folders of {data_path} are not the classes the model was "
                           f"trained on (folders: {list(class_names)[:10]}; trained: "
                           f"{list(trained_names)[:10]}; not trained: {unknown[:10]}): use data "
                           "with the training class folders")


def load_rgb(path):
    """Decode any image file into a PIL RGB image with 8 bits per channel.

    Raises BadImageError (with the reason) for files that do not decode.
    """
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise BadImageError(f"{path}: cannot read the file ({err.strerror})") from None
    if size == 0:
        raise BadImageError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as img:
            img.load()  # decodes now: truncated files raise here, not later
            return to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise BadImageError(f"{path}: {type(err).__name__}: {err}") from None


def to_rgb(img):
    """PIL image of any mode -> 8-bit RGB. 16-bit samples are scaled (not clipped)."""
    if img.mode in _WIDE_INT_MODES:
        wide = np.asarray(img, dtype=np.float64)
        # 16-bit data: 65535 -> 255; a 32-bit 'I' image holding 8-bit values stays as is.
        scale = 257.0 if img.mode != "I" or wide.max() > 255 else 1.0
        gray = np.clip(np.round(wide / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if img.mode == "F":
        gray = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # the documented way for palette images with transparency
    return img.convert("RGB") if img.mode != "RGB" else img


def resize_center_crop(img, image_size, crop_pct):
    """timm's eval transform on a PIL image: shorter side to floor(size / crop_pct)
    (bicubic), then a centered image_size crop (torchvision's rounding)."""
    scale_size = int(math.floor(image_size / crop_pct))
    width, height = img.size
    if width <= height:
        new_size = (scale_size, int(scale_size * height / width))
    else:
        new_size = (int(scale_size * width / height), scale_size)
    if new_size != img.size:
        img = img.resize(new_size, Image.BICUBIC)
    width, height = img.size
    top = int(round((height - image_size) / 2.0))
    left = int(round((width - image_size) / 2.0))
    return img.crop((left, top, left + image_size, top + image_size))


class ImageFolderSource:
    """Random-access source for mindspore.dataset.GeneratorDataset.

    Yields (HWC uint8 RGB image, int32 label, int64 status): status is the
    sample index, or -1 - index for a file that failed to decode (its image is
    a 1x1 placeholder, dropped by ``BadImages.keep`` right after).
    eval_size/crop_pct: also apply the eval resize + center crop (in PIL, like timm).
    """

    def __init__(self, samples, eval_size=None, crop_pct=0.875):
        self.samples = samples
        self.eval_size = eval_size
        self.crop_pct = crop_pct

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        try:
            img = load_rgb(path)
        except BadImageError:
            return np.zeros((1, 1, 3), np.uint8), np.int32(label), np.int64(-1 - index)
        if self.eval_size is not None:
            img = resize_center_crop(img, self.eval_size, self.crop_pct)
        return np.asarray(img, dtype=np.uint8), np.int32(label), np.int64(index)


class BadImages:
    """Drops undecodable files from the pipeline; warns once per file and counts them.

    Its ``keep`` runs as the dataset's filter predicate in the main process,
    so the record is complete even when decoding runs in worker processes.
    """

    def __init__(self, samples, root=""):
        self.samples = samples
        self.root = root
        self.paths = []
        self._seen = set()
        self._lock = threading.Lock()

    def keep(self, status):
        index = int(status)
        if index >= 0:
            return True
        path = self.samples[-1 - index][0]
        with self._lock:
            if path not in self._seen:
                self._seen.add(path)
                self.paths.append(path)
                try:  # decode again here only to give the reason in the warning
                    load_rgb(path)
                    reason = "decode failed in a worker"
                except BadImageError as err:
                    reason = str(err).split(": ", 1)[-1]
                _logger.warning("skipping unreadable image %s (%s)", path, reason)
        return False

    @property
    def count(self):
        return len(self.paths)


# ------------------------------------------------------------------ datasets

def default_num_workers(local_processes=1):
    """Decoding processes per training process: the cores shared out, 1..8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(MAX_AUTO_WORKERS, (cores or 1) // max(1, local_processes)))


def local_process_count(rank_size):
    """Training processes on this machine (msrun sets MS_LOCAL_WORKER / LOCAL_WORKER_NUM)."""
    for key in ("MS_LOCAL_WORKER", "LOCAL_WORKER_NUM", "RANK_SIZE_LOCAL"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return rank_size


def _source_dataset(source, bad_images, num_workers, shuffle, num_shards=None, shard_id=None):
    import mindspore.dataset as ds
    multiprocess = num_workers > 1
    dataset = ds.GeneratorDataset(source, column_names=["image", "label", "status"],
                                  shuffle=shuffle, num_shards=num_shards, shard_id=shard_id,
                                  num_parallel_workers=num_workers,
                                  python_multiprocessing=multiprocess)
    return dataset.filter(predicate=bad_images.keep, input_columns=["status"])


def _normalize_ops():
    from mindspore.dataset import vision
    return [vision.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), vision.HWC2CHW()]


def create_eval_dataset(data_path, image_size, batch_size, num_workers=None, rank_id=0,
                        rank_size=1, crop_pct=0.875, class_names=None):
    """Evaluation pipeline: (dataset, class_names).

    The dataset yields batches of (image float32 NCHW, ImageNet-normalised;
    label int32); every image once, in sorted order, no shuffle, the last
    batch may be smaller. With rank_size > 1 rank r gets images r, r + n,
    r + 2n, ... (no padding, so per-rank counts add up to the total).
    ``dataset.bad_images`` records the files skipped as undecodable, and
    ``dataset.num_files`` the number of files in this rank's share.
    """
    samples, class_names = scan_image_folder(data_path, class_names)
    total = len(samples)
    samples = samples[rank_id::rank_size]
    if not samples:
        raise DatasetError(f"{data_path}: rank {rank_id} of {rank_size} gets no images "
                           f"(only {total} files); use fewer devices for evaluation")
    workers = num_workers or default_num_workers(local_process_count(rank_size))
    bad_images = BadImages(samples, data_path)
    dataset = _source_dataset(ImageFolderSource(samples, image_size, crop_pct), bad_images,
                              workers, shuffle=False)
    dataset = dataset.map(operations=_normalize_ops(), input_columns=["image"],
                          num_parallel_workers=workers)
    dataset = dataset.project(["image", "label"])
    dataset = dataset.batch(batch_size, drop_remainder=False)
    dataset.bad_images = bad_images
    dataset.num_files = len(samples)
    dataset.num_workers = workers
    return dataset, class_names


def train_transforms(image_size, scale=(0.08, 1.0), ratio=(0.75, 1.333), hflip=0.5, vflip=0.0,
                     color_jitter=0.4, auto_augment=None, interpolation="bicubic", re_prob=0.0,
                     re_value=0):
    """mindcv's ImageNet training transforms, on decoded images.

    mindcv's list starts with RandomCropDecodeResize (it decodes itself); the
    images here are decoded by PIL already, so that op becomes the same
    RandomResizedCrop without the decode. With auto_augment (e.g.
    'randaug-m9-mstd0.5') colour jitter is not applied (mindcv and timm alike).
    """
    from mindcv.data import create_transforms
    from mindspore.dataset import vision
    primary, secondary, final = create_transforms(
        "imagenet", image_size, is_training=True, auto_augment=auto_augment or None,
        separate=True, scale=tuple(scale), ratio=tuple(ratio), hflip=hflip, vflip=vflip,
        color_jitter=color_jitter or None, interpolation=interpolation, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, re_prob=re_prob, re_value=re_value)
    crop = primary[0]
    primary[0] = vision.RandomResizedCrop(image_size, scale=crop.scale, ratio=crop.ratio,
                                          interpolation=crop.interpolation)
    return primary + secondary + final


def create_train_dataset(data_path, image_size, batch_size, num_workers=None, rank_id=0,
                         rank_size=1, augment=None, class_names=None, shuffle=True):
    """Training pipeline: (dataset, class_names).

    Batches of (image float32 NCHW, label int32), full batches only, shuffled
    every epoch, rank_id's shard of rank_size (MindSpore's DistributedSampler:
    every shard has the same length, so every rank makes the same number of
    steps). augment: keyword arguments of ``train_transforms``.
    ``dataset.num_files`` is the number of files in this rank's shard and
    ``dataset.bad_images`` records the undecodable files skipped.
    """
    samples, class_names = scan_image_folder(data_path, class_names)
    shard_len = math.ceil(len(samples) / rank_size)
    if shard_len < batch_size:
        raise DatasetError(f"{data_path}: {len(samples)} images give {shard_len} per device, fewer "
                           f"than batch_size {batch_size}; lower --batch_size")
    workers = num_workers or default_num_workers(local_process_count(rank_size))
    bad_images = BadImages(samples, data_path)
    sharding = dict(num_shards=rank_size, shard_id=rank_id) if rank_size > 1 else {}
    dataset = _source_dataset(ImageFolderSource(samples), bad_images, workers, shuffle=shuffle,
                              **sharding)
    transforms = train_transforms(image_size, **(augment or {}))
    dataset = dataset.map(operations=transforms, input_columns=["image"],
                          num_parallel_workers=workers,
                          python_multiprocessing=workers > 1 and _has_python_op(transforms))
    dataset = dataset.project(["image", "label"])
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset.bad_images = bad_images
    dataset.num_files = shard_len
    dataset.num_workers = workers
    return dataset, class_names


def _has_python_op(transforms):
    """RandAugment and friends are Python callables: worth worker processes."""
    from mindspore.dataset.transforms.transforms import TensorOperation
    return any(not isinstance(op, TensorOperation) for op in transforms)
