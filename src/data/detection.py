"""COCO detection datasets for MindSpore: the training pipeline (recipe
augmentation, then YOLOv3 targets per anchor, assigned in NumPy) and the
evaluation pipeline (resize keeping the ratio, pad, the factors to map boxes
back to the original pixels).

Images are decoded in the dataset's worker processes with the
classification pipeline's ``load_rgb``; an image file missing or
undecodable is dropped and counted (``dataset.bad_images``), as there.
"""
import math
import os

import numpy as np

from src.data.detection_transforms import test_transform, train_transform
from src.dataset import (BadImageError, BadImages, DatasetError, default_num_workers, load_rgb,
                         local_process_count)
from src.models.heads.yolov3_head import grid_anchors
from src.models.losses.yolov3_loss import assign_targets


def annotation_rows(image):
    """(B, 6) rows x1, y1, x2, y2, class, crowd of a CocoImage."""
    return np.concatenate([image.boxes, image.classes[:, None].astype(np.float32),
                           image.crowd[:, None].astype(np.float32)], 1).reshape(-1, 6)


def _read(image, index):
    """(HWC uint8 image, status): status is index, or -1 - index when the
    file cannot be read (the image is then a 1x1 placeholder)."""
    try:
        return np.asarray(load_rgb(image.path), np.uint8), np.int64(index)
    except BadImageError:
        return np.zeros((1, 1, 3), np.uint8), np.int64(-1 - index)


class DetectionTrainSource:
    """Random-access source: (image CHW float32, box_targets (A, 4) float32,
    labels (A,) int32, status int64); see src/models/losses/yolov3_loss.py."""

    def __init__(self, images, anchors, strides, scale_range, augment=True, flip_prob=0.5,
                 seed=None, pos_iou_thr=0.5, neg_iou_thr=0.5):
        self.images = images
        self.scale_range = tuple(scale_range)
        self.augment = augment
        self.flip_prob = flip_prob
        size = self.scale_range[1]
        self.anchor_table = grid_anchors(anchors, strides, size, size)
        self.seed = seed
        self.iou_thresholds = dict(pos_iou_thr=pos_iou_thr, neg_iou_thr=neg_iou_thr)
        self._rng, self._pid = None, None

    def __len__(self):
        return len(self.images)

    def rng(self):
        """One generator per worker process (forked workers must not repeat
        each other's draws)."""
        if self._pid != os.getpid():
            seed = None if self.seed is None else (self.seed, os.getpid())
            self._rng, self._pid = np.random.default_rng(seed), os.getpid()
        return self._rng

    def __getitem__(self, index):
        image = self.images[index]
        pixels, status = _read(image, index)
        size = self.scale_range[1]
        if status < 0:
            return (np.zeros((3, size, size), np.float32),
                    np.zeros((len(self.anchor_table), 4), np.float32),
                    np.full(len(self.anchor_table), -1, np.int32), status)
        img, anns = train_transform(pixels, annotation_rows(image), self.rng(), self.scale_range,
                                    self.augment, self.flip_prob)
        box_targets, labels = assign_targets(self.anchor_table, anns[:, :4], anns[:, 4].astype(int),
                                             anns[:, 5] > 0, size, size, **self.iou_thresholds)
        return img, box_targets, labels, status


class DetectionEvalSource:
    """(image CHW float32, image_id int64, (w_scale, h_scale) float32, status)."""

    def __init__(self, images, image_size):
        self.images = images
        self.image_size = image_size

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        image = self.images[index]
        pixels, status = _read(image, index)
        img, factors = test_transform(pixels, self.image_size)
        return img, np.int64(image.image_id), factors, status


def _bad_images(images, root):
    return BadImages([(image.path,) for image in images], root)


def _generator(source, columns, bad_images, workers, shuffle, **sharding):
    import mindspore.dataset as ds
    dataset = ds.GeneratorDataset(source, column_names=columns, shuffle=shuffle,
                                  num_parallel_workers=workers,
                                  python_multiprocessing=workers > 1, **sharding)
    dataset = dataset.filter(predicate=bad_images.keep, input_columns=["status"])
    return dataset.project(columns[:-1])


def create_train_dataset(coco, batch_size, anchors, strides, scale_range, augment=True,
                         filter_empty_gt=True, num_workers=None, rank_id=0, rank_size=1,
                         seed=None, repeat_times=1, flip_prob=0.5, pos_iou_thr=0.5,
                         neg_iou_thr=0.5):
    """Shuffled, sharded batches of (image, box_targets, labels), full batches
    only; each epoch ``repeat_times`` passes over the shard (mmdetection's
    RepeatDataset), reshuffled each pass. ``dataset.num_files``: images per
    epoch on this rank (the shard x repeat_times)."""
    images = [im for im in coco.images if len(im.boxes) or not filter_empty_gt]
    shard_len = math.ceil(len(images) / rank_size)
    if shard_len < batch_size:
        raise DatasetError(f"{coco.ann_file}: {len(images)} training images "
                           f"({'with boxes' if filter_empty_gt else 'in all'}) give {shard_len} "
                           f"per device, fewer than batch_size {batch_size}; lower --batch_size")
    workers = num_workers or default_num_workers(local_process_count(rank_size))
    bad_images = _bad_images(images, coco.image_dir)
    sharding = dict(num_shards=rank_size, shard_id=rank_id) if rank_size > 1 else {}
    source = DetectionTrainSource(images, anchors, strides, scale_range, augment, flip_prob,
                                  seed, pos_iou_thr, neg_iou_thr)
    dataset = _generator(source, ["image", "box_targets", "labels", "status"], bad_images,
                         workers, True, **sharding)
    if repeat_times > 1:
        dataset = dataset.repeat(repeat_times)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset.bad_images = bad_images
    dataset.num_files = shard_len * repeat_times
    dataset.num_workers = workers
    return dataset


def create_eval_dataset(coco, batch_size, image_size, num_workers=None, rank_id=0, rank_size=1):
    """Every image of rank_id's share once (images rank_id, rank_id + n, ...),
    in id order, batches of (image, image_id, factors); the last may be smaller."""
    images = coco.images[rank_id::rank_size]
    if not images:
        raise DatasetError(f"{coco.ann_file}: rank {rank_id} of {rank_size} gets no images; use "
                           "fewer devices for evaluation")
    workers = num_workers or default_num_workers(local_process_count(rank_size))
    bad_images = _bad_images(images, coco.image_dir)
    dataset = _generator(DetectionEvalSource(images, image_size),
                         ["image", "image_id", "factors", "status"], bad_images, workers, False)
    dataset = dataset.batch(batch_size, drop_remainder=False)
    dataset.bad_images = bad_images
    dataset.num_files = len(images)
    dataset.num_workers = workers
    return dataset
